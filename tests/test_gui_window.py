"""The main window end to end with the tiny model: explain, regions, stale results, errors,
autosave/restore, save, drops, shortcuts, status bar, and the --screenshot path."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import argparse

import cv2
import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from fssgui.episode import load_episode
from fssgui.pipeline import BRUSHED, GROUND_TRUTH, PREDICTION
from fssgui.gui.main_window import MainWindow, parse_params
from fssgui.settings import Autosave, Settings
from gui_testkit import TEST_EXPLAINERS, TINY_MODEL, drag, make_gui_episode, register_tiny_model, write_gui_episode


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSGUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _window(qtbot, home, autosave_root=None) -> MainWindow:
    register_tiny_model()
    settings = Settings(model=TINY_MODEL, device="cpu", explainer="test-mask", autosave_seconds=0.05)
    window = MainWindow(settings, explainer_factories=TEST_EXPLAINERS,
                        autosave=Autosave(autosave_root or home / "autosave"), unattended=True)
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    return window


@pytest.fixture
def window(qtbot, home):
    w = _window(qtbot, home)
    yield w
    w.shutdown()


def _select_explainer(window, name):
    index = window.explainer_combo.findData(name)
    assert index >= 0, name
    window.explainer_combo.setCurrentIndex(index)


def _explain(qtbot, window, timeout=30000):
    with qtbot.waitSignal(window.resultShown, timeout=timeout) as blocker:
        assert window.explain() is not None
    return blocker.args[0]


def test_explain_brushed_region_shows_one_map_per_support(qtbot, window):
    window.set_episode(make_gui_episode(shots=3))
    window.set_region_source(BRUSHED)
    with qtbot.waitSignal(window.query_canvas.strokeFinished):
        drag(window.query_canvas, [(25, 20), (35, 25)])
    assert window.region_source == BRUSHED and window.region.count() > 0
    result = _explain(qtbot, window)
    assert result.region_source == BRUSHED
    assert np.array_equal(result.region, window.region.as_bool())
    tiles = window.heatmap_view.grid.tiles
    assert len(tiles) == 3 and all(t.canvas.has_layer("heat") for t in tiles)
    assert "R = <b>brushed</b>" in window.heatmap_view.title.text()
    assert len(window.compare_view.history) == 1
    assert "no per-level maps" in window.level_view.info.text()
    assert window.prediction is not None  # the explain job predicts too
    assert window.query_canvas.has_layer("prediction")


def test_signed_affex_with_region_prediction(qtbot, window):
    window.set_episode(make_gui_episode(shots=2))
    _select_explainer(window, "affex-signed")  # the real explainer registry
    assert window.region_source == PREDICTION  # the default for an episode without R
    result = _explain(qtbot, window)
    assert result.signed and result.level_weights is not None and len(result.level_weights) == 2
    assert np.array_equal(window.region.as_bool(), result.prediction.mask)
    assert "R = prediction" in window.query_canvas._title
    scale = window.heatmap_view.scale
    assert scale.signed and scale.colormap == "diverging"
    center = result.params["zero_level"]
    assert scale.vmax - center == pytest.approx(center - scale.vmin)  # symmetric around AffEx's zero
    assert window.level_view.bars is not None
    assert window.level_view.shot.count() == 2


def test_ground_truth_region_and_missing_truth(qtbot, window):
    episode = make_gui_episode()
    window.set_episode(episode)
    window.set_region_source(GROUND_TRUTH)
    assert np.array_equal(window.region.as_bool(), episode.query_mask)
    window.set_episode(make_gui_episode(with_truth=False))
    errors = []
    window.errorReported.connect(errors.append)
    window.set_region_source(GROUND_TRUTH)
    assert errors and "ground-truth" in errors[0]
    assert window.region_source == PREDICTION


def test_result_of_inputs_edited_during_the_run_is_marked_stale(qtbot, window):
    window.set_episode(make_gui_episode())
    _select_explainer(window, "test-slow")
    with qtbot.waitSignal(window.resultShown, timeout=30000):
        window.explain()
        qtbot.waitUntil(lambda: window.worker.is_busy and window.progress_bar.isVisible(), timeout=10000)
        window.support_panel.items[0].mask.stroke([(5, 5)], size=3)
        window.support_panel._on_mask_edited(0)
    assert "edited while this was computed" in window.heatmap_view.title.text()


def test_a_second_request_supersedes_the_first(qtbot, window):
    window.set_episode(make_gui_episode())
    _select_explainer(window, "test-slow")
    shown = []
    window.resultShown.connect(shown.append)
    first = window.explain()
    window.region_source = BRUSHED
    window.region.stroke([(30, 20)], size=9)
    second = window.explain()
    assert first != second
    qtbot.waitUntil(lambda: not window.worker.is_busy and bool(shown), timeout=30000)
    qtbot.wait(50)
    assert len(shown) == 1 and shown[0].region_source == BRUSHED


def test_cancel_keeps_the_previous_result(qtbot, window):
    window.set_episode(make_gui_episode())
    first = _explain(qtbot, window)
    _select_explainer(window, "test-slow")
    window.explain()
    qtbot.waitUntil(lambda: window.worker.is_busy, timeout=5000)
    window.actions["cancel"].trigger()
    qtbot.waitUntil(lambda: not window.worker.is_busy, timeout=10000)
    assert window.heatmap_view.result is first
    assert "cancelled" in window.log_view.toPlainText()


def test_job_errors_are_shown_and_the_window_keeps_working(qtbot, window):
    window.set_episode(make_gui_episode())
    _select_explainer(window, "test-fail")
    with qtbot.waitSignal(window.errorReported, timeout=30000) as blocker:
        window.explain()
    assert "deliberate failure" in blocker.args[0]
    assert "deliberate failure" in window.log_view.toPlainText()
    assert "Error" in window.statusBar().currentMessage()
    _select_explainer(window, "test-oom")
    with qtbot.waitSignal(window.errorReported, timeout=30000) as blocker:
        window.explain()
    assert "out of memory" in blocker.args[0]
    _select_explainer(window, "test-mask")
    assert _explain(qtbot, window).method == "test-mask"


def test_refuses_to_run_with_an_empty_support_mask_or_region(qtbot, window):
    window.set_episode(make_gui_episode(shots=1))
    window.support_panel.add(np.zeros((30, 30, 3), np.uint8))
    assert window.explain() is None
    assert "support 2" in window.errors[-1] and "empty" in window.errors[-1]
    window.support_panel.remove(1)
    window.set_region_source(BRUSHED)
    window.region.clear()
    assert window.explain() is None
    assert "region R is empty" in window.errors[-1]


def test_same_inputs_reuse_the_cached_explanation(qtbot, window):
    window.set_episode(make_gui_episode())
    first = _explain(qtbot, window)
    with qtbot.waitSignal(window.resultShown, timeout=2000) as blocker:
        assert window.explain() is None  # nothing submitted
    assert blocker.args[0] is first


def test_undo_redo_act_on_the_last_edited_canvas(qtbot, window):
    window.set_episode(make_gui_episode())
    drag(window.query_canvas, [(10, 10), (20, 12)])
    painted = window.region.data.copy()
    assert painted.any()
    window.actions["undo"].trigger()
    assert window.region.count() == 0
    window.actions["redo"].trigger()
    assert window.region.data.tobytes() == painted.tobytes()
    support_canvas = window.support_panel.canvas
    before = window.support_panel.items[0].mask.data.copy()
    drag(support_canvas, [(5, 40), (15, 40)])
    assert window.support_panel.items[0].mask.data.tobytes() != before.tobytes()
    window.actions["undo"].trigger()
    assert window.support_panel.items[0].mask.data.tobytes() == before.tobytes()


def test_autosave_after_edits_and_restore_on_next_start(qtbot, home):
    first = _window(qtbot, home)
    first.set_episode(make_gui_episode(shots=2))
    first.support_panel.select(1)
    drag(first.support_panel.canvas, [(2, 2), (20, 4)])
    drag(first.query_canvas, [(30, 30), (33, 30)])
    edited_mask = first.support_panel.items[1].mask.as_bool()
    edited_region = first.region.as_bool()
    qtbot.waitUntil(lambda: first.autosave.restorable() is not None, timeout=5000)
    first.flush_autosave()
    first._shut_down = True  # simulate a crash: no clean exit
    first.worker.shutdown()
    second = _window(qtbot, home)
    try:
        assert second.restore_autosave_if_any()
        assert np.array_equal(second.support_panel.items[1].mask.as_bool(), edited_mask)
        assert np.array_equal(second.region.as_bool(), edited_region)
        assert second.dirty
    finally:
        second.shutdown()
    # a clean exit with unsaved edits keeps them for the next start
    assert second.autosave.restorable() is not None


def _crash(window) -> None:
    """Write the pending autosave, then stop like a crash would (no clean exit)."""
    window.flush_autosave()
    window._shut_down = True
    window.worker.shutdown()


def test_undo_history_is_autosaved_and_ctrl_z_works_after_a_crash_restore(qtbot, home):
    first = _window(qtbot, home)
    first.set_episode(make_gui_episode(shots=2))
    drag(first.query_canvas, [(30, 30), (36, 31)])
    region_states = [np.zeros_like(first.region.data), first.region.data.copy()]
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
    qtbot.waitUntil(lambda: first.autosave.restorable() is not None, timeout=5000)
    _crash(first)
    assert (first.autosave.folder / Autosave.HISTORY_FILE).is_file()

    second = _window(qtbot, home)
    try:
        assert second.restore_autosave_if_any()
        restored = second.support_panel.items[1].mask
        assert restored.data.tobytes() == states[-2].tobytes()
        # Ctrl+Z acts on the mask edited last before the crash, and walks back stroke by stroke
        assert second.actions["undo"].shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
        assert second.support_panel.current_index() == 1 and second._active_canvas() is second.support_panel.canvas
        for state in reversed(states[:-2]):
            second.actions["undo"].trigger()
            assert restored.data.tobytes() == state.tobytes()
        assert not restored.can_undo
        for state in states[1:]:  # redo goes forward again, including the step undone before the crash
            second.actions["redo"].trigger()
            assert restored.data.tobytes() == state.tobytes()
        assert not restored.can_redo
        # the region's own history came back too
        second._last_canvas = second.query_canvas
        second.actions["undo"].trigger()
        assert second.region.data.tobytes() == region_states[0].tobytes()
        second.actions["redo"].trigger()
        assert second.region.data.tobytes() == region_states[1].tobytes()
        # the untouched support has nothing to undo
        assert not second.support_panel.items[0].mask.can_undo
        # undo steps taken after the restore are autosaved in their turn
        second.actions["undo"].trigger()
        qtbot.waitUntil(lambda: not second._autosave_timer.isActive(), timeout=5000)
        _crash(second)
        third = _window(qtbot, home)
        try:
            assert third.restore_autosave_if_any()
            assert third.region.count() == 0 and third.region.can_redo
            third._last_canvas = third.query_canvas
            third.actions["redo"].trigger()
            assert third.region.data.tobytes() == region_states[1].tobytes()
        finally:
            third.shutdown()
    finally:
        second.shutdown()


def test_a_damaged_undo_history_does_not_block_the_restore(qtbot, home):
    first = _window(qtbot, home)
    first.set_episode(make_gui_episode(shots=1))
    drag(first.support_panel.canvas, [(2, 2), (20, 4)])
    edited = first.support_panel.items[0].mask.data.copy()
    qtbot.waitUntil(lambda: first.autosave.restorable() is not None, timeout=5000)
    _crash(first)
    (first.autosave.folder / Autosave.HISTORY_FILE).write_bytes(b"PK\x03\x04 truncated")
    second = _window(qtbot, home)
    try:
        assert second.restore_autosave_if_any()
        mask = second.support_panel.items[0].mask
        assert mask.data.tobytes() == edited.tobytes()
        assert not mask.can_undo
        assert "undo history not restored" in second.log_view.toPlainText()
        assert not second.errors  # a lost history is worth a log line, not an error
    finally:
        second.shutdown()


def test_save_episode_roundtrip_clears_dirty(qtbot, window, tmp_path):
    window.set_episode(make_gui_episode(shots=2))
    window.support_panel.items[0].mask.stroke([(1, 1)], size=3)
    window.support_panel._on_mask_edited(0)
    assert window.dirty and window.windowTitle().endswith("*")
    with qtbot.waitSignal(window.episodeSaved, timeout=10000):
        assert window._save_to(tmp_path / "saved")
    loaded = load_episode(tmp_path / "saved")
    assert np.array_equal(loaded.supports[0].mask, window.support_panel.items[0].mask.as_bool())
    assert not window.dirty and not window.windowTitle().endswith("*")
    assert str((tmp_path / "saved").resolve()) in window.settings.recent_episodes[0]


def test_episode_notes_are_shown_edited_autosaved_and_saved(qtbot, window, tmp_path, home):
    import shutil

    from fssgui.resources import demo_dir

    folder = tmp_path / "person"
    shutil.copytree(demo_dir() / "person", folder)
    (folder / "my_results.csv").write_text("kept\n")
    original = (folder / "NOTES.md").read_text(encoding="utf-8")
    assert window.open_episode(folder, wait=True)
    assert window.episode_notes == original
    assert "episode notes: person (1-shot)" in window.log_view.toPlainText()
    window.edit_notes()
    assert window.notes_editor.toPlainText() == original
    window.notes_dialog.accept()  # OK without a change is not an edit
    assert not window.dirty
    window.edit_notes()
    window.notes_editor.setPlainText(original + "\nChecked the helmet again.\n")
    window.notes_dialog.accept()
    assert window.dirty and window.windowTitle().endswith("*")
    # the autosave snapshot carries the notes, so a crash restore keeps them
    qtbot.waitUntil(lambda: window.autosave.restorable() is not None, timeout=5000)
    window.flush_autosave()
    assert window.autosave.read().notes.endswith("Checked the helmet again.\n")
    with qtbot.waitSignal(window.episodeSaved, timeout=10000):
        assert window.save_episode()
    assert not window.dirty
    assert (folder / "NOTES.md").read_text(encoding="utf-8") == original + "\nChecked the helmet again.\n"
    assert load_episode(folder).notes == window.episode_notes
    assert (folder / "my_results.csv").read_text() == "kept\n"  # the user's own file survives the save
    window.edit_notes()
    window.notes_editor.setPlainText("")
    window.notes_dialog.accept()
    with qtbot.waitSignal(window.episodeSaved, timeout=10000):
        assert window.save_episode()
    assert not (folder / "NOTES.md").exists() and load_episode(folder).notes == ""


def test_dropped_files_become_supports_masks_checkpoints_and_episodes(qtbot, window, tmp_path):
    window.set_episode(make_gui_episode(shots=1))
    image = np.full((24, 32, 3), 120, np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:15, 5:20] = 255
    cv2.imwrite(str(tmp_path / "cat.jpg"), image)
    cv2.imwrite(str(tmp_path / "cat_mask.png"), mask)
    cv2.imwrite(str(tmp_path / "dog.png"), image)
    (tmp_path / "weights.pth").write_bytes(b"not really")
    window.handle_paths([tmp_path / "cat.jpg", tmp_path / "cat_mask.png", tmp_path / "dog.png", tmp_path / "weights.pth"])
    items = window.support_panel.items
    assert len(items) == 3
    assert np.array_equal(items[1].mask.as_bool(), mask > 0)
    assert items[2].mask.count() == 0  # no mask: brush it
    assert window.checkpoint_combo.currentData() == str((tmp_path / "weights.pth").resolve())
    other = np.zeros((24, 32), np.uint8)
    other[0:4, 0:4] = 255
    cv2.imwrite(str(tmp_path / "lone_mask.png"), other)
    window.support_panel.select(2)
    window.handle_paths([tmp_path / "lone_mask.png"])
    assert np.array_equal(window.support_panel.items[2].mask.as_bool(), other > 0)
    episode_dir = write_gui_episode(tmp_path / "episode", shots=4)
    window.dirty = False
    with qtbot.waitSignal(window.episodeOpened, timeout=10000):
        window.handle_paths([episode_dir])
    assert window.support_panel.count() == 4 and window.source_folder == episode_dir


def test_reorder_and_remove_supports(qtbot, window):
    episode = make_gui_episode(shots=3)
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
    window.set_episode(make_gui_episode())
    _explain(qtbot, window)
    window.actions["toggle_overlays"].trigger()
    assert not window.query_canvas._mask_layer.isVisible()
    assert not window.heatmap_view.grid.tiles[0].canvas.layer("heat").isVisible()
    window.actions["toggle_overlays"].trigger()
    assert window.query_canvas._mask_layer.isVisible()


def test_status_bar_names_the_device_in_use(qtbot, window):
    window.set_episode(make_gui_episode())
    _explain(qtbot, window)
    qtbot.waitUntil(lambda: window.device_info is not None, timeout=5000)
    text = window.device_label.text()
    assert "Device: CPU" in text
    if not torch.cuda.is_available():
        assert "CUDA not available" in text


def test_compare_two_explanations_side_by_side(qtbot, window):
    window.set_episode(make_gui_episode(shots=2))
    a = _explain(qtbot, window)
    window.support_panel.items[0].mask.stroke([(2, 2), (10, 2)], size=3)
    window.support_panel._on_mask_edited(0)
    b = _explain(qtbot, window)
    assert "supports v0" in a.label and "supports v1" in b.label
    compare = window.compare_view
    assert compare.combo_a.currentIndex() == 0 and compare.combo_b.currentIndex() == 1
    compare.difference.setChecked(True)
    assert len(compare.tiles) == 2 * 3
    assert compare.tiles[0].canvas.has_layer("heat") and compare.tiles[2].canvas.has_layer("heat")


def test_parse_params():
    assert parse_params("size=96, mode='reference', use_softmax=False") == {
        "size": 96, "mode": "reference", "use_softmax": False}
    assert parse_params("mode=reference") == {"mode": "reference"}
    with pytest.raises(ValueError):
        parse_params("96")


def test_screenshot_command_runs_the_pipeline_and_saves_the_window(qtbot, home, tmp_path, monkeypatch):
    import fssgui.models.registry as registry
    from fssgui.gui.app import run_gui

    register_tiny_model()
    monkeypatch.setattr(registry, "DEFAULT_MODEL", TINY_MODEL)
    episode_dir = write_gui_episode(tmp_path / "demo_like", shots=2)
    shot = tmp_path / "shot.png"
    args = argparse.Namespace(demo=False, screenshot=str(shot), episode=str(episode_dir), debug=False)
    assert run_gui(args) == 0
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 1600 and image.shape[0] >= 1000
    assert not (home / "data" / "autosave").exists()  # a screenshot run leaves the user's data alone


def test_settings_roundtrip_and_close_stops_the_worker(qtbot, home):
    window = _window(qtbot, home)
    window.brush_spin.setValue(37)
    window.display_controls.colormap.setCurrentText("viridis")
    window.settings.add_recent_episode(home / "some_episode")
    window.close()  # unattended: no dialog; stores settings, stops the worker thread
    assert window.worker._thread.isFinished()
    loaded = Settings.load()
    assert loaded.brush_size == 37 and loaded.colormap == "viridis" and loaded.model == TINY_MODEL
    assert loaded.recent_episodes and loaded.recent_episodes[0].endswith("some_episode")
    assert loaded.window_geometry


def test_settings_file_with_bad_values_falls_back_to_defaults(home):
    Settings.path().parent.mkdir(parents=True, exist_ok=True)
    Settings.path().write_text('{"brush_size": "huge", "colormap": "magma", "unknown": 1}', encoding="utf-8")
    loaded = Settings.load()
    assert loaded.brush_size == Settings().brush_size and loaded.colormap == "magma"
    assert loaded.checkpoint_dir.endswith("checkpoints")


def test_explainer_picker_offers_what_the_model_supports(qtbot, window):
    window.set_episode(make_gui_episode())
    combo = window.explainer_combo
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
    window.model_combo.setCurrentIndex(window.model_combo.findData("simpropnet-resnet50"))
    for name in ("affex", "affex-masked", "affex-signed"):
        assert not enabled(name) and "needs a matching model" in tip(name)
    assert enabled("prototype-share") and enabled("integrated-gradients")
    assert combo.currentData() != "affex-signed"  # moved off the unavailable choice
    assert "switched the explainer" in window.log_view.toPlainText()
    # refused with the reason instead of failing inside the job
    combo.setCurrentIndex(combo.findData("affex"))
    assert not window.actions["explain"].isEnabled()
    assert window.explain() is None and "needs a matching model" in window.errors[-1]
    window.model_combo.setCurrentIndex(window.model_combo.findData(TINY_MODEL))
    assert enabled("affex") and not enabled("prototype-share")


def test_episode_open_and_save_run_off_the_gui_thread(qtbot, window, tmp_path, monkeypatch):
    import threading
    import time

    import fssgui.gui.main_window as main_window
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

    real_save = main_window.save_episode
    monkeypatch.setattr(main_window, "load_episode", slow_load)
    monkeypatch.setattr(main_window, "save_episode", recording_save)
    episode_dir = write_gui_episode(tmp_path / "big", shots=3)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    started = time.monotonic()
    with qtbot.waitSignal(window.episodeOpened, timeout=10000):
        assert window.open_episode(episode_dir)
        assert time.monotonic() - started < 0.3  # returned at once; the read goes on
    timer.stop()
    assert readers and readers[0] is not gui_thread
    assert len(ticks) >= 10  # the event loop kept running while the episode was read
    assert window.support_panel.count() == 3 and window.source_folder == episode_dir

    # errors go to the log pane, the current episode stays
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "episode.json").write_text("{not json", encoding="utf-8")
    with qtbot.waitSignal(window.episodeOpenFailed, timeout=10000) as failed:
        window.open_episode(tmp_path / "broken")
    assert "broken" in failed.args[0] and "could not open the episode" in window.log_view.toPlainText()
    assert window.source_folder == episode_dir

    # saving: written off the GUI thread; edits made meanwhile keep the episode dirty
    window.support_panel.items[0].mask.stroke([(1, 1)], size=3)
    window.support_panel._on_mask_edited(0)
    with qtbot.waitSignal(window.episodeSaved, timeout=10000):
        window._save_to(tmp_path / "copy")
        window.support_panel.items[1].mask.stroke([(2, 2)], size=3)
        window.support_panel._on_mask_edited(1)
    assert writers and writers[0] is not gui_thread
    assert window.dirty and window.windowTitle().endswith("*")
    # an unwritable target is reported, not raised
    (tmp_path / "file").write_text("x")
    with qtbot.waitSignal(window.episodeSaveFailed, timeout=10000):
        window._save_to(tmp_path / "file" / "sub")
    assert "not saved" in window.errors[-1]
    assert window._save_to(tmp_path / "copy2", wait=True) and not window.dirty


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
        window.theme_actions["dark"].trigger()
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
        plots = list(window.playback_widget.plots.values()) + [window.level_view.plot]
        for plot in plots:
            background = plot.backgroundBrush().color()
            assert background.lightness() < 60
            axis = plot.getPlotItem().getAxis("left")
            assert axis.textPen().color().lightness() > 180 and contrast_ratio(axis.pen().color(), background) >= 4.5
        window.theme_actions["light"].trigger()
        for plot in plots:
            assert plot.backgroundBrush().color().lightness() == 255
            assert plot.getPlotItem().getAxis("bottom").textPen().color().lightness() < 60
        light = palette()
        assert light.color(QPalette.ColorRole.Window).lightness() > 170
        assert contrast_ratio(light.color(QPalette.ColorRole.WindowText), light.color(QPalette.ColorRole.Window)) >= 7.0
        assert window.set_theme("system") == ("dark" if system_prefers_dark() else "light")
        assert window.theme_actions["system"].isChecked() and window.settings.theme == "system"
    finally:
        window.set_theme("light")
        window.set_theme("system")
