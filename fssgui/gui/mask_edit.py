"""An editable binary mask with round-brush strokes and a bounded per-stroke undo history.

No Qt here (napari style: the data model knows nothing of views). Views subscribe with
:meth:`EditableMask.subscribe` and receive the dirty rectangle ``(x0, y0, x1, y1)`` (x1/y1
exclusive) of every change, so they can repaint only that area.

Undo memory is bounded: a stroke stores only the bytes of its dirty rectangle, before and after,
bit-packed (``np.packbits``: 1 bit per pixel), and the history keeps at most ``max_steps``
records and ``max_bytes`` bytes (the oldest records are dropped first).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

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

    def reset(self, mask: np.ndarray) -> None:
        """Load a new mask (any shape) and forget the history (not undoable)."""
        self.data = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
        self._undo.clear()
        self._redo.clear()
        self._stroke_before = None
        self._stroke_rect = None
        self._notify((0, 0, self.data.shape[1], self.data.shape[0]))

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

