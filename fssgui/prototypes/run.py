"""One ScaleProtoSeg forward on one image, and the numpy head that everything else reads.

:func:`run_scaleprotoseg` runs the model once and keeps every prototype's activation on the
feature grid (a :class:`ScaleProtoSegRun`); the rest of the analysis (the group graph of any class
at any threshold α, the pixel inspector, the class comparison) is cheap numpy on top of it through
:class:`HeadData`, the parts of the model's head needed after the forward.

The group threshold α follows the official ``threshold_save``: group weights below α are set to 0
and the others are *not* renormalised.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ExplainError
from ..models.scaleprotoseg_datasets import SCALE_DILATIONS
from .projection import ProjectionMetadata

#: the official group-weight threshold α (checkpoints named th-0.05-...)
DEFAULT_THRESHOLD = 0.05

ProgressFn = Callable[[float, str], None]  # progress(fraction 0..1, message)


@dataclass
class HeadData:
    """The parts of a ScaleProtoSeg model needed after the forward (numpy, no torch module)."""

    dataset: str
    class_names: tuple[str, ...]
    grouped: bool
    num_groups: int
    num_scales: int
    class_prototypes: list[list[int]]  # per class: ascending global prototype indices
    prototype_scale: np.ndarray  # [P] scale of each prototype
    group_classes: list[int]  # classes that own groups, in head-column order
    group_weights: list[np.ndarray]  # per group class: [N, |P_c|] (as loaded, before α)
    head_weight: np.ndarray  # [C, N*C'] (stage 2) or [C, P] (stage 1)
    scale_dilations: tuple[int, ...] = (6, 12, 18, 24)
    epsilon: float = 1e-4  # of the log activation log((d+1)/(d+eps)); recovers distances

    @classmethod
    def from_model(cls, model) -> "HeadData":
        grouped = bool(model.grouped)
        return cls(
            dataset=model.config.dataset,
            class_names=tuple(model.class_names),
            grouped=grouped,
            num_groups=int(model.num_groups),
            num_scales=int(model.num_scales),
            class_prototypes=[list(p) for p in model.class_prototypes],
            prototype_scale=model.prototype_scale.numpy().copy(),
            group_classes=list(model.group_classes),
            group_weights=[l.weight.detach().cpu().float().numpy().copy() for l in model.group_projection] if grouped else [],
            head_weight=(model.last_layer_group if grouped else model.last_layer).weight.detach().cpu().float().numpy().copy(),
            scale_dilations=tuple(SCALE_DILATIONS[: model.num_scales]),
            epsilon=float(model.epsilon),
        )

    def class_weights(self, class_index: int) -> Optional[np.ndarray]:
        if class_index not in self.group_classes:
            return None
        return self.group_weights[self.group_classes.index(class_index)]

    def prototype_class(self) -> np.ndarray:
        """``[P]`` owning class of every prototype (-1 for none)."""
        owner = np.full(len(self.prototype_scale), -1, dtype=np.int64)
        for c, indices in enumerate(self.class_prototypes):
            owner[indices] = c
        return owner

    def used_prototypes(self, threshold: Optional[float]) -> np.ndarray:
        """Sorted global indices of the prototypes some group still uses after ``threshold`` (the
        official ``non_zero_proto`` on the thresholded model); every prototype for stage 1."""
        if not self.grouped:
            return np.arange(len(self.prototype_scale))
        used: set[int] = set()
        for k, c in enumerate(self.group_classes):
            weights = apply_threshold(self.group_weights[k], threshold)
            columns = np.nonzero((weights > 0).any(axis=0))[0]
            used.update(self.class_prototypes[c][j] for j in columns)
        return np.array(sorted(used), dtype=np.int64)

    def group_columns(self, class_index: int) -> list[int]:
        if class_index not in self.group_classes:
            return []
        k = self.group_classes.index(class_index)
        return list(range(k * self.num_groups, (k + 1) * self.num_groups))

    def logits(self, activations: np.ndarray, threshold: Optional[float]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``[P, h, w]`` activations -> (``[C, h, w]`` logits, ``[G, h, w]`` groups or None)."""
        p, h, w = activations.shape
        flat = activations.reshape(p, -1).astype(np.float64)
        if not self.grouped:
            return (self.head_weight.astype(np.float64) @ flat).reshape(-1, h, w).astype(np.float32), None
        groups = []
        for k, c in enumerate(self.group_classes):
            weights = apply_threshold(self.group_weights[k], threshold).astype(np.float64)
            groups.append(np.exp(weights @ flat[self.class_prototypes[c]]))
        group_flat = np.concatenate(groups, axis=0)
        logits = self.head_weight.astype(np.float64) @ group_flat
        return logits.reshape(-1, h, w).astype(np.float32), group_flat.reshape(-1, h, w).astype(np.float32)


def apply_threshold(weights: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Group weights below ``threshold`` -> 0, no renormalisation (``None`` or 0: unchanged)."""
    if not threshold:
        return weights
    from ..models.scaleprotoseg import threshold_weights  # torch: this module is imported by the window

    return threshold_weights(weights, threshold)


@dataclass
class ScaleProtoSegRun:
    """One forward of a ScaleProtoSeg model on one image."""

    image: np.ndarray  # RGB uint8 [H, W, 3] as given
    input_hw: tuple[int, int]  # model input size
    activations: np.ndarray  # [P, h, w] float32 log similarities on the feature grid
    model_logits: np.ndarray  # [C, h, w] the model's own logits (weights as loaded)
    head: HeadData
    projection: Optional[ProjectionMetadata] = None
    projection_note: str = "no projection metadata searched"

    @property
    def grid_hw(self) -> tuple[int, int]:
        return int(self.activations.shape[1]), int(self.activations.shape[2])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def forward_image(model, image: np.ndarray, size: Optional[int] = None) -> tuple[Any, tuple[int, int]]:
    """``(ScaleProtoSegOutput, model input size)`` of ``model`` in eval mode on an RGB uint8 image,
    resized by the model's dataset policy (``size`` overrides it)."""
    import torch

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ExplainError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    model.eval()
    input_hw = tuple(model.input_size(image.shape[:2], size))
    with torch.no_grad():
        return model(model.preprocess(image, input_hw)), input_hw


def run_scaleprotoseg(
    model,
    image: np.ndarray,
    size: Optional[int] = None,
    projection: Optional[ProjectionMetadata] = None,
    projection_note: str = "",
) -> ScaleProtoSegRun:
    """Run ``model`` (a :class:`~fssgui.models.scaleprotoseg.ScaleProtoSeg`) on an RGB image."""
    out, input_hw = forward_image(model, image, size)
    return ScaleProtoSegRun(
        image=image,
        input_hw=input_hw,
        activations=out.prototype_activations[0].float().cpu().numpy(),
        model_logits=out.logits[0].float().cpu().numpy(),
        head=HeadData.from_model(model),
        projection=projection,
        projection_note=projection_note or ("projection metadata present" if projection else "projection metadata absent"),
    )


def upsample_logits_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) upsampling of ``[C, h, w]`` logits, then argmax -> int32."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(logits))[None]
    up = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0).numpy().astype(np.int32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def predicted_class_shares(run: ScaleProtoSegRun, threshold: Optional[float]) -> list[tuple[int, float]]:
    """(model class index, pixel share) of the classes predicted on the image at ``threshold``,
    largest first (ties in class order)."""
    logits, _ = run.head.logits(run.activations, threshold if run.head.grouped else None)
    labels = upsample_logits_argmax(logits, run.image_hw)
    counts = np.bincount(labels.ravel(), minlength=len(run.head.class_names))
    total = float(counts.sum()) or 1.0
    return [(int(c), float(counts[c] / total)) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


def largest_class(run: ScaleProtoSegRun, shares: list[tuple[int, float]]) -> int:
    """The class with prototypes predicted on the largest area, from ``shares``
    (:func:`predicted_class_shares`); any class with prototypes when no predicted one has any."""
    usable = [c for c, _ in shares if run.head.class_prototypes[c]]
    if not usable:
        usable = [c for c in range(len(run.head.class_names)) if run.head.class_prototypes[c]]
    if not usable:
        raise ExplainError("the model has no prototypes")
    return usable[0]


def class_index_by_name(class_names: tuple[str, ...], name: str) -> int:
    """Class index from a name (case-insensitive) or a number."""
    lowered = [c.lower() for c in class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    raise ExplainError(f"unknown class {name!r}; known: {', '.join(class_names[:30])}"
                       + (" ..." if len(class_names) > 30 else ""))


def image_key(image: np.ndarray) -> str:
    """A short hash of an image (its shape, dtype and pixels): tells whether a result was
    computed on the image now shown."""
    digest = hashlib.sha1()
    image = np.ascontiguousarray(image)
    digest.update(str((image.shape, image.dtype.str)).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]
