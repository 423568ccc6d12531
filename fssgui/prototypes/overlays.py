"""Images drawn from the prototype maps (no Qt): the same pixels in the Prototypes tab, the
exported PNGs and ``fssgui protos``.

Grid maps are upsampled to the image with bicubic interpolation, as the official visualisations
do; a heatmap overlay is 0.5 image + 0.5 JET of the map min-max normalised inside the predicted
class region (the image is shown plain outside it) or over the whole image. Boxes are
``(y0, y1, x0, x1)`` in image pixels, half-open, as everywhere in :mod:`fssgui.prototypes`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from ..look import blend, colormap_lut

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in image pixels, half-open

#: group n's colour (red, green, blue), in the group-assignment map and the app's graph and tables
GROUP_COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 90, 230]], dtype=np.uint8)
#: box colours (RGB): the push's high-activation box (yellow, as the official ``original_with_box``)
#: and a feature cell (white)
BOX_COLOUR = (255, 220, 0)
CELL_COLOUR = (255, 255, 255)


def upsample_cubic(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    return cv2.resize(np.ascontiguousarray(grid_map, dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def normalise_map(values: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Min-max normalise to [0, 1] over ``mask`` (everything when None/empty); 0 outside it."""
    region = values[mask] if mask is not None and mask.any() else values.ravel()
    lo, hi = float(region.min()), float(region.max())
    out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    out = np.clip(out, 0.0, 1.0)
    if mask is not None and mask.any():
        out = np.where(mask, out, 0.0)
    return out.astype(np.float32)


def activation_overlay(image: np.ndarray, image_map: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """0.5 image + 0.5 JET(normalised map), inside ``mask`` only when one is given (non-empty)."""
    heat = colormap_lut("jet")[(normalise_map(image_map, mask) * 255).astype(np.uint8)]
    return blend(image, heat, 0.5, mask if mask is not None and mask.any() else None)


def assignment_overlay(image: np.ndarray, assignment: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Group-assignment map (the paper's figure of which group wins each pixel): group n's pixels
    tinted with red / green / blue (:data:`GROUP_COLOURS`)."""
    out = image
    for n in range(int(assignment.max()) + 1):
        out = blend(out, GROUP_COLOURS[n % len(GROUP_COLOURS)], alpha, assignment == n)
    return out


def label_colours(num_classes: int) -> np.ndarray:
    """A fixed palette ``[C, 3]`` (viridis samples, as the official prediction overlays)."""
    lut = colormap_lut("viridis")
    return lut[np.linspace(0, 255, max(num_classes, 2)).astype(int)[:num_classes]]


def prediction_overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """0.3 image + 0.7 class colour (the official prediction overlay)."""
    return blend(image, label_colours(num_classes)[labels], 0.7)


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
class ExplanationImages:
    """Everything the Prototypes tab draws of one explanation, computed off the GUI thread: the
    per-scale overlays, the class-mask and group-assignment overlays, and each node's map at image
    size (normalised; NaN outside the class mask when ``masked``)."""

    masked: bool
    scales: list[np.ndarray]
    class_mask: np.ndarray
    assignment: Optional[np.ndarray]
    node_maps: dict[str, np.ndarray]


def explanation_images(explanation, masked: bool = True) -> ExplanationImages:
    """The :class:`ExplanationImages` of a :class:`~fssgui.prototypes.graph.PrototypeExplanation`
    (``masked``: normalise inside the predicted class region, when it is not empty)."""
    from ..look import PREDICTION_COLOUR, tint

    image = explanation.image
    mask = explanation.class_mask if masked and explanation.class_mask.any() else None
    scales = [explanation.overlay(f"s{s}", masked=mask is not None) for s in range(len(explanation.scale_maps))]
    assignment = (assignment_overlay(image, explanation.group_assignment)
                  if explanation.group_assignment is not None else None)
    node_maps = {}
    for node_id in explanation.node_ids():
        values = normalise_map(explanation.image_map(node_id), mask)
        node_maps[node_id] = np.where(mask, values, np.nan).astype(np.float32) if mask is not None else values
    return ExplanationImages(mask is not None, scales, tint(image, explanation.class_mask, PREDICTION_COLOUR),
                             assignment, node_maps)
