"""An editable binary mask with round-brush strokes and a bounded per-stroke undo history.

No Qt here (napari style: the data model knows nothing of views). Views subscribe with
:meth:`EditableMask.subscribe` and receive the dirty rectangle ``(x0, y0, x1, y1)`` (x1/y1
exclusive) of every change, so they can repaint only that area.

Undo memory is bounded: a stroke stores only the bytes of its dirty rectangle, before and after,
bit-packed (``np.packbits``: 1 bit per pixel), and the history keeps at most ``max_steps``
records and ``max_bytes`` bytes (the oldest records are dropped first).

The history can be persisted (the app's autosave does, so Ctrl+Z still works after a crash
restore): :meth:`EditableMask.history_state` takes a bounded copy of the newest records,
:func:`save_histories` writes the states of several masks to one versioned ``.npz`` file (plain
arrays only), :func:`load_histories` reads it back with ``allow_pickle=False`` and validates every
array, and :meth:`EditableMask.restore_history` applies a state only to the exact mask it was taken
from (same shape, same SHA-256 of the pixels).
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import cv2
import numpy as np

from .io import write_bytes_atomic

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
Listener = Callable[[Rect], None]


@dataclass(frozen=True)
class _EditRecord:
    """One undoable edit: the dirty rectangle and its packed pixels before and after."""

    rect: Rect
    before: np.ndarray  # packbits of the rectangle before the edit
    after: np.ndarray  # packbits of the rectangle after the edit
    label: str

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)


def _union(a: Optional[Rect], b: Rect) -> Rect:
    if a is None:
        return b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def brush_radius(size: int) -> int:
    """Brush ``size`` is a diameter in image pixels; size 1 paints a single pixel."""
    return max(0, (int(size) - 1) // 2)


class EditableMask:
    """A ``[H, W]`` mask (stored as uint8 0/1 for OpenCV) with strokes, undo and redo."""

    def __init__(
        self,
        mask: np.ndarray,
        *,
        max_steps: int = 200,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.data = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._undo: deque[_EditRecord] = deque()
        self._redo: list[_EditRecord] = []
        self._listeners: list[Listener] = []
        self._stroke_before: Optional[np.ndarray] = None
        self._stroke_rect: Optional[Rect] = None
        self._stroke_value = 1
        self._stroke_radius = 0
        self._last_point: Optional[tuple[int, int]] = None
        #: increases on every change (strokes, undo, redo, replace): a cheap "did it change" key
        self.revision = 0

    # ------------------------------------------------------------------------------ observers
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, rect: Rect) -> None:
        self.revision += 1
        for listener in list(self._listeners):
            listener(rect)

    # ------------------------------------------------------------------------------ queries
    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])

    def as_bool(self) -> np.ndarray:
        """A copy of the mask as bool ``[H, W]``."""
        return self.data.astype(bool)

    def count(self) -> int:
        return int(np.count_nonzero(self.data))

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history_bytes(self) -> int:
        return sum(r.nbytes for r in self._undo) + sum(r.nbytes for r in self._redo)

    @property
    def undo_depth(self) -> int:
        return len(self._undo)

    @property
    def in_stroke(self) -> bool:
        return self._stroke_before is not None

    # ------------------------------------------------------------------------------ strokes
    def begin_stroke(self, value: bool, size: int) -> None:
        """Start a stroke painting ``value`` (True = brush, False = eraser) with diameter ``size``."""
        if self.in_stroke:
            self.end_stroke()
        # A transient copy of the whole mask (freed at end_stroke); only the dirty rectangle is kept.
        self._stroke_before = self.data.copy()
        self._stroke_rect = None
        self._stroke_value = 1 if value else 0
        self._stroke_radius = brush_radius(size)
        self._last_point = None

    def add_point(self, x: float, y: float) -> Optional[Rect]:
        """Paint from the previous point of the stroke to ``(x, y)`` (image pixel coordinates)."""
        if not self.in_stroke:
            raise RuntimeError("add_point() outside a stroke: call begin_stroke() first")
        point = (int(round(x)), int(round(y)))
        start = self._last_point or point
        self._last_point = point
        rect = self._paint_segment(start, point)
        if rect is not None:
            self._stroke_rect = _union(self._stroke_rect, rect)
            self._notify(rect)
        return rect

    def end_stroke(self, label: str = "stroke") -> Optional[Rect]:
        """Finish the stroke and record it for undo; returns its dirty rectangle (None if nothing)."""
        if not self.in_stroke:
            return None
        before, rect = self._stroke_before, self._stroke_rect
        self._stroke_before, self._stroke_rect, self._last_point = None, None, None
        if rect is None:
            return None
        x0, y0, x1, y1 = rect
        old = before[y0:y1, x0:x1]
        new = self.data[y0:y1, x0:x1]
        if np.array_equal(old, new):
            return None
        self._push(_EditRecord(rect, np.packbits(old), np.packbits(new), label))
        return rect

    def stroke(self, points: Sequence[tuple[float, float]], size: int, value: bool = True) -> Optional[Rect]:
        """One whole stroke through ``points`` ``[(x, y), ...]`` (the API tests and scripts use)."""
        self.begin_stroke(value, size)
        for x, y in points:
            self.add_point(x, y)
        return self.end_stroke("brush" if value else "erase")

    def _paint_segment(self, p0: tuple[int, int], p1: tuple[int, int]) -> Optional[Rect]:
        h, w = self.data.shape
        r = self._stroke_radius
        x0 = max(0, min(p0[0], p1[0]) - r - 1)
        y0 = max(0, min(p0[1], p1[1]) - r - 1)
        x1 = min(w, max(p0[0], p1[0]) + r + 2)
        y1 = min(h, max(p0[1], p1[1]) + r + 2)
        if x0 >= x1 or y0 >= y1:
            return None
        # Draw into the dirty window only (OpenCV clips); offsets keep absolute coordinates right.
        window = self.data[y0:y1, x0:x1]
        a = (p0[0] - x0, p0[1] - y0)
        b = (p1[0] - x0, p1[1] - y0)
        value = self._stroke_value
        cv2.circle(window, a, r, value, thickness=-1, lineType=cv2.LINE_8)
        if a != b:
            cv2.circle(window, b, r, value, thickness=-1, lineType=cv2.LINE_8)
            # OpenCV's thick line is 2 * (thickness // 2) + 1 px wide: thickness 2r matches the circles
            cv2.line(window, a, b, value, thickness=max(1, 2 * r), lineType=cv2.LINE_8)
        return (x0, y0, x1, y1)

    # ------------------------------------------------------------------------ whole-mask edits
    def replace(self, mask: np.ndarray, label: str = "replace") -> Optional[Rect]:
        """Set the whole mask (e.g. R = prediction) as one undoable edit."""
        new = np.asarray(mask) > 0
        if new.shape != self.data.shape:
            raise ValueError(f"mask shape {new.shape} differs from {self.data.shape}")
        if self.in_stroke:
            self.end_stroke()
        changed = np.nonzero(new != self.data.astype(bool))
        if changed[0].size == 0:
            return None
        rect = (int(changed[1].min()), int(changed[0].min()), int(changed[1].max()) + 1, int(changed[0].max()) + 1)
        x0, y0, x1, y1 = rect
        before = np.packbits(self.data[y0:y1, x0:x1])
        self.data[y0:y1, x0:x1] = new[y0:y1, x0:x1]
        self._push(_EditRecord(rect, before, np.packbits(self.data[y0:y1, x0:x1]), label))
        self._notify(rect)
        return rect

    def fill_polygon(self, points: Sequence[tuple[float, float]], value: bool = True,
                     label: str = "polygon") -> Optional[Rect]:
        """Fill (``value`` True) or erase the polygon through ``points`` ``[(x, y), ...]`` (image
        pixel coordinates, at least 3) as one undoable edit; returns the changed rectangle."""
        if len(points) < 3:
            return None
        if self.in_stroke:
            self.end_stroke()
        h, w = self.data.shape
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        x0, y0 = max(0, int(pts[:, 0].min())), max(0, int(pts[:, 1].min()))
        x1, y1 = min(w, int(pts[:, 0].max()) + 1), min(h, int(pts[:, 1].max()) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        rect = (x0, y0, x1, y1)
        window = self.data[y0:y1, x0:x1]
        before = window.copy()
        cv2.fillPoly(window, [pts - np.array([x0, y0], dtype=np.int32)], 1 if value else 0, lineType=cv2.LINE_8)
        if np.array_equal(before, window):
            return None
        self._push(_EditRecord(rect, np.packbits(before), np.packbits(window), label))
        self._notify(rect)
        return rect

    def fill_rectangle(self, x0: float, y0: float, x1: float, y1: float, value: bool = True) -> Optional[Rect]:
        """Fill or erase the axis-aligned rectangle with corners (x0, y0) and (x1, y1), inclusive."""
        left, right = sorted((x0, x1))
        top, bottom = sorted((y0, y1))
        return self.fill_polygon([(left, top), (right, top), (right, bottom), (left, bottom)], value, "rectangle")

    def clear(self) -> Optional[Rect]:
        return self.replace(np.zeros(self.data.shape, dtype=bool), "clear")

    # ------------------------------------------------------------------------------ history
    def _push(self, record: _EditRecord) -> None:
        self._undo.append(record)
        self._redo.clear()
        self._trim()

    def _trim(self) -> None:
        total = sum(r.nbytes for r in self._undo)
        while self._undo and (len(self._undo) > self.max_steps or total > self.max_bytes):
            total -= self._undo.popleft().nbytes

    def _apply(self, rect: Rect, packed: np.ndarray) -> None:
        x0, y0, x1, y1 = rect
        count = (x1 - x0) * (y1 - y0)
        self.data[y0:y1, x0:x1] = np.unpackbits(packed, count=count).reshape(y1 - y0, x1 - x0)
        self._notify(rect)

    # -------------------------------------------------------------------------- persistence
    def digest(self) -> str:
        """SHA-256 of the pixels (shape included): which mask a saved history belongs to."""
        return mask_digest(self.data)

    def history_state(self, max_steps: Optional[int] = None, max_bytes: Optional[int] = None) -> "HistoryState":
        """The undo/redo history as plain data, bounded: the newest undo records first, then the
        nearest redo records, while at most ``max_steps`` records and ``max_bytes`` bytes fit.

        A stroke still in progress is not in the history (its pixels are in the mask: undo then
        starts from the strokes before it). The records are immutable, so the state can be
        written on another thread while editing goes on."""
        steps_left = self.max_steps if max_steps is None else max(0, int(max_steps))
        bytes_left = self.max_bytes if max_bytes is None else max(0, int(max_bytes))
        undo: list[_EditRecord] = []
        for record in reversed(self._undo):  # newest first
            if steps_left <= 0 or record.nbytes > bytes_left:
                break
            undo.append(record)
            steps_left -= 1
            bytes_left -= record.nbytes
        redo: list[_EditRecord] = []
        for record in reversed(self._redo):  # the next redo first
            if steps_left <= 0 or record.nbytes > bytes_left:
                break
            redo.append(record)
            steps_left -= 1
            bytes_left -= record.nbytes
        return HistoryState(self.shape, self.digest(), tuple(reversed(undo)), tuple(reversed(redo)))

    def restore_history(self, state: "HistoryState") -> bool:
        """Replace the history with ``state`` when it was taken from this very mask (same shape
        and pixels); returns False (history unchanged) otherwise. The in-memory bounds apply."""
        if state.shape != self.shape or state.digest != self.digest():
            return False
        if self.in_stroke:
            self.end_stroke()
        self._undo = deque(state.undo)
        self._redo = list(state.redo)
        self._trim()
        return True

    def undo(self) -> Optional[Rect]:
        if self.in_stroke:
            self.end_stroke()
        if not self._undo:
            return None
        record = self._undo.pop()
        self._redo.append(record)
        self._apply(record.rect, record.before)
        return record.rect

    def redo(self) -> Optional[Rect]:
        if not self._redo:
            return None
        record = self._redo.pop()
        self._undo.append(record)
        self._apply(record.rect, record.after)
        return record.rect



# ==================================================================================== persistence
HISTORY_FORMAT = "fssgui-undo-history"
HISTORY_VERSION = 1
#: refuse history files whose arrays would unpack to more than this (a corrupt or hostile file)
HISTORY_MAX_FILE_BYTES = 512 * 1024 * 1024
_STACK_UNDO, _STACK_REDO = 0, 1


class HistoryFileError(ValueError):
    """A history file that cannot be used (unreadable, wrong format or version, inconsistent)."""


def mask_digest(mask: np.ndarray) -> str:
    """SHA-256 of a mask's foreground bits and its shape (bool or 0/1 arrays give the same digest)."""
    bits = np.ascontiguousarray(np.asarray(mask) > 0)
    h = hashlib.sha256(f"{bits.shape[0]}x{bits.shape[1]}:".encode("ascii"))
    h.update(np.packbits(bits).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class HistoryState:
    """A mask's history as plain data: its shape, the digest of the pixels it ends at, the undo
    records (oldest first) and the redo records (in redo-list order: the next redo last)."""

    shape: tuple[int, int]
    digest: str
    undo: tuple[_EditRecord, ...]
    redo: tuple[_EditRecord, ...]

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.undo) + sum(r.nbytes for r in self.redo)


def capture_histories(masks: Mapping[str, "EditableMask"], *, max_steps: int = 100,
                      max_bytes: int = 16 * 1024 * 1024) -> dict[str, HistoryState]:
    """Bounded history states of several masks, at most ``max_steps`` records per mask and
    ``max_bytes`` bytes in all (each mask gets an equal share of the bytes)."""
    masks = {name: mask for name, mask in masks.items() if mask is not None}
    if not masks:
        return {}
    share = int(max_bytes) // len(masks)
    return {name: mask.history_state(max_steps, share) for name, mask in masks.items()}


def restore_histories(masks: Mapping[str, "EditableMask"], states: Mapping[str, HistoryState]) -> list[str]:
    """Give each mask its saved history when it matches; returns the names restored."""
    restored = []
    for name, mask in masks.items():
        state = states.get(name)
        if mask is not None and state is not None and mask.restore_history(state):
            restored.append(name)
    return restored


def _packed_size(rect: Rect) -> int:
    x0, y0, x1, y1 = rect
    return ((x1 - x0) * (y1 - y0) + 7) // 8


def history_bytes(states: Mapping[str, HistoryState], active: str = "") -> bytes:
    """The ``.npz`` bytes of ``states`` (format :data:`HISTORY_FORMAT`, version :data:`HISTORY_VERSION`).

    Plain arrays only (strings as fixed-width unicode, never objects): per mask ``i``,
    ``m{i}_shape`` [2], ``m{i}_digest``, ``m{i}_rects`` [n, 4] (x0, y0, x1, y1),
    ``m{i}_stack`` [n] (0 = undo, oldest first; 1 = redo, in list order), ``m{i}_labels`` [n] and
    ``m{i}_before`` / ``m{i}_after``: the packed bits of all records concatenated (a record's
    length follows from its rectangle). ``active`` names the mask edited last."""
    names = list(states)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(HISTORY_FORMAT),
        "version": np.array(HISTORY_VERSION, dtype=np.int64),
        "names": np.array(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        "active": np.array(str(active)),
    }
    for i, name in enumerate(names):
        state = states[name]
        records = list(state.undo) + list(state.redo)
        arrays[f"m{i}_shape"] = np.array(state.shape, dtype=np.int64)
        arrays[f"m{i}_digest"] = np.array(state.digest)
        arrays[f"m{i}_rects"] = np.array([r.rect for r in records], dtype=np.int64).reshape(-1, 4)
        arrays[f"m{i}_stack"] = np.array([_STACK_UNDO] * len(state.undo) + [_STACK_REDO] * len(state.redo),
                                         dtype=np.int8)
        arrays[f"m{i}_labels"] = (np.array([r.label for r in records], dtype=str) if records
                                  else np.zeros(0, dtype="<U1"))
        for side in ("before", "after"):
            parts = [np.asarray(getattr(r, side), dtype=np.uint8).ravel() for r in records]
            arrays[f"m{i}_{side}"] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def save_histories(path: str | Path, states: Mapping[str, HistoryState], active: str = "") -> Path:
    """Write :func:`history_bytes` to ``path`` atomically."""
    path = Path(path)
    write_bytes_atomic(path, history_bytes(states, active))
    return path


def load_histories(path: str | Path) -> tuple[dict[str, HistoryState], str]:
    """Read a file written by :func:`save_histories`: ``(states by mask name, active name)``.

    Safe on untrusted files: ``allow_pickle=False``, the unpacked size is checked before reading,
    and every array's dtype, shape and value range is validated; any problem raises
    :class:`HistoryFileError` (naming the file) and nothing is applied."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > HISTORY_MAX_FILE_BYTES:
            raise HistoryFileError(f"{path}: undo history unpacks to {unpacked} bytes (limit {HISTORY_MAX_FILE_BYTES})")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except HistoryFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise HistoryFileError(f"{path}: not a readable undo history ({type(exc).__name__}: {exc})") from None
    try:
        return _parse_histories(arrays)
    except HistoryFileError as exc:
        raise HistoryFileError(f"{path}: {exc}") from None


def _parse_histories(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, HistoryState], str]:
    def get(key: str, kind: str, ndim: int) -> np.ndarray:
        if key not in arrays:
            raise HistoryFileError(f"missing array {key!r}")
        value = arrays[key]
        if value.dtype.kind != kind or value.ndim != ndim:
            raise HistoryFileError(f"array {key!r} is {value.dtype} with {value.ndim} dimensions")
        return value

    if str(get("format", "U", 0)) != HISTORY_FORMAT:
        raise HistoryFileError(f"not an fssgui undo history (format must be {HISTORY_FORMAT!r})")
    version = int(get("version", "i", 0))
    if version != HISTORY_VERSION:
        raise HistoryFileError(f"unknown undo history version {version} (this fssgui reads {HISTORY_VERSION})")
    names = [str(n) for n in get("names", "U", 1)]
    if len(set(names)) != len(names):
        raise HistoryFileError("duplicate mask names")
    active = str(get("active", "U", 0))
    states: dict[str, HistoryState] = {}
    for i, name in enumerate(names):
        shape_array = get(f"m{i}_shape", "i", 1)
        if shape_array.shape != (2,) or (shape_array <= 0).any():
            raise HistoryFileError(f"mask {name!r}: bad shape {shape_array.tolist()}")
        shape = (int(shape_array[0]), int(shape_array[1]))
        digest = str(get(f"m{i}_digest", "U", 0))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise HistoryFileError(f"mask {name!r}: bad digest")
        rects = get(f"m{i}_rects", "i", 2)
        stack = get(f"m{i}_stack", "i", 1)
        labels = get(f"m{i}_labels", "U", 1)
        n = rects.shape[0]
        if rects.shape[1:] != (4,) or stack.shape != (n,) or labels.shape != (n,):
            raise HistoryFileError(f"mask {name!r}: record arrays disagree in length")
        if not np.isin(stack, (_STACK_UNDO, _STACK_REDO)).all() or (np.diff(stack.astype(np.int64)) < 0).any():
            raise HistoryFileError(f"mask {name!r}: bad undo/redo stack marks")
        h, w = shape
        x0, y0, x1, y1 = (rects[:, j] for j in range(4))
        if n and ((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h) | (x0 >= x1) | (y0 >= y1)).any():
            raise HistoryFileError(f"mask {name!r}: a record's rectangle is outside the {w}x{h} mask")
        sizes = [_packed_size(tuple(int(v) for v in r)) for r in rects]
        packed = {}
        for side in ("before", "after"):
            values = get(f"m{i}_{side}", "u", 1)
            if values.dtype != np.uint8 or values.size != sum(sizes):
                raise HistoryFileError(f"mask {name!r}: {side} bits have {values.size} bytes, expected {sum(sizes)}")
            packed[side] = values
        undo, redo, offset = [], [], 0
        for j in range(n):
            rect = tuple(int(v) for v in rects[j])
            size = sizes[j]
            record = _EditRecord(rect, packed["before"][offset:offset + size].copy(),
                                 packed["after"][offset:offset + size].copy(), str(labels[j]))
            offset += size
            (undo if int(stack[j]) == _STACK_UNDO else redo).append(record)
        states[name] = HistoryState(shape, digest, tuple(undo), tuple(redo))
    return states, active
