"""The dataset panel in the window (pytest-qt): open a small dataset of real photo crops, sweep it
with the built-in model, sort by IoU, filter, open the worst episode in the workspace (its
supports, masks and ground truth are the dataset's; R on its largest false negative), explain it,
save it as an episode folder; `fssgui --dataset` and a results folder of `fssgui evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from evaluate_testkit import SMALL_MODEL, register_small_model
from fssgui.episode import load_episode
from fssgui.evaluate.episodes import EpisodeSource
from fssgui.pipeline import BRUSHED, FALSE_NEGATIVE, EpisodeRun, ModelSpec, load_model
from fssgui.triage.sweep import DatasetChoice
from triage_testkit import EPISODES, SEED, make_voc_dataset, sweep_args

SWEEP_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_voc_dataset(tmp_path_factory.mktemp("triage_panel") / "data")


@pytest.fixture
def window(make_window):
    register_small_model()
    return make_window(model=SMALL_MODEL, explainer="affex-signed")


def _run(qtbot, panel, start, timeout=SWEEP_TIMEOUT_MS):
    with qtbot.waitSignal(panel.jobEnded, timeout=timeout) as blocker:
        assert start() is not None
    kind, ok, message = blocker.args
    assert ok, f"{kind}: {message}"
    return message


def test_sweep_sort_open_the_worst_episode_and_explain_it(qtbot, window, data, tmp_path):
    window.open_dataset_dialog(str(data), "folders")
    panel = window.triage_panel
    assert window.triage_dock.isVisible()
    panel.open_dataset(DatasetChoice(str(data), "folders", episodes=str(EPISODES), seed=SEED))
    qtbot.waitUntil(lambda: "Nothing swept yet" in panel.summary_label.text())
    messages = []
    window.device_worker.jobSubmitted.connect(
        lambda handle: handle.progress.connect(lambda _fraction, text: messages.append(text)))
    _run(qtbot, panel, panel.sweep)
    results = panel.results
    assert results.predicted_count == EPISODES and panel.model.rowCount() == EPISODES
    assert any("episodes/s" in m and "left" in m for m in messages), messages
    assert "mIoU" in panel.summary_label.text()

    panel.sort_by("iou")
    shown = panel.visible_records()
    ious = [r.value("iou") for r in shown]
    assert ious == sorted(ious)
    worst = shown[0]
    # the pictures of the visible rows are drawn lazily, then shown
    iou_column = panel.model.column_index("stat", "iou")
    assert panel.proxy.index(0, iou_column).data() == f"{worst.value('iou'):.3f}"
    qtbot.waitUntil(lambda: all(panel.proxy.index(0, c).data(Qt.ItemDataRole.DecorationRole) is not None
                                for c in range(3)), timeout=30000)
    # filters: a class, empty predictions, an IoU range
    panel.class_combo.setCurrentIndex(panel.class_combo.findData(worst.class_name))
    assert {r.class_name for r in panel.visible_records()} == {worst.class_name}
    panel.class_combo.setCurrentIndex(0)
    panel.empty_check.setChecked(True)
    assert all(r.value("predicted_share") == 0 for r in panel.visible_records())
    panel.empty_check.setChecked(False)
    panel.iou_min.setValue(0.5)
    assert all(r.value("iou") >= 0.5 for r in panel.visible_records())
    panel.iou_min.setValue(0.0)
    assert len(panel.visible_records()) == EPISODES

    # the worst episode opens in the workspace with R on its largest false negative
    panel.select_episode(worst.episode)
    assert panel.selected_record().episode == worst.episode
    assert panel.error_combo.currentData() == FALSE_NEGATIVE
    _run(qtbot, panel, panel.open_selected)
    loaded = EpisodeSource(data, "folders").load(worst.row)
    assert np.array_equal(window.query.image, loaded.episode.query_image)
    assert np.array_equal(window.query.truth, loaded.episode.query_mask)
    supports = window.support_panel.supports()
    assert len(supports) == len(loaded.episode.supports) == 1
    for shown_support, dataset_support in zip(supports, loaded.episode.supports):
        assert np.array_equal(shown_support.image, dataset_support.image)
        assert np.array_equal(shown_support.mask, dataset_support.mask)
    model = load_model(ModelSpec(SMALL_MODEL, None, "cpu"))
    expected = EpisodeRun(model, loaded.episode, ignore=loaded.ignore).region(FALSE_NEGATIVE).image
    assert window.query.region_source == BRUSHED and np.array_equal(window.query.region.as_bool(), expected)
    assert "largest false negative" in window.query.region_note

    with qtbot.waitSignal(window.runs.resultShown, timeout=SWEEP_TIMEOUT_MS) as blocker:
        assert window.runs.explain() is not None
    result = blocker.args[0]
    assert result.method == "affex-signed" and result.region_source == BRUSHED
    assert np.array_equal(result.region, expected) and len(result.maps) == 1

    _run(qtbot, panel, lambda: panel.save_selected(tmp_path / "saved"))
    saved = load_episode(tmp_path / "saved")
    assert np.array_equal(saved.query_image, loaded.episode.query_image)
    assert np.array_equal(saved.region, expected) and np.array_equal(saved.query_mask, loaded.episode.query_mask)
    assert f"Episode {worst.episode}" in saved.notes

    # the 2 worst explained into one report, from the panel (the same batch as fssgui triage)
    message = _run(qtbot, panel, lambda: panel.explain_worst(tmp_path / "report", count=2))
    assert "report.html" in message and (tmp_path / "report" / "report.pdf").is_file()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [e["episode"] for e in summary["episodes"]] == [r.episode for r in shown[:2]]
    assert summary["ranking"]["region"] == "ground-truth"
    qtbot.waitUntil(lambda: panel.results.methods == ["affex-signed"])  # the panel shows the new rows

    # the sweep with per-episode IAUC/DAUC of the method: the other episodes join the same results
    panel.metrics_check.setChecked(True)
    _run(qtbot, panel, panel.sweep)
    assert all(set(r.metrics["affex-signed"]) == {"iauc-miou", "dauc-miou"} for r in panel.results.records)
    assert (panel.folder / "table.md").is_file()  # every episode has its metrics now: evaluate's table

    # reopening the dataset shows what was computed, without sweeping again
    panel.show_results(None)
    panel.open_dataset(DatasetChoice(str(data), "folders", episodes=str(EPISODES), seed=SEED))
    qtbot.waitUntil(lambda: panel.results is not None and panel.results.predicted_count == EPISODES)
    assert panel.results.methods == ["affex-signed"]


def test_command_line_flags_and_an_evaluate_folder_open_in_the_panel(qtbot, window, data, tmp_path):
    from fssgui.cli import build_parser, main

    args = build_parser().parse_args(["--dataset", str(data), "--layout", "folders"])
    assert (args.dataset, args.dataset_layout, args.command) == (str(data), "folders", None)
    out = tmp_path / "evaluation"
    assert main(sweep_args(data, out, "--methods", "random", "--metrics", "iauc-conf", "--steps", "2")) == 0
    panel = window.triage_panel
    with qtbot.waitSignal(panel.resultsShown, timeout=30000):
        assert panel.open_results_folder(out)
    assert panel.results.predicted_count == EPISODES and panel.results.methods == ["random"]
    assert panel.form.episodes_edit.text() == str(out / "episodes.csv")
    assert "from the results folder" in panel.model_label.text()
    column = panel.model.column_index("metric", "random/iauc-conf")
    error = panel.model.column_index("error")
    failed = 0
    for row in range(EPISODES):
        value, why = (panel.proxy.index(row, c).data(Qt.ItemDataRole.DisplayRole) for c in (column, error))
        if why:  # R = prediction is empty: evaluate's row says so, the table shows it
            assert "region R" in why and value == ""
            failed += 1
        else:
            assert float(value) >= 0
    assert failed == sum(1 for r in panel.results.records if r.metric_errors)


def test_thousands_of_rows_draw_only_the_visible_pictures(qtbot):
    """5000 episodes: sorting and filtering run on the raw values, and the view asks for the
    pictures of the rows on screen only (the thumbnail cache draws nothing else)."""
    from PySide6.QtWidgets import QTableView

    from fssgui.evaluate.episodes import EpisodeRow
    from fssgui.evaluate.predictions import ClassSummary
    from fssgui.gui.triage.table_model import FailureFilter, FailureTableModel
    from fssgui.gui.triage.thumbnails import ThumbnailCache
    from fssgui.triage.results import FailureRecord, TriageResults

    rng = np.random.default_rng(0)
    records = [FailureRecord(EpisodeRow(i, f"class{i % 7}", f"q{i}", (f"s{i}",)),
                             values={"iou": float(rng.random()), "predicted_share": float(i % 5 == 0) * 0.1},
                             predicted=True) for i in range(5000)]
    results = TriageResults(Path("."), {}, {}, records, ClassSummary([], {}, {}, None, None), [], [])
    asked = []

    class CountingCache(ThumbnailCache):
        def pixmap(self, record, kind):
            asked.append(record.episode)
            return None

    cache = CountingCache()
    model = FailureTableModel(cache)
    proxy = FailureFilter()
    proxy.setSourceModel(model)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.setSortingEnabled(True)
    view.verticalHeader().setDefaultSectionSize(50)
    view.resize(900, 400)
    view.show()
    model.set_results(results)
    view.sortByColumn(model.column_index("stat", "iou"), Qt.SortOrder.AscendingOrder)
    qtbot.waitExposed(view)
    qtbot.wait(50)
    ious = [proxy.index(row, model.column_index("stat", "iou")).data(Qt.ItemDataRole.UserRole + 1)
            for row in range(proxy.rowCount())]
    assert len(ious) == 5000 and ious == sorted(ious)
    assert 0 < len(set(asked)) <= 20, len(set(asked))  # the rows on screen, not 5000
    assert proxy.index(0, model.column_index("episode")).data() == str(min(records, key=lambda r: r.value("iou")).episode)
    proxy.set_filters(class_name="class3", empty_only=True)
    assert proxy.rowCount() == sum(1 for r in records if r.class_name == "class3" and r.empty_prediction)
    cache.shutdown()
