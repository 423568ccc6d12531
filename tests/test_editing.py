"""EditableMask: strokes, exact undo/redo, bounded history, dirty rectangles (no Qt needed)."""
import numpy as np
import pytest

from fssgui.editing import EditableMask, brush_radius


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


# ------------------------------------------------------------------ persisted undo history
import io  # noqa: E402
import zipfile  # noqa: E402

from fssgui.editing import (  # noqa: E402
    HISTORY_FORMAT,
    HISTORY_VERSION,
    HistoryFileError,
    capture_histories,
    history_bytes,
    load_histories,
    restore_histories,
    save_histories,
)


def _edited_mask(seed: int, strokes: int = 7, undos: int = 2, shape=(70, 90)):
    """A mask after random strokes (brush and eraser), a polygon and ``undos`` undos; with the
    state after every recorded edit."""
    rng = np.random.default_rng(seed)
    mask = EditableMask(rng.random(shape) > 0.8)
    states = [mask.data.copy()]
    for i in range(strokes):
        points = [tuple(p) for p in rng.integers(0, min(shape), size=(3, 2))]
        if mask.stroke(points, size=int(rng.integers(1, 15)), value=bool(i % 3 != 2)) is not None:
            states.append(mask.data.copy())
    if mask.fill_polygon([(5, 5), (40, 8), (20, 50)]) is not None:
        states.append(mask.data.copy())
    for _ in range(undos):
        mask.undo()
    return mask, states


def _write_and_read(tmp_path, masks, active=""):
    path = save_histories(tmp_path / "history.npz", capture_histories(masks), active)
    return load_histories(path)


def test_saved_history_restores_undo_and_redo_byte_exact(tmp_path):
    masks = {"region": _edited_mask(3)[0], "support_0": _edited_mask(4, undos=0)[0],
             "support_1": EditableMask(np.zeros((20, 30), bool))}  # no history at all
    states, active = _write_and_read(tmp_path, masks, active="support_0")
    assert active == "support_0" and set(states) == set(masks)
    for name, original in masks.items():
        # the restored mask starts from the pixels as saved (as the autosave PNGs give them back)
        copy = EditableMask(original.as_bool())
        assert copy.restore_history(states[name])
        assert (copy.undo_depth, copy.can_redo) == (original.undo_depth, original.can_redo)
        for step in ("undo", "undo", "redo", "undo", "undo", "undo", "redo", "redo", "redo", "redo", "redo"):
            assert (getattr(copy, step)() is None) == (getattr(original, step)() is None)
            assert copy.data.tobytes() == original.data.tobytes(), (name, step)
        while original.undo() is not None:
            copy.undo()
            assert copy.data.tobytes() == original.data.tobytes()
        assert copy.undo() is None


def test_restored_history_walks_back_through_every_saved_state(tmp_path):
    mask, states = _edited_mask(5, strokes=9, undos=0)
    loaded, _ = _write_and_read(tmp_path, {"m": mask})
    restored = EditableMask(states[-1].astype(bool))
    assert restore_histories({"m": restored}, loaded) == ["m"]
    for state in reversed(states[:-1]):
        assert restored.undo() is not None
        assert restored.data.tobytes() == state.tobytes()
    assert restored.undo() is None


def test_history_is_not_applied_to_other_pixels_or_shapes(tmp_path):
    mask, _ = _edited_mask(6)
    states, _ = _write_and_read(tmp_path, {"m": mask})
    other = mask.as_bool()
    other[0, 0] = not other[0, 0]
    changed = EditableMask(other)
    assert not changed.restore_history(states["m"])
    assert not changed.can_undo and not changed.can_redo
    assert not EditableMask(np.zeros((5, 5), bool)).restore_history(states["m"])
    assert restore_histories({"m": changed, "absent": EditableMask(np.zeros((3, 3), bool))}, states) == []


def test_persisted_history_is_bounded_newest_first():
    mask = EditableMask(np.zeros((200, 200), bool))
    for i in range(30):
        mask.stroke([(5 + i * 6, 20), (5 + i * 6, 180)], size=5)
    for _ in range(4):
        mask.undo()
    state = mask.history_state(max_steps=10)
    assert len(state.undo) + len(state.redo) == 10
    # the newest undo records are kept first, then the nearest redo records
    assert [r.rect for r in state.undo] == [r.rect for r in list(mask._undo)[-10:]]
    assert state.redo == ()
    one = mask._undo[-1].nbytes
    state = mask.history_state(max_bytes=3 * one + one // 2)
    assert len(state.undo) == 3 and state.nbytes <= 3 * one + one // 2
    roomy = mask.history_state(max_steps=28)
    assert len(roomy.undo) == 26 and len(roomy.redo) == 2
    assert [r.rect for r in roomy.redo] == [r.rect for r in mask._redo[-2:]]
    # capture_histories shares one byte budget among the masks
    masks = {"a": mask, "b": EditableMask(np.zeros((10, 10), bool))}
    captured = capture_histories(masks, max_steps=100, max_bytes=8 * one)
    assert sum(s.nbytes for s in captured.values()) <= 8 * one
    assert len(captured["a"].undo) == 4


def test_restoring_a_bounded_history_still_undoes_the_last_strokes_exactly(tmp_path):
    mask, states = _edited_mask(7, strokes=12, undos=0)
    path = save_histories(tmp_path / "h.npz", capture_histories({"m": mask}, max_steps=3))
    loaded, _ = load_histories(path)
    restored = EditableMask(mask.as_bool())
    assert restored.restore_history(loaded["m"])
    for state in reversed(states[-4:-1]):
        restored.undo()
        assert restored.data.tobytes() == state.tobytes()
    assert restored.undo() is None  # older strokes were not persisted


def _arrays(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _npz(tmp_path, arrays, name="bad.npz"):
    path = tmp_path / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_history_file_is_versioned_plain_arrays(tmp_path):
    mask, _ = _edited_mask(8)
    data = history_bytes(capture_histories({"region": mask}), "region")
    arrays = _arrays(data)  # loads without pickle: no object arrays inside
    assert str(arrays["format"]) == HISTORY_FORMAT and int(arrays["version"]) == HISTORY_VERSION
    assert all(a.dtype.kind in "iuU" for a in arrays.values())
    # another version or format is refused with a message naming the file
    for key, value in (("version", np.array(HISTORY_VERSION + 1)), ("format", np.array("something-else"))):
        changed = dict(arrays, **{key: value})
        with pytest.raises(HistoryFileError, match="bad.npz"):
            load_histories(_npz(tmp_path, changed))


@pytest.mark.parametrize("corrupt", ["pickled", "rect_outside", "short_bits", "bad_stack", "missing", "not_zip",
                                     "object_names"])
def test_corrupt_history_files_are_refused(tmp_path, corrupt):
    mask, _ = _edited_mask(9)
    arrays = _arrays(history_bytes(capture_histories({"region": mask})))
    if corrupt == "pickled":
        path = tmp_path / "bad.npz"
        np.savez(path, **dict(arrays, m0_labels=np.array([{"x": 1}] * len(arrays["m0_labels"]), dtype=object)))
    elif corrupt == "not_zip":
        path = tmp_path / "bad.npz"
        path.write_bytes(b"\x80\x04not a zip at all")
    elif corrupt == "object_names":
        path = tmp_path / "bad.npz"
        np.savez(path, **dict(arrays, names=np.array(["region"], dtype=object)))
    else:
        if corrupt == "rect_outside":
            rects = arrays["m0_rects"].copy()
            rects[0, 2] = 10_000
            arrays["m0_rects"] = rects
        elif corrupt == "short_bits":
            arrays["m0_after"] = arrays["m0_after"][:-1]
        elif corrupt == "bad_stack":
            arrays["m0_stack"] = arrays["m0_stack"][::-1].copy() + 0
            arrays["m0_stack"][0] = 7
        elif corrupt == "missing":
            del arrays["m0_rects"]
        path = _npz(tmp_path, arrays)
    with pytest.raises(HistoryFileError, match="bad.npz"):
        load_histories(path)


def test_history_that_unpacks_too_large_is_refused_before_reading(tmp_path, monkeypatch):
    import fssgui.editing as editing

    mask, _ = _edited_mask(10)
    path = save_histories(tmp_path / "big.npz", capture_histories({"region": mask}))
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(i.file_size for i in archive.infolist())
    monkeypatch.setattr(editing, "HISTORY_MAX_FILE_BYTES", unpacked - 1)
    with pytest.raises(HistoryFileError, match="unpacks to"):
        load_histories(path)
