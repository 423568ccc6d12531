"""Every front-end gives the same numbers: the app's jobs (explain, playback), ``fssgui explain``,
``fssgui causal``, ``fssgui report`` and ``fssgui evaluate`` on the same episode, model, method
and region R produce the same maps (<= 1e-6) and the same AUCs, and ``fssgui predict`` writes the
model's official mask (DMTNet K-shot: the vote).

Models: the built-in matcher (at 96 px), a random DCAMA-R50 (at 64 px) and a random DMTNet (at
128 px), K = 1 and 5. The episodes come from a small ``folders`` dataset through ``evaluate``'s
own episode list, so all front-ends read the very same files. Heavy cases run fewer methods and
metrics (the plumbing under test is the same for every method)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate_testkit import SMALL_MODEL, read_results
from fssgui.cli import main
from fssgui.episode import load_episode, save_episode
from fssgui.evaluate.episodes import EpisodeSource, read_episode_csv
from fssgui.pipeline import jobs
from fssgui.pipeline.playback import curves_job, method_input
from fssgui.imaging import load_mask
from fssgui.io import save_png_atomic
from fssgui.models.registry import get_entry
from testkit import register_at_size
from fssgui.pipeline import BRUSHED, ModelCache, ModelSpec

STEPS = 2
SEED = 11
# every method that applies to the built-in model (captum's DeepLift has no rule for its ReLU6, and
# DCAMA's ResNet calls one ReLU module several times, which DeepLift refuses: no model here takes it)
CHEAP_METHODS = ("affex", "affex-masked", "affex-signed", "saliency", "integrated-gradients", "gradient-shap",
                 "lime", "gaussian-noise-mask", "random")
#: (model key, shots, {R source: methods}, metrics); "png" is a brushed R in the app and a mask PNG
#: on the command line. Every method and every R source is covered; the heavy models take fewer.
CASES = [
    ("builtin", 1, {"prediction": CHEAP_METHODS, "ground-truth": ("affex-signed", "random"),
                    "png": ("affex", "saliency")}, ("iauc", "dauc")),
    ("builtin", 5, {"prediction": ("affex-signed", "saliency"), "ground-truth": ("affex-masked",)}, ("iauc", "dauc")),
    ("dcama", 1, {"prediction": ("affex-signed", "saliency"), "png": ("affex-signed",)}, ("iauc",)),
    ("dcama", 5, {"prediction": ("affex-signed",), "png": ("affex-signed",)}, ("iauc",)),
    ("dmtnet", 1, {"prediction": ("affex-signed", "saliency"), "ground-truth": ("affex-signed",)}, ("iauc",)),
    ("dmtnet", 5, {"prediction": ("affex-signed",)}, ("iauc",)),
]
RANDOM_MODELS = {"dcama": ("consistency-dcama", "dcama-resnet50", 64),
                 "dmtnet": ("consistency-dmtnet", "dmtnet", 128)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model key -> (registry name, checkpoint or None); random weights saved as checkpoints."""
    root = tmp_path_factory.mktemp("consistency-models")
    out = {"builtin": (SMALL_MODEL, None)}
    for key, (name, base, size) in RANDOM_MODELS.items():
        register_at_size(base, name, size, "random (tests)")
        torch.manual_seed(3)
        checkpoint = root / f"{name}.pt"
        torch.save(get_entry(name).builder().state_dict(), checkpoint)
        out[key] = (name, str(checkpoint))
    return out


@pytest.fixture(scope="module", autouse=True)
def built_once():
    """Every front-end builds its model through the pipeline: memoise the builds (same weights)."""
    import fssgui.pipeline.models as pipeline_models

    built, real = {}, pipeline_models.build_model

    def build_once(name, checkpoint=None, device="cpu", log=None, task="fss"):
        key = (name, checkpoint, str(device))
        if key not in built:
            built[key] = real(name, checkpoint, device=device, log=log, task=task)
        return built[key]

    pipeline_models.build_model = build_once
    yield
    pipeline_models.build_model = real


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from synthetic_fss import make_synthetic_fss

    return make_synthetic_fss(tmp_path_factory.mktemp("consistency-data"), n_classes=2, images_per_class=6,
                              size=48, seed=5)


def _evaluate(dataset, out, name, checkpoint, shots, methods, region, metrics):
    argv = ["evaluate", "--model", name, "--data", str(dataset), "--layout", "folders", "--episodes", "1",
            "--shots", str(shots), "--methods", ",".join(methods),
            "--metrics", ",".join(f"{m}-conf" for m in metrics), "--steps", str(STEPS), "--seed", str(SEED),
            "--region", region, "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(argv + (["--checkpoint", checkpoint] if checkpoint else [])) == 0
    return read_results(out)


def _app_explain(spec, episode, method, source, mask, seed):
    params = {"seed": seed} if seed is not None else {}
    return jobs.explain(jobs.JobContext(), ModelCache(), spec, episode, mask, source, method, params)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}shot" for c in CASES])
def test_front_ends_agree(case, models, dataset, tmp_path):
    key, shots, by_source, metrics = case
    sources = tuple(by_source)
    name, checkpoint = models[key]
    model_args = ["--model", name, "--device", "cpu"] + (["--checkpoint", checkpoint] if checkpoint else [])
    spec = ModelSpec(name, checkpoint, "cpu")
    evaluated = {}
    for source in sources:
        if source == "png":
            continue
        evaluated[source] = _evaluate(dataset, tmp_path / f"evaluate-{source}", name, checkpoint, shots,
                                      by_source[source], source, metrics)
    first = next(iter(evaluated.values()))
    row_index = next(iter(first))[0]
    row = next(r for r in read_episode_csv(tmp_path / f"evaluate-{sources[0]}" / "episodes.csv", "folders")
               if r.index == row_index)
    folder = tmp_path / "episode"
    save_episode(EpisodeSource(dataset, "folders").load(row).episode, folder)
    episode = load_episode(folder)
    assert episode.shots == shots
    png = tmp_path / "region.png"
    brushed = np.zeros(episode.query_size, bool)
    h, w = episode.query_size
    brushed[h // 4: h // 2 + 3, w // 3: w // 3 + 9] = True
    save_png_atomic(png, brushed)
    brushed = load_mask(png)
    from fssgui.evaluate.runner import explainer_seed
    from fssgui.explain.registry import explainer_parameters

    seed = explainer_seed(SEED, row_index)
    seeds = {m: (seed if "seed" in explainer_parameters(m) else None) for m in CHEAP_METHODS}

    for source, methods in by_source.items():
        cli_region = str(png) if source == "png" else source
        app_source, app_mask = (BRUSHED, brushed) if source == "png" else (source, None)
        # --- maps: the app's explain job == fssgui explain (one call: every method, the seed)
        out = tmp_path / f"explain-{source}"
        seeded = [str(seed)] if any(seeds[m] is not None for m in methods) else []
        assert main(["explain", str(folder), *model_args, "--method", ",".join(methods), "--region", cli_region,
                     *(["--seed", *seeded] if seeded else []), "--out", str(out)]) == 0
        app = {}
        for method in methods:
            app[method] = _app_explain(spec, episode, method, app_source, app_mask, seeds[method])
            target = out / method if len(methods) > 1 else out
            np.testing.assert_allclose(np.load(target / "attribution.npy"), np.stack(app[method].maps), rtol=0,
                                       atol=1e-6, err_msg=f"{key} K={shots} {method} R={source}: app vs explain")
            explanation = json.loads((target / "explanation.json").read_text())
            assert explanation["region"] == (str(png) if source == "png" else source)
            assert explanation["params"] == app[method].params

        # --- AUCs: the app's playback job == fssgui causal == fssgui report == fssgui evaluate
        curves = curves_job(jobs.JobContext(), ModelCache(), spec, episode,
                            {m: method_input(m, app[m]) for m in methods}, app_mask,
                            region_source=app_source, metrics=metrics, measure="confidence", steps=STEPS)
        app_values = {(c.method, c.metric): c.value for c in curves}
        seeded_method = next((m for m in methods if seeds[m] is not None), methods[-1])
        sampled = {(methods[0], metric) for metric in metrics} | {(seeded_method, metrics[-1])}
        report_out = tmp_path / f"report-{source}"
        params = [f"--param={m}.seed={seeds[m]}" for m in methods if seeds[m] is not None]
        assert main(["report", str(folder), *model_args, "--methods", ",".join(methods), "--metrics",
                     ",".join(metrics), "--steps", str(STEPS), "--region", cli_region, "--no-pdf", *params,
                     "--out", str(report_out)]) == 0
        reported = json.loads((report_out / "summary.json").read_text())["causal"]["curves"]
        for method in methods:
            for metric in metrics:
                value = app_values[(method, metric)]
                where = f"{key} K={shots} {method} {metric} R={source}"
                assert reported[method][metric]["value"] == pytest.approx(value, abs=1e-6), where + ": report"
                if source in evaluated:
                    stored = evaluated[source][(row_index, method)]
                    assert stored["error"] is None, stored["error"]
                    assert stored["values"][f"{metric}-conf"] == pytest.approx(value, abs=1e-6), where + ": evaluate"
                if (method, metric) in sampled:  # fssgui causal explains again: a sample of the cells
                    target = tmp_path / f"causal-{source}-{method}-{metric}"
                    argv = ["causal", str(folder), *model_args, "--method", method, "--region", cli_region,
                            "--metric", metric, "--measure", "confidence", "--steps", str(STEPS), "--out", str(target)]
                    assert main(argv + (["--seed", str(seeds[method])] if seeds[method] is not None else [])) == 0
                    summary = json.loads((target / "summary.json").read_text())
                    assert summary["value"] == pytest.approx(value, abs=1e-6), where + ": causal"


@pytest.mark.parametrize("key,shots", [("builtin", 1), ("dmtnet", 5)])
def test_predict_writes_the_official_mask(key, shots, models, dataset, tmp_path):
    """``prediction.png`` is the model's official mask at the query's size: the argmax of the
    resized logits, or for DMTNet K > 1 the vote of every shot's resized logits; the app shows the
    same mask."""
    import torch.nn.functional as F

    from fssgui.models.dmtnet import DMTNet
    from fssgui.pipeline import EpisodeRun, load_model

    name, checkpoint = models[key]
    source = EpisodeSource(dataset, "folders")
    rows = source.generate(1, shots, 0, -1)
    episode = source.load(rows[0]).episode
    folder = tmp_path / "episode"
    save_episode(episode, folder)
    out = tmp_path / "predict"
    assert main(["predict", str(folder), "--model", name, "--device", "cpu", "--out", str(out)]
                + (["--checkpoint", checkpoint] if checkpoint else [])) == 0
    written = load_mask(out / "prediction.png")
    app = jobs.predict(jobs.JobContext(), ModelCache(), ModelSpec(name, checkpoint, "cpu"), load_episode(folder))
    assert np.array_equal(written, app.mask)
    run = EpisodeRun(load_model(ModelSpec(name, checkpoint, "cpu")), load_episode(folder))
    prediction = run.prediction()
    if key == "dmtnet":
        shot_logits = prediction.extras["shot_logits"][:, 0]  # [K, 2, S, S]
        resized = F.interpolate(shot_logits, size=episode.query_size, mode="bilinear", align_corners=True)
        expected = DMTNet.vote(resized[:, None])[0].numpy()
        mean_argmax = resized.mean(0).argmax(0).numpy() == 1
        print(f"\nDMTNet {shots}-shot: the vote differs from the mean logits' argmax on "
              f"{100 * (expected != mean_argmax).mean():.1f}% of the pixels")
    else:
        logits = F.interpolate(prediction.logits, size=episode.query_size, mode="bilinear", align_corners=True)
        expected = logits[0].argmax(0).numpy() == 1
    assert np.array_equal(written, expected)
    np.testing.assert_allclose(np.load(out / "logits.npy"), run.predicted().logits, rtol=0, atol=0)
