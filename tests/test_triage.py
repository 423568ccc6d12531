"""Failure triage without Qt: the prediction statistics and their paper-style summary, the
largest-error region rule, prediction rows in the evaluate store (sweeps, joining and adopting
folders, folders written before them), the results read as a failure table, and `fssgui triage`
whose numbers equal `fssgui evaluate`'s for the same episodes."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluate_testkit import SMALL_MODEL
from fssgui.errors import ExplainError
from fssgui.evaluate.predictions import class_summary, mask_thumbnail, prediction_stats, thumbnail_mask
from fssgui.pipeline.regions import FALSE_NEGATIVE, FALSE_POSITIVE, error_pixels, largest_error_region
from test_report import _KeyedValues
from triage_testkit import EPISODES, SEED, make_voc_dataset, sweep_args

METHOD = "affex-signed"
METRICS = "iauc-miou,dauc-conf"
STEPS = "3"


# ------------------------------------------------------------------------------ pure rules
def test_largest_error_region_picks_the_biggest_component_outside_ignore():
    truth = np.zeros((20, 30), bool)
    truth[2:10, 2:12] = True  # 80 px
    prediction = np.zeros_like(truth)
    prediction[2:10, 2:6] = True  # covers 32 px of the truth: 48 px missed
    prediction[12:14, 20:30] = True  # false positive, 20 px
    prediction[15:20, 0:3] = True  # false positive, 15 px
    ignore = np.zeros_like(truth)
    fp = largest_error_region(prediction, truth, None, FALSE_POSITIVE)
    assert fp.sum() == 20 and fp[12:14, 20:30].all()
    ignore[12:14, 20:28] = True  # most of the biggest false positive is ignored: the other one wins
    assert largest_error_region(prediction, truth, ignore, FALSE_POSITIVE).sum() == 15
    fn = largest_error_region(prediction, truth, None, FALSE_NEGATIVE)
    assert fn.sum() == 48 and not (fn & prediction).any() and (fn <= truth).all()
    assert (error_pixels(prediction, truth, ignore, FALSE_POSITIVE) & ignore).sum() == 0
    with pytest.raises(ExplainError, match="no false-negative pixel"):
        largest_error_region(truth, truth, None, FALSE_NEGATIVE)


def test_prediction_stats_leave_ignore_pixels_out_and_summary_sums_over_episodes():
    truth = np.zeros((10, 10), bool)
    truth[:, :5] = True  # 50 px
    mask = np.zeros_like(truth)
    mask[:, 3:8] = True  # 50 px: 20 right, 30 false positive
    ignore = np.zeros_like(truth)
    ignore[9, :] = True  # the last row is ignored: 9 rows of 10 count
    probability = np.where(mask, 0.8, 0.3).astype(np.float32)
    stats = prediction_stats(mask, probability, truth, ignore, [np.ones((4, 4), bool), np.eye(4, dtype=bool)])
    v, c = stats["values"], stats["counts"]
    assert c["valid"] == 90 and c["inter"] == [9 * 2, 9 * 2] and c["union"] == [9 * 8, 9 * 8]
    assert v["iou"] == pytest.approx(18 / 72) and v["fb_iou"] == pytest.approx(0.5 * (18 / 72 + 18 / 72))
    assert v["predicted_share"] == pytest.approx(45 / 90) and v["true_share"] == pytest.approx(45 / 90)
    assert v["false_positive_share"] == pytest.approx(27 / 90) and v["false_negative_share"] == pytest.approx(27 / 90)
    assert v["confidence"] == pytest.approx(0.75)  # 0.8 on predicted pixels, 1 - 0.3 elsewhere
    assert v["support_share_min"] == pytest.approx(4 / 16) and stats["support_shares"] == [1.0, 0.25]
    # the paper's way: summed intersection over summed union per class, not the mean of IoUs
    rows = [{"class": "a", "values": {"iou": 0.0}, "counts": {"inter": [90, 0], "union": [99, 1]}},
            {"class": "a", "values": {"iou": 0.9}, "counts": {"inter": [10, 90], "union": [10, 100]}},
            {"class": "b", "values": {"iou": 0.5}, "counts": {"inter": [50, 50], "union": [50, 100]}},
            {"class": "b", "error": "episode data: unreadable", "values": {}}]
    summary = class_summary(rows)
    assert summary.iou == pytest.approx({"a": 100 * 90 / 101, "b": 50.0})
    assert summary.miou == pytest.approx((100 * 90 / 101 + 50) / 2)
    assert summary.fb_iou == pytest.approx(100 * 0.5 * (150 / 159 + 140 / 201))
    assert summary.failed == 1 and summary.episodes == {"a": 2, "b": 1}
    small = thumbnail_mask(mask_thumbnail(np.kron(mask, np.ones((30, 30), bool))))
    assert small.shape == (96, 96) and np.array_equal(small[::48, ::48], mask[::5, ::5])


# ---------------------------------------------------------------------------- the sweep
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The dataset, its predictions-only sweep by `fssgui evaluate --methods none`, and a full
    evaluation (one method, two metrics) of the same episodes."""
    from fssgui.cli import main

    root = tmp_path_factory.mktemp("triage")
    data = make_voc_dataset(root / "data")
    sweep = root / "sweep"
    assert main(sweep_args(data, sweep)) == 0
    evaluation = root / "evaluation"
    # later options win: the same episodes with one method and two metrics
    assert main(sweep_args(data, evaluation, "--methods", METHOD, "--metrics", METRICS, "--steps", STEPS,
                           "--region", "ground-truth")) == 0
    return {"root": root, "data": data, "sweep": sweep, "evaluation": evaluation}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sweep_rows_are_the_pipeline_prediction_against_the_dataset(swept):
    from fssgui.evaluate.episodes import EpisodeSource, read_episode_csv
    from fssgui.pipeline import EpisodeRun, ModelSpec, load_model

    sweep = swept["sweep"]
    rows = _jsonl(sweep / "predictions.jsonl")
    episodes = read_episode_csv(sweep / "episodes.csv", "folders")
    assert [r["episode"] for r in rows] == [e.index for e in episodes] and len(rows) == EPISODES
    assert not (sweep / "table.md").exists() and not (sweep / "results.jsonl").exists()
    document = json.loads((sweep / "settings.json").read_text())
    assert document["version"] == 2 and document["settings"]["metrics"] == []
    assert all(r["settings"] == document["prediction_hash"] for r in rows)
    source = EpisodeSource(swept["data"], "folders")
    model = load_model(ModelSpec(SMALL_MODEL, None, "cpu"))
    for row, episode in list(zip(rows, episodes))[:3]:
        loaded = source.load(episode)
        result = EpisodeRun(model, loaded.episode, ignore=loaded.ignore).predicted()
        expected = prediction_stats(result.mask, result.probability, loaded.episode.query_mask, loaded.ignore,
                                    [s.mask for s in loaded.episode.supports])
        assert row["values"] == pytest.approx(expected["values"]) and row["counts"] == expected["counts"]
        assert row["query_size"] == list(loaded.episode.query_size)
        assert thumbnail_mask(row["thumbnail"]).mean() == pytest.approx(result.mask.mean(), abs=0.05)
    summary = json.loads((sweep / "miou.json").read_text())
    assert summary["miou_x100"] == pytest.approx(class_summary(rows).miou)
    assert "mIoU" in (sweep / "miou.md").read_text()


def test_results_folder_as_failure_table_and_ranking(swept):
    from fssgui.triage.results import open_results, rank

    results = open_results(swept["evaluation"])
    assert results.predicted_count == EPISODES and results.methods == [METHOD]
    assert results.metric_names == ["iauc-miou", "dauc-conf"]
    evaluated = {r["episode"]: r for r in _jsonl(swept["evaluation"] / "results.jsonl")}
    for record in results.records:
        assert record.metrics[METHOD] == evaluated[record.episode]["values"]
    worst = rank(results.records, "iou", 3)
    ious = sorted(r.value("iou") for r in results.records)
    assert [r.value("iou") for r in worst] == ious[:3]
    by_fn = rank(results.records, "false_negative_share")
    assert [r.value("false_negative_share") for r in by_fn] == sorted(
        (r.value("false_negative_share") for r in results.records), reverse=True)
    empty = [r for r in results.records if r.empty_prediction]
    assert all(r.value("predicted_share") == 0 for r in empty)
    assert results.classes.miou == pytest.approx(json.loads((swept["evaluation"] / "miou.json").read_text())["miou_x100"])


def test_sweeps_join_adopt_and_upgrade_results_folders(swept, tmp_path, capsys):
    from fssgui.cli import main
    from fssgui.triage.results import open_results

    data, evaluation = swept["data"], swept["evaluation"]
    # a sweep joins a folder of another evaluation of the same predictions: its settings stay
    before = json.loads((evaluation / "settings.json").read_text())
    assert main(sweep_args(data, evaluation)) == 0
    assert json.loads((evaluation / "settings.json").read_text())["hash"] == before["hash"]
    assert "8 episode(s) already predicted" in capsys.readouterr().err
    # another model's predictions are refused, naming what changed
    assert main(sweep_args(data, evaluation, "--model", "matcher-effnet")) == 2
    assert "other settings (changed: model)" in capsys.readouterr().err

    # a predictions-only folder takes the settings of the first run with methods
    adopted = tmp_path / "adopted"
    shutil.copytree(swept["sweep"], adopted)
    args = ("--methods", "random", "--metrics", "dauc-conf", "--steps", "2")
    assert main(sweep_args(data, adopted, *args)) == 0
    err = capsys.readouterr().err
    assert "0 already in" in err and f"{EPISODES} episode(s) already predicted" in err
    assert json.loads((adopted / "settings.json").read_text())["settings"]["metrics"][0]["name"] == "dauc-conf"
    assert (adopted / "table.md").is_file()

    # a folder written before prediction rows existed: read as it is, upgraded by a resume
    old = tmp_path / "old"
    shutil.copytree(adopted, old)
    for path in (old / "results").glob("predictions-*.jsonl"):
        path.unlink()
    document = json.loads((old / "settings.json").read_text())
    del document["prediction_hash"]
    document["version"] = 1
    (old / "settings.json").write_text(json.dumps(document))
    results = open_results(old)
    assert results.predicted_count == 0 and all("random" in r.metrics for r in results.records)
    method_rows = (old / "results" / "rank-000.jsonl").read_bytes()
    assert main(sweep_args(data, old, *args)) == 0
    assert f"{EPISODES} already in" in capsys.readouterr().err
    assert (old / "results" / "rank-000.jsonl").read_bytes() == method_rows  # nothing recomputed
    assert open_results(old).predicted_count == EPISODES
    assert json.loads((old / "settings.json").read_text())["version"] == 2
    # a folder of a newer format is refused with a message
    document["version"] = 99
    (old / "settings.json").write_text(json.dumps(document))
    assert main(sweep_args(data, old)) == 2
    assert "written by a newer fssgui" in capsys.readouterr().err


def test_a_cancelled_sweep_keeps_its_rows_and_resumes(swept, tmp_path):
    from fssgui.errors import Cancelled
    from fssgui.pipeline import ModelCache, ModelSpec
    from fssgui.triage.results import open_results
    from fssgui.triage.sweep import DatasetChoice, SweepRequest, run_sweep

    cache = ModelCache()
    request = SweepRequest(DatasetChoice(str(swept["data"]), "folders", episodes=str(EPISODES), seed=SEED),
                           ModelSpec(SMALL_MODEL, None, "cpu"), str(tmp_path / "sweep"))
    seen = []

    def progress(fraction, message):
        seen.append(message)

    with pytest.raises(Cancelled):
        run_sweep(request, load_model=lambda spec: cache.get(spec), progress=progress,
                  cancelled=lambda: len(seen) > 3)  # the initial call, then 3 episodes
    assert open_results(tmp_path / "sweep").predicted_count == 3
    assert "3/8 episodes ·" in seen[-1] and "episodes/s" in seen[-1] and "left" in seen[-1]
    seen.clear()
    results = run_sweep(request, load_model=lambda spec: cache.get(spec), progress=progress)
    assert results.predicted_count == EPISODES and seen[0].startswith("3/8 episodes")
    first = {r["episode"]: r["values"] for r in _jsonl(swept["sweep"] / "predictions.jsonl")}
    for record in results.records:  # the same numbers as the uninterrupted sweep
        assert record.values == pytest.approx(first[record.episode])


def test_a_sweep_gives_freed_memory_back_between_episodes_and_once_at_the_end(swept, tmp_path, monkeypatch):
    from fssgui.evaluate import runner
    from fssgui.pipeline import ModelCache, ModelSpec, models
    from fssgui.triage.sweep import DatasetChoice, SweepRequest, run_sweep

    trims = []
    monkeypatch.setattr(models, "_MALLOC_TRIM", trims.append)
    cache = ModelCache()
    dataset = DatasetChoice(str(swept["data"]), "folders", episodes=str(EPISODES), seed=SEED)
    monkeypatch.setattr(runner, "RELEASE_MEMORY_EVERY_S", 0.0)
    run_sweep(SweepRequest(dataset, ModelSpec(SMALL_MODEL, None, "cpu"), str(tmp_path / "every")),
              load_model=lambda spec: cache.get(spec))
    assert len(trims) == EPISODES + 1
    trims.clear()
    monkeypatch.setattr(runner, "RELEASE_MEMORY_EVERY_S", 3600.0)
    monkeypatch.setattr(models, "_last_release", -math.inf)
    run_sweep(SweepRequest(dataset, ModelSpec(SMALL_MODEL, None, "cpu"), str(tmp_path / "hourly")),
              load_model=lambda spec: cache.get(spec))
    assert len(trims) == 2  # after the first episode (none for an hour before), then at the end


# ------------------------------------------------------------------------------ fssgui triage
def _triage_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["triage", "--model", SMALL_MODEL, "--device", "cpu", "--data", str(data), "--layout", "folders",
            "--episodes", str(EPISODES), "--seed", str(SEED), "--worst", "3", "--method", METHOD,
            "--metrics", METRICS, "--steps", STEPS, "--region", "ground-truth", "--out", str(out), *extra]


def test_triage_report_numbers_equal_evaluate(swept, tmp_path, capsys):
    from fssgui import report as R
    from fssgui.cli import main

    evaluated = {r["episode"]: r for r in _jsonl(swept["evaluation"] / "results.jsonl")}
    predictions = {r["episode"]: r for r in _jsonl(swept["evaluation"] / "predictions.jsonl")}
    worst_ious = sorted(r["values"]["iou"] for r in predictions.values())[:3]
    reports = {}
    for name, extra in (("own", ()), ("reused", ("--results", str(swept["evaluation"])))):
        out = tmp_path / name
        evaluation_rows = (swept["evaluation"] / "results" / "rank-000.jsonl").read_bytes()
        assert main(_triage_args(swept["data"], out, *extra)) == 0
        printed = capsys.readouterr().out
        summary = json.loads((out / "summary.json").read_text())
        reports[name] = summary
        assert [e["stats"]["iou"] for e in summary["episodes"]] == pytest.approx(worst_ious)
        for entry in summary["episodes"]:
            stored = evaluated[entry["episode"]]
            assert entry["metrics"] == pytest.approx(stored["values"]), entry["episode"]
            assert entry["stats"] == pytest.approx(predictions[entry["episode"]]["values"])
            assert entry["notes"] == []  # the curves shown are the stored values (same seed, same maps)
            if entry["report"] is not None:
                shown = entry["report"]["causal"]["curves"][METHOD]
                assert {"iauc", "dauc"} == set(shown)
                assert shown["iauc"]["value"] == pytest.approx(stored["values"]["iauc-miou"], abs=1e-6)
        assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
        parser = _KeyedValues()
        parser.feed((out / "report.html").read_text())
        assert len(parser.values) > 50
        for key, text in parser.values:
            value = R.resolve_pointer(summary, key)
            if isinstance(value, float):  # shown rounded to the digits it has
                digits = len(text.split(".")[1]) if "." in text else 0
                assert math.isclose(float(text), value, abs_tol=0.51 * 10 ** -digits), key
        if name == "reused":
            assert "(0 episode(s) explained and stored by this run)" in printed
            assert (swept["evaluation"] / "results" / "rank-000.jsonl").read_bytes() == evaluation_rows
    assert [e["episode"] for e in reports["own"]["episodes"]] == [e["episode"] for e in reports["reused"]["episodes"]]
