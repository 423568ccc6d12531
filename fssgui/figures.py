"""Composite figures rendered from the data with numpy/OpenCV (no Qt, no screen grabs).

Building blocks (every function returns a new RGB uint8 ``[H, W, 3]`` array):

* text: :func:`text_image` (ASCII only: OpenCV's Hershey fonts have no other glyphs, so
  :func:`ascii_text` replaces dashes, Greek letters and the like by ASCII spellings);
* layout: :func:`fit`, :func:`pad_to`, :func:`hstack`, :func:`vstack`, :func:`titled`,
  :func:`grid` (rows of tiles with column and row labels);
* scales: :func:`colorbar`, :func:`map_limits` (the colormap and limits of an attribution map:
  ``inferno`` over [min, max] for unsigned maps, the diverging map centred on the "no evidence"
  level for signed ones);
* charts: :func:`line_plot` (curves with axes, ticks, grid, legend and an optional marker) and
  :func:`bar_chart` (level weights);
* the two composite figures: :func:`episode_figure` (query, prediction, region R, ground truth,
  supports, and one row of attribution maps per method with its colorbar) and
  :func:`frame_figure` (one causal-metric step: perturbed supports and masks, the query prediction
  and the foreground probability).

``scale`` arguments multiply every size (fonts, lines, gaps), so a figure meant for a paper can
be rendered at 2x and shown at half size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from .imaging import apply_colormap, colormap_lut, mask_overlay, resize_map, resize_mask

WHITE = (255, 255, 255)
INK = (25, 25, 25)
GREY = (110, 110, 110)
LIGHT = (228, 228, 228)
FONT = cv2.FONT_HERSHEY_SIMPLEX

#: colour-blind-safe qualitative palette (Okabe & Ito), RGB; one colour per method
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (240, 228, 66),
)

PREDICTION_COLOUR = (255, 64, 64)
REGION_COLOUR = (255, 200, 0)
TRUTH_COLOUR = (64, 140, 255)
SUPPORT_COLOUR = (0, 200, 90)

_ASCII = {
    "\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u00b1": "+/-", "\u00d7": "x", "\u2264": "<=", "\u2265": ">=", "\u2192": "->", "\u2026": "...",
    "\u03b1": "alpha", "\u03c3": "sigma", "\u03c4": "tau", "\u00b5": "u", "\u00b0": " deg", "\u2208": "in",
}


def palette_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def ascii_text(text: str) -> str:
    """The text with characters OpenCV cannot draw replaced by ASCII spellings (or '?')."""
    out = []
    for ch in str(text):
        if ch in _ASCII:
            out.append(_ASCII[ch])
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


# ----------------------------------------------------------------------------------------- text
def _thickness(scale: float, bold: bool = False) -> int:
    return max(1, int(round(scale * (2.4 if bold else 1.6))))


def text_size(text: str, scale: float = 0.5, bold: bool = False) -> tuple[int, int, int]:
    """(width, height above the baseline, descent) of ``text`` in pixels."""
    (w, h), base = cv2.getTextSize(ascii_text(text), FONT, scale, _thickness(scale, bold))
    return w, h, base


def put_text(
    canvas: np.ndarray,
    text: str,
    x: float,
    y: float,
    scale: float = 0.5,
    colour=INK,
    bold: bool = False,
    align: str = "left",
    valign: str = "baseline",
) -> None:
    """Draw ``text`` in place; ``align`` left/center/right about x, ``valign`` baseline/top/center about y."""
    text = ascii_text(text)
    w, h, base = text_size(text, scale, bold)
    if align == "center":
        x -= w / 2
    elif align == "right":
        x -= w
    if valign == "top":
        y += h
    elif valign == "center":
        y += h / 2
    cv2.putText(canvas, text, (int(round(x)), int(round(y))), FONT, scale, tuple(int(c) for c in colour),
                _thickness(scale, bold), cv2.LINE_AA)


def text_image(text: str, scale: float = 0.5, colour=INK, bold: bool = False, pad: int = 2,
               background=WHITE) -> np.ndarray:
    """A tight image of one line of text."""
    w, h, base = text_size(text, scale, bold)
    canvas = np.empty((h + base + 2 * pad, w + 2 * pad, 3), np.uint8)
    canvas[...] = np.asarray(background, np.uint8)
    put_text(canvas, text, pad, pad + h, scale, colour, bold)
    return canvas


def fit_text(text: str, width: int, scale: float) -> str:
    """``text`` shortened with '...' so that it fits in ``width`` pixels at ``scale``."""
    text = ascii_text(text)
    if text_size(text, scale)[0] <= width:
        return text
    while len(text) > 1 and text_size(text + "...", scale)[0] > width:
        text = text[:-1]
    return text + "..."


# --------------------------------------------------------------------------------------- layout
def as_rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 from RGB, grey uint8, or a bool mask (white foreground on black)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or bool image data, got {image.dtype}")
    return np.ascontiguousarray(image)


def fit(image: np.ndarray, height: Optional[int] = None, width: Optional[int] = None,
        nearest: bool = False) -> np.ndarray:
    """Resize keeping the aspect ratio so the image is ``height`` tall (or ``width`` wide, or
    fits inside both)."""
    image = as_rgb(image)
    h, w = image.shape[:2]
    factors = []
    if height is not None:
        factors.append(height / h)
    if width is not None:
        factors.append(width / w)
    if not factors:
        return image
    f = min(factors)
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if size == (w, h):
        return image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def pad_to(image: np.ndarray, height: int, width: int, align: str = "center", valign: str = "top",
           background=WHITE) -> np.ndarray:
    image = as_rgb(image)
    h, w = image.shape[:2]
    height, width = max(height, h), max(width, w)
    if (height, width) == (h, w):
        return image
    out = np.empty((height, width, 3), np.uint8)
    out[...] = np.asarray(background, np.uint8)
    x = {"left": 0, "center": (width - w) // 2, "right": width - w}[align]
    y = {"top": 0, "center": (height - h) // 2, "bottom": height - h}[valign]
    out[y : y + h, x : x + w] = image
    return out


def hstack(images: Sequence[np.ndarray], gap: int = 8, valign: str = "top", background=WHITE) -> np.ndarray:
    images = [as_rgb(i) for i in images if i is not None]
    if not images:
        return np.full((1, 1, 3), 255, np.uint8)
    height = max(i.shape[0] for i in images)
    parts = []
    for n, image in enumerate(images):
        if n:
            parts.append(np.full((height, gap, 3), background, np.uint8))
        parts.append(pad_to(image, height, image.shape[1], valign=valign, background=background))
    return np.concatenate(parts, axis=1)


def vstack(images: Sequence[np.ndarray], gap: int = 8, align: str = "left", background=WHITE) -> np.ndarray:
    images = [as_rgb(i) for i in images if i is not None]
    if not images:
        return np.full((1, 1, 3), 255, np.uint8)
    width = max(i.shape[1] for i in images)
    parts = []
    for n, image in enumerate(images):
        if n:
            parts.append(np.full((gap, width, 3), background, np.uint8))
        parts.append(pad_to(image, image.shape[0], width, align=align, background=background))
    return np.concatenate(parts, axis=0)


def border(image: np.ndarray, width: int = 1, colour=GREY) -> np.ndarray:
    image = as_rgb(image)
    return cv2.copyMakeBorder(image, width, width, width, width, cv2.BORDER_CONSTANT, value=tuple(colour))


def margin(image: np.ndarray, size: int, background=WHITE) -> np.ndarray:
    return cv2.copyMakeBorder(as_rgb(image), size, size, size, size, cv2.BORDER_CONSTANT, value=tuple(background))


def titled(image: np.ndarray, title: str, scale: float = 0.5, bold: bool = False, gap: int = 4,
           colour=INK) -> np.ndarray:
    """``image`` with a one-line title centred above it (shortened to the image width)."""
    image = as_rgb(image)
    if not title:
        return image
    text = fit_text(title, max(image.shape[1], 40), scale)
    return vstack([text_image(text, scale, colour, bold), image], gap=gap, align="center")


def rotated_label(text: str, scale: float = 0.5, bold: bool = True) -> np.ndarray:
    """A label reading bottom-to-top (for row labels at the left of a grid)."""
    return np.ascontiguousarray(np.rot90(text_image(text, scale, bold=bold), 1))


def grid(
    rows: Sequence[Sequence[Optional[np.ndarray]]],
    row_labels: Optional[Sequence[str]] = None,
    gap: int = 8,
    scale: float = 0.5,
    background=WHITE,
    align_columns: bool = True,
) -> np.ndarray:
    """Tiles in rows and columns; every column as wide as its widest tile, every row as tall as
    its tallest; ``None`` leaves a cell empty. Row labels are drawn rotated at the left.
    With ``align_columns=False`` every row is simply packed from the left."""
    ncols = max((len(r) for r in rows), default=0)
    widths = [0] * ncols
    for r in rows:
        for c, tile in enumerate(r):
            if tile is not None:
                widths[c] = max(widths[c], tile.shape[1])
    if not align_columns:
        rows = [[t for t in r if t is not None] for r in rows]
    out_rows = []
    for i, r in enumerate(rows):
        height = max((t.shape[0] for t in r if t is not None), default=1)
        cells = []
        for c in range(ncols):
            tile = r[c] if c < len(r) else None
            if not align_columns:
                if tile is not None:
                    cells.append(pad_to(tile, height, tile.shape[1], valign="top", background=background))
                continue
            if widths[c] == 0:
                continue
            if tile is None:
                cells.append(np.full((height, widths[c], 3), background, np.uint8))
            else:
                cells.append(pad_to(tile, height, widths[c], align="center", valign="top", background=background))
        row = hstack(cells, gap=gap, background=background)
        if row_labels is not None:
            label = rotated_label(row_labels[i] if i < len(row_labels) else "", scale)
            if label.shape[0] > row.shape[0]:
                label = fit(label, height=row.shape[0])
            row = hstack([pad_to(label, row.shape[0], label.shape[1], valign="center", background=background), row],
                         gap=gap, background=background)
        out_rows.append(row)
    return vstack(out_rows, gap=gap, align="right" if align_columns else "left", background=background)


# ---------------------------------------------------------------------------------------- scales
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about ``count`` of them)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=10 * magnitude)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def format_tick(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick spacing needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9))) if step > 0 else 0
    if step > 0 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3 and decimals > 4):
        return f"{value:.1e}"
    return f"{value:.{min(decimals, 6)}f}"


@dataclass
class MapLimits:
    colormap: str
    vmin: float
    vmax: float
    centre: Optional[float] = None  # value drawn with the diverging map's neutral colour
    data_min: Optional[float] = None  # the values' actual range (a colorbar shows only that part)
    data_max: Optional[float] = None


def map_limits(values: Sequence[np.ndarray] | np.ndarray, signed: bool = False,
               zero_level: Optional[float] = None, colormap: Optional[str] = None) -> MapLimits:
    """Colormap and limits shared by the maps of one method (all supports on one scale).

    Unsigned maps: ``inferno`` over [min, max]. Signed maps: ``diverging`` centred on
    ``zero_level`` (AffEx signed, whose min-max scaled values put "no affinity" there) or on 0
    (symmetric limits), so the neutral colour always means "no evidence"."""
    flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in (values if isinstance(values, (list, tuple))
                                                                        else [values])])
    finite = flat[np.isfinite(flat)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if signed:
        centre = 0.0 if zero_level is None else float(zero_level)
        half = max(hi - centre, centre - lo)
        half = half if half > 0 else 1.0
        return MapLimits(colormap or "diverging", centre - half, centre + half, centre, lo, hi)
    if hi <= lo:
        hi = lo + 1.0
    return MapLimits(colormap or "inferno", lo, hi, None, lo, hi)


def limits_colorbar(limits: MapLimits, height: int, label: str = "attribution", scale: float = 0.45) -> np.ndarray:
    """The colorbar of :func:`map_limits`: only the part of the scale the values cover, and for
    signed maps a marked neutral level (its value in the label)."""
    lo = limits.vmin if limits.data_min is None else max(limits.vmin, limits.data_min)
    hi = limits.vmax if limits.data_max is None else min(limits.vmax, limits.data_max)
    if hi <= lo:
        lo, hi = limits.vmin, limits.vmax
    if limits.centre is not None:
        label = f"{label} (signed; neutral = {limits.centre:.2f})" if limits.centre != 0 else f"{label} (signed)"
    return colorbar(limits.colormap, limits.vmin, limits.vmax, height, label, scale, show=(lo, hi),
                    centre=limits.centre)


def colorbar(colormap: str, vmin: float, vmax: float, height: int, label: str = "", scale: float = 0.45,
             bar_width: Optional[int] = None, ticks: Optional[Sequence[float]] = None,
             show: Optional[tuple[float, float]] = None, centre: Optional[float] = None) -> np.ndarray:
    """A vertical colorbar (high values on top) of the colormap over [vmin, vmax], with tick
    labels at the right and an optional rotated label. ``show=(lo, hi)`` draws only that part of
    the scale; ``centre`` marks a level (the neutral value of a signed map) with a dark line."""
    bar_width = bar_width or max(10, int(round(28 * scale)))
    pad_v = int(round(10 * scale)) + 4
    bar_h = max(20, height - 2 * pad_v)
    lut = colormap_lut(colormap)
    lo, hi = show if show is not None else (vmin, vmax)
    values = np.linspace(hi, lo, bar_h)
    span = vmax - vmin if vmax > vmin else 1.0
    ramp = np.clip((values - vmin) / span * 255.0, 0, 255).round().astype(np.uint8)
    bar = np.repeat(lut[ramp][:, None, :], bar_width, axis=1)
    if centre is not None and lo < centre < hi:
        row = int(round((hi - centre) / (hi - lo) * (bar_h - 1)))
        bar[max(0, row - 1) : row + 1] = INK
    bar = border(bar, 1, GREY)
    vmin, vmax = lo, hi  # ticks and their positions along the part shown
    ticks = list(ticks) if ticks is not None else nice_ticks(vmin, vmax, 5)
    ticks = [t for t in ticks if vmin - 1e-9 <= t <= vmax + 1e-9]
    labels = [format_tick(t, ticks) for t in ticks]
    label_w = max((text_size(t, scale)[0] for t in labels), default=0)
    tick_len = max(3, int(round(8 * scale)))
    width = bar.shape[1] + tick_len + 4 + label_w + 2
    canvas = np.full((bar_h + 2 + 2 * pad_v, width, 3), 255, np.uint8)
    canvas[pad_v : pad_v + bar.shape[0], : bar.shape[1]] = bar
    for t, text in zip(ticks, labels):
        frac = (t - vmin) / (vmax - vmin) if vmax > vmin else 0.5
        y = pad_v + 1 + (1 - frac) * (bar_h - 1)
        x0 = bar.shape[1]
        cv2.line(canvas, (x0, int(round(y))), (x0 + tick_len, int(round(y))), GREY, 1, cv2.LINE_AA)
        put_text(canvas, text, x0 + tick_len + 3, y, scale, INK, valign="center")
    if label:
        canvas = hstack([canvas, pad_to(rotated_label(label, scale, bold=False), canvas.shape[0],
                                        text_size(label, scale)[1] + 8, valign="center")], gap=2)
    return canvas


# ---------------------------------------------------------------------------------------- charts
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
    """A line chart with axes, ticks, a light grid and a legend (placed in the emptiest corner)."""
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

        def crowding(corner) -> int:
            cx, cy = corners[corner]
            count = 0
            for s in series:
                for a, b in zip(s.x, s.y):
                    if math.isfinite(float(b)) and cx <= px(float(a)) <= cx + lw and cy <= py(float(b)) <= cy + lh:
                        count += 1
            return count

        lx, ly = corners[min(("tr", "br", "tl", "bl"), key=crowding)]
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


# ------------------------------------------------------------------------------------ composites
def heatmap_tile(image: np.ndarray, values: np.ndarray, limits: MapLimits, alpha: float = 0.65,
                 mask: Optional[np.ndarray] = None) -> np.ndarray:
    """A map over its image at the image's resolution, with the support mask's outline."""
    values = resize_map(values, image.shape[:2])
    coloured = apply_colormap(values, limits.colormap, limits.vmin, limits.vmax)
    out = np.clip(image.astype(np.float32) * (1 - alpha) + coloured.astype(np.float32) * alpha + 0.5, 0,
                  255).astype(np.uint8)
    if mask is not None:
        out = outline(out, mask, (255, 255, 255))
    return out


def outline(image: np.ndarray, mask: np.ndarray, colour=(255, 255, 255), thickness: Optional[int] = None) -> np.ndarray:
    """``image`` with the outline of ``mask`` drawn on it."""
    out = as_rgb(image).copy()
    mask = resize_mask(mask, out.shape[:2])
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = thickness or max(1, round(max(out.shape[:2]) / 250))
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness, cv2.LINE_AA)
    return out


@dataclass
class MapRow:
    """One method's attribution maps (one per support, any resolution) and how to colour them."""

    label: str
    maps: Sequence[np.ndarray]
    signed: bool = False
    zero_level: Optional[float] = None
    colormap: Optional[str] = None


def episode_figure(
    query_image: np.ndarray,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    rows: Sequence[MapRow] = (),
    *,
    prediction: Optional[np.ndarray] = None,
    region: Optional[np.ndarray] = None,
    region_label: str = "",
    ground_truth: Optional[np.ndarray] = None,
    iou: Optional[float] = None,
    title: str = "",
    tile: int = 240,
    scale: float = 1.0,
    alpha: float = 0.65,
) -> np.ndarray:
    """The composite figure of an explanation.

    Row "Query": the query, its prediction (red, with the IoU when the ground truth is known),
    the region R (yellow) and the ground truth (blue). Row "Supports": each support with its mask
    (green). Then one row per method: its map over each support (mask outlined in white) and a
    colorbar shared by the row."""
    tile = int(round(tile * scale))
    s_title = 0.5 * scale
    gap = int(round(8 * scale))

    def tile_of(image: np.ndarray, caption: str) -> np.ndarray:
        return titled(border(fit(image, height=tile), 1, GREY), caption, s_title, gap=int(3 * scale))

    query_row = [tile_of(query_image, "Query")]
    if prediction is not None:
        caption = "Prediction" + (f" (IoU {iou:.3f})" if iou is not None else "")
        query_row.append(tile_of(mask_overlay(query_image, prediction, PREDICTION_COLOUR), caption))
    if region is not None:
        caption = "Region R" + (f" ({region_label})" if region_label else "")
        query_row.append(tile_of(mask_overlay(query_image, region, REGION_COLOUR), caption))
    if ground_truth is not None:
        query_row.append(tile_of(mask_overlay(query_image, ground_truth, TRUTH_COLOUR), "Ground truth"))
    support_row = [tile_of(mask_overlay(img, m, SUPPORT_COLOUR), f"Support {k + 1}")
                   for k, (img, m) in enumerate(zip(support_images, support_masks))]
    table: list[list[Optional[np.ndarray]]] = [query_row, support_row]
    labels = ["Query", "Supports"]
    for row in rows:
        limits = map_limits(list(row.maps), row.signed, row.zero_level, row.colormap)
        tiles: list[Optional[np.ndarray]] = []
        for k, (img, m, values) in enumerate(zip(support_images, support_masks, row.maps)):
            tiles.append(tile_of(heatmap_tile(img, values, limits, alpha, m), f"{row.label}, support {k + 1}"))
        bar_h = tiles[0].shape[0] if tiles else tile
        tiles.append(limits_colorbar(limits, bar_h, "attribution", 0.42 * scale))
        table.append(tiles)
        labels.append(row.label)
    body = grid(table, row_labels=labels, gap=gap, scale=0.55 * scale, align_columns=False)
    parts = [body]
    if title:
        parts.insert(0, text_image(title, 0.6 * scale, bold=True))
    return margin(vstack(parts, gap=gap, align="center"), gap)


def frame_figure(
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    query_image: np.ndarray,
    prediction: np.ndarray,
    probability: np.ndarray,
    *,
    title: str = "",
    tile: int = 200,
    scale: float = 1.0,
) -> np.ndarray:
    """One causal-metric step: each perturbed support and its mask, the query prediction on them
    and the foreground probability (with a 0..1 colorbar)."""
    tile = int(round(tile * scale))
    s_title = 0.45 * scale

    def tile_of(image, caption, nearest=False):
        return titled(border(fit(image, height=tile, nearest=nearest), 1, GREY), caption, s_title, gap=int(3 * scale))

    tiles = []
    for k, (img, m) in enumerate(zip(support_images, support_masks)):
        tiles.append(tile_of(img, f"Support {k + 1} (perturbed)"))
        tiles.append(tile_of(as_rgb(np.asarray(m, bool)), f"Support {k + 1} mask", nearest=True))
    tiles.append(tile_of(mask_overlay(query_image, prediction, PREDICTION_COLOUR), "Query prediction"))
    prob = resize_map(probability, query_image.shape[:2])
    tiles.append(tile_of(apply_colormap(prob, "inferno", 0.0, 1.0), "Foreground probability"))
    tiles.append(colorbar("inferno", 0.0, 1.0, tiles[-1].shape[0], "p(foreground)", 0.4 * scale))
    body = hstack(tiles, gap=int(round(6 * scale)), valign="top")
    if title:
        body = vstack([text_image(fit_text(title, body.shape[1], 0.55 * scale), 0.55 * scale, bold=True), body],
                      gap=int(6 * scale), align="left")
    return margin(body, int(round(8 * scale)))
