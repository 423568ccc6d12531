"""Drawing blocks of the exported figures, rendered from the data with numpy/OpenCV (no Qt, no
screen grabs). Every function returns a new RGB uint8 ``[H, W, 3]`` array.

* text: :func:`text_image` (ASCII only: OpenCV's Hershey fonts have no other glyphs, so
  :func:`ascii_text` replaces dashes, Greek letters and the like by ASCII spellings);
* layout: :func:`fit`, :func:`pad_to`, :func:`hstack`, :func:`vstack`, :func:`titled`,
  :func:`grid` (rows of tiles with column and row labels);
* scales: :func:`nice_ticks`, :func:`colorbar` (vertical) and :func:`scale_colorbar` (the colour
  scale of an attribution map, :class:`fssgui.look.Scale`, vertical or horizontal).

``scale`` arguments multiply every size (fonts, lines, gaps), so a figure meant for a paper can
be rendered at 2x and shown at half size.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

from ..look import Scale, colormap_lut

WHITE = (255, 255, 255)
INK = (25, 25, 25)
GREY = (110, 110, 110)
LIGHT = (228, 228, 228)
FONT = cv2.FONT_HERSHEY_SIMPLEX

_ASCII = {
    "\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u00b1": "+/-", "\u00d7": "x", "\u2264": "<=", "\u2265": ">=", "\u2192": "->", "\u2026": "...",
    "\u03b1": "alpha", "\u03c3": "sigma", "\u03c4": "tau", "\u00b5": "u", "\u00b0": " deg", "\u2208": "in",
}


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


def fitted_text_image(text: str, width: int, scale: float = 0.5, colour=INK, bold: bool = False) -> np.ndarray:
    """One line of text at most ``width`` px wide: in a smaller font (down to 70%) when it is
    wider, then shortened with '...' if it still is."""
    needed = text_size(text, scale, bold)[0]
    if needed > width:
        scale = max(0.7 * scale, scale * width / needed)
    return text_image(fit_text(text, width, scale), scale, colour, bold)


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
    """``image`` with a one-line title centred above it (:func:`fitted_text_image`)."""
    image = as_rgb(image)
    if not title:
        return image
    return vstack([fitted_text_image(title, max(image.shape[1], 40), scale, colour, bold), image], gap=gap,
                  align="center")


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


def scale_colorbar(scale: Scale, length: int, label: str = "attribution", text_scale: float = 0.45,
                   horizontal: bool = False) -> np.ndarray:
    """The colorbar of an attribution map's :class:`~fssgui.look.Scale`, ``length`` px long: only
    the part of the scale the values cover, and for a signed map a marked neutral level (its
    value in the label). ``horizontal``: low values at the left, ticks and label under the bar."""
    lo = scale.vmin if scale.data_min is None else max(scale.vmin, scale.data_min)
    hi = scale.vmax if scale.data_max is None else min(scale.vmax, scale.data_max)
    if hi <= lo:
        lo, hi = scale.vmin, scale.vmax
    centre = scale.center if scale.signed else None
    if centre is not None:
        label = f"{label} (neutral {centre:.2f})" if centre != 0 else f"{label} (signed)"
    if not horizontal:
        return colorbar(scale.colormap, scale.vmin, scale.vmax, length, label, text_scale, show=(lo, hi),
                        centre=centre)
    return _horizontal_colorbar(scale.colormap, scale.vmin, scale.vmax, length, label, text_scale, (lo, hi), centre)


def _horizontal_colorbar(colormap: str, vmin: float, vmax: float, width: int, label: str, scale: float,
                         show: tuple[float, float], centre: Optional[float]) -> np.ndarray:
    """A horizontal colorbar ``width`` px wide (low values at the left), tick labels and the
    label (shortened to the width) under it."""
    pad = int(round(8 * scale)) + 3  # room for the first and last tick labels
    bar_w = max(20, width - 2 * pad)
    bar_h = max(8, int(round(24 * scale)))
    lo, hi = show
    values = np.linspace(lo, hi, bar_w)
    span = vmax - vmin if vmax > vmin else 1.0
    ramp = np.clip((values - vmin) / span * 255.0, 0, 255).round().astype(np.uint8)
    bar = np.repeat(colormap_lut(colormap)[ramp][None, :, :], bar_h, axis=0)
    if centre is not None and lo < centre < hi:
        col = int(round((centre - lo) / (hi - lo) * (bar_w - 1)))
        bar[:, max(0, col - 1) : col + 1] = INK
    bar = border(bar, 1, GREY)
    ticks = [t for t in nice_ticks(lo, hi, max(2, min(6, bar_w // int(60 * scale + 1))))
             if lo - 1e-9 <= t <= hi + 1e-9]
    labels = [format_tick(t, ticks) for t in ticks]
    tick_len = max(3, int(round(8 * scale)))
    text_h = text_size("0", scale)[1]
    height = bar.shape[0] + tick_len + 4 + text_h + 4
    canvas = np.full((height, bar_w + 2 + 2 * pad, 3), 255, np.uint8)
    canvas[: bar.shape[0], pad : pad + bar.shape[1]] = bar
    for t, text in zip(ticks, labels):
        frac = (t - lo) / (hi - lo) if hi > lo else 0.5
        x = pad + 1 + frac * (bar_w - 1)
        y = bar.shape[0]
        cv2.line(canvas, (int(round(x)), y), (int(round(x)), y + tick_len), GREY, 1, cv2.LINE_AA)
        put_text(canvas, text, x, y + tick_len + 2, scale, INK, align="center", valign="top")
    if label:
        canvas = vstack([canvas, fitted_text_image(label, canvas.shape[1], scale)], gap=2, align="center")
    return canvas
