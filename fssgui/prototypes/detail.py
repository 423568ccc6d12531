"""One prototype in detail, headless: what the Prototypes tab's detail pane shows.

For one prototype (global index p):

* :func:`describe_prototype`: its class, scale / dilation, index, its simplex weight in each of
  its class's groups (and whether the weight survives α) and the group -> class weights, from a
  :class:`~fssgui.prototypes.run.ScaleProtoSegRun` (no model forward);
* :func:`locate_source`: the push's training image of p in a
  :class:`~fssgui.prototypes.dataset.DatasetFolder` (``bbNone.npy`` column 0 indexes the
  ``train`` list of ``all_images.json``) and, when something is missing, one exact message per
  missing piece (no push output, no record for p, no dataset folder, no image id, no file);
  nothing is ever invented;
* :func:`compute_source_view` (runs the model, one forward): the training image with the push's
  high-activation box (``bbNone.npy``) and feature-cell box (``bb-receptive_fieldNone.npy``),
  and p's self-activation on it: the grid activation cubic-upsampled to the image, min-max
  normalised over the whole image, JET blended 0.5 / 0.5.

:class:`SourceRequest` bundles the source view for a worker thread:
``request.run(model, progress, cancelled)`` (the nearest-patch search,
:class:`~fssgui.prototypes.nearest.NearestRequest`, has the same shape).

Boxes are ``(y0, y1, x0, x1)`` in image pixels, half-open, as everywhere in the prototype code;
the push's rows ``[image, h_start, h_end, w_start, w_end, class]`` are read the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import CancelledFn, ExplainError, check_cancelled
from ..imaging import load_rgb
from .dataset import IMAGES_JSON, NO_DATASET_TEXT, DatasetFolder
from .inspection import CellGrid
from .overlays import BOX_COLOUR, CELL_COLOUR, Box, activation_overlay, clip_box, draw_boxes, upsample_cubic
from .projection import ProjectionInfo
from .run import ProgressFn, ScaleProtoSegRun, apply_threshold, run_scaleprotoseg


@dataclass(frozen=True)
class GroupWeight:
    """The prototype's weight in one group of its class."""

    group: int  # 0..N-1 within the class
    weight: float  # simplex weight as loaded
    active: bool  # > 0 and >= α (the official threshold_save zeroes the rest, no renormalisation)
    head_weight: float  # last_layer_group[c, 3k + group]: the group's weight to the class


@dataclass
class PrototypeDetail:
    """What is known about one prototype without running the model."""

    index: int  # global prototype index
    class_index: int  # owning class (-1: none)
    class_name: str
    scale: int  # 0..3 = paper "Scale scale+1"
    dilation: int
    column: int  # position among the class's prototypes (group projection column), -1 if none
    used: bool  # some group keeps it after α (always True for stage 1)
    threshold: Optional[float]
    grouped: bool
    group_weights: list[GroupWeight] = field(default_factory=list)
    class_weight: Optional[float] = None  # stage 1: last_layer[c, p]
    projection: Optional[ProjectionInfo] = None  # the push's record, when the metadata has one
    projection_available: bool = False  # the checkpoint has push metadata at all
    projection_note: str = ""
    projection_folder: Optional[Path] = None

    @property
    def node_id(self) -> str:
        return f"p{self.index}"

    def describe(self) -> str:
        """One plain-text line: class, scale, index, weights."""
        text = (f"prototype p{self.index} of class {self.class_name} ({self.class_index}), "
                f"scale {self.scale + 1} (dilation {self.dilation})")
        if self.group_weights:
            text += "; group weights " + " / ".join(
                f"g{g.group + 1} {g.weight:.3f}" + ("" if g.active else " (off)") for g in self.group_weights)
        elif self.class_weight is not None:
            text += f"; weight to the class {self.class_weight:.3f} (stage 1)"
        if self.grouped and not self.used:
            text += "; unused at this threshold"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "class_index": self.class_index, "class_name": self.class_name,
            "scale": self.scale, "dilation": self.dilation, "column": self.column, "used": self.used,
            "threshold": self.threshold,
            "group_weights": [{"group": g.group, "weight": g.weight, "active": g.active, "head_weight": g.head_weight}
                              for g in self.group_weights],
            "class_weight": self.class_weight,
            "projection": self.projection.to_json() if self.projection is not None else None,
        }


def describe_prototype(run: ScaleProtoSegRun, index: int, threshold: Optional[float]) -> PrototypeDetail:
    """Class, scale, group weights and push record of prototype ``index`` (any class)."""
    head = run.head
    num_prototypes = len(head.prototype_scale)
    index = int(index)
    if not 0 <= index < num_prototypes:
        raise ExplainError(f"prototype p{index} does not exist (the model has {num_prototypes} prototypes)")
    owner = int(head.prototype_class()[index])
    scale = int(head.prototype_scale[index])
    dilation = head.scale_dilations[scale] if 0 <= scale < len(head.scale_dilations) else -1
    threshold = None if threshold is None else float(threshold)
    column = head.class_prototypes[owner].index(index) if owner >= 0 else -1
    groups: list[GroupWeight] = []
    class_weight = None
    if head.grouped and owner >= 0:
        weights = head.class_weights(owner)
        if weights is not None:
            kept = apply_threshold(weights, threshold)
            columns = head.group_columns(owner)
            groups = [GroupWeight(n, float(weights[n, column]), bool(kept[n, column] > 0),
                                  float(head.head_weight[owner, columns[n]])) for n in range(weights.shape[0])]
    elif owner >= 0:
        class_weight = float(head.head_weight[owner, index])
    used = index in set(head.used_prototypes(threshold if head.grouped else None).tolist())
    class_name = head.class_names[owner] if owner >= 0 else "?"
    projection = None
    if run.projection is not None and owner >= 0:
        projection = run.projection.class_info(index, head.dataset, class_name)
    return PrototypeDetail(
        index=index, class_index=owner, class_name=class_name, scale=scale, dilation=dilation, column=column,
        used=used, threshold=threshold, grouped=head.grouped, group_weights=groups, class_weight=class_weight,
        projection=projection, projection_available=run.projection is not None,
        projection_note=run.projection_note,
        projection_folder=run.projection.folder if run.projection is not None else None,
    )



# ---------------------------------------------------------------------------- source image


@dataclass
class SourceLocation:
    """Where the push's training image of a prototype is, or what is missing to find it."""

    image_id: Optional[str]
    path: Optional[Path]
    missing: list[str]

    @property
    def ready(self) -> bool:
        return self.path is not None and not self.missing


def locate_source(detail: PrototypeDetail, dataset: Optional[DatasetFolder]) -> SourceLocation:
    """The training image of ``detail``'s push record in ``dataset`` (split ``train``), or one
    message per missing piece (see the module docstring)."""
    missing: list[str] = []
    projection = detail.projection
    if not detail.projection_available:
        missing.append(f"no push output for this checkpoint: {detail.projection_note}")
    elif projection is None:
        missing.append(f"the push output {detail.projection_folder} has no record for prototype p{detail.index} "
                       "(no row in bbNone.npy, or its row is marked -1)")
    if dataset is None:
        missing.append(NO_DATASET_TEXT)
    if projection is None or dataset is None:
        return SourceLocation(projection.image_id if projection is not None else None, None, missing)
    image_id = projection.image_id or dataset.train_id(projection.image_index)
    if image_id is None:
        if dataset.images_json is None:
            missing.append(f"train image #{projection.image_index} has no id: no {IMAGES_JSON} next to the push "
                           f"output nor in {dataset.root}")
        else:
            count = len(dataset.image_lists.get("train", []))
            missing.append(f"train image #{projection.image_index} has no id: {dataset.images_json} lists "
                           f"{count} train images")
        return SourceLocation(None, None, missing)
    path = dataset.image_path("train", image_id)
    if not path.is_file():
        missing.append(f"training image not found: {path}")
        return SourceLocation(image_id, None, missing)
    return SourceLocation(image_id, path, missing)



@dataclass
class SourceView:
    """A prototype's push source image, its boxes, and its self-activation on it."""

    prototype_index: int
    image_id: str
    path: Path
    image: np.ndarray  # RGB uint8 [H, W, 3]
    box: Optional[Box]  # bbNone.npy: the high-activation crop, clipped to the image
    receptive_box: Optional[Box]  # bb-receptive_fieldNone.npy: the feature cell in pixels
    input_hw: tuple[int, int]
    grid_hw: tuple[int, int]
    activation_grid: np.ndarray  # [h, w] log activation of the prototype on the feature grid
    peak_cell: tuple[int, int]  # (i, j) of the highest activation (= smallest distance)
    peak_activation: float
    cell: Optional[tuple[int, int]]  # the cell under the receptive box's centre
    cell_activation: Optional[float]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def activation_image(self) -> np.ndarray:
        """The activation at image size (cubic, as the official visualisations)."""
        return upsample_cubic(self.activation_grid, self.image_hw)

    def overlay(self) -> np.ndarray:
        """0.5 image + 0.5 JET(min-max normalised activation) over the whole image, as the
        official ``original_with_self_act`` picture."""
        return activation_overlay(self.image, self.activation_image(), None)

    def boxes(self) -> list[tuple[Box, tuple[int, int, int]]]:
        out = []
        if self.box is not None:
            out.append((self.box, BOX_COLOUR))
        if self.receptive_box is not None:
            out.append((self.receptive_box, CELL_COLOUR))
        return out

    def image_with_boxes(self, thickness: int = 1) -> np.ndarray:
        return draw_boxes(self.image, self.boxes(), thickness)


def check_prototype(model, index: int) -> None:
    if not 0 <= index < int(model.num_prototypes):
        raise ExplainError(f"prototype p{index} is not in the loaded model ({model.num_prototypes} prototypes)")


def compute_source_view(model, detail: PrototypeDetail, location: SourceLocation, size: Optional[int] = None,
                        progress: Optional[ProgressFn] = None, cancelled: Optional[CancelledFn] = None
                        ) -> SourceView:
    """Run ``model`` on the push's training image of ``detail`` (see the module docstring)."""
    if not location.ready:
        raise ExplainError("; ".join(location.missing) or "the training image is unknown")
    check_prototype(model, detail.index)
    started = time.perf_counter()
    if progress:
        progress(0.1, f"p{detail.index}: training image {location.image_id}")
    image = load_rgb(location.path)
    check_cancelled(cancelled)
    if progress:
        progress(0.3, f"p{detail.index}: self-activation")
    run = run_scaleprotoseg(model, image, size)
    grid = run.activations[detail.index].astype(np.float32)
    peak = np.unravel_index(int(np.argmax(grid)), grid.shape)
    notes: list[str] = []
    box = receptive = None
    projection = detail.projection
    if projection is not None:
        box = clip_box(projection.box, run.image_hw)
        if box is None or tuple(box) != tuple(projection.box):
            notes.append(f"the push box h{projection.box[:2]} w{projection.box[2:]} lies "
                         + ("outside" if box is None else "partly outside") + f" the {run.image_hw[1]}x"
                         f"{run.image_hw[0]} image")
        if projection.receptive_box is not None:
            receptive = clip_box(projection.receptive_box, run.image_hw)
            if receptive is None:
                notes.append("the push's receptive-field box lies outside the image")
        else:
            notes.append("no bb-receptive_fieldNone.npy record: no cell box")
    cell = cell_activation = None
    if receptive is not None:
        y0, y1, x0, x1 = receptive
        cell = CellGrid.of(run).cell_at((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        if cell is not None:
            cell_activation = float(grid[cell])
    if progress:
        progress(1.0, f"p{detail.index}: source ready")
    return SourceView(
        prototype_index=detail.index, image_id=str(location.image_id), path=Path(location.path), image=image,
        box=box, receptive_box=receptive, input_hw=tuple(run.input_hw), grid_hw=tuple(run.grid_hw),
        activation_grid=grid, peak_cell=(int(peak[0]), int(peak[1])), peak_activation=float(grid[peak]),
        cell=cell, cell_activation=cell_activation, notes=notes, seconds=time.perf_counter() - started,
    )



@dataclass
class SourceRequest:
    """Worker job: the source view of a prototype (:func:`compute_source_view`)."""

    detail: PrototypeDetail
    location: SourceLocation
    size: Optional[int] = None
    kind: str = "source"

    @property
    def prototype_index(self) -> int:
        return self.detail.index

    @property
    def description(self) -> str:
        return f"Prototype p{self.detail.index}: source image"

    def run(self, model, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelledFn] = None
            ) -> SourceView:
        return compute_source_view(model, self.detail, self.location, self.size, progress, cancelled)

