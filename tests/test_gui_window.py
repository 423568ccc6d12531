"""The main window end to end with the tiny model: explain, regions, stale results, errors,
autosave/restore, save, drops, shortcuts, status bar, and the --screenshot path."""
import argparse
import os

import cv2
import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QKeySequence

from fssgui.episode import load_episode
from fssgui.gui.runs import PRELOAD_DELAY_MS
from fssgui.pipeline import BRUSHED, GROUND_TRUTH, PREDICTION
from fssgui.settings import Autosave, Settings
from gui_testkit import drag
from testkit import TINY_MODEL, make_episode, register_tiny_model, write_episode


def _select_explainer(window, name):
    index = window.model_bar.explainer_combo.findData(name)
    assert index >= 0, name
    window.model_bar.explainer_combo.setCurrentIndex(index)


def _explain(qtbot, window, timeout=30000):
    with qtbot.waitSignal(window.runs.resultShown, timeout=timeout) as blocker:
        assert window.runs.explain() is not None
    return blocker.args[0]


def test_explain_brushed_region_shows_one_map_per_support(qtbot, window):
    window.set_episode(make_episode(shots=3, size=(48, 64)))
    window.query.set_region_source(BRUSHED)
    with qtbot.waitSignal(window.query.canvas.strokeFinished):
        drag(window.query.canvas, [(25, 20), (35, 25)])
    assert window.query.region_source == BRUSHED and window.query.region.count() > 0
    result = _explain(qtbot, window)
    assert result.region_source == BRUSHED
    assert np.array_equal(result.region, window.query.region.as_bool())
    tiles = window.analysis.heatmap_view.grid.tiles
    assert len(tiles) == 3 and all(t.canvas.has_layer("heat") for t in tiles)
    assert "R = <b>brushed</b>" in window.analysis.heatmap_view.title.text()
    assert len(window.analysis.compare_view.history) == 1
    assert "no per-level maps" in window.analysis.level_view.info.text()
    assert window.query.prediction is not None  # the explain job predicts too
    assert window.query.canvas.has_layer("prediction")


def test_signed_affex_with_region_prediction(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _select_explainer(window, "affex-signed")  # the real explainer registry
    assert window.query.region_source == PREDICTION  # the default for an episode without R
    result = _explain(qtbot, window)
    assert result.signed and result.level_weights is not None and len(result.level_weights) == 2
    assert np.array_equal(window.query.region.as_bool(), result.prediction.mask)
    assert "R = prediction" in window.query.canvas._title
    scale = window.analysis.heatmap_view.scale
    assert scale.signed and scale.colormap == "diverging"
    center = result.params["zero_level"]
    assert scale.vmax - center == pytest.approx(center - scale.vmin)  # symmetric around AffEx's zero
    assert window.analysis.level_view.bars is not None
    assert window.analysis.level_view.shot.count() == 2
    # another variant of the same R takes this one's level maps and weights (the worker's loaded model
    # keeps them), and says so
    _select_explainer(window, "affex-masked")
    masked = _explain(qtbot, window)
    assert masked.levels_from == "affex-signed" and not masked.signed
    np.testing.assert_array_equal(masked.level_weights, result.level_weights)
    assert "(levels of affex-signed)" in window.analysis.heatmap_view.title.text()


def test_ground_truth_region_and_missing_truth(qtbot, window):
    episode = make_episode(shots=2, size=(48, 64))
    window.set_episode(episode)
    window.query.set_region_source(GROUND_TRUTH)
    assert np.array_equal(window.query.region.as_bool(), episode.query_mask)
    window.set_episode(make_episode(with_truth=False, shots=2, size=(48, 64)))
    errors = []
    window.log_pane.errorReported.connect(errors.append)
    window.query.set_region_source(GROUND_TRUTH)
    assert errors and "ground-truth" in errors[0]
    assert window.query.region_source == PREDICTION


def test_result_of_inputs_edited_during_the_run_is_marked_stale(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _select_explainer(window, "test-slow")
    with qtbot.waitSignal(window.runs.resultShown, timeout=30000):
        window.runs.explain()
        qtbot.waitUntil(lambda: window.device_worker.is_busy and window.status.progress_bar.isVisible(), timeout=10000)
        window.support_panel.items[0].mask.stroke([(5, 5)], size=3)
        window.support_panel.mask_changed(0)
    assert "edited while this was computed" in window.analysis.heatmap_view.title.text()


def test_a_second_request_supersedes_the_first(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _select_explainer(window, "test-slow")
    shown = []
    window.runs.resultShown.connect(shown.append)
    first = window.runs.explain()
    window.query.region_source = BRUSHED
    window.query.region.stroke([(30, 20)], size=9)
    second = window.runs.explain()
    assert first != second
    qtbot.waitUntil(lambda: not window.device_worker.is_busy and bool(shown), timeout=30000)
    qtbot.wait(50)
    assert len(shown) == 1 and shown[0].region_source == BRUSHED


def test_cancel_keeps_the_previous_result(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    first = _explain(qtbot, window)
    _select_explainer(window, "test-slow")
    window.runs.explain()
    qtbot.waitUntil(lambda: window.device_worker.is_busy, timeout=5000)
    window.actions["cancel"].trigger()
    qtbot.waitUntil(lambda: not window.device_worker.is_busy, timeout=10000)
    assert window.analysis.heatmap_view.result is first
    assert "cancelled" in window.log_pane.text()
    again = _explain(qtbot, window)  # the same job again runs normally to its end
    assert again is not first and again.method == "test-slow"
    assert window.analysis.heatmap_view.result is again


def test_job_errors_are_shown_and_the_window_keeps_working(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _select_explainer(window, "test-fail")
    with qtbot.waitSignal(window.log_pane.errorReported, timeout=30000) as blocker:
        window.runs.explain()
    assert "deliberate failure" in blocker.args[0]
    assert "deliberate failure" in window.log_pane.text()
    assert "Error" in window.statusBar().currentMessage()
    _select_explainer(window, "test-oom")
    with qtbot.waitSignal(window.log_pane.errorReported, timeout=30000) as blocker:
        window.runs.explain()
    assert "GPU memory ran out" in blocker.args[0]
    _select_explainer(window, "test-mask")
    assert _explain(qtbot, window).method == "test-mask"


def test_refuses_to_run_with_an_empty_support_mask_or_region(qtbot, window):
    window.set_episode(make_episode(shots=1, size=(48, 64)))
    window.support_panel.add(np.zeros((30, 30, 3), np.uint8))
    assert window.runs.explain() is None
    assert "support 2" in window.errors[-1] and "empty" in window.errors[-1]
    window.support_panel.remove(1)
    window.query.set_region_source(BRUSHED)
    window.query.region.clear()
    assert window.runs.explain() is None
    assert "region R is empty" in window.errors[-1]


def test_same_inputs_reuse_the_cached_explanation(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    first = _explain(qtbot, window)
    with qtbot.waitSignal(window.runs.resultShown, timeout=2000) as blocker:
        assert window.runs.explain() is None  # nothing submitted
    assert blocker.args[0] is first


def test_undo_redo_act_on_the_last_edited_canvas(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    drag(window.query.canvas, [(10, 10), (20, 12)])
    painted = window.query.region.data.copy()
    assert painted.any()
    window.actions["undo"].trigger()
    assert window.query.region.count() == 0
    window.actions["redo"].trigger()
    assert window.query.region.data.tobytes() == painted.tobytes()
    support_canvas = window.support_panel.canvas
    before = window.support_panel.items[0].mask.data.copy()
    drag(support_canvas, [(5, 40), (15, 40)])
    assert window.support_panel.items[0].mask.data.tobytes() != before.tobytes()
    window.actions["undo"].trigger()
    assert window.support_panel.items[0].mask.data.tobytes() == before.tobytes()


def test_autosave_after_edits_and_restore_on_next_start(qtbot, make_window):
    first = make_window()
    first.set_episode(make_episode(shots=2, size=(48, 64)))
    first.support_panel.select(1)
    drag(first.support_panel.canvas, [(2, 2), (20, 4)])
    drag(first.query.canvas, [(30, 30), (33, 30)])
    edited_mask = first.support_panel.items[1].mask.as_bool()
    edited_region = first.query.region.as_bool()
    qtbot.waitUntil(lambda: first.episode_io.autosave.restorable() is not None, timeout=5000)
    first.episode_io.flush_autosave()
    first._shut_down = True  # simulate a crash: no clean exit
    first.device_worker.shutdown()
    first.episode_io.autosave.release()  # what the end of a crashed process does to its autosave lock
    second = make_window()
    try:
        assert second.episode_io.restore_if_any()
        assert np.array_equal(second.support_panel.items[1].mask.as_bool(), edited_mask)
        assert np.array_equal(second.query.region.as_bool(), edited_region)
        assert second.edits.dirty
    finally:
        second.shutdown()
    # a clean exit with unsaved edits keeps them for the next start
    assert second.episode_io.autosave.restorable() is not None


def _crash(window) -> None:
    """Write the pending autosave, then stop like a crash would (no clean exit)."""
    window.episode_io.flush_autosave()
    window._shut_down = True
    window.device_worker.shutdown()
    window.episode_io.autosave.release()  # the system drops a dead process's locks


def test_undo_history_is_autosaved_and_ctrl_z_works_after_a_crash_restore(qtbot, make_window):
    first = make_window()
    first.set_episode(make_episode(shots=2, size=(48, 64)))
    drag(first.query.canvas, [(30, 30), (36, 31)])
    region_states = [np.zeros_like(first.query.region.data), first.query.region.data.copy()]
    first.support_panel.select(1)
    support = first.support_panel.items[1].mask
    states = [support.data.copy()]
    for points, button in (([(2, 2), (20, 4)], Qt.MouseButton.LeftButton),
                           ([(5, 30), (40, 34)], Qt.MouseButton.LeftButton),
                           ([(14, 14), (26, 20)], Qt.MouseButton.RightButton),  # right drag erases
                           ([(50, 5), (60, 40)], Qt.MouseButton.LeftButton)):
        drag(first.support_panel.canvas, points, button)
        states.append(support.data.copy())
    assert len({s.tobytes() for s in states}) == len(states)
    first.actions["undo"].trigger()  # one redo step pending at the crash
    assert support.data.tobytes() == states[-2].tobytes()
    qtbot.waitUntil(lambda: first.episode_io.autosave.restorable() is not None, timeout=5000)
    _crash(first)
    assert (first.episode_io.autosave.folder / Autosave.HISTORY_FILE).is_file()

    second = make_window()
    try:
        assert second.episode_io.restore_if_any()
        restored = second.support_panel.items[1].mask
        assert restored.data.tobytes() == states[-2].tobytes()
        # Ctrl+Z acts on the mask edited last before the crash, and walks back stroke by stroke
        assert second.actions["undo"].shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
        assert second.support_panel.current_index() == 1 and second.edit_tools.active_canvas() is second.support_panel.canvas
        for state in reversed(states[:-2]):
            second.actions["undo"].trigger()
            assert restored.data.tobytes() == state.tobytes()
        assert not restored.can_undo
        for state in states[1:]:  # redo goes forward again, including the step undone before the crash
            second.actions["redo"].trigger()
            assert restored.data.tobytes() == state.tobytes()
        assert not restored.can_redo
        # the region's own history came back too
        second.edit_tools.last_canvas = second.query.canvas
        second.actions["undo"].trigger()
        assert second.query.region.data.tobytes() == region_states[0].tobytes()
        second.actions["redo"].trigger()
        assert second.query.region.data.tobytes() == region_states[1].tobytes()
        # the untouched support has nothing to undo
        assert not second.support_panel.items[0].mask.can_undo
        # undo steps taken after the restore are autosaved in their turn
        second.actions["undo"].trigger()
        qtbot.waitUntil(lambda: not second.episode_io.timer.isActive(), timeout=5000)
        _crash(second)
        third = make_window()
        try:
            assert third.episode_io.restore_if_any()
            assert third.query.region.count() == 0 and third.query.region.can_redo
            third.edit_tools.last_canvas = third.query.canvas
            third.actions["redo"].trigger()
            assert third.query.region.data.tobytes() == region_states[1].tobytes()
        finally:
            third.shutdown()
    finally:
        second.shutdown()


def test_a_damaged_undo_history_does_not_block_the_restore(qtbot, make_window):
    first = make_window()
    first.set_episode(make_episode(shots=1, size=(48, 64)))
    drag(first.support_panel.canvas, [(2, 2), (20, 4)])
    edited = first.support_panel.items[0].mask.data.copy()
    qtbot.waitUntil(lambda: first.episode_io.autosave.restorable() is not None, timeout=5000)
    _crash(first)
    (first.episode_io.autosave.folder / Autosave.HISTORY_FILE).write_bytes(b"PK\x03\x04 truncated")
    second = make_window()
    try:
        assert second.episode_io.restore_if_any()
        mask = second.support_panel.items[0].mask
        assert mask.data.tobytes() == edited.tobytes()
        assert not mask.can_undo
        assert "undo history not restored" in second.log_pane.text()
        assert not second.errors  # a lost history is worth a log line, not an error
    finally:
        second.shutdown()


def test_save_episode_roundtrip_clears_dirty(qtbot, window, tmp_path):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    window.support_panel.items[0].mask.stroke([(1, 1)], size=3)
    window.support_panel.mask_changed(0)
    assert window.edits.dirty and window.windowTitle().endswith("*")
    with qtbot.waitSignal(window.episode_io.saved, timeout=10000):
        assert window.episode_io.save_to(tmp_path / "saved")
    loaded = load_episode(tmp_path / "saved")
    assert np.array_equal(loaded.supports[0].mask, window.support_panel.items[0].mask.as_bool())
    assert not window.edits.dirty and not window.windowTitle().endswith("*")
    assert str((tmp_path / "saved").resolve()) in window.settings.recent_episodes[0]


def test_episode_notes_are_shown_edited_autosaved_and_saved(qtbot, window, tmp_path, home):
    import shutil

    from fssgui.resources import demo_dir

    folder = tmp_path / "person"
    shutil.copytree(demo_dir() / "person", folder)
    (folder / "my_results.csv").write_text("kept\n")
    original = (folder / "NOTES.md").read_text(encoding="utf-8")
    assert window.episode_io.open(folder, wait=True)
    assert window.episode_notes == original
    assert "episode notes: person (1-shot)" in window.log_pane.text()
    window.edit_notes()
    assert window.notes_dialog.editor.toPlainText() == original
    window.notes_dialog.accept()  # OK without a change is not an edit
    assert not window.edits.dirty
    window.edit_notes()
    window.notes_dialog.editor.setPlainText(original + "\nChecked the helmet again.\n")
    window.notes_dialog.accept()
    assert window.edits.dirty and window.windowTitle().endswith("*")
    # the autosave snapshot carries the notes, so a crash restore keeps them
    qtbot.waitUntil(lambda: window.episode_io.autosave.restorable() is not None, timeout=5000)
    window.episode_io.flush_autosave()
    assert window.episode_io.autosave.read().notes.endswith("Checked the helmet again.\n")
    with qtbot.waitSignal(window.episode_io.saved, timeout=10000):
        assert window.episode_io.save()
    assert not window.edits.dirty
    assert (folder / "NOTES.md").read_text(encoding="utf-8") == original + "\nChecked the helmet again.\n"
    assert load_episode(folder).notes == window.episode_notes
    assert (folder / "my_results.csv").read_text() == "kept\n"  # the user's own file survives the save
    window.edit_notes()
    window.notes_dialog.editor.setPlainText("")
    window.notes_dialog.accept()
    with qtbot.waitSignal(window.episode_io.saved, timeout=10000):
        assert window.episode_io.save()
    assert not (folder / "NOTES.md").exists() and load_episode(folder).notes == ""


def test_dropped_files_become_supports_masks_checkpoints_and_episodes(qtbot, window, tmp_path):
    window.set_episode(make_episode(shots=1, size=(48, 64)))
    image = np.full((24, 32, 3), 120, np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:15, 5:20] = 255
    cv2.imwrite(str(tmp_path / "cat.jpg"), image)
    cv2.imwrite(str(tmp_path / "cat_mask.png"), mask)
    cv2.imwrite(str(tmp_path / "dog.png"), image)
    (tmp_path / "weights.pth").write_bytes(b"not really")
    assert window.file_drops.handle_paths([tmp_path / "cat.jpg", tmp_path / "cat_mask.png", tmp_path / "dog.png",
                                           tmp_path / "weights.pth"]).wait(10000)
    items = window.support_panel.items
    assert len(items) == 3
    assert np.array_equal(items[1].mask.as_bool(), mask > 0)
    assert items[2].mask.count() == 0  # no mask: brush it
    assert window.model_bar.checkpoint_combo.currentData() == str((tmp_path / "weights.pth").resolve())
    other = np.zeros((24, 32), np.uint8)
    other[0:4, 0:4] = 255
    cv2.imwrite(str(tmp_path / "lone_mask.png"), other)
    window.support_panel.select(2)
    assert window.file_drops.handle_paths([tmp_path / "lone_mask.png"]).wait(10000)
    assert np.array_equal(window.support_panel.items[2].mask.as_bool(), other > 0)
    episode_dir = write_episode(tmp_path / "episode", shots=4, size=(48, 64))
    window.edits.dirty = False
    with qtbot.waitSignal(window.episode_io.opened, timeout=10000):
        window.file_drops.handle_paths([episode_dir])
    assert window.support_panel.count() == 4 and window.source_folder == episode_dir


def test_reorder_and_remove_supports(qtbot, window):
    episode = make_episode(shots=3, size=(48, 64))
    window.set_episode(episode)
    window.support_panel.select(0)
    window.support_panel.move(0, +1)
    assert np.array_equal(window.support_panel.items[1].image, episode.supports[0].image)
    assert window.support_panel.current_index() == 1
    window.support_panel.remove(1)
    assert [s.image.tobytes() for s in window.current_episode().supports] == [
        episode.supports[1].image.tobytes(), episode.supports[2].image.tobytes()]


def test_shortcuts_and_cheat_sheet(qtbot, window):
    assert window.actions["undo"].shortcut().toString() == "Ctrl+Z"
    assert window.actions["explain"].shortcut().toString() == "Ctrl+E"
    assert window.actions["toggle_overlays"].shortcut().toString() == "H"
    window.show_shortcuts()
    text = window.shortcuts_dialog.findChild(type(window.shortcuts_dialog.children()[1])).toPlainText()
    for keys in ("Ctrl+Z", "Ctrl+Shift+Z", "[", "]", "Ctrl+Wheel", "F1"):
        assert keys in text


def test_overlay_toggle_hides_every_overlay(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _explain(qtbot, window)
    window.actions["toggle_overlays"].trigger()
    assert not window.query.canvas._mask_layer.isVisible()
    assert not window.analysis.heatmap_view.grid.tiles[0].canvas.layer("heat").isVisible()
    window.actions["toggle_overlays"].trigger()
    assert window.query.canvas._mask_layer.isVisible()


def test_status_bar_names_the_device_in_use(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    _explain(qtbot, window)
    qtbot.waitUntil(lambda: window.device_info is not None, timeout=5000)
    text = window.status.device_label.text()
    assert "Device: CPU" in text
    if not torch.cuda.is_available():
        assert "CUDA not available" in text


def test_compare_two_explanations_side_by_side(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    a = _explain(qtbot, window)
    window.support_panel.items[0].mask.stroke([(2, 2), (10, 2)], size=3)
    window.support_panel.mask_changed(0)
    b = _explain(qtbot, window)
    assert "supports v0" in a.label and "supports v1" in b.label
    compare = window.analysis.compare_view
    assert compare.combo_a.currentIndex() == 0 and compare.combo_b.currentIndex() == 1
    window.analysis.tabs.setCurrentWidget(compare)  # a hidden tab draws when it is shown
    compare.difference.setChecked(True)
    assert len(compare.tiles) == 2 * 3
    assert compare.tiles[0].canvas.has_layer("heat") and compare.tiles[2].canvas.has_layer("heat")


def test_screenshot_command_runs_the_pipeline_and_saves_the_window(qtbot, home, tmp_path, monkeypatch):
    import fssgui.models.registry as registry
    from fssgui.gui.app import run_gui

    register_tiny_model()
    monkeypatch.setattr(registry, "DEFAULT_MODEL", TINY_MODEL)
    episode_dir = write_episode(tmp_path / "demo_like", shots=2, size=(48, 64))
    shot = tmp_path / "shot.png"
    args = argparse.Namespace(demo=False, screenshot=str(shot), episode=str(episode_dir), debug=False)
    assert run_gui(args) == 0
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 1600 and image.shape[0] >= 1000
    assert not (home / "data" / "autosave").exists()  # a screenshot run leaves the user's data alone


def test_settings_roundtrip_and_close_stops_the_worker(qtbot, make_window, home):
    window = make_window()
    window.edit_tools.brush_spin.setValue(37)
    window.analysis.display_controls.colormap.setCurrentText("viridis")
    window.settings.add_recent_episode(home / "some_episode")
    window.close()  # unattended: no dialog; stores settings, stops the worker thread
    assert window.device_worker._thread.isFinished()
    loaded = Settings.load()
    assert loaded.brush_size == 37 and loaded.colormap == "viridis" and loaded.model == TINY_MODEL
    assert loaded.recent_episodes and loaded.recent_episodes[0].endswith("some_episode")
    assert loaded.window_geometry


def test_explainer_picker_offers_what_the_model_supports(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    combo = window.model_bar.explainer_combo
    items = combo.model()

    def enabled(name):
        index = combo.findData(name)
        assert index >= 0, name
        return items.item(index).isEnabled()

    def tip(name):
        return items.item(combo.findData(name)).toolTip()

    # a matching model: AffEx and the baselines, not SimPropNet's prototype-share
    assert enabled("affex-signed") and enabled("saliency") and enabled("test-mask")
    assert not enabled("prototype-share") and "simpropnet" in tip("prototype-share")
    # SimPropNet (no matching scores): AffEx greyed out with the reason, prototype-share offered
    _select_explainer(window, "affex-signed")
    window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData("simpropnet-resnet50"))
    for name in ("affex", "affex-masked", "affex-signed"):
        assert not enabled(name) and "needs a matching model" in tip(name)
    assert enabled("prototype-share") and enabled("integrated-gradients")
    assert combo.currentData() != "affex-signed"  # moved off the unavailable choice
    assert "switched the explainer" in window.log_pane.text()
    # refused with the reason instead of failing inside the job
    combo.setCurrentIndex(combo.findData("affex"))
    assert not window.actions["explain"].isEnabled()
    assert window.runs.explain() is None and "needs a matching model" in window.errors[-1]
    window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData(TINY_MODEL))
    assert enabled("affex") and not enabled("prototype-share")


def test_episode_open_and_save_run_off_the_gui_thread(qtbot, window, tmp_path, monkeypatch):
    import threading
    import time

    import fssgui.gui.episode_io as episode_io
    from PySide6.QtCore import QTimer

    gui_thread = threading.current_thread()
    readers, writers = [], []

    def slow_load(path):  # a "large" episode: the read takes a while, off the GUI thread
        readers.append(threading.current_thread())
        time.sleep(0.6)
        return load_episode(path)

    def recording_save(episode, folder):
        writers.append(threading.current_thread())
        return real_save(episode, folder)

    real_save = episode_io.save_episode
    monkeypatch.setattr(episode_io, "load_episode", slow_load)
    monkeypatch.setattr(episode_io, "save_episode", recording_save)
    episode_dir = write_episode(tmp_path / "big", shots=3, size=(48, 64))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    started = time.monotonic()
    with qtbot.waitSignal(window.episode_io.opened, timeout=10000):
        assert window.episode_io.open(episode_dir)
        assert time.monotonic() - started < 0.3  # returned at once; the read goes on
    timer.stop()
    assert readers and readers[0] is not gui_thread
    assert len(ticks) >= 10  # the event loop kept running while the episode was read
    assert window.support_panel.count() == 3 and window.source_folder == episode_dir

    # errors go to the log pane, the current episode stays
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "episode.json").write_text("{not json", encoding="utf-8")
    with qtbot.waitSignal(window.episode_io.openFailed, timeout=10000) as failed:
        window.episode_io.open(tmp_path / "broken")
    assert "broken" in failed.args[0] and "could not open the episode" in window.log_pane.text()
    assert window.source_folder == episode_dir

    # saving: written off the GUI thread; edits made meanwhile keep the episode dirty
    window.support_panel.items[0].mask.stroke([(1, 1)], size=3)
    window.support_panel.mask_changed(0)
    with qtbot.waitSignal(window.episode_io.saved, timeout=10000):
        window.episode_io.save_to(tmp_path / "copy")
        window.support_panel.items[1].mask.stroke([(2, 2)], size=3)
        window.support_panel.mask_changed(1)
    assert writers and writers[0] is not gui_thread
    assert window.edits.dirty and window.windowTitle().endswith("*")
    # an unwritable target is reported, not raised
    (tmp_path / "file").write_text("x")
    with qtbot.waitSignal(window.episode_io.saveFailed, timeout=10000):
        window.episode_io.save_to(tmp_path / "file" / "sub")
    assert "not saved" in window.errors[-1]
    assert window.episode_io.save_to(tmp_path / "copy2", wait=True) and not window.edits.dirty


def test_demo_screenshot_runs_the_real_model_on_the_real_demo_episode(tmp_path):
    """The shipped path, end to end (~30-60 s on a CPU): `fssgui --demo --screenshot`."""
    import subprocess
    import sys

    from fssgui.episode import load_episode
    from fssgui.resources import default_demo_episode

    demo = default_demo_episode()
    episode = load_episode(demo)
    shot = tmp_path / "demo.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", FSSGUI_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "fssgui.cli", "--demo", "--screenshot", str(shot)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1600)
    shown = next(line for line in done.stdout.splitlines() if line.startswith("fssgui: shown:"))
    assert f"episode {demo.name}" in shown and f"K = {episode.shots}" in shown
    if episode.region is not None:  # the demo's own region R
        assert f"R = brushed {int(episode.region.sum())} px" in shown
    assert "prediction" in shown and "% of the query" in shown
    assert f"affex-signed maps on {episode.shots} of {episode.shots} supports" in shown
    assert not (tmp_path / "home" / "data" / "autosave").exists()


def test_theme_toggle_dark_light_and_system(qtbot, window):
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from fssgui.gui.theme import contrast_ratio, system_prefers_dark

    def palette():
        return QApplication.instance().palette()

    try:
        window.actions["theme_dark"].trigger()
        assert window.settings.theme == "dark" and window.effective_theme == "dark"
        dark = palette()
        assert dark.color(QPalette.ColorRole.Window).lightness() < 80
        for text, ground in ((QPalette.ColorRole.WindowText, QPalette.ColorRole.Window),
                             (QPalette.ColorRole.Text, QPalette.ColorRole.Base),
                             (QPalette.ColorRole.ButtonText, QPalette.ColorRole.Button)):
            assert contrast_ratio(dark.color(text), dark.color(ground)) >= 7.0  # WCAG AAA
        disabled = dark.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        assert 3.0 <= contrast_ratio(disabled, dark.color(QPalette.ColorRole.Base)) < 7.0  # dimmer, still legible
        # the window's pyqtgraph plots switched with it (queried from the plot widgets themselves)
        plots = list(window.playback_widget.plots.values()) + [window.analysis.level_view.plot]
        for plot in plots:
            background = plot.backgroundBrush().color()
            assert background.lightness() < 60
            axis = plot.getPlotItem().getAxis("left")
            assert axis.textPen().color().lightness() > 180 and contrast_ratio(axis.pen().color(), background) >= 4.5
        window.actions["theme_light"].trigger()
        for plot in plots:
            assert plot.backgroundBrush().color().lightness() == 255
            assert plot.getPlotItem().getAxis("bottom").textPen().color().lightness() < 60
        light = palette()
        assert light.color(QPalette.ColorRole.Window).lightness() > 170
        assert contrast_ratio(light.color(QPalette.ColorRole.WindowText), light.color(QPalette.ColorRole.Window)) >= 7.0
        assert window.set_theme("system") == ("dark" if system_prefers_dark() else "light")
        assert window.actions["theme_system"].isChecked() and window.settings.theme == "system"
    finally:
        window.set_theme("light")
        window.set_theme("system")


# ------------------------------------------------------------------ small faults found by trying the window
def test_brushing_a_stored_region_says_it_was_edited(qtbot, window):
    episode = make_episode(shots=1, size=(48, 64))
    episode.region = episode.query_mask.copy()
    window.set_episode(episode)
    assert "(from the episode file)" in window.query.canvas._title
    drag(window.query.canvas, [(5, 5), (12, 6)])
    title = window.query.canvas._title
    assert "(from the episode file)" not in title and "edited" in title and "R = brushed" in title


def test_brushing_r_after_predict_does_not_make_the_prediction_stale(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    with qtbot.waitSignal(window.runs.predictionShown, timeout=30000):
        assert window.runs.predict() is not None
        window.query.set_region_source(BRUSHED)
        drag(window.query.canvas, [(25, 20), (35, 25)])  # R is no input of the prediction
    assert "out of date" not in window.log_pane.text()
    # an edit of a support mask while it runs is one
    with qtbot.waitSignal(window.runs.predictionShown, timeout=30000):
        window.runs.predict()
        window.support_panel.items[0].mask.stroke([(5, 5)], size=3)
        window.support_panel.mask_changed(0)
    assert "prediction arrived after the supports or the model changed" in window.log_pane.text()


def test_the_playback_method_pickers_are_whole_and_uncovered_at_1600_px(qtbot, window):
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    window.analysis.tabs.setCurrentIndex(3)  # Insertion / deletion
    playback = window.playback_widget
    playback.add_explanation(_explain(qtbot, window), window.current_episode(), window.model_bar.model_spec())
    playback.method_combo.addItem("integrated-gradients")
    qtbot.wait(50)

    def shown_whole(widget):
        """Fully inside the window and nothing drawn over it (the colour bar once floated over Methods)."""
        assert widget.isVisible() and widget.width() >= widget.sizeHint().width()
        rect = widget.rect()
        for point in (rect.center(), rect.topLeft() + QPoint(2, 2), rect.bottomRight() - QPoint(2, 2)):
            at = window.childAt(widget.mapTo(window, point))
            assert at is widget or widget.isAncestorOf(at), (widget, at)

    for widget in (playback.methods_button, playback.measure_combo, playback.method_combo, playback.metric_combo):
        shown_whole(widget)
    assert playback.method_combo.width() > playback.method_combo.fontMetrics().horizontalAdvance("integrated-gradients")


def test_the_status_bar_progress_text_fits_its_bar(qtbot, window):
    bar = window.status.progress_bar
    message = "affex-signed IAUC step 27/31 of a very long run with a long explanation of what it does"
    window.status.set_progress(0.42, message)
    text = bar.text()
    assert text.endswith("42%") and "…" in text
    assert bar.fontMetrics().horizontalAdvance(text) <= bar.width() - 8
    assert bar.toolTip() == message
    window.status.set_progress(0.5, "short")
    assert bar.text() == "short 50%"


def test_preload_builds_the_model_before_the_first_predict(qtbot, window):
    """At launch the app loads the chosen model on the device thread; the first Predict then finds
    it built (no second "ready" line). A model that needs a checkpoint not chosen yet is left alone."""
    window.set_episode(make_episode(shots=1, size=(48, 64)))
    handle = window.runs.preload()
    assert handle is not None
    qtbot.waitUntil(lambda: not handle.running, timeout=30000)
    assert handle.result == window.model_bar.model_name() and handle.error is None
    # then a job of its own says what the built model rules out: DeepLift (the tiny matcher has no
    # nonlinearity modules), greyed, with the reason
    qtbot.waitUntil(lambda: window.model_bar.unavailable_reason("deeplift") != "", timeout=30000)
    reason = window.model_bar.unavailable_reason("deeplift")
    assert "nonlinearity modules" in reason
    combo = window.model_bar.explainer_combo
    assert not combo.model().item(combo.findData("deeplift")).isEnabled()
    assert reason in combo.model().item(combo.findData("deeplift")).toolTip()
    ready = [line for line in window.log_pane.text().splitlines() if " ready on " in line]
    assert len(ready) == 1
    with qtbot.waitSignal(window.runs.predictionShown, timeout=30000):
        window.runs.predict()
    assert len([line for line in window.log_pane.text().splitlines() if " ready on " in line]) == 1
    index = window.model_bar.model_combo.findData("dcama-resnet50")
    assert index >= 0
    window.model_bar.model_combo.setCurrentIndex(index)
    assert window.runs.preload() is None  # needs a checkpoint: nothing to load yet


def test_choosing_another_model_loads_it_shortly_after(qtbot, window):
    """A model chosen in the model bar is loaded on the device thread once the person stops
    changing it (the first Explain then finds it built); passing over a model loads nothing."""
    window.set_episode(make_episode(shots=1, size=(48, 64)))
    combo = window.model_bar.model_combo
    chosen = window.model_bar.model_name()
    passed = next(n for n in ("matcher-effnet", "matcher-lite2") if n != chosen)
    combo.setCurrentIndex(combo.findData(passed))  # passed over: away and back within the delay
    combo.setCurrentIndex(combo.findData(chosen))

    def ready(name: str) -> bool:
        return any(f"model {name} ready on " in line for line in window.log_pane.text().splitlines())

    qtbot.waitUntil(lambda: ready(chosen), timeout=60000)  # no Predict or Explain was asked for
    qtbot.wait(200)
    assert not ready(passed)
    assert window.runs.preload_job.handle is None  # the load ended


def test_a_model_chosen_while_the_window_closes_is_not_loaded(qtbot, window):
    """A preload scheduled by a model change does not reach a device worker the closing window
    has stopped (it raised in the event loop)."""
    combo = window.model_bar.model_combo
    combo.setCurrentIndex(combo.findData("matcher-effnet"))
    window.shutdown()
    window.model_bar.modelChanged.emit()
    qtbot.wait(2 * PRELOAD_DELAY_MS)
    assert window.runs.preload() is None and window.runs.preload_job.handle is None
