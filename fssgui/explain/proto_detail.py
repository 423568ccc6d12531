"""ScaleProtoSeg prototype detail, headless (spec ``scaleprotoseg.md`` §3.1, §3.2, §3.4, §5
"Prototype detail pane"). No Qt here; :mod:`fssgui.gui.proto_detail` only shows what this returns.

For one prototype (global index p):

* :func:`describe_prototype`: its class, scale / dilation, index, its simplex weight in each of
  its class's groups (and whether the weight survives α) and the group -> class weights, from a
  :class:`~fssgui.explain.prototypes.ScaleProtoSegRun` (no model forward);
* :class:`DatasetFolder`: the official data layout ``DATA/img_with_margin_0/<split>/<id>.png``
  and ``DATA/all_images.json`` (``{split: [ids]}``);
* :func:`locate_source`: the push's training image of p (``bbNone.npy`` column 0 indexes the
  ``train`` list of ``all_images.json``) and, when something is missing, one exact message per
  missing piece (no push output, no record for p, no dataset folder, no image id, no file);
  nothing is ever invented;
* :func:`compute_source_view` (runs the model, one forward): the training image with the push's
  high-activation box (``bbNone.npy``) and feature-cell box (``bb-receptive_fieldNone.npy``),
  and p's self-activation on it: the grid activation cubic-upsampled to the image, min-max
  normalised over the whole image, JET blended 0.5 / 0.5 (spec §3.2);
* :func:`find_nearest_patches` (runs the model once per image): the official ``nearest_img``
  analysis: the top-k images of a split by per-image minimum distance to p over all feature
  cells, no class mask, with the cell where the minimum is reached; the number of images searched
  is capped by the caller, checked for cancellation between images and reports its progress.
  With a :class:`NearestDistanceCache` (the app keeps one per pane) each image's forward records
  the minimum distance and its cell for *every* prototype, so a later search for another
  prototype of the same model runs only the k forwards of its winners; an entry is used only while
  the file's size and modification time are unchanged and the model is the same object.

:class:`SourceRequest` and :class:`NearestRequest` bundle these computations for a worker
thread: ``request.run(model, progress, cancelled)``; ``cancelled()`` turning true between two
images raises :class:`~fssgui.explain.base.Cancelled`.

Boxes are ``(y0, y1, x0, x1)`` in image pixels, half-open, as everywhere in the prototype code;
the push's rows ``[image, h_start, h_end, w_start, w_end, class]`` are read the same way.
"""
from __future__ import annotations

import json
import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from ..errors import ExplainError
from .base import Cancelled
from .prototypes import (
    ProjectionInfo,
    ScaleProtoSegRun,
    activation_overlay,
    apply_threshold,
    run_scaleprotoseg,
    upsample_cubic,
)

Box = tuple[int, int, int, int]  # y0, y1, x0, x1, half-open
ProgressFn = Callable[[float, str], None]
CancelledFn = Callable[[], bool]

#: the official folder of the images the push and the analyses read
IMAGE_FOLDER = "img_with_margin_0"
IMAGES_JSON = "all_images.json"
#: the official ``nearest_img`` keeps 3 images per prototype
DEFAULT_NEAREST_K = 3
#: default cap on the images searched for nearest patches (the user sets it)
DEFAULT_MAX_IMAGES = 200
#: box colours (RGB): the push's high-activation box (yellow, as the official ``original_with_box``),
#: the feature cell (white) and, on nearest patches, the cell of the minimum distance
BOX_COLOUR = (255, 220, 0)
CELL_COLOUR = (255, 255, 255)

NO_DATASET_TEXT = (f"no dataset folder chosen: choose the folder that holds {IMAGE_FOLDER}/<split>/<id>.png "
                   f"and {IMAGES_JSON}")


# -------------------------------------------------------------------------------- prototype


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
    from ..models.scaleprotoseg import PROTOTYPE_FOLDER_ALIASES

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
        projection = run.projection.info(index, PROTOTYPE_FOLDER_ALIASES.get((head.dataset, class_name), class_name))
    return PrototypeDetail(
        index=index, class_index=owner, class_name=class_name, scale=scale, dilation=dilation, column=column,
        used=used, threshold=threshold, grouped=head.grouped, group_weights=groups, class_weight=class_weight,
        projection=projection, projection_available=run.projection is not None,
        projection_note=run.projection_note,
        projection_folder=run.projection.folder if run.projection is not None else None,
    )


# ---------------------------------------------------------------------------------- dataset


@dataclass
class DatasetFolder:
    """The official data layout: ``root/img_with_margin_0/<split>/<id>.png`` and
    ``root/all_images.json`` = ``{split: [ids]}`` (optional: without it a split's images are
    the PNG files of its folder, sorted by name, and train image ids are unknown)."""

    root: Path
    image_lists: dict[str, list[str]]  # from all_images.json (empty without it)
    images_json: Optional[Path]
    note: str = ""

    @classmethod
    def open(cls, folder: str | Path) -> "DatasetFolder":
        """Read the layout under ``folder`` (``DATA``; ``DATA/img_with_margin_0`` is accepted too).
        Raises :class:`ExplainError` with a one-line message when it is not that layout."""
        root = Path(folder).expanduser()
        if root.name == IMAGE_FOLDER and not (root / IMAGE_FOLDER).is_dir():
            root = root.parent
        if not root.is_dir():
            raise ExplainError(f"{root}: dataset folder not found")
        if not (root / IMAGE_FOLDER).is_dir():
            raise ExplainError(f"{root}: no {IMAGE_FOLDER}/ folder (the official layout is "
                               f"DATA/{IMAGE_FOLDER}/<split>/<id>.png with DATA/{IMAGES_JSON})")
        image_lists: dict[str, list[str]] = {}
        images_json = root / IMAGES_JSON
        note = ""
        if images_json.is_file():
            try:
                raw = json.loads(images_json.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ExplainError(f"{images_json}: unreadable ({exc})") from exc
            if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
                raise ExplainError(f"{images_json}: expected {{split: [image ids]}}")
            image_lists = {str(k): [str(i) for i in v] for k, v in raw.items()}
        else:
            images_json = None
            note = f"no {IMAGES_JSON} in {root}: split images are the folder's PNG files, train ids unknown"
        return cls(root, image_lists, images_json, note)

    def split_folder(self, split: str) -> Path:
        return self.root / IMAGE_FOLDER / split

    def image_path(self, split: str, image_id: str) -> Path:
        return self.split_folder(split) / f"{image_id}.png"

    def splits(self) -> list[str]:
        """Splits with an image folder (those of all_images.json first, in its order)."""
        folders = sorted(p.name for p in (self.root / IMAGE_FOLDER).iterdir() if p.is_dir())
        return [s for s in self.image_lists if s in folders] + [s for s in folders if s not in self.image_lists]

    def image_ids(self, split: str) -> list[str]:
        """The split's image ids: all_images.json's order when it lists the split, else the
        folder's PNG files sorted by name."""
        if split in self.image_lists:
            return list(self.image_lists[split])
        folder = self.split_folder(split)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.png") if p.is_file())

    def train_id(self, image_index: int) -> Optional[str]:
        train = self.image_lists.get("train")
        if train is None or not 0 <= image_index < len(train):
            return None
        return train[image_index]


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


# ----------------------------------------------------------------------------- source view


def clip_box(box: Sequence[int], image_hw: tuple[int, int]) -> Optional[Box]:
    """``box`` clipped to the image; None when nothing of it is inside."""
    y0, y1, x0, x1 = (int(v) for v in box)
    h, w = image_hw
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(h, y1), min(w, x1)
    if y1 <= y0 or x1 <= x0:
        return None
    return y0, y1, x0, x1


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[Box, tuple[int, int, int]]], thickness: int = 1
               ) -> np.ndarray:
    """A copy of ``image`` with each half-open box outlined on its border pixels (rows y0 and
    y1-1, columns x0 and x1-1) in its RGB colour."""
    out = np.ascontiguousarray(image.copy())
    for (y0, y1, x0, x1), colour in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), tuple(int(c) for c in colour), thickness)
    return out


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
        """0.5 image + 0.5 JET(min-max normalised activation) over the whole image (spec §3.2)."""
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


def _check_prototype(model, index: int) -> None:
    if not 0 <= index < int(model.num_prototypes):
        raise ExplainError(f"prototype p{index} is not in the loaded model ({model.num_prototypes} prototypes)")


def compute_source_view(model, detail: PrototypeDetail, location: SourceLocation, size: Optional[int] = None,
                        progress: Optional[ProgressFn] = None, cancelled: Optional[CancelledFn] = None
                        ) -> SourceView:
    """Run ``model`` on the push's training image of ``detail`` (see the module docstring)."""
    from ..imaging import load_rgb

    if not location.ready:
        raise ExplainError("; ".join(location.missing) or "the training image is unknown")
    _check_prototype(model, detail.index)
    started = time.perf_counter()
    if progress:
        progress(0.1, f"p{detail.index}: training image {location.image_id}")
    image = load_rgb(location.path)
    if cancelled and cancelled():
        raise Cancelled()
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
        from .proto_inspect import CellGrid

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


# --------------------------------------------------------------------------- nearest patches


@dataclass
class NearestPatch:
    """One of the top-k images of a split for a prototype (official ``nearest_img``)."""

    rank: int  # 1-based
    image_id: str
    path: Path
    distance: float  # the image's minimum squared distance to the prototype
    activation: float  # log((d+1)/(d+eps)) of that distance
    cell: tuple[int, int]  # (i, j) where the minimum is reached
    cell_box: Box  # that cell in image pixels
    image: np.ndarray  # RGB uint8
    activation_grid: np.ndarray  # [h, w] the prototype's activation on this image

    def overlay(self) -> np.ndarray:
        return activation_overlay(self.image, upsample_cubic(self.activation_grid, self.image.shape[:2]), None)

    def overlay_with_box(self, thickness: int = 1) -> np.ndarray:
        return draw_boxes(self.overlay(), [(self.cell_box, CELL_COLOUR)], thickness)

    def crop(self) -> np.ndarray:
        y0, y1, x0, x1 = self.cell_box
        return self.image[y0:y1, x0:x1].copy()


@dataclass
class NearestPatches:
    """The result of :func:`find_nearest_patches`."""

    prototype_index: int
    split: str
    k: int
    max_images: int
    total: int  # images the split lists
    searched: int  # images actually compared (missing / unreadable files excluded)
    missing: list[str]  # ids whose file does not exist
    unreadable: list[str]  # ids whose file could not be read
    patches: list[NearestPatch]
    seconds: float = 0.0
    cached: int = 0  # images whose minima came from a NearestDistanceCache (no forward)

    @property
    def considered(self) -> int:
        """Ids taken from the split's list (the cap applies to these)."""
        return min(self.total, self.max_images)

    def summary(self) -> str:
        text = f"top {len(self.patches)} of {self.searched} images searched in '{self.split}'"
        if self.total > self.max_images:
            text += f" (capped at {self.max_images} of {self.total})"
        else:
            text += f" (all {self.total})"
        if self.missing:
            text += f"; {len(self.missing)} listed files missing"
        if self.unreadable:
            text += f"; {len(self.unreadable)} unreadable"
        if self.cached:
            text += f"; {self.cached} from earlier searches"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "prototype": self.prototype_index, "split": self.split, "k": self.k, "max_images": self.max_images,
            "total": self.total, "searched": self.searched, "missing": self.missing, "unreadable": self.unreadable,
            "patches": [{"rank": p.rank, "image_id": p.image_id, "distance": p.distance, "activation": p.activation,
                         "cell_ij": list(p.cell), "cell_box_yyxx": list(p.cell_box)} for p in self.patches],
        }


@dataclass(frozen=True)
class ImageMinima:
    """One forward's result for every prototype on one image: the minimum squared distance over
    the feature cells and the cell (i, j) where it is reached (first in row-major order)."""

    distances: np.ndarray  # [P] float32
    cells: np.ndarray  # [P, 2] int32
    input_hw: tuple[int, int]
    grid_hw: tuple[int, int]


def _forward_image(model, image: np.ndarray, size: Optional[int]) -> tuple[Any, tuple[int, int]]:
    model.eval()
    input_hw = model.input_size(image.shape[:2], size)
    with torch.no_grad():
        out = model(model.preprocess(image, input_hw))
    return out, tuple(input_hw)


def _minima_of(out, input_hw: tuple[int, int]) -> ImageMinima:
    distances = out.distances[0].float()  # [P, h, w]
    grid_hw = (int(distances.shape[-2]), int(distances.shape[-1]))
    values, flat = distances.flatten(1).min(dim=1)
    flat = flat.cpu().numpy()
    cells = np.stack([flat // grid_hw[1], flat % grid_hw[1]], axis=1).astype(np.int32)
    return ImageMinima(values.cpu().numpy().astype(np.float32), cells, input_hw, grid_hw)


def min_distance_per_image(model, prototype_index: int, image: np.ndarray, size: Optional[int] = None
                           ) -> tuple[float, tuple[int, int], np.ndarray, tuple[int, int], tuple[int, int]]:
    """(minimum squared distance, its cell, the activation grid, input size, grid size) of one
    prototype on one RGB image: one forward of ``model``."""
    out, input_hw = _forward_image(model, image, size)
    distances = out.distances[0, prototype_index].float().cpu().numpy()
    activations = out.prototype_activations[0, prototype_index].float().cpu().numpy()
    flat = int(np.argmin(distances))
    cell = np.unravel_index(flat, distances.shape)
    return (float(distances.ravel()[flat]), (int(cell[0]), int(cell[1])), activations, tuple(input_hw),
            tuple(distances.shape))


class NearestDistanceCache:
    """Per-image :class:`ImageMinima` of one model, kept between nearest-patch searches.

    Keyed by the image file (resolved path, size, modification time) and the input size asked
    for; bound to one model object (a different model empties it). Bounded to ``max_entries``
    images (the oldest go first). Safe to share between the GUI thread and a worker thread.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = int(max_entries)
        self._lock = threading.Lock()
        self._model: Optional[weakref.ref] = None
        self._entries: dict[tuple, ImageMinima] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(path: Path, size: Optional[int]) -> Optional[tuple]:
        try:
            stat = path.stat()
        except OSError:
            return None
        return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, size)

    def _bind(self, model) -> None:
        if self._model is None or self._model() is not model:
            self._entries.clear()
            self._model = weakref.ref(model)

    def get(self, model, path: Path, size: Optional[int]) -> Optional[ImageMinima]:
        key = self._key(path, size)
        with self._lock:
            self._bind(model)
            return None if key is None else self._entries.get(key)

    def put(self, model, path: Path, size: Optional[int], minima: ImageMinima) -> None:
        key = self._key(path, size)
        if key is None:
            return
        with self._lock:
            self._bind(model)
            self._entries.pop(key, None)
            self._entries[key] = minima
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]


def find_nearest_patches(model, prototype_index: int, dataset: DatasetFolder, split: str,
                         max_images: int = DEFAULT_MAX_IMAGES, k: int = DEFAULT_NEAREST_K,
                         size: Optional[int] = None, progress: Optional[ProgressFn] = None,
                         cancelled: Optional[CancelledFn] = None,
                         cache: Optional[NearestDistanceCache] = None) -> NearestPatches:
    """The ``k`` images of ``split`` (the first ``max_images`` of its list) whose minimum distance
    to prototype ``prototype_index`` over all feature cells is smallest, ties broken by list
    order (official ``nearest_img``: no class mask). Raises :class:`Cancelled` when
    ``cancelled()`` turns true between two images. With ``cache``, images searched before (for
    any prototype of this model) need no forward; the k winners are then recomputed for their
    activation maps."""
    from ..imaging import ImageError, load_rgb
    from .proto_inspect import CellGrid

    _check_prototype(model, prototype_index)
    if max_images < 1:
        raise ExplainError("the number of images to search must be at least 1")
    ids = dataset.image_ids(split)
    if not ids:
        raise ExplainError(f"no images in split {split!r}: {dataset.split_folder(split)} is empty or missing")
    started = time.perf_counter()
    chosen = ids[:max_images]
    epsilon = float(getattr(model, "epsilon", 1e-4))
    # (distance, list position, id, path, cell, input size, grid size, (image, activation grid) or None)
    best: list[tuple] = []
    missing, unreadable = [], []
    searched = cached = 0
    for position, image_id in enumerate(chosen):
        if cancelled and cancelled():
            raise Cancelled()
        if progress:
            progress(position / len(chosen), f"p{prototype_index}: image {position + 1} of {len(chosen)}")
        path = dataset.image_path(split, image_id)
        if not path.is_file():
            missing.append(image_id)
            continue
        minima = cache.get(model, path, size) if cache is not None else None
        payload = None
        if minima is not None:
            cached += 1
        else:
            try:
                image = load_rgb(path)
            except ImageError:
                unreadable.append(image_id)
                continue
            out, input_hw = _forward_image(model, image, size)
            minima = _minima_of(out, input_hw)
            if cache is not None:
                cache.put(model, path, size, minima)
            grid = out.prototype_activations[0, prototype_index].float().cpu().numpy()
            payload = (image, grid)
            del out
        searched += 1
        distance = float(minima.distances[prototype_index])
        cell = (int(minima.cells[prototype_index, 0]), int(minima.cells[prototype_index, 1]))
        candidate = (distance, position, image_id, path, cell, minima.input_hw, minima.grid_hw, payload)
        if len(best) < k or (distance, position) < best[-1][:2]:
            best.append(candidate)
            best.sort(key=lambda c: (c[0], c[1]))
            del best[k:]
    if cancelled and cancelled():
        raise Cancelled()
    patches = []
    for rank, (distance, _pos, image_id, path, cell, input_hw, grid_hw, payload) in enumerate(best, start=1):
        if payload is None:  # from the cache: one forward for the activation map shown
            try:
                image = load_rgb(path)
            except ImageError:
                raise ExplainError(f"{path}: could not be read again for its activation map") from None
            _d, _c, grid, input_hw, grid_hw = min_distance_per_image(model, prototype_index, image, size)
            payload = (image, grid)
        image, grid = payload
        cell_box = CellGrid(tuple(image.shape[:2]), input_hw, grid_hw).cell_box(*cell)
        activation = math.log((distance + 1.0) / (distance + epsilon))
        patches.append(NearestPatch(rank, image_id, path, distance, activation, cell, cell_box, image, grid))
    if progress:
        progress(1.0, f"p{prototype_index}: nearest patches done")
    return NearestPatches(prototype_index, split, k, max_images, len(ids), searched, missing, unreadable, patches,
                          time.perf_counter() - started, cached)


# -------------------------------------------------------------------------------- requests


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


@dataclass
class NearestRequest:
    """Worker job: the top-k nearest patches of a prototype (:func:`find_nearest_patches`)."""

    prototype_index: int
    dataset: DatasetFolder
    split: str
    max_images: int = DEFAULT_MAX_IMAGES
    k: int = DEFAULT_NEAREST_K
    size: Optional[int] = None
    cache: Optional[NearestDistanceCache] = field(default=None, repr=False)
    kind: str = "nearest"

    @property
    def description(self) -> str:
        return f"Prototype p{self.prototype_index}: nearest patches in '{self.split}'"

    def run(self, model, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelledFn] = None
            ) -> NearestPatches:
        return find_nearest_patches(model, self.prototype_index, self.dataset, self.split, self.max_images, self.k,
                                    self.size, progress, cancelled, self.cache)
