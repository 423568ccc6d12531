"""ScaleProtoSeg explanations: the prototype group graph of one class on one image (Qt-free).

One model forward (:func:`run_scaleprotoseg`) gives every prototype's activation on the feature
grid; everything else is cheap numpy on top of it (:func:`explain_class`), so a GUI threshold
slider just calls :meth:`PrototypeExplanation.with_threshold`.

What a :class:`PrototypeExplanation` holds for the chosen class c (spec §3.2, §3.3, §5):

* ``prototypes``: the class's prototypes in ascending global index (= the group projection's
  columns), each with its scale (0..3, ASPP dilation 6/12/18/24), its peak and mean activation
  (log similarity, 0..9.21) in the predicted class mask, whether a group still uses it after the
  threshold, and the push's projection metadata when present;
* ``groups`` (stage 2): the 3 groups with their maps ``exp(W_α a)`` (1..1e4) and the group->class
  weight ``last_layer_group[c, 3k+n]``;
* ``edges``: prototype -> group (the simplex weight; entries below the threshold α are inactive,
  as the official ``threshold_save`` zeroes them without renormalising) and group -> class.
  For a stage-1 model the edges go prototype -> class with ``last_layer`` weights. Edges are the
  same for every image of a class (the global explanation); node maps change per image;
* maps on the feature grid: ``prototype_maps [M, h, w]``, ``group_maps [N, h, w]``,
  ``scale_maps [S, h, w]`` (per scale, the max over the class's prototypes of that scale);
* the predicted label map and class mask at image size (recomputed from the activations with the
  thresholded groups, so the prediction follows α), and a group-assignment map (per pixel the
  argmax over groups of activation x head weight inside the class mask, Fig. 5).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ExplainError

# ------------------------------------------------------------------------------ model run


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
        from ..models.scaleprotoseg import SCALE_DILATIONS

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
    return np.where(weights < threshold, 0.0, weights).astype(weights.dtype)


@dataclass
class ScaleProtoSegRun:
    """One forward of a ScaleProtoSeg model on one image."""

    image: np.ndarray  # RGB uint8 [H, W, 3] as given
    input_hw: tuple[int, int]  # model input size
    activations: np.ndarray  # [P, h, w] float32 log similarities on the feature grid
    model_logits: np.ndarray  # [C, h, w] the model's own logits (weights as loaded)
    head: HeadData
    projection: Optional["ProjectionMetadata"] = None
    projection_note: str = "no projection metadata searched"

    @property
    def grid_hw(self) -> tuple[int, int]:
        return int(self.activations.shape[1]), int(self.activations.shape[2])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@torch.no_grad()
def run_scaleprotoseg(
    model,
    image: np.ndarray,
    size: Optional[int] = None,
    projection: Optional["ProjectionMetadata"] = None,
    projection_note: str = "",
) -> ScaleProtoSegRun:
    """Run ``model`` (a :class:`~fssgui.models.scaleprotoseg.ScaleProtoSeg`) on an RGB image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ExplainError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    model.eval()
    input_hw = model.input_size(image.shape[:2], size)
    x = model.preprocess(image, input_hw)
    out = model(x)
    return ScaleProtoSegRun(
        image=image,
        input_hw=tuple(input_hw),
        activations=out.prototype_activations[0].float().cpu().numpy(),
        model_logits=out.logits[0].float().cpu().numpy(),
        head=HeadData.from_model(model),
        projection=projection,
        projection_note=projection_note or ("projection metadata present" if projection else "projection metadata absent"),
    )


# ------------------------------------------------------------------- projection metadata


@dataclass
class ProjectionInfo:
    """Where the push projected one prototype (spec §3.1)."""

    original_index: int  # index before de-duplication (file names, rows of bbNone.npy)
    image_index: int  # index into the train split of all_images.json
    image_id: Optional[str]
    box: tuple[int, int, int, int]  # h_start, h_end, w_start, w_end (high-activation crop)
    receptive_box: Optional[tuple[int, int, int, int]]  # the feature cell in pixels
    patch_path: Optional[Path] = None  # prototype-img_scale_{s}_{p}.png (the crop)
    original_with_box_path: Optional[Path] = None
    original_path: Optional[Path] = None
    self_activation_path: Optional[Path] = None

    def to_json(self) -> dict[str, Any]:
        return {
            "original_index": self.original_index,
            "image_index": self.image_index,
            "image_id": self.image_id,
            "box_hhww": list(self.box),
            "receptive_box_hhww": list(self.receptive_box) if self.receptive_box else None,
            "patch": str(self.patch_path) if self.patch_path else None,
            "original_with_box": str(self.original_with_box_path) if self.original_with_box_path else None,
        }


@dataclass
class ProjectionMetadata:
    """The push output folder ``<run>/prototypes/`` (``bbNone.npy``, ``bb-receptive_fieldNone.npy``,
    ``unique_prototypes.json``, ``<class name>/prototype-img_scale_{s}_{p}*.png``) and, if found,
    ``all_images.json`` for the train image ids."""

    folder: Path
    boxes: np.ndarray  # [P_before_dedup, 6]: image index, h0, h1, w0, w1, class
    receptive_boxes: Optional[np.ndarray]
    unique: Optional[list[int]]  # kept original indices (model index i -> unique[i])
    image_ids: Optional[list[str]]
    num_scales: int = 4

    @classmethod
    def find(cls, checkpoint: Optional[Path], folder: Optional[Path] = None, num_scales: int = 4
             ) -> tuple[Optional["ProjectionMetadata"], str]:
        """Look in ``folder`` if given, else ``<ckpt dir>/prototypes`` and ``<ckpt dir>/../prototypes``.
        Returns ``(metadata or None, a one-line note saying what was found)``."""
        candidates = [Path(folder)] if folder else []
        if checkpoint is not None and not folder:
            parent = Path(checkpoint).resolve().parent
            candidates += [parent / "prototypes", parent.parent / "prototypes"]
        for candidate in candidates:
            boxes_file = candidate / "bbNone.npy"
            if boxes_file.is_file():
                try:
                    boxes = np.load(boxes_file, allow_pickle=False)
                    rf_file = candidate / "bb-receptive_fieldNone.npy"
                    receptive = np.load(rf_file, allow_pickle=False) if rf_file.is_file() else None
                except ValueError as exc:
                    return None, f"projection metadata unreadable: {boxes_file}: {exc}"
                if boxes.ndim != 2 or boxes.shape[1] < 5:
                    return None, f"projection metadata unreadable: {boxes_file} has shape {boxes.shape}"
                unique = None
                unique_file = candidate / "unique_prototypes.json"
                if unique_file.is_file():
                    unique = [int(i) for i in json.loads(unique_file.read_text())]
                image_ids = None
                for images_file in (candidate / "all_images.json", candidate.parent / "all_images.json"):
                    if images_file.is_file():
                        split = json.loads(images_file.read_text())
                        if isinstance(split, dict) and isinstance(split.get("train"), list):
                            image_ids = [str(i) for i in split["train"]]
                        break
                note = f"projection metadata: {candidate}" + ("" if image_ids else " (no all_images.json: no image ids)")
                return cls(candidate, boxes, receptive, unique, image_ids, num_scales), note
        where = ", ".join(str(c) for c in candidates) or "nowhere (no checkpoint path)"
        return None, f"projection metadata absent (no bbNone.npy in {where})"

    def info(self, prototype_index: int, class_folder: str) -> Optional[ProjectionInfo]:
        original = self.unique[prototype_index] if self.unique is not None else prototype_index
        if self.unique is not None and prototype_index >= len(self.unique):
            return None
        if original >= len(self.boxes):
            return None
        row = [int(v) for v in self.boxes[original]]
        if row[0] < 0:
            return None
        receptive = None
        if self.receptive_boxes is not None and original < len(self.receptive_boxes):
            receptive = tuple(int(v) for v in self.receptive_boxes[original][1:5])
        scale = original // max(1, len(self.boxes) // self.num_scales)
        stem = self.folder / class_folder / f"prototype-img_scale_{scale}_{original}"

        def existing(suffix: str) -> Optional[Path]:
            path = Path(str(stem) + suffix)
            return path if path.is_file() else None

        image_id = self.image_ids[row[0]] if self.image_ids and 0 <= row[0] < len(self.image_ids) else None
        return ProjectionInfo(
            original_index=original,
            image_index=row[0],
            image_id=image_id,
            box=(row[1], row[2], row[3], row[4]),
            receptive_box=receptive,
            patch_path=existing(".png"),
            original_with_box_path=existing("-original_with_box.png"),
            original_path=existing("-original.png"),
            self_activation_path=existing("-original_with_self_act.png"),
        )


# ----------------------------------------------------------------------------- explanation


@dataclass
class PrototypeNode:
    index: int  # global prototype index
    column: int  # position among the class's prototypes (group projection column)
    scale: int  # 0..3 (paper "Scale scale+1")
    dilation: int
    peak: float  # max activation in the mask (whole image when the mask is empty)
    mean: float
    used: bool  # some group weight >= threshold (stage 2); always True for stage 1
    projection: Optional[ProjectionInfo] = None

    @property
    def node_id(self) -> str:
        return f"p{self.index}"


@dataclass
class GroupNode:
    index: int  # 0..N-1 within the class
    column: int  # column in last_layer_group / the concatenated group activations
    head_weight: float  # last_layer_group[c, column]
    peak: float
    mean: float
    num_prototypes: int  # prototypes with weight >= threshold

    @property
    def node_id(self) -> str:
        return f"g{self.index}"


@dataclass
class GraphEdge:
    source: str  # "p<index>" or "g<n>"
    target: str  # "g<n>" or "class"
    weight: float  # the weight as loaded
    active: bool  # weight survives the threshold (group edges), or is non-zero (head edges)


@dataclass
class PrototypeExplanation:
    run: ScaleProtoSegRun
    class_index: int
    class_name: str
    threshold: Optional[float]
    prototypes: list[PrototypeNode]
    groups: list[GroupNode]
    edges: list[GraphEdge]
    group_weights: Optional[np.ndarray]  # [N, M] as loaded (columns = prototypes order)
    prototype_maps: np.ndarray  # [M, h, w]
    group_maps: Optional[np.ndarray]  # [N, h, w]
    scale_maps: np.ndarray  # [S, h, w]
    logits: np.ndarray  # [C, h, w] from the activations with the thresholded groups
    predicted_labels: np.ndarray  # [H, W] int32 model class index at image size
    class_mask: np.ndarray  # [H, W] bool
    group_assignment: Optional[np.ndarray]  # [H, W] int8, -1 outside the mask
    class_score: dict[str, float] = field(default_factory=dict)

    # ---------------------------------------------------------------- accessors
    @property
    def grouped(self) -> bool:
        return self.run.head.grouped

    @property
    def image(self) -> np.ndarray:
        return self.run.image

    @property
    def projection_note(self) -> str:
        return self.run.projection_note

    def node_ids(self) -> list[str]:
        return [p.node_id for p in self.prototypes] + [g.node_id for g in self.groups] + ["class"]

    def grid_map(self, node_id: str) -> np.ndarray:
        """Feature-grid activation map of a node ("p<i>", "g<n>", "s<scale>" or "class")."""
        if node_id.startswith("p"):
            index = int(node_id[1:])
            for j, node in enumerate(self.prototypes):
                if node.index == index:
                    return self.prototype_maps[j]
        elif node_id.startswith("g") and self.group_maps is not None:
            n = int(node_id[1:])
            if 0 <= n < len(self.group_maps):
                return self.group_maps[n]
        elif node_id.startswith("s"):
            s = int(node_id[1:])
            if 0 <= s < len(self.scale_maps):
                return self.scale_maps[s]
        elif node_id == "class":
            return self.logits[self.class_index]
        raise KeyError(f"no node {node_id!r} in this explanation")

    def image_map(self, node_id: str) -> np.ndarray:
        """The node's map at image size (cubic upsampling, as the official visualisations)."""
        return upsample_cubic(self.grid_map(node_id), self.run.image_hw)

    def overlay(self, node_id: str, masked: bool = True) -> np.ndarray:
        """JET overlay 0.5 image + 0.5 heat, min-max normalised inside the class mask
        (outside it the image is shown plain) or over the whole image when ``masked`` is False."""
        return activation_overlay(self.image, self.image_map(node_id), self.class_mask if masked else None)

    def with_threshold(self, threshold: Optional[float]) -> "PrototypeExplanation":
        return explain_class(self.run, self.class_index, threshold)

    def with_class(self, class_index: int) -> "PrototypeExplanation":
        return explain_class(self.run, class_index, self.threshold)

    def predicted_classes(self) -> list[tuple[int, float]]:
        """(class index, pixel share) of the predicted classes, largest first."""
        counts = np.bincount(self.predicted_labels.ravel(), minlength=len(self.run.head.class_names))
        total = float(counts.sum()) or 1.0
        return [(int(c), counts[c] / total) for c in np.argsort(-counts) if counts[c] > 0]

    def sparsity(self) -> dict[str, Any]:
        used = sum(1 for p in self.prototypes if p.used)
        return {
            "prototypes": len(self.prototypes),
            "used_prototypes": used,
            "prototypes_per_group": [g.num_prototypes for g in self.groups],
        }

    def to_json(self) -> dict[str, Any]:
        """Nodes, edges, weights and threshold; ``groups[*].proto_info`` has the shape of the
        official ``group_composition/.../proto_info.json`` (real_proto_id, proto_weight, scale)."""
        head = self.run.head
        groups = []
        for g in self.groups:
            members = [
                {"real_proto_id": p.index, "proto_weight": float(self.group_weights[g.index, p.column]),
                 "scale": p.scale}
                for p in self.prototypes
                if self.group_weights is not None and self.group_weights[g.index, p.column] > 0
                and (not self.threshold or self.group_weights[g.index, p.column] >= self.threshold)
            ]
            groups.append({"id": g.node_id, "index": g.index, "column": g.column, "head_weight": g.head_weight,
                           "peak": g.peak, "mean": g.mean, "proto_info": members})
        return {
            "format": "fssgui-prototype-graph",
            "version": 1,
            "dataset": head.dataset,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "stage": 2 if head.grouped else 1,
            "threshold": self.threshold,
            "image_size": list(self.run.image_hw),
            "input_size": list(self.run.input_hw),
            "grid_size": list(self.run.grid_hw),
            "class_pixel_share": float(self.class_mask.mean()),
            "class_score": self.class_score,
            "projection": self.projection_note,
            "sparsity": self.sparsity(),
            "nodes": (
                [{"id": p.node_id, "kind": "prototype", "index": p.index, "column": p.column, "scale": p.scale,
                  "dilation": p.dilation, "peak": p.peak, "mean": p.mean, "used": p.used,
                  "projection": p.projection.to_json() if p.projection else None} for p in self.prototypes]
                + [{"id": g["id"], "kind": "group", "index": g["index"], "column": g["column"],
                    "head_weight": g["head_weight"], "peak": g["peak"], "mean": g["mean"]} for g in groups]
                + [{"id": "class", "kind": "class", "index": self.class_index, "name": self.class_name}]
            ),
            "edges": [{"source": e.source, "target": e.target, "weight": e.weight, "active": e.active}
                      for e in self.edges],
            "groups": groups,
        }


def _masked_stats(grid_map: np.ndarray, mask_grid: Optional[np.ndarray]) -> tuple[float, float]:
    values = grid_map[mask_grid] if mask_grid is not None and mask_grid.any() else grid_map.ravel()
    return float(values.max()), float(values.mean())


def explain_class(run: ScaleProtoSegRun, class_index: int, threshold: Optional[float] = 0.05) -> PrototypeExplanation:
    """The group graph and maps of one class (see the module docstring)."""
    head = run.head
    if not 0 <= class_index < len(head.class_names):
        raise ExplainError(f"class index {class_index} out of range (0..{len(head.class_names) - 1})")
    columns = head.class_prototypes[class_index]
    if not columns:
        raise ExplainError(f"class {head.class_names[class_index]!r} has no prototypes in this model")
    threshold = None if threshold is None else float(threshold)

    logits, groups_all = head.logits(run.activations, threshold if head.grouped else None)
    predicted = upsample_logits_argmax(logits, run.image_hw)
    class_mask = predicted == class_index
    # the mask on the grid for peak/mean statistics: nearest-downsampled class mask
    mask_grid = cv2.resize(class_mask.astype(np.uint8), run.grid_hw[::-1], interpolation=cv2.INTER_NEAREST) > 0

    prototype_maps = run.activations[columns]
    weights = head.class_weights(class_index) if head.grouped else None
    weights_t = apply_threshold(weights, threshold) if weights is not None else None

    prototypes = []
    for j, index in enumerate(columns):
        scale = int(head.prototype_scale[index])
        peak, mean = _masked_stats(prototype_maps[j], mask_grid)
        used = bool((weights_t[:, j] > 0).any()) if weights_t is not None else True
        projection = None
        if run.projection is not None:
            from ..models.scaleprotoseg import PROTOTYPE_FOLDER_ALIASES

            name = head.class_names[class_index]
            projection = run.projection.info(index, PROTOTYPE_FOLDER_ALIASES.get((head.dataset, name), name))
        prototypes.append(PrototypeNode(index, j, scale, head.scale_dilations[scale] if scale < len(head.scale_dilations) else -1,
                                        peak, mean, used, projection))

    scale_maps = np.stack([
        prototype_maps[[j for j, p in enumerate(prototypes) if p.scale == s]].max(axis=0)
        if any(p.scale == s for p in prototypes) else np.zeros(run.grid_hw, np.float32)
        for s in range(head.num_scales)
    ]).astype(np.float32)

    edges: list[GraphEdge] = []
    groups: list[GroupNode] = []
    group_maps = None
    assignment = None
    if head.grouped and weights is not None:
        group_cols = head.group_columns(class_index)
        group_maps = groups_all[group_cols]
        for n, col in enumerate(group_cols):
            peak, mean = _masked_stats(group_maps[n], mask_grid)
            groups.append(GroupNode(n, col, float(head.head_weight[class_index, col]), peak, mean,
                                    int((weights_t[n] > 0).sum())))
            for j, p in enumerate(prototypes):
                if weights[n, j] > 0:
                    edges.append(GraphEdge(p.node_id, f"g{n}", float(weights[n, j]), bool(weights_t[n, j] > 0)))
        for g in groups:
            edges.append(GraphEdge(g.node_id, "class", g.head_weight, g.head_weight != 0))
        weighted = np.stack([upsample_cubic(group_maps[n] * groups[n].head_weight, run.image_hw)
                             for n in range(len(groups))])
        assignment = np.where(class_mask, weighted.argmax(axis=0), -1).astype(np.int8)
    else:
        for p in prototypes:
            w = float(head.head_weight[class_index, p.index])
            edges.append(GraphEdge(p.node_id, "class", w, w != 0))

    class_logits = logits[class_index]
    probabilities = _softmax(logits, axis=0)[class_index]
    region = mask_grid if mask_grid.any() else np.ones_like(mask_grid)
    score = {"mean_logit_in_mask": float(class_logits[region].mean()),
             "mean_probability_in_mask": float(probabilities[region].mean()),
             "max_probability": float(probabilities.max())}
    return PrototypeExplanation(
        run=run, class_index=class_index, class_name=head.class_names[class_index], threshold=threshold,
        prototypes=prototypes, groups=groups, edges=edges, group_weights=weights,
        prototype_maps=prototype_maps.astype(np.float32), group_maps=group_maps, scale_maps=scale_maps,
        logits=logits, predicted_labels=predicted, class_mask=class_mask, group_assignment=assignment,
        class_score=score,
    )


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------------------- imaging


def upsample_logits_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) upsampling of ``[C, h, w]`` logits, then argmax -> int32."""
    tensor = torch.from_numpy(np.ascontiguousarray(logits))[None]
    up = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0).numpy().astype(np.int32)


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
    from ..look import colormap_lut

    heat = colormap_lut("jet")[(normalise_map(image_map, mask) * 255).astype(np.uint8)]
    blended = (0.5 * image.astype(np.float32) + 0.5 * heat.astype(np.float32) + 0.5).astype(np.uint8)
    if mask is not None and mask.any():
        blended = np.where(mask[..., None], blended, image)
    return blended


GROUP_COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 90, 230]], dtype=np.uint8)  # R, G, B


def assignment_overlay(image: np.ndarray, assignment: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Group-assignment map (Fig. 5): group n's pixels tinted with red / green / blue."""
    out = image.astype(np.float32)
    for n in range(int(assignment.max()) + 1):
        where = assignment == n
        out[where] = (1 - alpha) * out[where] + alpha * GROUP_COLOURS[n % len(GROUP_COLOURS)]
    return (out + 0.5).astype(np.uint8)


def label_colours(num_classes: int) -> np.ndarray:
    """A fixed palette ``[C, 3]`` (viridis samples, as the official prediction overlays)."""
    from ..look import colormap_lut

    lut = colormap_lut("viridis")
    return lut[np.linspace(0, 255, max(num_classes, 2)).astype(int)[:num_classes]]


def prediction_overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """0.3 image + 0.7 class colour (the official prediction overlay)."""
    colours = label_colours(num_classes)[labels]
    return (0.3 * image.astype(np.float32) + 0.7 * colours.astype(np.float32) + 0.5).astype(np.uint8)


# -------------------------------------------------------------------------------- layout


def graph_layout(explanation: PrototypeExplanation) -> dict[str, tuple[float, float]]:
    """Node positions in [0, 1] x [0, 1] (y down): prototypes on top in four scale columns,
    groups in the middle, the class at the bottom (stage 1: prototypes straight to the class)."""
    head = explanation.run.head
    positions: dict[str, tuple[float, float]] = {}
    scales = head.num_scales
    by_scale = [[p for p in explanation.prototypes if p.scale == s] for s in range(scales)]
    for s, nodes in enumerate(by_scale):
        left, right = s / scales, (s + 1) / scales
        for i, p in enumerate(nodes):
            positions[p.node_id] = (left + (right - left) * (i + 0.5) / len(nodes), 0.1)
    n = len(explanation.groups)
    for g in explanation.groups:
        positions[g.node_id] = ((g.index + 0.5) / n, 0.55)
    positions["class"] = (0.5, 0.9)
    return positions


def render_graph_png(explanation: PrototypeExplanation, thumb: int = 112, masked: bool = True) -> np.ndarray:
    """The group graph as an RGB image drawn with OpenCV (no Qt): node thumbnails are the
    activation overlays, edges have widths proportional to their weight and are labelled;
    inactive (below threshold) edges are drawn thin and grey."""
    positions = graph_layout(explanation)
    n_top = max(1, len(explanation.prototypes))
    width = max(900, n_top * (thumb + 16) + 40)
    height = int(thumb * 3 + 360)
    canvas = np.full((height, width, 3), 255, np.uint8)
    margin_x, margin_y = 20, 50

    def pixel(node_id: str) -> tuple[int, int]:
        x, y = positions[node_id]
        return int(margin_x + x * (width - 2 * margin_x)), int(margin_y + y * (height - 2 * margin_y - 40))

    def thumbnail(node_id: str) -> np.ndarray:
        overlay = explanation.overlay(node_id, masked=masked)
        h, w = overlay.shape[:2]
        scale = thumb / max(h, w)
        return cv2.resize(overlay, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)

    font = cv2.FONT_HERSHEY_SIMPLEX
    title = (f"{explanation.class_name} (class {explanation.class_index}), "
             f"threshold {explanation.threshold}, weights are the same for every image of the class")
    cv2.putText(canvas, title, (margin_x, 24), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for s in range(explanation.run.head.num_scales):
        x = int(margin_x + (s + 0.5) / explanation.run.head.num_scales * (width - 2 * margin_x))
        label = f"Scale {s + 1} (dilation {explanation.run.head.scale_dilations[s]})"
        cv2.putText(canvas, label, (x - 90, 44), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)

    image_h, image_w = explanation.run.image_hw
    half_tile = int(thumb * image_h / max(image_h, image_w)) // 2
    max_weight = max([abs(e.weight) for e in explanation.edges] + [1e-6])
    for edge in explanation.edges:
        (x0, y0), (x1, y1) = pixel(edge.source), pixel(edge.target)
        y0 += half_tile + 30  # below the node's two text lines
        y1 -= half_tile
        if edge.active:
            colour = (200, 40, 40) if edge.weight < 0 else (40, 40, 40)
            thickness = max(1, int(round(1 + 7 * abs(edge.weight) / max_weight)))
        else:
            colour, thickness = (190, 190, 190), 1
        cv2.line(canvas, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_AA)
        mx, my = int(x0 + 0.7 * (x1 - x0)), int(y0 + 0.7 * (y1 - y0))
        cv2.putText(canvas, f"{edge.weight:.2f}", (mx + 3, my), font, 0.38, colour, 1, cv2.LINE_AA)

    def paste(node_id: str, lines: list[str], dim: bool = False) -> None:
        x, y = pixel(node_id)
        tile = thumbnail(node_id)
        if dim:
            tile = (0.35 * tile + 0.65 * 255).astype(np.uint8)
        h, w = tile.shape[:2]
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        x1, y1 = min(width, x0 + w), min(height, y0 + h)
        canvas[y0:y1, x0:x1] = tile[: y1 - y0, : x1 - x0]
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), 1)
        for i, line in enumerate(lines):
            cv2.putText(canvas, line, (x0, y1 + 13 + 13 * i), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)

    for p in explanation.prototypes:
        paste(p.node_id, [f"p{p.index} s{p.scale + 1}", f"peak {p.peak:.2f} mean {p.mean:.2f}"], dim=not p.used)
    for g in explanation.groups:
        paste(g.node_id, [f"group {g.index + 1} ({g.num_prototypes} protos)", f"peak {g.peak:.3g}"])
    paste("class", [f"{explanation.class_name}", f"p(class) {explanation.class_score['mean_probability_in_mask']:.2f}"])
    return canvas


def explain_image(
    model,
    image: np.ndarray,
    class_index: int,
    threshold: Optional[float] = 0.05,
    size: Optional[int] = None,
    checkpoint: Optional[Path] = None,
    projection_folder: Optional[Path] = None,
) -> PrototypeExplanation:
    """Convenience: projection lookup + :func:`run_scaleprotoseg` + :func:`explain_class`."""
    if checkpoint is None:
        checkpoint = getattr(model, "checkpoint_path", None)
    projection, note = ProjectionMetadata.find(checkpoint, projection_folder, model.num_scales)
    run = run_scaleprotoseg(model, image, size, projection, note)
    return explain_class(run, class_index, threshold)


def class_index_by_name(class_names: tuple[str, ...], name: str) -> int:
    """Class index from a name (case-insensitive) or a number."""
    lowered = [c.lower() for c in class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    raise ExplainError(f"unknown class {name!r}; known: {', '.join(class_names[:30])}"
                       + (" ..." if len(class_names) > 30 else ""))
