"""Nearest patches of a prototype, headless: the official ``nearest_img`` analysis.

:func:`find_nearest_patches` (runs the model once per image) returns the top-k images of a split
by per-image minimum distance to prototype p over all feature cells, no class mask, with the cell
where the minimum is reached; the number of images searched is capped by the caller, checked for
cancellation between images and reports its progress. With a :class:`NearestDistanceCache` (the
app keeps one per detail pane) each image's forward records the minimum distance and its cell for
*every* prototype, so a later search for another prototype of the same model runs only the k
forwards of its winners; an entry is used only while the file's size and modification time are
unchanged and the model is the same object.

:class:`NearestRequest` bundles a search for a worker thread:
``request.run(model, progress, cancelled)``; ``cancelled()`` turning true between two images
raises :class:`~fssgui.errors.Cancelled`.
"""
from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import CancelledFn, ExplainError, check_cancelled
from ..imaging import ImageError, load_rgb
from .dataset import DatasetFolder
from .detail import check_prototype
from .inspection import CellGrid
from .overlays import CELL_COLOUR, Box, activation_overlay, draw_boxes, upsample_cubic
from .run import ProgressFn, forward_image

#: the official ``nearest_img`` keeps 3 images per prototype
DEFAULT_NEAREST_K = 3
#: default cap on the images searched for nearest patches (the user sets it)
DEFAULT_MAX_IMAGES = 200


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


def _activation_grid(out, prototype_index: int) -> np.ndarray:
    """``[h, w]`` one prototype's activation on the feature grid of one forward."""
    return out.prototype_activations[0, prototype_index].float().cpu().numpy()


def _minima_of(out, input_hw: tuple[int, int]) -> ImageMinima:
    distances = out.distances[0].float()  # [P, h, w]
    grid_hw = (int(distances.shape[-2]), int(distances.shape[-1]))
    values, flat = distances.flatten(1).min(dim=1)
    flat = flat.cpu().numpy()
    cells = np.stack([flat // grid_hw[1], flat % grid_hw[1]], axis=1).astype(np.int32)
    return ImageMinima(values.cpu().numpy().astype(np.float32), cells, input_hw, grid_hw)


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
    check_prototype(model, prototype_index)
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
        check_cancelled(cancelled)
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
            out, input_hw = forward_image(model, image, size)
            minima = _minima_of(out, input_hw)
            if cache is not None:
                cache.put(model, path, size, minima)
            payload = (image, _activation_grid(out, prototype_index))
            del out
        searched += 1
        distance = float(minima.distances[prototype_index])
        cell = (int(minima.cells[prototype_index, 0]), int(minima.cells[prototype_index, 1]))
        candidate = (distance, position, image_id, path, cell, minima.input_hw, minima.grid_hw, payload)
        if len(best) < k or (distance, position) < best[-1][:2]:
            best.append(candidate)
            best.sort(key=lambda c: (c[0], c[1]))
            del best[k:]
    check_cancelled(cancelled)
    patches = []
    for rank, (distance, _pos, image_id, path, cell, input_hw, grid_hw, payload) in enumerate(best, start=1):
        if payload is None:  # from the cache: one forward for the activation map shown
            check_cancelled(cancelled)
            try:
                image = load_rgb(path)
            except ImageError:
                raise ExplainError(f"{path}: could not be read again for its activation map") from None
            out, input_hw = forward_image(model, image, size)
            grid = _activation_grid(out, prototype_index)
            grid_hw = tuple(grid.shape)
            payload = (image, grid)
        image, grid = payload
        cell_box = CellGrid(tuple(image.shape[:2]), input_hw, grid_hw).cell_box(*cell)
        activation = math.log((distance + 1.0) / (distance + epsilon))
        patches.append(NearestPatch(rank, image_id, path, distance, activation, cell, cell_box, image, grid))
    if progress:
        progress(1.0, f"p{prototype_index}: nearest patches done")
    return NearestPatches(prototype_index, split, k, max_images, len(ids), searched, missing, unreadable, patches,
                          time.perf_counter() - started, cached)


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

