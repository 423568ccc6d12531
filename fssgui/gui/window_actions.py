"""Every action of the main window, declared once (see :mod:`.actions`): text, keys, what it does
(a call into the window's parts), its menus and toolbars, and when it is enabled."""
from __future__ import annotations

from PySide6.QtWidgets import QMenu

from ..pipeline import BRUSHED, GROUND_TRUTH, PREDICTION
from .actions import ActionSpec, MenuPlace, SubmenuSpec
from .canvas import TOOL_BRUSH, TOOL_ERASER, TOOL_PAN, TOOL_POLYGON, TOOL_RECTANGLE
from .theme import THEME_DARK, THEME_LIGHT, THEME_SYSTEM

#: mouse gestures listed in the cheat sheet (they are not actions)
MOUSE_GESTURES: tuple[tuple[str, str], ...] = (
    ("Wheel", "zoom at the cursor"),
    ("Ctrl+Wheel", "brush / eraser size"),
    ("Middle drag, Space+drag", "pan"),
    ("Left drag (brush tool)", "paint the mask being edited"),
    ("Right drag (brush tool)", "erase"),
    ("Double click", "fit the image to the view"),
    ("Left / right drag (rectangle tool)", "add / remove a rectangle"),
    ("Clicks (polygon tool)", "vertices; double click, Enter or the first vertex closes; right clicks remove"),
    ("Backspace / Esc (polygon tool)", "drop the last vertex / cancel the polygon"),
)


def _has_episode(w) -> bool:
    return w.has_episode()


def _fill_recent(w, menu: QMenu) -> None:
    for path in w.settings.recent_episodes:
        menu.addAction(path, lambda p=path: w.confirm_discard() and w.episode_io.open(p))


def _fill_demos(w, menu: QMenu) -> None:
    from ..resources import demo_episodes

    for path in demo_episodes():
        menu.addAction(path.name, lambda p=path: w.confirm_discard() and w.episode_io.open(p))


def _tool(tool: str, action_id: str, text: str, keys: str, order: int) -> ActionSpec:
    return ActionSpec(action_id, text, lambda w, on: on and w.edit_tools.set_tool(tool), keys,
                      (MenuPlace("edit", 1, order),), ("edit",), checkable=True, exclusive="tool", sheet_group="Edit")


def _theme(theme: str, text: str, order: int) -> ActionSpec:
    return ActionSpec(f"theme_{theme}", text, lambda w, on: on and w.set_theme(theme), menus=(MenuPlace("theme", 0, order),),
                      checkable=True, exclusive="theme")


FILE, EDIT, REGION, VIEW, RUN, HELP = (MenuPlace(m) for m in ("file", "edit", "region", "view", "run", "help"))

WINDOW_ACTIONS: tuple[ActionSpec | SubmenuSpec, ...] = (
    # File
    ActionSpec("open_episode", "&Open episode…", lambda w: w.episode_io.open_dialog(), "Ctrl+O",
               (MenuPlace("file", 0, 0),)),
    SubmenuSpec("recent", "Open &recent", MenuPlace("file", 0, 1), _fill_recent),
    SubmenuSpec("demos", "Open de&mo episode", MenuPlace("file", 0, 2), _fill_demos),
    ActionSpec("open_dataset", "Open &dataset…", lambda w: w.open_dataset_dialog(), menus=(MenuPlace("file", 0, 3),),
               tip="Sweep a dataset with the model and sort its failures (the Dataset triage panel)"),
    ActionSpec("save_episode", "&Save episode", lambda w: w.episode_io.save(), "Ctrl+S", (MenuPlace("file", 0, 4),),
               enabled=_has_episode),
    ActionSpec("save_episode_as", "Save episode &as…", lambda w: w.episode_io.save_as(), "Ctrl+Shift+S",
               (MenuPlace("file", 0, 5),), enabled=_has_episode),
    ActionSpec("edit_notes", "Episode &notes…", lambda w: w.edit_notes(), menus=(MenuPlace("file", 0, 6),),
               enabled=_has_episode),
    ActionSpec("replace_query", "Replace query &image…", lambda w: w.file_drops.replace_query_dialog(),
               menus=(MenuPlace("file", 1, 0),), enabled=_has_episode),
    ActionSpec("choose_checkpoint", "Choose &checkpoint…", lambda w: w.model_bar.choose_checkpoint(), "Ctrl+Shift+O",
               (MenuPlace("file", 1, 1),)),
    ActionSpec("checkpoint_folder", "Checkpoint &folder…", lambda w: w.model_bar.choose_checkpoint_folder(),
               menus=(MenuPlace("file", 1, 2),)),
    ActionSpec("quit", "&Quit", lambda w: w.close(), "Ctrl+Q", (MenuPlace("file", 9, 0),)),
    # Edit
    ActionSpec("undo", "Undo", lambda w: w.edit_tools.undo(), "Ctrl+Z", (MenuPlace("edit", 0, 0),), ("edit",),
               tip="Undo stroke"),
    ActionSpec("redo", "Redo", lambda w: w.edit_tools.redo(), "Ctrl+Shift+Z", (MenuPlace("edit", 0, 1),), ("edit",),
               tip="Redo stroke"),
    _tool(TOOL_BRUSH, "tool_brush", "Brush", "B", 0),
    _tool(TOOL_ERASER, "tool_eraser", "Eraser", "E", 1),
    _tool(TOOL_RECTANGLE, "tool_rectangle", "Rectangle", "R", 2),
    _tool(TOOL_POLYGON, "tool_polygon", "Polygon", "L", 3),
    _tool(TOOL_PAN, "tool_pan", "Pan", "P", 4),
    ActionSpec("smaller_brush", "Smaller brush / eraser", lambda w: w.edit_tools.step_brush_size(-1), "[",
               (MenuPlace("edit", 1, 5),)),
    ActionSpec("larger_brush", "Larger brush / eraser", lambda w: w.edit_tools.step_brush_size(+1), "]",
               (MenuPlace("edit", 1, 6),)),
    ActionSpec("clear_mask", "Clear the mask being edited", lambda w: w.edit_tools.clear_active_mask(),
               "Ctrl+Backspace", (MenuPlace("edit", 2, 0),)),
    # Region
    ActionSpec("region_brushed", "R = brushed region", lambda w: w.query.set_region_source(BRUSHED), "1", (REGION,)),
    ActionSpec("region_prediction", "R = prediction", lambda w: w.query.set_region_source(PREDICTION), "2",
               (MenuPlace("region", 0, 1),)),
    ActionSpec("region_ground_truth", "R = ground truth", lambda w: w.query.set_region_source(GROUND_TRUTH), "3",
               (MenuPlace("region", 0, 2),)),
    # View
    ActionSpec("fit", "Fit", lambda w: w.fit_all(), "F", (MenuPlace("view", 0, 0),), ("edit",),
               tip="Fit images to view"),
    ActionSpec("zoom_in", "Zoom &in", lambda w: w.edit_tools.zoom(1.25), "Ctrl++", (MenuPlace("view", 0, 1),)),
    ActionSpec("zoom_out", "Zoom &out", lambda w: w.edit_tools.zoom(0.8), "Ctrl+-", (MenuPlace("view", 0, 2),)),
    ActionSpec("toggle_overlays", "Overlays", lambda w, on: w.set_overlays_visible(on), "H",
               (MenuPlace("view", 1, 0),), ("edit",), tip="Hide / show overlays", checkable=True, checked=True),
    ActionSpec("toggle_prediction", "Show / hide the &prediction", lambda w, on: w.query.show_prediction.setChecked(on),
               "Shift+P", (MenuPlace("view", 1, 1),), checkable=True, checked=True),
    ActionSpec("toggle_ground_truth", "Show / hide the &ground truth", lambda w, on: w.query.show_truth.setChecked(on),
               "G", (MenuPlace("view", 1, 2),), checkable=True, checked=True),
    ActionSpec("next_support", "Next support", lambda w: w.support_panel.select(w.support_panel.current_index() + 1),
               "Ctrl+Down", (MenuPlace("view", 2, 0),)),
    ActionSpec("previous_support", "Previous support",
               lambda w: w.support_panel.select(w.support_panel.current_index() - 1), "Ctrl+Up",
               (MenuPlace("view", 2, 1),)),
    ActionSpec("toggle_log", "&Log pane", lambda w, on: w.log_pane.setVisible(on), menus=(MenuPlace("view", 3, 0),),
               checkable=True, checked=True),
    ActionSpec("toggle_triage", "&Dataset triage", lambda w, on: w.triage_dock.setVisible(on),
               menus=(MenuPlace("view", 3, 1),), checkable=True, checked=False),
    SubmenuSpec("theme", "&Theme", MenuPlace("view", 3, 2)),
    _theme(THEME_SYSTEM, "Follow the &system", 0),
    _theme(THEME_LIGHT, "&Light", 1),
    _theme(THEME_DARK, "&Dark", 2),
    # Run
    ActionSpec("predict", "▶ Predict", lambda w: w.runs.predict(), "Ctrl+R", (RUN,), ("run",), enabled=_has_episode),
    ActionSpec("explain", "✦ Explain R", lambda w: w.runs.explain(), "Ctrl+E", (MenuPlace("run", 0, 1),), ("run",),
               tip="Explain region R", enabled=lambda w: w.has_episode() and w.model_bar.explain_ready()),
    ActionSpec("cancel", "✕ Cancel", lambda w: w.runs.cancel_all(), "Esc", (MenuPlace("run", 0, 2),), ("run",),
               tip="Cancel running job", enabled=lambda w: w.device_worker.is_busy),
    ActionSpec("clear_gpu_cache", "Release the model and free GPU memory", lambda w: w.runs.release_model(),
               menus=(MenuPlace("run", 1, 0),)),
    ActionSpec("train", "&Train a model…", lambda w: w.open_training_dialog(w.model_bar.model_name()),
               menus=(MenuPlace("run", 2, 0),),
               tip="Train a model without published weights (SimPropNet, I²R) on a dataset folder"),
    # Help
    ActionSpec("shortcuts", "&Keyboard shortcuts", lambda w: w.show_shortcuts(), "F1", (HELP,)),
    ActionSpec("about", "&About fssgui", lambda w: w.show_about(), menus=(MenuPlace("help", 0, 1),)),
)
