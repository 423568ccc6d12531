"""The canvas: painting through synthesized mouse events, zoom at the cursor, sizes, dirty repaints."""

import time

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from fssgui.gui.canvas import (
    TOOL_BRUSH,
    TOOL_ERASER,
    TOOL_PAN,
    TOOL_POLYGON,
    TOOL_RECTANGLE,
    ImageCanvas,
    MaskLayer,
    link_views,
)
from fssgui.editing import EditableMask
from gui_testkit import drag, mouse as _mouse, view_pos as _view_pos


@pytest.fixture
def canvas(qtbot):
    view = ImageCanvas(editable=True)
    qtbot.addWidget(view)
    view.resize(420, 320)
    with qtbot.waitExposed(view):
        view.show()
    image = np.full((100, 100, 3), 90, np.uint8)
    view.set_image(image)
    mask = EditableMask(np.zeros((100, 100), bool))
    view.set_mask(mask)
    view.set_tool(TOOL_BRUSH)
    view.set_brush_size(9, TOOL_BRUSH)
    view.set_brush_size(5, TOOL_ERASER)
    QApplication.processEvents()
    return view


def test_mouse_drag_paints_where_the_cursor_is(qtbot, canvas):
    with qtbot.waitSignal(canvas.strokeFinished, timeout=2000) as blocker:
        drag(canvas, [(20, 50), (40, 50), (60, 50)])
    assert blocker.args == ["brush"]
    mask = canvas.mask.as_bool()
    assert mask[50, 20] and mask[50, 40] and mask[50, 60]
    assert mask[46, 40] and not mask[40, 40]  # brush 9 px: radius 4
    assert not mask[:, :14].any() and not mask[:, 67:].any()
    assert canvas.mask.undo_depth == 1  # one stroke, one undo step


def test_right_drag_erases_with_the_eraser_size(qtbot, canvas):
    canvas.mask.replace(np.ones((100, 100), bool))
    drag(canvas, [(50, 50), (50, 52)], button=Qt.MouseButton.RightButton)
    erased = ~canvas.mask.as_bool()
    assert erased[50, 50] and erased[52, 50]
    ys, xs = np.nonzero(erased)
    assert xs.max() - xs.min() + 1 == 5  # eraser size 5, not the brush's 9


def test_eraser_tool_and_undo_restore_exact_bytes(qtbot, canvas):
    drag(canvas, [(10, 10), (90, 90)])
    painted = canvas.mask.data.copy()
    canvas.set_tool(TOOL_ERASER)
    drag(canvas, [(50, 50), (60, 40)])
    assert canvas.mask.count() < int(painted.sum())
    canvas.mask.undo()
    assert canvas.mask.data.tobytes() == painted.tobytes()
    canvas.mask.undo()
    assert canvas.mask.count() == 0


def test_pan_tool_and_space_do_not_paint(qtbot, canvas):
    canvas.set_tool(TOOL_PAN)
    drag(canvas, [(20, 20), (60, 60)])
    assert canvas.mask.count() == 0
    canvas.set_tool(TOOL_BRUSH)
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    drag(canvas, [(20, 20), (60, 60)])
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.mask.count() == 0
    drag(canvas, [(20, 20), (22, 22)])
    assert canvas.mask.count() > 0


def _wheel(view, pos: QPointF, delta: int, modifiers=Qt.KeyboardModifier.NoModifier):
    event = QWheelEvent(pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), event)


def test_wheel_zooms_at_the_cursor(qtbot, canvas):
    before_zoom = canvas.zoom()
    anchor = _view_pos(canvas, 30, 70)
    for _ in range(3):
        _wheel(canvas, anchor, 120)
    assert canvas.zoom() == pytest.approx(before_zoom * 1.25**3, rel=1e-3)
    point = canvas.mapToScene(anchor.toPoint())
    assert abs(point.x() - 30) < 1.5 and abs(point.y() - 70) < 1.5  # the image point stayed under the cursor
    canvas.fit()
    assert canvas.zoom() == pytest.approx(before_zoom, rel=1e-3)


def test_ctrl_wheel_and_steps_change_the_active_tool_size_only(qtbot, canvas):
    sizes = []
    canvas.brushSizeChanged.connect(lambda tool, size: sizes.append((tool, size)))
    zoom = canvas.zoom()
    _wheel(canvas, _view_pos(canvas, 50, 50), 120, Qt.KeyboardModifier.ControlModifier)
    assert canvas.zoom() == zoom
    assert canvas.brush_size(TOOL_BRUSH) > 9 and canvas.brush_size(TOOL_ERASER) == 5
    canvas.set_tool(TOOL_ERASER)
    canvas.step_brush_size(-1)
    assert canvas.brush_size(TOOL_ERASER) == 4 and canvas.brush_size(TOOL_BRUSH) > 9
    assert sizes[0][0] == TOOL_BRUSH and sizes[-1] == (TOOL_ERASER, 4)


def test_brush_cursor_is_a_circle_of_the_brush_size(qtbot, canvas):
    pos = _view_pos(canvas, 40, 40)
    _mouse(canvas, QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)
    rect = canvas._cursor_item.rect()
    assert rect.width() == pytest.approx(9) and rect.height() == pytest.approx(9)
    assert abs(rect.center().x() - 40.5) <= 1 and abs(rect.center().y() - 40.5) <= 1


def test_overlays_toggle_and_layer_opacity(qtbot, canvas):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    canvas.set_layer("heat", rgba, opacity=0.4)
    assert canvas.layer("heat").opacity() == pytest.approx(0.4)
    canvas.set_overlays_visible(False)
    assert not canvas.layer("heat").isVisible() and not canvas._mask_layer.isVisible()
    canvas.set_overlays_visible(True)
    assert canvas.layer("heat").isVisible() and canvas._mask_layer.isVisible()


def test_mask_layer_recolours_only_the_dirty_rectangle_on_large_masks(qtbot):
    mask = EditableMask(np.zeros((2048, 2048), bool))
    layer = MaskLayer(mask, (0, 200, 255))
    updates = []
    original = layer.update_rect
    layer.update_rect = lambda rect: (updates.append(rect), original(rect))
    sentinel = layer.buffer.copy()
    mask.begin_stroke(True, 31)
    started = time.perf_counter()
    for x in range(300, 900, 6):
        mask.add_point(x, 1000)
    per_point = (time.perf_counter() - started) / 100
    mask.end_stroke()
    assert len(updates) == 100
    assert all((x1 - x0) * (y1 - y0) < 50 * 40 for x0, y0, x1, y1 in updates)
    changed = np.nonzero((layer.buffer != sentinel).any(axis=2))
    assert changed[0].min() >= 1000 - 16 and changed[0].max() <= 1000 + 16
    # painting a segment and recolouring its rectangle is far below a frame on a 2048^2 mask
    assert per_point < 0.01
    painted = mask.data.astype(bool)
    assert np.array_equal((layer.buffer[..., 3] > 0), painted)


def test_linked_views_follow_each_other(qtbot):
    a, b = ImageCanvas(editable=False), ImageCanvas(editable=False)
    for view in (a, b):
        qtbot.addWidget(view)
        view.resize(300, 300)
        view.show()
        view.set_image(np.zeros((80, 80, 3), np.uint8))
    link_views(a, b)
    a.zoom_by(2.0)
    assert b.zoom() == pytest.approx(a.zoom())


def _click(view, x, y, button=Qt.MouseButton.LeftButton, double=False):
    pos = _view_pos(view, x, y)
    kind = QEvent.Type.MouseButtonDblClick if double else QEvent.Type.MouseButtonPress
    _mouse(view, kind, pos, button, button)
    _mouse(view, QEvent.Type.MouseButtonRelease, pos, button, Qt.MouseButton.NoButton)


def test_rectangle_tool_adds_and_removes_exact_pixels(qtbot, canvas):
    canvas.set_tool(TOOL_RECTANGLE)
    with qtbot.waitSignal(canvas.strokeFinished, timeout=2000) as blocker:
        drag(canvas, [(10, 20), (30, 25), (40, 60)])  # pixel centres 10.5..39.5 x 20.5..59.5
    assert blocker.args == ["rectangle"]
    expected = np.zeros((100, 100), bool)
    expected[20:60, 10:40] = True
    assert np.array_equal(canvas.mask.as_bool(), expected)
    drag(canvas, [(20, 30), (30, 40)], button=Qt.MouseButton.RightButton)
    expected[30:40, 20:30] = False
    assert np.array_equal(canvas.mask.as_bool(), expected)
    assert canvas.mask.undo_depth == 2  # one undo step per shape
    canvas.mask.undo()
    assert canvas.mask.count() == 40 * 30


def test_polygon_tool_clicks_vertices_and_closes(qtbot, canvas):
    canvas.set_tool(TOOL_POLYGON)
    for x, y in [(10, 10), (60, 10), (60, 50)]:
        _click(canvas, x, y)
    assert canvas.shape_in_progress and canvas.mask.count() == 0  # nothing filled before closing
    with qtbot.waitSignal(canvas.strokeFinished, timeout=2000) as blocker:
        _click(canvas, 10, 50)  # a double click: its first click adds the vertex, the second closes
        _click(canvas, 10, 50, double=True)
    assert blocker.args == ["polygon"] and not canvas.shape_in_progress
    mask = canvas.mask.as_bool()
    assert mask[11:49, 11:59].all() and not mask[:9].any() and not mask[:, 62:].any()
    assert abs(canvas.mask.count() - 50 * 40) <= 2 * (50 + 40)  # the rectangle's area, up to its border
    # a right-click polygon removes; Backspace drops the last vertex, Enter closes
    for x, y in [(20, 20), (40, 20), (40, 40), (90, 90)]:
        _click(canvas, x, y, button=Qt.MouseButton.RightButton)
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Backspace)
    assert len(canvas.shape_points()) == 3
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    mask = canvas.mask.as_bool()
    assert not mask[22:30, 30:38].any() and mask[15, 15] and mask[45, 15]  # a triangle removed
    # Esc cancels a polygon without touching the mask
    before = canvas.mask.data.copy()
    _click(canvas, 5, 5)
    _click(canvas, 15, 5)
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert not canvas.shape_in_progress and np.array_equal(canvas.mask.data, before)
