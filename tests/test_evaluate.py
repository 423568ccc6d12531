"""`fssgui evaluate`: episode lists, dataset layouts, results store, table, and whole runs
(single process; the table equals the mean of per-episode `fssgui causal` results; a run killed
mid-way and resumed equals an uninterrupted one)."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluate_testkit import (
    EPISODES,
    HERE,
    METHODS,
    METRICS,
    REPO,
    SMALL_MODEL,
    STEPS,
    evaluate_args,
    read_results,
    reference_run,
    subprocess_env,
    table_values,
)
from fssgui.data.datasets import DatasetError
from fssgui.evaluate.distributed import shard
from fssgui.evaluate.episodes import (
    EpisodeRow,
    EpisodeSource,
    episodes_csv_text,
    episodes_digest,
    filter_fold,
    read_episode_csv,
)
from fssgui.evaluate.metrics import MetricNameError, parse_metrics
from fssgui.evaluate.store import (
    ResultsError,
    ResultWriter,
    check_settings_file,
    merge_rows,
    read_rows,
    settings_hash,
    write_settings_file,
)
from fssgui.evaluate.table import build_table, table_csv, table_markdown


# ------------------------------------------------------------------------------ metric names
def test_metric_names_map_to_causal_options():
    specs = parse_metrics(["iauc-miou", "dauc-conf", "iauc-conf@0.01", "miou-loss@0.05"], steps=75)
    assert [(s.metric, s.measure, s.steps, s.percentage) for s in specs] == [
        ("iauc", "miou", 75, None),
        ("dauc", "confidence", 75, None),
        ("iauc@p", "confidence", None, 0.01),  # the metric's default: 5 steps
        ("miou-loss@p", "miou", None, 0.05),  # 1 step + everything inserted
    ]
    assert specs[2].causal_arguments() == ["--metric", "iauc@p", "--measure", "confidence", "--percentage", "0.01"]
    assert [s.higher_is_better for s in specs] == [True, False, True, False]
    for bad in (["iauc"], ["dauc-conf@0.01"], ["miou-loss@2"], ["iauc-miou", "iauc-miou"], []):
        with pytest.raises(MetricNameError):
            parse_metrics(bad)


# ------------------------------------------------------------------------------- episode CSVs
def _write_label_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A 3-image PASCAL layout and a 2-image COCO (HSNet) layout with known label values."""
    pascal = tmp_path / "voc"
    (pascal / "JPEGImages").mkdir(parents=True)
    (pascal / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    for name, value in (("2008_000001", 6), ("2008_000002", 6), ("2008_000003", 12)):
        cv2.imwrite(str(pascal / "JPEGImages" / f"{name}.jpg"), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        label = np.zeros((20, 30), np.uint8)
        label[5:12, 4:20] = value
        label[4, 4:20] = 255
        label[15:18, 2:5] = 15  # another class (person)
        cv2.imwrite(str(pascal / "SegmentationClass" / f"{name}.png"), label)
    coco = tmp_path / "coco"
    for split in ("val2014",):
        (coco / "COCO2014" / split).mkdir(parents=True)
        (coco / "COCO2014" / "annotations" / split).mkdir(parents=True)
        for image_id in (42, 43):
            stem = f"COCO_val2014_{image_id:012d}"
            image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            cv2.imwrite(str(coco / "COCO2014" / split / f"{stem}.jpg"), image)
            label = np.zeros((16, 16), np.uint8)
            label[2:9, 3:12] = 14  # contiguous label 14 = bench = COCO category id 15
            cv2.imwrite(str(coco / "COCO2014" / "annotations" / split / f"{stem}.png"), label)
    return pascal, coco


def test_reference_csv_layouts_pascal_and_coco(tmp_path):
    pascal, coco = _write_label_dataset(tmp_path)
    csv_path = tmp_path / "val_pascal5i_N1K1.csv"
    csv_path.write_text(
        "image_ids,classes\n"
        "\"[[('2008_000001', '/SegmentationClass/2008_000001.png'), "
        "('2008_000002', '/SegmentationClass/2008_000002.png')]]\",\"[[[6], [6]]]\"\n"
    )
    rows = read_episode_csv(csv_path, "pascal5i")
    assert rows == [EpisodeRow(0, "bus", "2008_000001", ("2008_000002",))]
    loaded = EpisodeSource(pascal, "pascal5i").load(rows[0])
    label = cv2.imread(str(pascal / "SegmentationClass" / "2008_000001.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(loaded.episode.query_mask, label == 6)
    assert np.array_equal(loaded.ignore, label == 255)
    assert loaded.episode.supports[0].mask.sum() == 7 * 16  # the person pixels are background
    assert loaded.episode.query_image.shape == (20, 30, 3)
    # --no-ignore: 255 counts as background
    assert EpisodeSource(pascal, "pascal5i", use_ignore=False).load(rows[0]).ignore is None

    coco_csv = tmp_path / "val_coco20i_N1K1.csv"
    coco_csv.write_text("image_ids,classes\n\"[[42, 43]]\",\"[[[15], [15]]]\"\n")
    rows = read_episode_csv(coco_csv, "coco20i")
    assert rows == [EpisodeRow(0, "bench", "42", ("43",))]
    loaded = EpisodeSource(coco, "coco20i").load(rows[0])
    assert loaded.episode.query_mask.sum() == 7 * 9 and loaded.ignore is None
    with pytest.raises(DatasetError, match="reference CSV layout"):
        read_episode_csv(coco_csv, "folders")


def test_fssgui_csv_roundtrip_fold_filter_and_errors(tmp_path):
    pascal, _ = _write_label_dataset(tmp_path)
    rows = [EpisodeRow(0, "bus", "2008_000001", ("2008_000002",)),
            EpisodeRow(7, "dog", "2008_000003", ("2008_000003",))]
    path = tmp_path / "episodes.csv"
    path.write_text(episodes_csv_text(rows))
    assert read_episode_csv(path, "pascal5i") == rows
    assert episodes_digest(read_episode_csv(path, "pascal5i")) == episodes_digest(rows)
    # class cells may be label values; the episode column is optional
    (tmp_path / "by_value.csv").write_text("class,query,support_1\n6,2008_000001,2008_000002\n")
    assert read_episode_csv(tmp_path / "by_value.csv", "pascal5i") == rows[:1]
    source = EpisodeSource(pascal, "pascal5i")
    assert filter_fold(rows, source, 1) == rows[:1]  # fold 1 holds out classes 6..10 (bus)
    assert filter_fold(rows, source, 2) == rows[1:]  # fold 2: 11..15 (dog = 12)
    assert filter_fold(rows, source, None) == rows
    (tmp_path / "bad_class.csv").write_text("class,query,support_1\nunicorn,a,b\n")
    with pytest.raises(DatasetError, match="unknown pascal5i class 'unicorn'"):
        read_episode_csv(tmp_path / "bad_class.csv", "pascal5i")
    (tmp_path / "bad_header.csv").write_text("q,s\na,b\n")
    with pytest.raises(DatasetError, match="unknown episode CSV header"):
        read_episode_csv(tmp_path / "bad_header.csv", "pascal5i")
    with pytest.raises(DatasetError, match="2008_000009.jpg: image not found"):
        source.check([EpisodeRow(0, "bus", "2008_000009", ("2008_000002",))])


def test_wrong_layouts_say_what_is_expected(tmp_path):
    pascal, coco = _write_label_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not a 'coco20i' dataset"):
        EpisodeSource(pascal, "coco20i")
    with pytest.raises(DatasetError, match="not a 'pascal5i' dataset"):
        EpisodeSource(coco, "pascal5i")
    with pytest.raises(DatasetError, match="not a 'folders' dataset"):
        EpisodeSource(pascal, "folders")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        EpisodeSource(tmp_path / "nowhere", "folders")


# ----------------------------------------------------------------------------- results store
def _row(digest, episode, method, value, error=None):
    return {"settings": digest, "episode": episode, "method": method, "values": {"iauc-miou": value},
            "error": error}


def test_results_file_survives_a_torn_write_and_refuses_other_settings(tmp_path):
    digest = settings_hash({"a": 1})
    path = tmp_path / "results" / "rank-000.jsonl"
    with ResultWriter(path) as writer:
        writer.append(_row(digest, 0, "affex", 0.5))
        writer.append(_row(digest, 1, "affex", float("nan"), error="region R: empty"))
    with open(path, "ab") as handle:
        handle.write(b'{"settings": "' + digest.encode() + b'", "episo')  # killed mid-line
    rows = read_rows(path, digest)
    assert [(r["episode"], r["values"]["iauc-miou"]) for r in rows] == [(0, 0.5), (1, None)]
    with ResultWriter(path) as writer:  # the next run cuts the torn line before appending
        writer.append(_row(digest, 2, "affex", 0.25))
    assert [r["episode"] for r in read_rows(path, digest)] == [0, 1, 2]
    with pytest.raises(ResultsError, match="other settings"):
        read_rows(path, settings_hash({"a": 2}))

    write_settings_file(tmp_path, {"steps": 75, "model": "m"}, settings_hash({"steps": 75, "model": "m"}))
    assert check_settings_file(tmp_path, {"steps": 75, "model": "m"}, settings_hash({"steps": 75, "model": "m"}))
    with pytest.raises(ResultsError, match=r"other settings \(changed: steps\)"):
        check_settings_file(tmp_path, {"steps": 4, "model": "m"}, settings_hash({"steps": 4, "model": "m"}))


def test_merge_drops_duplicates_and_reports_gaps():
    d = "h"
    first = [_row(d, 0, "a", 0.1), _row(d, 1, "a", 0.2), _row(d, 9, "a", 0.9)]  # 9: not in this run
    second = [_row(d, 1, "a", 0.2), _row(d, 0, "b", 0.3), _row(d, 1, "b", 0.4)]
    rows, duplicates = merge_rows([first, second], [0, 1], ["a", "b"])
    assert [(r["episode"], r["method"]) for r in rows] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert duplicates == 1
    with pytest.raises(ResultsError, match="1 result"):
        merge_rows([first[:1]], [0, 1], ["a"])


def test_shard_round_robin_covers_everything_once():
    items = list(range(7))
    shards = [shard(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == items


def test_table_is_nan_mean_times_100_with_diff_column():
    specs = parse_metrics(["iauc-miou", "dauc-miou"], steps=4)
    rows = [
        {"method": "m", "values": {"iauc-miou": 0.5, "dauc-miou": 0.25}, "error": None},
        {"method": "m", "values": {"iauc-miou": 0.7, "dauc-miou": None}, "error": "dauc-miou: x"},
        {"method": "n", "values": {"iauc-miou": None, "dauc-miou": None}, "error": "region R: empty"},
    ]
    table = build_table(rows, ["m", "n"], specs)
    assert [c.name for c in table.columns] == ["iauc-miou", "dauc-miou", "diff-miou"]
    assert table.value("m", "iauc-miou") == pytest.approx(60.0)
    assert table.value("m", "dauc-miou") == pytest.approx(25.0)
    assert table.value("m", "diff-miou") == pytest.approx(35.0)
    assert table.value("n", "iauc-miou") is None
    assert table.counts["m"]["dauc-miou"] == 1 and table.failed == {"m": 1, "n": 1}
    markdown = table_markdown(table)
    assert "| m | 60.00 | 25.00 | 35.00 | 2 (1 failed) |" in markdown
    assert "| n | n/a | n/a | n/a | 1 (1 failed) |" in markdown
    assert table_csv(table).splitlines()[1] == "m,60.000000,25.000000,35.000000,2,1"


# --------------------------------------------------------------- one episode, on a toy model
def _toy_setup(tmp_path):
    import torch

    from testkit import make_episode
    from fssgui.evaluate.episodes import LoadedEpisode
    from fssgui.evaluate.runner import EvaluationConfig
    from fssgui.models.registry import ModelEntry
    from test_affex_toy import TOY_SIZE, ToyMatcher

    class NoForeground(ToyMatcher):
        def predict(self, batch, **kwargs):
            prediction = super().predict(batch, **kwargs)
            prediction.logits = torch.stack([prediction.logits[:, 0] * 0 + 5, prediction.logits[:, 1] * 0 - 5], 1)
            return prediction

    episode = make_episode(shots=2)
    ignore = np.zeros(episode.query_mask.shape, bool)
    ignore[:10] = True
    config = EvaluationConfig(model="toy", data=str(tmp_path), layout="folders", episodes="1",
                              methods=["affex", "random"], metrics=parse_metrics(["iauc-miou", "dauc-conf"], steps=2),
                              out=str(tmp_path / "out"), seed=3)
    models = []
    for cls in (ToyMatcher, NoForeground):
        torch.manual_seed(0)
        model = cls().eval()
        model.entry = ModelEntry("toy", cls, TOY_SIZE, False)
        models.append(model)
    return models, LoadedEpisode(EpisodeRow(4, "disc", "q", ("a", "b")), episode, ignore), config


def test_episode_rows_errors_and_ignore_pixels(tmp_path):
    import torch

    from fssgui.evaluate.runner import evaluate_episode, explainer_seed
    from fssgui.pipeline import EpisodeRun, LoadedModel, ModelSpec

    (toy, no_foreground), loaded, config = _toy_setup(tmp_path)
    toy, no_foreground = (LoadedModel(ModelSpec("toy", None, "cpu"), m, torch.device("cpu"))
                          for m in (toy, no_foreground))
    written = []
    rows = evaluate_episode(toy, loaded, config.methods, config, "h", on_row=written.append)
    assert written == rows and [r["method"] for r in rows] == ["affex", "random"]
    for row in rows:
        assert row["error"] is None and row["episode"] == 4 and row["settings"] == "h"
        assert all(math.isfinite(v) for v in row["values"].values())
    assert rows[0]["explainer_seed"] is None and rows[1]["explainer_seed"] == explainer_seed(3, 4)
    # label-255 pixels become the causal metrics' ignore index in the ground truth
    gt, source = EpisodeRun(toy, loaded.episode, ignore=loaded.ignore).ground_truth()
    assert source == "episode ground truth" and gt.shape == (32, 32)
    assert (gt[:5] == -100).all() and (gt[6:] != -100).all() and (gt == 1).any()
    # a model that predicts no foreground: R = prediction is empty -> failed rows, no crash
    rows = evaluate_episode(no_foreground, loaded, config.methods, config, "h")
    for row in rows:
        assert row["error"].startswith("region R:") and all(math.isnan(v) for v in row["values"].values())
        assert row["prediction_iou"] == 0.0


# ------------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "evaluate")


def test_run_outputs_and_reproducible_episode_list(reference):
    out, data = reference["out"], reference["data"]
    for name in ("settings.json", "episodes.csv", "results.jsonl", "results.csv", "table.md", "table.csv",
                 "table.json"):
        assert (out / name).is_file(), name
    rows = read_episode_csv(out / "episodes.csv", "folders")
    assert len(rows) == EPISODES
    assert rows == EpisodeSource(data, "folders").generate(EPISODES, 1, 5)  # same seed, same list
    results = read_results(out)
    assert set(results) == {(e.index, m) for e in rows for m in METHODS}
    assert all(r["error"] is None for r in results.values())
    markdown = (out / "table.md").read_text()
    assert "| Method | iauc-miou ↑ | dauc-conf ↓ | Episodes |" in markdown
    assert [line.split(" | ")[0] for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:] \
        == ["| affex", "| random"]


def test_table_equals_mean_of_per_episode_causal_cli(reference, tmp_path, monkeypatch):
    """Every cell = 100 x the mean over episodes of `fssgui causal`'s value on that episode."""
    import fssgui.pipeline.models as pipeline_models
    from fssgui.cli import main
    from fssgui.episode import save_episode

    built = {}
    real_build = pipeline_models.build_model

    def build_once(name, checkpoint=None, device="cpu", log=None, task="fss"):  # model construction memoised
        key = (name, checkpoint, str(device))
        if key not in built:
            built[key] = real_build(name, checkpoint, device=device, log=log, task=task)
        return built[key]

    monkeypatch.setattr(pipeline_models, "build_model", build_once)
    out, data = reference["out"], reference["data"]
    source = EpisodeSource(data, "folders")
    results = read_results(out)
    specs = parse_metrics(list(METRICS), steps=STEPS)
    per_cell = {(m, s.name): [] for m in METHODS for s in specs}
    for row in read_episode_csv(out / "episodes.csv", "folders"):
        folder = tmp_path / f"episode_{row.index}"
        save_episode(source.load(row).episode, folder)
        for method in METHODS:
            stored = results[(row.index, method)]
            seed = ["--seed", str(stored["explainer_seed"])] if stored["explainer_seed"] is not None else []
            for spec in specs:
                target = tmp_path / f"causal_{row.index}_{method}_{spec.name}"
                argv = ["causal", str(folder), "--model", SMALL_MODEL, "--device", "cpu", "--method", method,
                        *seed, *spec.causal_arguments(), "--out", str(target)]
                assert main(argv) == 0
                value = json.loads((target / "summary.json").read_text())["value"]
                assert stored["values"][spec.name] == pytest.approx(value, abs=1e-6), (row.index, method, spec.name)
                per_cell[(method, spec.name)].append(value)
    assert stored["explainer_seed"] is not None  # the random method really went through --seed
    table = table_values(out)
    for (method, metric), values in per_cell.items():
        assert len(values) == EPISODES
        assert table[method][metric] == pytest.approx(100 * sum(values) / len(values), abs=1e-4)


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_resume_after_kill_equals_uninterrupted_run(reference, tmp_path, capsys):
    from fssgui.cli import main

    out, data = tmp_path / "resumed", reference["data"]
    rank_file = out / "results" / "rank-000.jsonl"
    process = subprocess.Popen([sys.executable, str(HERE / "evaluate_testkit.py"), *evaluate_args(data, out)],
                               cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while _count_lines(rank_file) < 1:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no result written in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    written = _count_lines(rank_file)
    total = EPISODES * len(METHODS)
    assert 1 <= written < total, "the run was killed after it finished: nothing left to resume"
    with open(rank_file, "ab") as handle:  # as if the kill had torn a line
        handle.write(b'{"episode": 2, "meth')
    assert not (out / "table.md").exists()

    assert main(evaluate_args(data, out)) == 0
    log = capsys.readouterr().err
    assert f"{written} already in" in log
    resumed, single = read_results(out), read_results(reference["out"])
    assert set(resumed) == set(single)
    for key, row in single.items():
        assert resumed[key]["values"] == pytest.approx(row["values"], abs=1e-6), key
    assert len(read_rows(rank_file, json.loads((out / "settings.json").read_text())["hash"])) == total
    resumed_table, single_table = table_values(out), table_values(reference["out"])
    assert set(resumed_table) == set(single_table) == set(METHODS)
    for method in METHODS:
        assert resumed_table[method] == pytest.approx(single_table[method], abs=1e-4)
    assert (out / "table.md").read_text() == (reference["out"] / "table.md").read_text()

    # the same folder with other settings is refused, naming what changed
    assert main(evaluate_args(data, out)[:-2] + ["--steps", "3", "--out", str(out)]) == 2
    assert "other settings (changed: metrics)" in capsys.readouterr().err
    assert not math.isnan(table_values(out)["affex"]["iauc-miou"])


def test_unreadable_episode_is_recorded_and_the_run_finishes(reference, tmp_path, capsys):
    import shutil

    from fssgui.cli import main

    data = tmp_path / "data"
    shutil.copytree(reference["data"], data)
    row = EpisodeSource(data, "folders").generate(1, 1, 5)[0]
    image, _ = EpisodeSource(data, "folders").paths(row.class_name, row.query)
    image.write_bytes(b"not an image")
    out = tmp_path / "out"
    args = evaluate_args(data, out)
    args[args.index("--episodes") + 1] = "1"
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "not a readable image" in captured.err  # the one image reader's words
    (row_result,) = [r for r in read_results(out).values() if r["method"] == "affex"]
    assert row_result["error"].startswith("episode data:") and row_result["values"]["iauc-miou"] is None
    assert "| affex | n/a | n/a | 1 (1 failed) |" in (out / "table.md").read_text()
