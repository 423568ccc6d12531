"""The report's composite figures, rendered from the data (numpy/OpenCV, no Qt), in the look of
:mod:`fssgui.look` (the colours, colour scales and overlays of the app's screen):

* :func:`episode_figure`: the query with its prediction, region R and ground truth, then a grid
  with one row per support (the support with its mask, then each method's map over it) and one
  column per method, its colour scale under the column;
* :func:`frame_figure`: one causal-metric step (perturbed supports and masks, the query
  prediction and the foreground probability);
* :func:`report_figures`: every figure of a report, by file name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .. import look
from ..imaging import resize_map
from . import charts
from ..metrics.causal import MEASURE_TITLES, Curve
from .drawing import (
    GREY,
    as_rgb,
    border,
    colorbar,
    fit,
    fit_text,
    grid,
    hstack,
    margin,
    rotated_label,
    scale_colorbar,
    text_image,
    titled,
    vstack,
)
from .pdf import PDF_TEXT_WIDTH_PX
from .summary import ReportInputs

#: the narrowest a map column may get when a figure has a fixed width (more methods wrap into
#: another block of columns)
MIN_MAP_TILE_PX = 150
#: the tallest a tile gets when a figure has a fixed width (one support, one method)
MAX_TILE_PX = 340
#: a curve plot's width: two fit side by side in the PDF's text column
CURVES_WIDTH_PX = (PDF_TEXT_WIDTH_PX - 12) // 2


def safe_name(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``-_.``; ``@`` spelled ``at``)."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return keep.replace("@", "at") or "x"


def episode_figure_name() -> str:
    return "figure_episode.png"


def curves_figure_name(metric: str) -> str:
    return f"figure_curves_{safe_name(metric)}.png"


def level_weights_figure_name(method: str) -> str:
    return f"figure_level_weights_{safe_name(method)}.png"


@dataclass
class MapRow:
    """One method's attribution maps (one per support, any resolution) and how to colour them."""

    label: str
    maps: Sequence[np.ndarray]
    signed: bool = False
    zero_level: Optional[float] = None

    def scale(self) -> look.Scale:
        return look.map_scale(list(self.maps), self.signed, self.zero_level)


def _line_width(scale: float) -> int:
    """Outline width (px) in a figure drawn at ``scale``: visible at the size it is shown."""
    return max(1, int(round(1.5 * scale)))


def _aspect(image: np.ndarray) -> float:
    return image.shape[1] / max(1, image.shape[0])


def _tile_height(aspects: Sequence[float], width: Optional[int], tile: int, gap: int, label_w: int,
                 low: int = 16) -> int:
    """The tile height at which a row of tiles with these aspects fills ``width`` (after the row
    label and the gaps), at most ``tile``; ``tile`` when there is no width to fill."""
    if width is None or not aspects:
        return tile
    room = width - label_w - gap * len(aspects) - 2 * len(aspects)  # gaps, label gap, tile borders
    return int(max(low, min(tile, room / sum(aspects))))


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
    width: Optional[int] = None,
    scale: float = 1.0,
) -> np.ndarray:
    """The composite figure of an explanation, drawn as the app draws it (:mod:`fssgui.look`).

    Row "Query": the query, its prediction (outlined, with the IoU when the ground truth is
    known), the region R (tinted) and the ground truth (outlined). Then one row per support: the
    support with its mask (tinted) and each method's map over it (mask outlined), one column per
    method with the method's colour scale under it (one scale for all supports).

    Sizes are in px at ``scale`` 1. ``width``: the figure fills this width (tiles at most
    ``tile`` high; columns narrower than :data:`MIN_MAP_TILE_PX` wrap the methods into further
    blocks of columns); without it every tile is ``tile`` high."""
    s_title = 0.5 * scale
    gap = int(round(8 * scale))
    label_scale = 0.55 * scale
    label_w = rotated_label("Support 1", label_scale).shape[1] + gap
    full_width = None if width is None else int(round(width * scale)) - 2 * gap
    max_tile = int(round(tile * scale))

    line = _line_width(scale)

    def tile_of(draw: Callable[[np.ndarray], np.ndarray], image: np.ndarray, caption: str, height: int) -> np.ndarray:
        """``draw`` applied to ``image`` shrunk to the tile (so outlines keep their width)."""
        framed = border(draw(fit(image, height=height)), 1, GREY)
        return titled(framed, caption, s_title, gap=int(3 * scale)) if caption else framed

    # ------------------------------------------------------------------------------ the query
    query_tiles: list[tuple[Callable[[np.ndarray], np.ndarray], str]] = [(lambda small: small, "Query")]
    if prediction is not None:
        caption = "Prediction" + (f", IoU {iou:.3f}" if iou is not None else "")
        query_tiles.append((lambda small: look.outline(small, prediction, look.PREDICTION_COLOUR, thickness=line),
                            caption))
    if region is not None:
        caption = "Region R" + (f" ({region_label})" if region_label else "")
        query_tiles.append((lambda small: look.tint(small, region, look.REGION_COLOUR), caption))
    if ground_truth is not None:
        query_tiles.append((lambda small: look.outline(small, ground_truth, look.TRUTH_COLOUR, thickness=line),
                            "Ground truth"))
    height = _tile_height([_aspect(query_image)] * len(query_tiles), full_width, max_tile, gap, label_w)
    parts = [grid([[tile_of(draw, query_image, caption, height) for draw, caption in query_tiles]],
                  row_labels=["Query"], gap=gap, scale=label_scale, align_columns=False)]

    # ------------------------------------------------------------------- supports x methods
    scales = [row.scale() for row in rows]
    per_block = len(rows)
    if full_width is not None and rows:
        aspect = max(_aspect(image) for image in support_images)
        room = full_width - label_w
        per_block = max(1, min(len(rows), int(room // (MIN_MAP_TILE_PX * scale * aspect + gap + 2)) - 1))
    blocks = [list(range(i, min(len(rows), i + per_block))) for i in range(0, max(1, len(rows)), max(1, per_block))]
    for block in blocks:
        table: list[list[Optional[np.ndarray]]] = []
        labels = []
        tile_width = 0
        for k, (image, mask) in enumerate(zip(support_images, support_masks)):
            # every block as many columns as the first, so the tiles of all blocks are the same size
            height = _tile_height([_aspect(image)] * (1 + per_block), full_width, max_tile, gap, label_w)
            first = k == 0
            cells = [tile_of(lambda small: look.tint(small, mask, look.SUPPORT_MASK_COLOUR), image,
                             "Support and mask" if first else "", height)]
            for i in block:
                cells.append(tile_of(
                    lambda small, i=i: look.heat_overlay(small, rows[i].maps[k], scales[i], mask=mask, thickness=line),
                    image, rows[i].label if first else "", height))
            tile_width = max(tile_width, max(c.shape[1] for c in cells[1:]) if block else 0)
            table.append(cells)
            labels.append(f"Support {k + 1}")
        if block:
            bars = [scale_colorbar(scales[i], tile_width, "attribution", 0.42 * scale, horizontal=True)
                    for i in block]
            table.append([None] + bars)
            labels.append("")
        parts.append(grid(table, row_labels=labels, gap=gap, scale=label_scale))
    if title:
        parts.insert(0, text_image(title, 0.6 * scale, bold=True))
    return margin(vstack(parts, gap=gap, align="left"), gap)


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

    small_query = fit(query_image, height=tile)

    tiles = []
    for k, (img, m) in enumerate(zip(support_images, support_masks)):
        tiles.append(tile_of(img, f"Support {k + 1} (perturbed)"))
        tiles.append(tile_of(as_rgb(np.asarray(m, bool)), f"Support {k + 1} mask", nearest=True))
    tiles.append(tile_of(look.outline(small_query, prediction, look.PREDICTION_COLOUR, thickness=_line_width(scale)),
                         "Query prediction"))
    prob = resize_map(probability, query_image.shape[:2])
    tiles.append(tile_of(look.apply_colormap(prob, look.PROBABILITY_COLORMAP, 0.0, 1.0), "Foreground probability"))
    tiles.append(colorbar(look.PROBABILITY_COLORMAP, 0.0, 1.0, tiles[-1].shape[0], "p(foreground)", 0.4 * scale))
    body = hstack(tiles, gap=int(round(6 * scale)), valign="top")
    if title:
        body = vstack([text_image(fit_text(title, body.shape[1], 0.55 * scale), 0.55 * scale, bold=True), body],
                      gap=int(6 * scale), align="left")
    return margin(body, int(round(8 * scale)))


def report_figures(inputs: ReportInputs, summary: Mapping[str, Any], scale: float = 2.0,
                   width: int = PDF_TEXT_WIDTH_PX) -> dict[str, np.ndarray]:
    """The report's figures, by file name: the episode with every method's maps (``width`` px
    wide at scale 1: the PDF's text column), one curve plot per metric (methods overlaid, AUC in
    the legend) and the level weights of each method."""
    ep = inputs.episode
    figures: dict[str, np.ndarray] = {}
    rows = [MapRow(m.name, m.maps, m.signed, m.zero_level) for m in inputs.methods]
    iou = summary["prediction"]["iou"]
    figures[episode_figure_name()] = episode_figure(
        ep.query_image, [s.image for s in ep.supports], [s.mask for s in ep.supports], rows,
        prediction=inputs.prediction, region=inputs.region, region_label=inputs.region_source,
        ground_truth=ep.query_mask, iou=iou, tile=MAX_TILE_PX, width=width, scale=scale,
    )
    for metric in _ordered_metrics(inputs.curves):
        curves = [c for c in inputs.curves if c.metric == metric]
        series = []
        for i, c in enumerate(curves):
            label = c.method + (f" ({c.value_name()} {c.value:.4f})" if c.value is not None else " (incomplete)")
            series.append(charts.Series(label, c.fractions, c.scores,
                                        look.palette_colour(_method_index(inputs, c.method, i))))
        first = curves[0]
        verb = "deleted" if first.mode == "deletion" else "inserted"
        ylabel = "confidence over R" if first.measure == "confidence" else "foreground IoU"
        # half the text width: two metrics side by side (their settings are in the report's table)
        figures[curves_figure_name(metric)] = charts.line_plot(
            series, title=f"{first.title} ({MEASURE_TITLES.get(first.measure, first.measure)})",
            xlabel=f"fraction of support pixels {verb}", ylabel=ylabel, scale=scale, width=CURVES_WIDTH_PX,
            height=250,
        )
    for i, m in enumerate(inputs.methods):
        weights = summary["methods"][m.name].get("level_weights")
        if weights:
            figures[level_weights_figure_name(m.name)] = charts.bar_chart(
                weights["names"], weights["values"], title=f"Level weights: {m.name}", ylabel="weight",
                colour=look.palette_colour(i), scale=scale, width=560, height=220,
            )
    return figures


def _method_index(inputs: ReportInputs, method: str, fallback: int) -> int:
    names = [m.name for m in inputs.methods]
    return names.index(method) if method in names else fallback


def _ordered_metrics(curves: Sequence[Curve]) -> list[str]:
    seen: list[str] = []
    for c in curves:
        if c.metric not in seen:
            seen.append(c.metric)
    return seen
