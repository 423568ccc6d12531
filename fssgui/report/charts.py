"""Charts of the exported figures (numpy/OpenCV): :func:`line_plot` (curves with axes, ticks,
grid, legend and an optional marker) and :func:`bar_chart` (level weights)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from ..look import PALETTE
from .drawing import GREY, INK, LIGHT, fit_text, format_tick, nice_ticks, put_text, rotated_label, text_size

@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    colour: tuple[int, int, int] = PALETTE[0]
    dashed: bool = False


def _dashed_polyline(canvas, points: np.ndarray, colour, thickness: int, dash: int) -> None:
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        n = max(1, int(length // dash))
        for k in range(0, n, 2):
            a, b = k / n, min(1.0, (k + 1) / n)
            p = (int(round(x0 + (x1 - x0) * a)), int(round(y0 + (y1 - y0) * a)))
            q = (int(round(x0 + (x1 - x0) * b)), int(round(y0 + (y1 - y0) * b)))
            cv2.line(canvas, p, q, colour, thickness, cv2.LINE_AA)


def line_plot(
    series: Sequence[Series],
    *,
    width: int = 560,
    height: int = 380,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xlim: Optional[tuple[float, float]] = None,
    ylim: Optional[tuple[float, float]] = None,
    marker: Optional[tuple[float, float]] = None,
    marker_colour=INK,
    scale: float = 1.0,
    legend: bool = True,
) -> np.ndarray:
    """A line chart with axes, ticks, a light grid and a legend: in a corner of the plot where it
    hides no data, else under the chart (which then grows by the legend's height)."""
    W, H = int(round(width * scale)), int(round(height * scale))
    s_text = 0.45 * scale
    canvas = np.full((H, W, 3), 255, np.uint8)
    xs = [float(v) for s in series for v in s.x]
    ys = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    if xlim is None:
        xlim = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if xlim[1] <= xlim[0]:
            xlim = (xlim[0], xlim[0] + 1.0)
    if ylim is None:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        span = hi - lo if hi > lo else max(abs(hi), 1.0)
        ylim = (lo - 0.05 * span, hi + 0.05 * span)
    xt = nice_ticks(*xlim, 6)
    yt = nice_ticks(*ylim, 5)
    ylabels = [format_tick(t, yt) for t in yt]
    text_h = text_size("0", s_text)[1]
    left = int(max((text_size(t, s_text)[0] for t in ylabels), default=0) + (2.2 * text_h if ylabel else 0)
               + 16 * scale)
    right = int(18 * scale)
    top = int((3.2 * text_h if title else 1.2 * text_h) + 6 * scale)
    bottom = int(2 * text_h + (2.2 * text_h if xlabel else 0) + 14 * scale)
    x0, x1, y0, y1 = left, W - right, top, H - bottom

    def px(v: float) -> float:
        return x0 + (v - xlim[0]) / (xlim[1] - xlim[0]) * (x1 - x0)

    def py(v: float) -> float:
        return y1 - (v - ylim[0]) / (ylim[1] - ylim[0]) * (y1 - y0)

    line_w = max(1, int(round(scale)))
    for t in xt:
        x = int(round(px(t)))
        cv2.line(canvas, (x, y0), (x, y1), LIGHT, line_w)
        cv2.line(canvas, (x, y1), (x, y1 + int(5 * scale)), GREY, line_w)
        put_text(canvas, format_tick(t, xt), x, y1 + 8 * scale, s_text, INK, align="center", valign="top")
    for t, text in zip(yt, ylabels):
        y = int(round(py(t)))
        cv2.line(canvas, (x0, y), (x1, y), LIGHT, line_w)
        cv2.line(canvas, (x0 - int(5 * scale), y), (x0, y), GREY, line_w)
        put_text(canvas, text, x0 - 8 * scale, y, s_text, INK, align="right", valign="center")
    cv2.rectangle(canvas, (x0, y0), (x1, y1), GREY, line_w)
    if title:
        put_text(canvas, fit_text(title, W - 8, 0.5 * scale), (x0 + x1) / 2, 6 * scale, 0.5 * scale, INK,
                 bold=True, align="center", valign="top")
    if xlabel:
        put_text(canvas, xlabel, (x0 + x1) / 2, H - 6 * scale, s_text, INK, align="center")
    if ylabel:
        label = rotated_label(ylabel, s_text, bold=False)
        yy = int(max(0, (y0 + y1) / 2 - label.shape[0] / 2))
        lh = min(label.shape[0], H - yy)
        canvas[yy : yy + lh, int(4 * scale) : int(4 * scale) + label.shape[1]] = label[:lh]

    thickness = max(1, int(round(2 * scale)))
    empty = canvas.copy()  # the axes without the curves
    plot_area = canvas[y0 + 1 : y1, x0 + 1 : x1]
    for s in series:
        pts = np.array([(px(float(a)), py(float(b))) for a, b in zip(s.x, s.y) if math.isfinite(float(b))])
        if len(pts) == 0:
            continue
        shifted = pts - [x0 + 1, y0 + 1]
        colour = tuple(int(c) for c in s.colour)
        if s.dashed:
            _dashed_polyline(plot_area, shifted, colour, thickness, int(8 * scale))
        else:
            cv2.polylines(plot_area, [np.round(shifted).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)
        if len(pts) <= 40:
            for p in np.round(shifted).astype(int):
                cv2.circle(plot_area, tuple(p), max(2, int(round(2.5 * scale))), colour, -1, cv2.LINE_AA)
    data = np.any(canvas != empty, axis=-1)  # the pixels the curves cover
    if marker is not None and all(math.isfinite(v) for v in marker):
        mx, my = px(marker[0]), py(marker[1])
        cv2.line(canvas, (int(round(mx)), y0), (int(round(mx)), y1), GREY, line_w, cv2.LINE_AA)
        cv2.circle(canvas, (int(round(mx)), int(round(my))), int(round(6 * scale)), marker_colour, thickness,
                   cv2.LINE_AA)

    if legend and any(s.label for s in series):
        entries = [s for s in series if s.label]
        sw = int(22 * scale)
        row_h = int(text_h * 1.9)
        lw = sw + int(8 * scale) + max(text_size(s.label, s_text)[0] for s in entries) + int(14 * scale)
        lh = row_h * len(entries) + int(8 * scale)
        corners = {
            "tr": (x1 - lw - 6, y0 + 6), "br": (x1 - lw - 6, y1 - lh - 6),
            "tl": (x0 + 6, y0 + 6), "bl": (x0 + 6, y1 - lh - 6),
        }

        def crowding(corner) -> int:  # pixels of drawn data under the legend box
            cx, cy = corners[corner]
            return int(data[max(0, cy) : cy + lh, max(0, cx) : cx + lw].sum())

        best = min(("tr", "br", "tl", "bl"), key=crowding)
        lx, ly = corners[best]
        if crowding(best) > 0:  # every corner hides data: the legend goes under the chart
            below = np.full((lh + int(4 * scale), W, 3), 255, np.uint8)
            canvas = np.concatenate([canvas, below], axis=0)
            lx, ly = x0, H
        box = canvas[ly : ly + lh, lx : lx + lw]
        box[:] = (0.15 * box + 0.85 * 255).astype(np.uint8)
        cv2.rectangle(canvas, (lx, ly), (lx + lw, ly + lh), LIGHT, line_w)
        for i, s in enumerate(entries):
            cy = ly + int(4 * scale) + row_h * i + row_h // 2
            colour = tuple(int(c) for c in s.colour)
            p, q = (lx + int(6 * scale), cy), (lx + int(6 * scale) + sw, cy)
            if s.dashed:
                _dashed_polyline(canvas, np.array([p, q], float), colour, thickness, int(6 * scale))
            else:
                cv2.line(canvas, p, q, colour, thickness, cv2.LINE_AA)
            put_text(canvas, s.label, q[0] + 8 * scale, cy, s_text, INK, valign="center")
    return canvas


def bar_chart(labels: Sequence[str], values: Sequence[float], *, width: int = 560, height: int = 260,
              title: str = "", ylabel: str = "", colour=PALETTE[0], scale: float = 1.0) -> np.ndarray:
    """Vertical bars (one per label); labels are drawn rotated under the axis when they are long."""
    W, H = int(round(width * scale)), int(round(height * scale))
    s_text = 0.4 * scale
    values = [float(v) for v in values]
    hi = max(values + [0.0])
    lo = min(values + [0.0])
    if hi <= lo:
        hi = lo + 1.0
    yt = nice_ticks(lo, hi * 1.05, 5)
    ylabels = [format_tick(t, yt) for t in yt]
    top_v = max(yt[-1] if yt else hi, hi)
    text_h = text_size("0", s_text)[1]
    label_imgs = [rotated_label(str(l), s_text, bold=False) for l in labels]
    label_h = max((i.shape[0] for i in label_imgs), default=0)
    left = int(max((text_size(t, s_text)[0] for t in ylabels), default=0) + (2.4 * text_h if ylabel else 0)
               + 16 * scale)
    top = int((3.2 * text_h if title else text_h) + 6 * scale)
    bottom = int(label_h + 10 * scale)
    H = max(H, top + bottom + int(80 * scale))
    canvas = np.full((H, W, 3), 255, np.uint8)
    x0, x1, y0, y1 = left, W - int(10 * scale), top, H - bottom

    def py(v: float) -> float:
        return y1 - (v - lo) / (top_v - lo) * (y1 - y0)

    line_w = max(1, int(round(scale)))
    for t, text in zip(yt, ylabels):
        y = int(round(py(t)))
        cv2.line(canvas, (x0, y), (x1, y), LIGHT, line_w)
        put_text(canvas, text, x0 - 6 * scale, y, s_text, INK, align="right", valign="center")
    n = max(1, len(values))
    slot = (x1 - x0) / n
    for i, (v, img) in enumerate(zip(values, label_imgs)):
        a = int(round(x0 + slot * i + slot * 0.15))
        b = int(round(x0 + slot * (i + 1) - slot * 0.15))
        cv2.rectangle(canvas, (a, int(round(py(v)))), (max(a, b), int(round(py(0.0)))), tuple(colour), -1)
        cx = int(round(x0 + slot * (i + 0.5) - img.shape[1] / 2))
        cx = max(0, min(W - img.shape[1], cx))
        h = min(img.shape[0], H - (y1 + 4))
        canvas[y1 + 4 : y1 + 4 + h, cx : cx + img.shape[1]] = np.minimum(
            canvas[y1 + 4 : y1 + 4 + h, cx : cx + img.shape[1]], img[:h])
    cv2.line(canvas, (x0, int(round(py(0.0)))), (x1, int(round(py(0.0)))), GREY, line_w)
    cv2.line(canvas, (x0, y0), (x0, y1), GREY, line_w)
    if title:
        put_text(canvas, fit_text(title, W - 8, 0.5 * scale), W / 2, 6 * scale, 0.5 * scale, INK, bold=True,
                 align="center", valign="top")
    if ylabel:
        label = rotated_label(ylabel, s_text, bold=False)
        yy = int(max(0, (y0 + y1) / 2 - label.shape[0] / 2))
        lh = min(label.shape[0], H - yy)
        canvas[yy : yy + lh, int(4 * scale) : int(4 * scale) + label.shape[1]] = label[:lh]
    return canvas


