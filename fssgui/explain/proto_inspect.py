"""ScaleProtoSeg interaction, headless: pixel inspector, nearest prototypes, class comparison
and export (spec ``scaleprotoseg.md`` §3.2, §3.3, §3.4, §5 "Interaction"). No Qt here; the
Prototypes tab only shows what these functions return.

Everything works on a :class:`~fssgui.explain.prototypes.PrototypeExplanation` (one class of one
:class:`~fssgui.explain.prototypes.ScaleProtoSegRun`), so no model forward is needed:

* :class:`CellGrid` maps image pixels to feature cells. The cell box follows the official
  convention (``push``/``nearest_proto``: cell = image size / grid size), which is also how the
  cubic-upsampled heatmaps are laid over the image, so a click on a hot spot of a heatmap lands
  on the cell that made it. The feature stride (8 for the DeepLab backbone) is measured from the
  model input and grid sizes, never assumed.
* :func:`inspect_cell`: at one cell, every prototype activation of the class (with its scale and
  the squared distance it came from), the class's group activations, and all class logits and
  softmax probabilities (at the explanation's threshold α, like the graph).
* :func:`nearest_prototypes`: the official ``nearest_proto`` analysis for a chosen cell: the top-k
  *used* prototypes (non-zero group weight after α) of all classes by activation at the cell (=
  smallest distance: the log activation is monotone in the distance), each with the box grown
  from the cell over pixels whose activation is >= 0.99 x its activation at the cell, inside the
  region of the class predicted at the cell; and the push's training patch when the checkpoint
  has projection metadata.
* :func:`compare_classes`: two classes side by side with *shared* min/max normalisation per map
  kind (official ``failure_cases``), rendered by :meth:`ClassComparison.render_sheet`.
* :func:`export_class`: PNG overlays, the group-assignment map and the class's group weights and
  edges as JSON (``proto_info`` lists shaped like the official ``proto_info.json``), every file
  written atomically.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from ..errors import ExplainError
from .prototypes import (
    PrototypeExplanation,
    ProjectionInfo,
    ScaleProtoSegRun,
    _softmax,
    activation_overlay,
    assignment_overlay,
    explain_class,
    render_graph_png,
    upsample_cubic,
)

#: the official ``nearest_proto`` box: pixels with activation >= this x the activation at the cell
NEAREST_BOX_RATIO = 0.99
NO_PROJECTION_TEXT = "no projection metadata available (no push output found for this checkpoint)"

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in image pixels, half-open


# --------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class CellGrid:
    """Image pixels <-> feature cells of one run."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    grid_hw: tuple[int, int]

    @classmethod
    def of(cls, run: ScaleProtoSegRun) -> "CellGrid":
        return cls(tuple(run.image_hw), tuple(run.input_hw), tuple(run.grid_hw))

    @property
    def stride(self) -> tuple[int, int]:
        """Feature stride in model-input pixels (rows, columns): the spacing of the cell centres,
        ``(input - 1) / (grid - 1)`` rounded (8 for DeepLabv2 at any input size)."""

        def one(size: int, cells: int) -> int:
            if cells > 1:
                return max(1, round((size - 1) / (cells - 1)))
            return max(1, size)

        return one(self.input_hw[0], self.grid_hw[0]), one(self.input_hw[1], self.grid_hw[1])

    @property
    def cell_size(self) -> tuple[float, float]:
        """Image pixels per cell (rows, columns)."""
        return self.image_hw[0] / self.grid_hw[0], self.image_hw[1] / self.grid_hw[1]

    def cell_at(self, x: float, y: float) -> Optional[tuple[int, int]]:
        """Cell ``(i, j)`` (row, column) under image point ``(x, y)`` (pixel ``(c, r)`` covers
        ``[c, c+1) x [r, r+1)``); None outside the image. The pixel decides, so all of a pixel
        belongs to one cell."""
        h, w = self.image_hw
        if not (0 <= x < w and 0 <= y < h):
            return None
        row, column = int(math.floor(y)), int(math.floor(x))
        i = min(self.grid_hw[0] - 1, row * self.grid_hw[0] // h)
        j = min(self.grid_hw[1] - 1, column * self.grid_hw[1] // w)
        return i, j

    def cell_box(self, i: int, j: int) -> Box:
        """Image pixels of cell ``(i, j)``: exactly the pixels :meth:`cell_at` maps to it."""
        if not (0 <= i < self.grid_hw[0] and 0 <= j < self.grid_hw[1]):
            raise ExplainError(f"cell ({i}, {j}) is outside the {self.grid_hw[0]}x{self.grid_hw[1]} feature grid")

        def span(k: int, size: int, cells: int) -> tuple[int, int]:
            start = -((-k * size) // cells)  # ceil(k * size / cells)
            end = -((-(k + 1) * size) // cells)
            return min(start, size - 1), min(size, max(end, start + 1))

        y0, y1 = span(i, self.image_hw[0], self.grid_hw[0])
        x0, x1 = span(j, self.image_hw[1], self.grid_hw[1])
        return y0, y1, x0, x1

    def describe(self) -> str:
        sy, sx = self.stride
        ch, cw = self.cell_size
        stride = f"{sy}" if sy == sx else f"{sy}x{sx}"
        return (f"feature grid {self.grid_hw[0]}x{self.grid_hw[1]}, stride {stride} px at the model input "
                f"({self.input_hw[1]}x{self.input_hw[0]}), cell {cw:.1f}x{ch:.1f} px of the image")


def activation_to_distance(activation: np.ndarray | float, epsilon: float) -> np.ndarray:
    """Invert ``a = log((d + 1) / (d + eps))``: ``d = (1 - eps e^a) / (e^a - 1)`` (>= 0)."""
    e = np.exp(np.asarray(activation, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (1.0 - epsilon * e) / (e - 1.0)
    return np.clip(np.nan_to_num(d, nan=np.inf, posinf=np.inf), 0.0, None)


def grow_box(hot: np.ndarray, box: Box) -> Box:
    """Grow ``box`` (half-open y0, y1, x0, x1) one row or column at a time while the row/column
    just outside it holds a ``hot`` pixel within the box's current extent; stops when no side can
    grow (the greedy crop of the official analyses, without their fixed 5-pixel margin)."""
    y0, y1, x0, x1 = box
    h, w = hot.shape
    grew = True
    while grew:
        grew = False
        if y0 > 0 and hot[y0 - 1, x0:x1].any():
            y0, grew = y0 - 1, True
        if y1 < h and hot[y1, x0:x1].any():
            y1, grew = y1 + 1, True
        if x0 > 0 and hot[y0:y1, x0 - 1].any():
            x0, grew = x0 - 1, True
        if x1 < w and hot[y0:y1, x1].any():
            x1, grew = x1 + 1, True
    return y0, y1, x0, x1


# ------------------------------------------------------------------------------ inspector


@dataclass
class PrototypeReading:
    """One prototype's activation at a cell."""

    index: int  # global prototype index
    class_index: int
    class_name: str
    scale: int  # 0..3 = paper "Scale scale+1"
    dilation: int
    activation: float  # log((d+1)/(d+eps)), 0..9.21
    distance: float  # squared L2 to the cell's feature (recovered from the activation)
    used: bool  # some group of its class keeps it after α (always True for stage 1)
    group_weights: tuple[float, ...] = ()  # its simplex weight in each group of its class, as loaded

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "class_index": self.class_index, "class_name": self.class_name,
                "scale": self.scale, "dilation": self.dilation, "activation": self.activation,
                "distance": self.distance, "used": self.used, "group_weights": list(self.group_weights)}


@dataclass
class GroupReading:
    group: int  # 0..N-1 within the class
    column: int  # column of last_layer_group
    activation: float  # exp(W_α a), 1..1e4
    head_weight: float  # last_layer_group[c, column]
    num_prototypes: int  # prototypes it keeps after α

    @property
    def contribution(self) -> float:
        """This group's share of the class logit at the cell."""
        return self.activation * self.head_weight

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "column": self.column, "activation": self.activation,
                "head_weight": self.head_weight, "contribution": self.contribution,
                "num_prototypes": self.num_prototypes}


@dataclass
class ClassReading:
    class_index: int
    class_name: str
    logit: float
    probability: float


@dataclass
class NearestPrototype:
    """One of the top-k used prototypes at a cell (official ``nearest_proto``)."""

    rank: int  # 1-based
    prototype: PrototypeReading
    box: Box  # grown from the cell over activation >= ratio x the cell's, in the region
    box_threshold: float  # ratio x the activation at the cell
    projection: Optional[ProjectionInfo] = None  # the push's training patch, when known

    def to_json(self) -> dict[str, Any]:
        out = {"rank": self.rank, **self.prototype.to_json(), "box_yyxx": list(self.box),
               "box_threshold": self.box_threshold}
        out["projection"] = self.projection.to_json() if self.projection is not None else None
        return out


@dataclass
class CellInspection:
    """The numbers at one feature cell for the explanation's class (see :func:`inspect_cell`)."""

    grid: CellGrid
    cell: tuple[int, int]
    box: Box
    class_index: int
    class_name: str
    threshold: Optional[float]
    prototypes: list[PrototypeReading]  # the class's prototypes, group-projection column order
    groups: list[GroupReading]  # empty for stage 1
    classes: list[ClassReading]  # every class, model order
    predicted_class: int  # argmax of the logits at the cell
    region_class: int  # majority predicted label inside the cell box (image size)
    nearest: list[NearestPrototype] = field(default_factory=list)
    other_groups_contribution: float = 0.0  # the class logit's part from other classes' groups (off-class weights)
    projection_available: bool = False
    projection_note: str = NO_PROJECTION_TEXT

    def ranked_classes(self) -> list[ClassReading]:
        return sorted(self.classes, key=lambda c: (-c.logit, c.class_index))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "fssgui-scaleprotoseg-cell", "version": 1,
            "cell_ij": list(self.cell), "box_yyxx": list(self.box),
            "grid_size": list(self.grid.grid_hw), "input_size": list(self.grid.input_hw),
            "image_size": list(self.grid.image_hw), "stride": list(self.grid.stride),
            "class_index": self.class_index, "class_name": self.class_name, "threshold": self.threshold,
            "predicted_class": self.predicted_class, "region_class": self.region_class,
            "prototypes": [p.to_json() for p in self.prototypes],
            "groups": [g.to_json() for g in self.groups],
            "other_groups_contribution": self.other_groups_contribution,
            "classes": [{"class_index": c.class_index, "class_name": c.class_name, "logit": c.logit,
                         "probability": c.probability} for c in self.classes],
            "nearest_prototypes": [n.to_json() for n in self.nearest],
            "projection": self.projection_note,
        }


def _prototype_reading(explanation: PrototypeExplanation, index: int, i: int, j: int,
                       used: set[int]) -> PrototypeReading:
    run, head = explanation.run, explanation.run.head
    owner = head.prototype_class()[index]
    scale = int(head.prototype_scale[index])
    activation = float(run.activations[index, i, j])
    weights: tuple[float, ...] = ()
    if head.grouped and owner >= 0:
        class_weights = head.class_weights(int(owner))
        if class_weights is not None:
            column = head.class_prototypes[owner].index(index)
            weights = tuple(float(w) for w in class_weights[:, column])
    return PrototypeReading(
        index=int(index), class_index=int(owner),
        class_name=head.class_names[owner] if owner >= 0 else "?",
        scale=scale, dilation=head.scale_dilations[scale] if 0 <= scale < len(head.scale_dilations) else -1,
        activation=activation, distance=float(activation_to_distance(activation, head.epsilon)),
        used=int(index) in used, group_weights=weights,
    )


def _region_class(explanation: PrototypeExplanation, box: Box) -> int:
    y0, y1, x0, x1 = box
    labels = explanation.predicted_labels[y0:y1, x0:x1].ravel()
    return int(np.bincount(labels, minlength=len(explanation.run.head.class_names)).argmax())


def inspect_cell(explanation: PrototypeExplanation, cell: tuple[int, int], k: int = 3) -> CellInspection:
    """The class's prototype and group activations and all class logits at ``cell`` = (i, j),
    plus the ``k`` nearest used prototypes of all classes (:func:`nearest_prototypes`)."""
    run, head = explanation.run, explanation.run.head
    grid = CellGrid.of(run)
    i, j = int(cell[0]), int(cell[1])
    box = grid.cell_box(i, j)
    used = set(head.used_prototypes(explanation.threshold if head.grouped else None).tolist())
    prototypes = [_prototype_reading(explanation, p.index, i, j, used) for p in explanation.prototypes]
    groups = []
    if explanation.group_maps is not None:
        for g in explanation.groups:
            groups.append(GroupReading(g.index, g.column, float(explanation.group_maps[g.index, i, j]),
                                       g.head_weight, g.num_prototypes))
    logits = explanation.logits[:, i, j].astype(np.float64)
    probabilities = _softmax(logits, axis=0)
    other_groups = 0.0
    if groups:
        other_groups = float(logits[explanation.class_index]) - sum(g.contribution for g in groups)
    classes = [ClassReading(c, head.class_names[c], float(logits[c]), float(probabilities[c]))
               for c in range(len(head.class_names))]
    return CellInspection(
        grid=grid, cell=(i, j), box=box, class_index=explanation.class_index, class_name=explanation.class_name,
        threshold=explanation.threshold, prototypes=prototypes, groups=groups, classes=classes,
        predicted_class=int(np.argmax(logits)), region_class=_region_class(explanation, box),
        nearest=nearest_prototypes(explanation, (i, j), k),
        other_groups_contribution=other_groups,
        projection_available=run.projection is not None,
        projection_note=run.projection_note if run.projection is not None else
        f"{NO_PROJECTION_TEXT}; {run.projection_note}",
    )


def nearest_prototypes(explanation: PrototypeExplanation, cell: tuple[int, int], k: int = 3,
                       ratio: float = NEAREST_BOX_RATIO) -> list[NearestPrototype]:
    """The ``k`` used prototypes (all classes) with the highest activation (= smallest distance)
    at ``cell``, ties broken by index, each with its grown box (see the module docstring)."""
    from ..models.scaleprotoseg import PROTOTYPE_FOLDER_ALIASES

    run, head = explanation.run, explanation.run.head
    grid = CellGrid.of(run)
    i, j = int(cell[0]), int(cell[1])
    cell_box = grid.cell_box(i, j)
    used = head.used_prototypes(explanation.threshold if head.grouped else None)
    if used.size == 0:
        return []
    values = run.activations[used, i, j]
    order = np.lexsort((used, -values))[:k]
    used_set = set(used.tolist())
    region = explanation.predicted_labels == _region_class(explanation, cell_box)
    out = []
    for rank, position in enumerate(order, start=1):
        index = int(used[position])
        reading = _prototype_reading(explanation, index, i, j, used_set)
        box_threshold = ratio * reading.activation
        image_map = upsample_cubic(run.activations[index], run.image_hw)
        box = grow_box((image_map >= box_threshold) & region, cell_box)
        projection = None
        if run.projection is not None and reading.class_index >= 0:
            name = reading.class_name
            projection = run.projection.info(index, PROTOTYPE_FOLDER_ALIASES.get((head.dataset, name), name))
        out.append(NearestPrototype(rank, reading, box, float(box_threshold), projection))
    return out


# ----------------------------------------------------------------------------- comparison


@dataclass
class ClassComparison:
    """Two classes' maps on one image with shared normalisation per map kind: prototype maps
    share one activation range, group maps one, class-logit maps one (the official
    ``failure_cases`` plots the true and the confused class this way)."""

    explanations: tuple[PrototypeExplanation, PrototypeExplanation]
    region: Optional[np.ndarray]  # [H, W] bool: union of both predicted regions; None = whole image
    limits: dict[str, tuple[float, float]]  # kind ("prototype", "group", "class") -> (lo, hi)

    @property
    def class_indices(self) -> tuple[int, int]:
        return self.explanations[0].class_index, self.explanations[1].class_index

    def node_ids(self, side: int) -> list[str]:
        return self.explanations[side].node_ids()

    def normalised(self, side: int, node_id: str, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The node's map in [0, 1] with the shared limits of its kind; 0 outside the region.
        ``size`` (h, w) upsamples the grid map straight to that size (thumbnails)."""
        explanation = self.explanations[side]
        size = tuple(size) if size is not None else explanation.run.image_hw
        values = upsample_cubic(explanation.grid_map(node_id), size)
        lo, hi = self.limits[node_kind(node_id)]
        out = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
        region = self._region(size)
        if region is not None:
            out = np.where(region, out, 0.0)
        return out.astype(np.float32)

    def overlay(self, side: int, node_id: str, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """0.5 image + 0.5 JET(shared-normalised map); the image shown plain outside the region."""
        from ..imaging import resize_image
        from ..look import colormap_lut

        explanation = self.explanations[side]
        size = tuple(size) if size is not None else explanation.run.image_hw
        image = explanation.image if size == explanation.run.image_hw else resize_image(explanation.image, size)
        heat = colormap_lut("jet")[(self.normalised(side, node_id, size) * 255).astype(np.uint8)]
        blended = (0.5 * image.astype(np.float32) + 0.5 * heat.astype(np.float32) + 0.5).astype(np.uint8)
        region = self._region(size)
        return np.where(region[..., None], blended, image) if region is not None else blended

    def _region(self, size: tuple[int, int]) -> Optional[np.ndarray]:
        if self.region is None:
            return None
        if tuple(size) == self.region.shape:
            return self.region
        return cv2.resize(self.region.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0

    def tiles(self, side: int) -> list[tuple[str, str]]:
        """(node id, caption) of one side: the class logit, its groups, then its prototypes."""
        explanation = self.explanations[side]
        out = [("class", "class logit")]
        out += [(g.node_id, f"g{g.index + 1} w {g.head_weight:.2f}") for g in explanation.groups]
        out += [(p.node_id, f"p{p.index} s{p.scale + 1}" + ("" if p.used else " off"))
                for p in explanation.prototypes]
        return out

    def render_sheet(self, tile: int = 128, *, dark: bool = False) -> np.ndarray:
        """Both classes side by side as one RGB image: per class a block with the logit and group
        maps on the first row and the prototypes below in scale columns; shared ranges printed.

        ``dark`` draws the same layout and maps on a dark background with light text (the app's
        dark theme); exports use the default white sheet."""
        paper, ink, quiet, faint, divider_grey = (
            ((34, 36, 40), (232, 232, 232), (185, 185, 185), (125, 125, 125), (95, 95, 95)) if dark
            else ((255, 255, 255), (0, 0, 0), (70, 70, 70), (150, 150, 150), (160, 160, 160)))
        h, w = self.explanations[0].run.image_hw
        scale = tile / max(h, w)
        th, tw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        font, caption_h, gap, head_h = cv2.FONT_HERSHEY_SIMPLEX, 16, 8, 44
        blocks = []
        for side, explanation in enumerate(self.explanations):
            num_scales = explanation.run.head.num_scales
            by_scale = [[p for p in explanation.prototypes if p.scale == s] for s in range(num_scales)]
            columns = max(num_scales, 1 + len(explanation.groups))
            rows = 1 + max((len(b) for b in by_scale), default=0)
            cell_h, cell_w = th + caption_h + gap, tw + gap
            block = np.empty((head_h + rows * cell_h, columns * cell_w + gap, 3), np.uint8)
            block[:] = paper
            score = explanation.class_score
            cv2.putText(block, f"{explanation.class_name} (class {explanation.class_index})", (gap, 18), font,
                        0.5, ink, 1, cv2.LINE_AA)
            cv2.putText(block, f"{explanation.class_mask.mean():.1%} of pixels, mean p {score['mean_probability_in_mask']:.2f}",
                        (gap, 36), font, 0.38, quiet, 1, cv2.LINE_AA)
            placed = [(0, 0, "class")] + [(0, 1 + g.index, g.node_id) for g in explanation.groups]
            for s, nodes in enumerate(by_scale):
                placed += [(1 + r, s, p.node_id) for r, p in enumerate(nodes)]
            captions = dict(self.tiles(side))
            unused = {p.node_id for p in explanation.prototypes if not p.used}
            for row, col, node_id in placed:
                y, x = head_h + row * cell_h, gap + col * cell_w
                block[y:y + th, x:x + tw] = self.overlay(side, node_id, (th, tw))
                cv2.rectangle(block, (x, y), (x + tw - 1, y + th - 1), (120, 120, 120), 1)
                colour = faint if node_id in unused else ink
                cv2.putText(block, captions[node_id][: max(6, tw // 6)], (x, y + th + 12), font, 0.36,
                            colour, 1, cv2.LINE_AA)
            blocks.append(block)
        height = max(b.shape[0] for b in blocks)
        padded = []
        for block in blocks:
            grown = np.empty((height, *block.shape[1:]), np.uint8)
            grown[:] = paper
            grown[:block.shape[0]] = block
            padded.append(grown)
        divider = np.empty((height, 3, 3), np.uint8)
        divider[:] = divider_grey
        body = np.concatenate([padded[0], divider, padded[1]], axis=1)
        footer = np.empty((22, body.shape[1], 3), np.uint8)
        footer[:] = paper
        ranges = "; ".join(f"{kind} {lo:.3g}..{hi:.3g}" for kind, (lo, hi) in self.limits.items())
        cv2.putText(footer, f"shared colour ranges: {ranges}", (gap, 15), font, 0.38, ink, 1, cv2.LINE_AA)
        return np.concatenate([body, footer], axis=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "fssgui-scaleprotoseg-compare", "version": 1,
            "classes": [{"class_index": e.class_index, "class_name": e.class_name,
                         "pixel_share": float(e.class_mask.mean()), "class_score": e.class_score,
                         "group_weights": group_weights_json(e)} for e in self.explanations],
            "region": "union of the two predicted class regions" if self.region is not None else "whole image",
            "shared_limits": {kind: list(v) for kind, v in self.limits.items()},
        }


def node_kind(node_id: str) -> str:
    if node_id == "class":
        return "class"
    if node_id.startswith("g"):
        return "group"
    if node_id.startswith("p") or node_id.startswith("s"):
        return "prototype"  # scale maps are maxima of prototype maps: same units
    raise KeyError(f"no node {node_id!r}")


def compare_classes(run: ScaleProtoSegRun, first: int, second: int, threshold: Optional[float] = 0.05,
                    masked: bool = True) -> ClassComparison:
    """Explain two classes on ``run`` and fix one colour range per map kind for both: the min and
    max of the cubic-upsampled maps inside the union of the two predicted regions (the whole
    image when ``masked`` is False or both regions are empty)."""
    if first == second:
        raise ExplainError("pick two different classes to compare")
    explanations = (explain_class(run, first, threshold), explain_class(run, second, threshold))
    region = explanations[0].class_mask | explanations[1].class_mask
    region = region if masked and region.any() else None
    limits: dict[str, list[float]] = {}
    for explanation in explanations:
        for node_id in explanation.node_ids():
            values = explanation.image_map(node_id)
            values = values[region] if region is not None else values.ravel()
            lo_hi = limits.setdefault(node_kind(node_id), [math.inf, -math.inf])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], float(values.min())), max(lo_hi[1], float(values.max()))
    return ClassComparison(explanations, region, {kind: (v[0], v[1]) for kind, v in limits.items()})


# ---------------------------------------------------------------------------------- export


def class_slug(name: str, class_index: int) -> str:
    """A file-name-safe form of a class name ("traffic light" -> "traffic_light")."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    return slug or f"class{class_index}"


def proto_info(explanation: PrototypeExplanation) -> list[list[dict[str, Any]]]:
    """Per group, the official ``proto_info.json`` list: ``{real_proto_id, proto_weight, scale}``
    of every prototype the group keeps after α (the weight as loaded: no renormalisation)."""
    if explanation.group_weights is None:
        return []
    out = []
    for g in explanation.groups:
        members = []
        for p in explanation.prototypes:
            weight = float(explanation.group_weights[g.index, p.column])
            if weight > 0 and (not explanation.threshold or weight >= explanation.threshold):
                members.append({"real_proto_id": int(p.index), "proto_weight": weight, "scale": int(p.scale)})
        out.append(members)
    return out


def group_folder_name(explanation: PrototypeExplanation, group: int, members: Sequence[dict]) -> str:
    """The official ``group_composition`` folder name of a group ("single-low" when it keeps at
    most one prototype above α, else the official spelling "mutliple")."""
    threshold = explanation.threshold or 0.0
    above = sum(1 for m in members if m["proto_weight"] > threshold)
    flag = "single-low" if above <= 1 else "mutliple"
    return f"class_{class_slug(explanation.class_name, explanation.class_index)}_group_{group}_{flag}"


def group_weights_json(explanation: PrototypeExplanation) -> dict[str, Any]:
    """The class's edges: prototype -> group (``proto_info``, official shape) and group -> class
    (its own class's weight and the whole head column, off-class weights included). For a stage-1
    model: prototype -> class weights of ``last_layer``."""
    head = explanation.run.head
    out: dict[str, Any] = {
        "format": "fssgui-scaleprotoseg-groups", "version": 1, "dataset": head.dataset,
        "class_index": explanation.class_index, "class_name": explanation.class_name,
        "stage": 2 if head.grouped else 1, "threshold": explanation.threshold,
        "note": ("proto_weight is the group's simplex weight as loaded; weights below the threshold are left "
                 "out, the others are not renormalised (official threshold_save). Edges are the same for every "
                 "image of the class."),
    }
    if head.grouped:
        info = proto_info(explanation)
        out["proto_info"] = info
        out["groups"] = [{"group": g.index, "column": g.column, "class_weight": g.head_weight,
                          "folder": group_folder_name(explanation, g.index, info[g.index]),
                          "proto_info": info[g.index]} for g in explanation.groups]
        out["group_class_weights"] = {
            "classes": list(head.class_names),
            "weights": [[float(v) for v in head.head_weight[:, g.column]] for g in explanation.groups],
        }
    else:
        out["prototype_class_weights"] = [
            {"real_proto_id": int(p.index), "scale": int(p.scale),
             "class_weight": float(head.head_weight[explanation.class_index, p.index])}
            for p in explanation.prototypes
        ]
    return out


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def export_class(explanation: PrototypeExplanation, folder: str | Path, masked: bool = True,
                 comparison: Optional[ClassComparison] = None,
                 inspection: Optional[CellInspection] = None) -> list[Path]:
    """Write the class's overlays and weights into ``folder`` (created if needed); returns the
    files written. Names follow the official analyses where they exist:

    * ``proto_{p}_scale_{s}_class_{name}.png``, ``group_{n}_class_{name}.png`` (JET 0.5/0.5,
      min-max normalised in the predicted class region unless ``masked`` is False),
      ``group_max_class_{name}.png`` (the R/G/B group-assignment map), ``graph_class_{name}.png``;
    * ``group_weights_class_{name}.json`` (:func:`group_weights_json`) and, per group,
      ``group_composition/class_{name}_group_{k}_{single-low|mutliple}/proto_info.json`` (the
      bare official list);
    * with ``comparison``: ``compare_{a}_vs_{b}.png`` and ``.json``; with ``inspection``:
      ``cell_{i}_{j}_class_{name}.json``.

    Every file is written atomically (temporary file + rename)."""
    from ..io import save_png_atomic, write_bytes_atomic

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExplainError(f"{folder}: exists and is not a folder")
    slug = class_slug(explanation.class_name, explanation.class_index)
    written: list[Path] = []

    def png(name: str, image: np.ndarray) -> None:
        path = folder / name
        save_png_atomic(path, image)
        written.append(path)

    def json_file(name: str, data: Any) -> None:
        path = folder / name
        write_bytes_atomic(path, _json_bytes(data))
        written.append(path)

    for p in explanation.prototypes:
        png(f"proto_{p.index}_scale_{p.scale}_class_{slug}.png", explanation.overlay(p.node_id, masked=masked))
    for g in explanation.groups:
        png(f"group_{g.index}_class_{slug}.png", explanation.overlay(g.node_id, masked=masked))
    if explanation.group_assignment is not None:
        png(f"group_max_class_{slug}.png", assignment_overlay(explanation.image, explanation.group_assignment))
    png(f"graph_class_{slug}.png", render_graph_png(explanation, masked=masked))
    weights = group_weights_json(explanation)
    json_file(f"group_weights_class_{slug}.json", weights)
    for group in weights.get("groups", []):
        json_file(f"group_composition/{group['folder']}/proto_info.json", group["proto_info"])
    if comparison is not None:
        a, b = (class_slug(e.class_name, e.class_index) for e in comparison.explanations)
        png(f"compare_{a}_vs_{b}.png", comparison.render_sheet())
        json_file(f"compare_{a}_vs_{b}.json", comparison.to_json())
    if inspection is not None:
        i, j = inspection.cell
        json_file(f"cell_{i}_{j}_class_{class_slug(inspection.class_name, inspection.class_index)}.json",
                  inspection.to_json())
    return written
