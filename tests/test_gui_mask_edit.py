"""EditableMask: strokes, exact undo/redo, bounded history, dirty rectangles (no Qt needed)."""
import numpy as np
import pytest

from fssgui.gui.mask_edit import EditableMask, brush_radius


def test_stroke_paints_a_round_brush_along_the_path():
    mask = EditableMask(np.zeros((100, 120), bool))
    rect = mask.stroke([(20, 30), (80, 30)], size=11)
    data = mask.as_bool()
    assert data[30, 20] and data[30, 50] and data[30, 80]
    assert data[25, 50] and data[35, 50]  # radius 5 above and below the line
    assert not data[24, 50] and not data[36, 50]
    assert not data[30, 86]  # round cap ends at radius 5 beyond the last point
    x0, y0, x1, y1 = rect
    assert x0 <= 15 and x1 >= 86 and y0 <= 25 and y1 >= 36
    assert data[:, : x0].sum() == 0 and data[:, x1:].sum() == 0 and data[:y0].sum() == 0 and data[y1:].sum() == 0


def test_size_one_paints_single_pixels_and_eraser_removes():
    mask = EditableMask(np.zeros((20, 20), bool))
    assert brush_radius(1) == 0
    mask.stroke([(5, 7)], size=1)
    assert mask.count() == 1 and mask.data[7, 5] == 1
    mask.stroke([(0, 0), (19, 19)], size=5, value=True)
    before = mask.count()
    mask.stroke([(10, 10)], size=3, value=False)
    assert mask.count() < before and mask.data[10, 10] == 0


def test_undo_and_redo_restore_exact_bytes():
    rng = np.random.default_rng(1)
    initial = rng.random((64, 64)) > 0.7
    mask = EditableMask(initial)
    states = [mask.data.copy()]
    for i in range(6):
        points = [tuple(p) for p in rng.integers(0, 64, size=(4, 2))]
        mask.stroke(points, size=int(rng.integers(1, 12)), value=bool(i % 2 == 0))
        states.append(mask.data.copy())
    for state in reversed(states[:-1]):
        assert mask.undo() is not None
        assert mask.data.tobytes() == state.tobytes()
    assert mask.undo() is None
    for state in states[1:]:
        assert mask.redo() is not None
        assert mask.data.tobytes() == state.tobytes()
    assert mask.redo() is None


def test_new_stroke_clears_redo_and_noop_stroke_is_not_recorded():
    mask = EditableMask(np.zeros((30, 30), bool))
    mask.stroke([(5, 5)], size=3)
    mask.undo()
    assert mask.can_redo
    mask.stroke([(20, 20)], size=3)
    assert not mask.can_redo
    depth = mask.undo_depth
    mask.stroke([(20, 20)], size=3)  # paints pixels that are already on
    assert mask.undo_depth == depth


def test_history_stores_only_dirty_rectangles_bit_packed():
    mask = EditableMask(np.zeros((2048, 2048), bool))
    mask.stroke([(1000, 1000), (1040, 1000)], size=21)
    # a 62 x 22-ish rectangle, before + after at 1 bit per pixel: far below the 4 MiB mask
    assert mask.history_bytes < 2 * (64 * 24) // 8 + 64
    assert mask.history_bytes < 1000


def test_history_is_bounded_in_steps_and_bytes():
    mask = EditableMask(np.zeros((200, 200), bool), max_steps=5)
    for i in range(12):
        mask.stroke([(10 + i * 10, 100)], size=5)
    assert mask.undo_depth == 5
    big = EditableMask(np.zeros((400, 400), bool), max_bytes=3000)
    for i in range(10):
        big.stroke([(0, i * 40), (399, i * 40)], size=9)  # ~400 x 11 px each = ~1.1 kB packed
    assert big.history_bytes <= 3000
    assert big.undo_depth >= 1
    # the oldest strokes were dropped, so undo stops early but never corrupts the newest state
    while big.undo() is not None:
        pass
    assert big.count() > 0


def test_listeners_receive_only_the_dirty_rectangle():
    mask = EditableMask(np.zeros((2048, 2048), bool))
    rects = []
    mask.subscribe(rects.append)
    mask.begin_stroke(True, 15)
    for x in range(500, 600, 5):
        mask.add_point(x, 700)
    mask.end_stroke()
    assert rects
    for x0, y0, x1, y1 in rects:
        assert (x1 - x0) <= 5 + 15 + 4 and (y1 - y0) <= 15 + 4


def test_replace_is_undoable_and_rejects_other_shapes():
    mask = EditableMask(np.zeros((10, 10), bool))
    target = np.zeros((10, 10), bool)
    target[2:5, 3:7] = True
    mask.replace(target)
    assert np.array_equal(mask.as_bool(), target)
    mask.undo()
    assert mask.count() == 0
    with pytest.raises(ValueError):
        mask.replace(np.zeros((5, 5), bool))
