"""`fssgui explain` / `fssgui causal` and the region helpers, on the toy matcher registered as a
model (input size 32, so the commands run in about a second)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from testkit import make_episode
from fssgui.cli import main
from fssgui.episode import save_episode
from fssgui.errors import ExplainError
from fssgui.io import save_png_atomic
from fssgui.models.registry import ModelEntry, get_entry, register
from test_affex_toy import TOY_SIZE, ToyMatcher

TOY_NAME = "test-toy-matcher"


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    try:
        get_entry(TOY_NAME)
    except Exception:
        register(ModelEntry(name=TOY_NAME, builder=ToyMatcher, input_size=TOY_SIZE, needs_checkpoint=False,
                            description="test toy"))


@pytest.fixture
def episode_dir(tmp_path):
    episode = make_episode(shots=2, size=(48, 64))
    folder = tmp_path / "episode"
    save_episode(episode, folder)
    return folder


def _cli(*argv):
    return main([str(a) for a in argv])


def test_explain_writes_maps_overlays_and_json(episode_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = _cli("explain", episode_dir, "--model", TOY_NAME, "--device", "cpu", "--method", "affex-signed",
                "--region", "ground-truth", "--size", 16, "--mode", "reference", "--out", out)
    assert code == 0
    maps = np.load(out / "attribution.npy")
    assert maps.shape == (2, 48, 64) and maps.dtype == np.float32
    assert (out / "overlay_0.png").is_file() and (out / "overlay_1.png").is_file()
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["params"]["mode"] == "reference" and summary["params"]["size"] == 16
    assert len(summary["level_weights"]) == 3 and summary["level_weights"] == pytest.approx(
        [w for w in summary["level_weights"]])
    assert sum(summary["level_weights"]) == pytest.approx(1.0, abs=1e-5)


def test_explain_supports_of_different_sizes(tmp_path):
    episode = make_episode(shots=1, size=(48, 64))
    episode.supports.append(make_episode(shots=1, size=(40, 40), seed=2).supports[0])
    save_episode(episode, tmp_path / "ep")
    out = tmp_path / "out"
    assert _cli("explain", tmp_path / "ep", "--model", TOY_NAME, "--device", "cpu", "--method", "random",
                "--seed", 1, "--region", "ground-truth", "--out", out) == 0
    assert not (out / "attribution.npy").exists()
    assert np.load(out / "attribution_0.npy").shape == (48, 64)
    assert np.load(out / "attribution_1.npy").shape == (40, 40)


def test_explain_region_png_single_pixel(episode_dir, tmp_path):
    region = np.zeros((48, 64), dtype=bool)
    region[20, 30] = True
    save_png_atomic(tmp_path / "region.png", region)
    out = tmp_path / "out"
    assert _cli("explain", episode_dir, "--model", TOY_NAME, "--device", "cpu", "--region", tmp_path / "region.png",
                "--size", 8, "--out", out) == 0
    assert np.isfinite(np.load(out / "attribution.npy")).all()


def test_explain_user_errors(episode_dir, tmp_path, capsys):
    assert _cli("explain", episode_dir, "--model", TOY_NAME, "--method", "random", "--size", 8,
                "--out", tmp_path / "o") == 2
    assert "AffEx" in capsys.readouterr().err
    assert _cli("explain", episode_dir, "--model", TOY_NAME, "--device", "cpu", "--region", tmp_path / "none.png",
                "--out", tmp_path / "o") == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "metric,measure,extra,points",
    [("iauc", "miou", ["--steps", 4], 4), ("dauc", "confidence", ["--steps", 4], 5),
     ("iauc@p", "confidence", ["--percentage", 0.1], 6), ("miou-loss@p", "miou", ["--percentage", 0.05], 2)],
)
def test_causal_writes_curve_and_summary(episode_dir, tmp_path, metric, measure, extra, points):
    out = tmp_path / "out"
    code = _cli("causal", episode_dir, "--model", TOY_NAME, "--device", "cpu", "--method", "affex",
                "--region", "ground-truth", "--metric", metric, "--measure", measure, *extra, "--out", out)
    assert code == 0
    rows = list(csv.reader((out / "curve.csv").open()))
    assert rows[0] == ["fraction", "score"] and len(rows) == points + 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == metric and summary["points"] == points
    scores = [float(r[1]) for r in rows[1:]]
    if metric == "miou-loss@p":
        assert summary["miou_loss"] == summary["value"] == pytest.approx(scores[-1] - scores[0], abs=1e-6)
    else:
        n = len(scores)
        assert summary["auc"] == pytest.approx((sum(scores) - scores[0] / 2 - scores[-1] / 2) / (n - 1), abs=1e-6)


def test_regions():
    from fssgui.pipeline import EpisodeRun, ModelSpec, load_model
    from fssgui.pipeline.regions import region_from_mask, region_from_prediction

    mask = np.zeros((100, 150), dtype=bool)
    mask[50, 75] = True  # nearest sampling to 32 misses it; the covering cell is kept
    region = region_from_mask(mask, 32)
    assert region.sum() == 1 and region[16, 16]
    with pytest.raises(ExplainError, match="empty"):
        region_from_mask(np.zeros((4, 4), dtype=bool), 8)
    with pytest.raises(ExplainError, match="no foreground"):
        region_from_prediction(np.zeros((8, 8), bool), np.zeros((20, 20), bool))
    episode = make_episode()
    run = EpisodeRun(load_model(ModelSpec(TOY_NAME, None, "cpu")), episode)
    for source in ("ground-truth", "gt", "ground truth"):  # one spelling; the others are aliases
        gt = run.region(source)
        assert gt.source == "ground-truth" and gt.model.dtype == bool and gt.model.shape == (32, 32)
        assert gt.model.any() and np.array_equal(gt.image, episode.query_mask)
    with pytest.raises(ExplainError, match="stores no region"):
        run.region("episode")


def test_explain_several_episodes_and_methods_with_one_model_load(tmp_path, capsys, monkeypatch):
    """Episodes × methods in one command: one model build, a folder per explanation (the same maps
    as separate runs), an index of the runs, and a bad episode reported without losing the rest."""
    from fssgui.pipeline import models

    builds = []
    real_build = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: builds.append(a[0]) or real_build(*a, **k))
    first, second = tmp_path / "a" / "episode", tmp_path / "b" / "episode"
    save_episode(make_episode(shots=2, size=(48, 64)), first)
    save_episode(make_episode(shots=1, size=(40, 40), seed=5), second)
    missing = tmp_path / "not-an-episode"
    out = tmp_path / "out"
    code = _cli("explain", first, missing, second / "episode.json", "--model", TOY_NAME, "--device", "cpu",
                "--method", "affex,random", "--method", "affex", "--seed", 3, "--size", 16,
                "--region", "ground-truth", "--out", out)
    assert code == 2 and builds == [TOY_NAME]
    err = capsys.readouterr().err
    assert str(missing) in err and "2 of 6 explanations failed" in err
    index = json.loads((out / "explanations.json").read_text())
    assert index["methods"] == ["affex", "random"]
    assert [(r["method"], r.get("folder")) for r in index["runs"]] == [
        ("affex", "episode/affex"), ("random", "episode/random"), ("affex", None), ("random", None),
        ("affex", "episode_2/affex"), ("random", "episode_2/random")]
    assert all(str(missing) in r["error"] for r in index["runs"][2:4])
    assert np.load(out / "episode" / "affex" / "attribution.npy").shape == (2, 48, 64)
    assert np.load(out / "episode_2" / "random" / "attribution.npy").shape == (1, 40, 40)
    summary = json.loads((out / "episode_2" / "affex" / "explanation.json").read_text())
    assert summary["params"]["size"] == 16 and summary["episode"] == str(second / "episode.json")

    # the same maps as one-episode, one-method runs (where --size/--seed must fit the method)
    for episode, label in ((first, "episode"), (second, "episode_2")):
        for method, extra in (("affex", ["--size", 16]), ("random", ["--seed", 3])):
            alone = tmp_path / f"alone-{label}-{method}"
            assert _cli("explain", episode, "--model", TOY_NAME, "--device", "cpu", "--method", method, *extra,
                        "--region", "ground-truth", "--out", alone) == 0
            assert not (alone / "explanations.json").exists()  # one explanation: written straight into DIR
            assert np.array_equal(np.load(alone / "attribution.npy"),
                                  np.load(out / label / method / "attribution.npy")), (label, method)

    # one episode, two methods: a folder per method; options that concern none of the methods are errors
    two = tmp_path / "two"
    assert _cli("explain", first, "--model", TOY_NAME, "--device", "cpu", "--method", "affex",
                "--method", "affex-signed", "--out", two) == 0
    assert (two / "affex" / "overlay_1.png").is_file() and (two / "affex-signed" / "attribution.npy").is_file()
    assert [r["folder"] for r in json.loads((two / "explanations.json").read_text())["runs"]] == [
        "affex", "affex-signed"]
    capsys.readouterr()
    assert _cli("explain", first, "--model", TOY_NAME, "--method", "random,saliency", "--size", 8,
                "--out", tmp_path / "x") == 2
    assert "none of random, saliency" in capsys.readouterr().err
    assert _cli("explain", first, "--model", TOY_NAME, "--method", "affex,affex-masked", "--seed", 1,
                "--out", tmp_path / "x") == 2
    assert "--seed does not apply" in capsys.readouterr().err
    assert _cli("explain", first, "--model", TOY_NAME, "--method", "affex,magic", "--out", tmp_path / "x") == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_episode_folder_labels_are_unique():
    from fssgui.commands.explain import episode_labels

    assert episode_labels(["a/episode", "b/episode_2", "c/episode", "d/episode.json", "e/d/"]) == [
        "episode", "episode_2", "episode_3", "d", "d_2"]
