"""Two classes of one image side by side with shared colour ranges (failure analysis, Qt-free).

:func:`compare_classes` explains both classes on one run and fixes one colour range per map kind
(prototype maps, group maps, class-logit maps) for both, as the official ``failure_cases``
plots the true and the confused class; :meth:`ClassComparison.render_sheet` draws both as one
RGB image (the exported ``compare_<a>_vs_<b>.png`` and the app's "Compare classes" tab).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from ..errors import ExplainError
from ..imaging import resize_image, resize_mask
from ..look import blend, colormap_lut
from .graph import PrototypeExplanation, explain_class, weights_json
from .overlays import upsample_cubic
from .run import DEFAULT_THRESHOLD, ScaleProtoSegRun


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
        explanation = self.explanations[side]
        size = tuple(size) if size is not None else explanation.run.image_hw
        image = explanation.image if size == explanation.run.image_hw else resize_image(explanation.image, size)
        heat = colormap_lut("jet")[(self.normalised(side, node_id, size) * 255).astype(np.uint8)]
        return blend(image, heat, 0.5, self._region(size))

    def _region(self, size: tuple[int, int]) -> Optional[np.ndarray]:
        return None if self.region is None else resize_mask(self.region, size)

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
                         "group_weights": weights_json(e)} for e in self.explanations],
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


def compare_classes(run: ScaleProtoSegRun, first: int, second: int,
                    threshold: Optional[float] = DEFAULT_THRESHOLD, masked: bool = True) -> ClassComparison:
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
