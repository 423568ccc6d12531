"""The pixel inspector of the Prototypes tab, headless: the numbers at one feature cell.

Everything works on a :class:`~fssgui.prototypes.graph.PrototypeExplanation` (one class of one
run), so no model forward is needed:

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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import ExplainError
from .graph import PrototypeExplanation
from .overlays import Box, upsample_cubic
from .projection import ProjectionInfo
from .run import ScaleProtoSegRun, softmax

#: the official ``nearest_proto`` box: pixels with activation >= this x the activation at the cell
NEAREST_BOX_RATIO = 0.99
NO_PROJECTION_TEXT = "no projection metadata available (no push output found for this checkpoint)"


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
    probabilities = softmax(logits, axis=0)
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
            projection = run.projection.class_info(index, head.dataset, reading.class_name)
        out.append(NearestPrototype(rank, reading, box, float(box_threshold), projection))
    return out
