"""The keyboard shortcuts: one table used to create the window's actions and the cheat sheet."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shortcut:
    action: str  # the action's id in MainWindow.actions
    keys: str  # QKeySequence text ("" = no key)
    text: str  # menu text
    group: str  # cheat-sheet section


SHORTCUTS: tuple[Shortcut, ...] = (
    # File
    Shortcut("open_episode", "Ctrl+O", "&Open episode…", "File"),
    Shortcut("save_episode", "Ctrl+S", "&Save episode", "File"),
    Shortcut("save_episode_as", "Ctrl+Shift+S", "Save episode &as…", "File"),
    Shortcut("open_demo", "", "Open &demo episode", "File"),
    Shortcut("choose_checkpoint", "Ctrl+Shift+O", "Choose &checkpoint…", "File"),
    Shortcut("quit", "Ctrl+Q", "&Quit", "File"),
    # Edit
    Shortcut("undo", "Ctrl+Z", "&Undo stroke", "Edit"),
    Shortcut("redo", "Ctrl+Shift+Z", "&Redo stroke", "Edit"),
    Shortcut("tool_brush", "B", "&Brush", "Edit"),
    Shortcut("tool_eraser", "E", "&Eraser", "Edit"),
    Shortcut("tool_pan", "P", "&Pan (or hold Space)", "Edit"),
    Shortcut("tool_rectangle", "R", "Rec&tangle (drag)", "Edit"),
    Shortcut("tool_polygon", "L", "Po&lygon (click vertices)", "Edit"),
    Shortcut("smaller_brush", "[", "Smaller brush / eraser", "Edit"),
    Shortcut("larger_brush", "]", "Larger brush / eraser", "Edit"),
    Shortcut("clear_mask", "Ctrl+Backspace", "Clear the mask being edited", "Edit"),
    # Region
    Shortcut("region_brushed", "1", "R = brushed region", "Region"),
    Shortcut("region_prediction", "2", "R = prediction", "Region"),
    Shortcut("region_ground_truth", "3", "R = ground truth", "Region"),
    # View
    Shortcut("fit", "F", "&Fit images to view", "View"),
    Shortcut("zoom_in", "Ctrl++", "Zoom &in", "View"),
    Shortcut("zoom_out", "Ctrl+-", "Zoom &out", "View"),
    Shortcut("toggle_overlays", "H", "&Hide / show overlays", "View"),
    Shortcut("toggle_prediction", "Shift+P", "Show / hide the &prediction", "View"),
    Shortcut("toggle_ground_truth", "G", "Show / hide the &ground truth", "View"),
    Shortcut("next_support", "Ctrl+Down", "Next support", "View"),
    Shortcut("previous_support", "Ctrl+Up", "Previous support", "View"),
    # Run
    Shortcut("predict", "Ctrl+R", "&Predict", "Run"),
    Shortcut("explain", "Ctrl+E", "&Explain region R", "Run"),
    Shortcut("cancel", "Esc", "&Cancel running job", "Run"),
    Shortcut("clear_gpu_cache", "", "Release the model and free GPU memory", "Run"),
    # Help
    Shortcut("shortcuts", "F1", "&Keyboard shortcuts", "Help"),
    Shortcut("about", "", "&About fssgui", "Help"),
)

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


def by_action() -> dict[str, Shortcut]:
    return {s.action: s for s in SHORTCUTS}


def cheat_sheet_html() -> str:
    """The Help ▸ Shortcuts page."""
    groups: dict[str, list[Shortcut]] = {}
    for shortcut in SHORTCUTS:
        if shortcut.keys:
            groups.setdefault(shortcut.group, []).append(shortcut)
    rows = []
    for group, items in groups.items():
        rows.append(f"<tr><td colspan=2><b>{group}</b></td></tr>")
        for s in items:
            rows.append(f"<tr><td><code>{s.keys}</code></td><td>{s.text.replace('&', '').replace('…', '')}</td></tr>")
    rows.append("<tr><td colspan=2><b>Mouse</b></td></tr>")
    for gesture, what in MOUSE_GESTURES:
        rows.append(f"<tr><td><code>{gesture}</code></td><td>{what}</td></tr>")
    return "<table cellspacing=4>" + "".join(rows) + "</table>"
