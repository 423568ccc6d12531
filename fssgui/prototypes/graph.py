"""The prototype group graph of one class on one image (Qt-free): nodes, edges, maps, JSON.

:func:`explain_class` turns a :class:`~fssgui.prototypes.run.ScaleProtoSegRun` into a
:class:`PrototypeExplanation` with numpy only, so the Prototypes tab's threshold slider and class
picker just call it again (:meth:`PrototypeExplanation.with_threshold`).

What a :class:`PrototypeExplanation` holds for the chosen class c:

* ``prototypes``: the class's prototypes in ascending global index (= the group projection's
  columns), each with its scale (0..3, ASPP dilation 6/12/18/24), its peak and mean activation
  (log similarity, 0..9.21) in the predicted class mask, whether a group still uses it after the
  threshold, and the push's projection record when present;
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
  argmax over groups of activation x head weight inside the class mask, as the paper's figure of
  which group wins each pixel).

Node ids, used everywhere (JSON, file names, the app): ``p<global index>``, ``g<n>`` (n = 0..2,
shown as group n+1), ``s<scale>`` (scale maps, shown as Scale s+1) and ``class``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

from ..errors import ExplainError
from ..imaging import resize_mask
from .overlays import activation_overlay, upsample_cubic
from .projection import ProjectionInfo, ProjectionMetadata
from .run import (
    DEFAULT_THRESHOLD,
    ProgressFn,
    ScaleProtoSegRun,
    apply_threshold,
    image_key,
    largest_class,
    predicted_class_shares,
    run_scaleprotoseg,
    softmax,
    upsample_logits_argmax,
)

GRAPH_FORMAT = "fssgui-prototype-graph"
GRAPH_VERSION = 2  # 2: the weights (proto_info, group->class columns), group folders, one file per class
WEIGHTS_NOTE = ("proto_weight is the group's simplex weight as loaded; weights below the threshold are left out, "
                "the others are not renormalised (official threshold_save). Edges are the same for every image "
                "of the class.")


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

    def sparsity(self) -> dict[str, Any]:
        used = sum(1 for p in self.prototypes if p.used)
        return {
            "prototypes": len(self.prototypes),
            "used_prototypes": used,
            "prototypes_per_group": [g.num_prototypes for g in self.groups],
        }

    def to_json(self) -> dict[str, Any]:
        """The graph document (format ``fssgui-prototype-graph``): sizes, class score, nodes with
        their statistics and projection record, edges, the groups with their official
        ``proto_info`` lists and ``group_composition`` folder names, and the weights
        (:func:`weights_json`). Written as ``graph_class_<name>.json`` by the export."""
        head = self.run.head
        info = proto_info(self)
        groups = [{"id": g.node_id, "index": g.index, "column": g.column, "head_weight": g.head_weight,
                   "peak": g.peak, "mean": g.mean, "num_prototypes": g.num_prototypes,
                   "folder": group_folder_name(self, g.index, info[g.index]), "proto_info": info[g.index]}
                  for g in self.groups]
        return {
            "format": GRAPH_FORMAT,
            "version": GRAPH_VERSION,
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
            **weights_json(self),
        }


def _masked_stats(grid_map: np.ndarray, mask_grid: Optional[np.ndarray]) -> tuple[float, float]:
    values = grid_map[mask_grid] if mask_grid is not None and mask_grid.any() else grid_map.ravel()
    return float(values.max()), float(values.mean())


def explain_class(run: ScaleProtoSegRun, class_index: int, threshold: Optional[float] = DEFAULT_THRESHOLD
                  ) -> PrototypeExplanation:
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
    mask_grid = resize_mask(class_mask, run.grid_hw)

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
            projection = run.projection.class_info(index, head.dataset, head.class_names[class_index])
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
    probabilities = softmax(logits, axis=0)[class_index]
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

# ---------------------------------------------------------------------------- weights JSON


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


def group_folder_name(explanation: PrototypeExplanation, group: int, members: list[dict[str, Any]]) -> str:
    """The official ``group_composition`` folder name of a group ("single-low" when it keeps at
    most one prototype above α, else the official spelling "mutliple")."""
    threshold = explanation.threshold or 0.0
    above = sum(1 for m in members if m["proto_weight"] > threshold)
    flag = "single-low" if above <= 1 else "mutliple"
    return f"class_{class_slug(explanation.class_name, explanation.class_index)}_group_{group}_{flag}"


def weights_json(explanation: PrototypeExplanation) -> dict[str, Any]:
    """The class's edge weights: stage 2, ``proto_info`` (per group, the official list) and
    ``group_class_weights`` (each group's whole ``last_layer_group`` column, off-class weights
    included); stage 1, ``prototype_class_weights`` (``last_layer``). The same for every image of
    the class."""
    head = explanation.run.head
    out: dict[str, Any] = {"weights_note": WEIGHTS_NOTE}
    if head.grouped:
        out["proto_info"] = proto_info(explanation)
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


# ---------------------------------------------------------------------------------- drawing


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


# ------------------------------------------------------------------------ one image, end to end


@dataclass
class PrototypeRunResult:
    """One ScaleProtoSeg forward on an image and the graph of one class (numpy only): what the
    Prototypes tab's job returns and ``fssgui protos`` exports."""

    run: ScaleProtoSegRun
    explanation: PrototypeExplanation
    class_shares: list[tuple[int, float]]  # predicted classes (model index, pixel share), largest first
    model_info: dict[str, Any]  # ScaleProtoSeg.describe(threshold)
    model: str
    checkpoint: str
    device: str
    seconds: float
    image_key: str

    def provenance(self) -> dict[str, Any]:
        """What produced this result, for the export's graph JSON."""
        return {"model": self.model, "model_info": self.model_info, "checkpoint": self.checkpoint,
                "device": self.device, "image_key": self.image_key}


def explain_image(
    model,
    image: np.ndarray,
    checkpoint: Optional[str | Path],
    model_name: str = "",
    size: Optional[int] = None,
    threshold: Optional[float] = DEFAULT_THRESHOLD,
    class_index: Optional[int] = None,
    projection_folder: Optional[str | Path] = None,
    progress: Optional[ProgressFn] = None,
    log: Optional[Callable[[str], None]] = None,
    check: Optional[Callable[[], None]] = None,
) -> PrototypeRunResult:
    """Find the push's projection metadata (``projection_folder``, else beside ``checkpoint``),
    run ScaleProtoSeg ``model`` on ``image`` (RGB uint8) and explain ``class_index`` (default:
    the class with prototypes predicted on the largest area; any other class is then cheap numpy:
    :func:`explain_class`). ``check()`` raises to cancel between the steps."""
    started = time.perf_counter()
    projection, note = ProjectionMetadata.find(Path(checkpoint) if checkpoint else None,
                                               Path(projection_folder) if projection_folder else None,
                                               model.num_scales)
    if log is not None:
        log(note)
    if progress is not None:
        progress(0.3, f"{model_name or 'ScaleProtoSeg'}: forward on the image")
    run = run_scaleprotoseg(model, image, size or None, projection, note)
    if check is not None:
        check()
    if progress is not None:
        progress(0.8, "prototype graph")
    shares = predicted_class_shares(run, threshold)
    explanation = explain_class(run, largest_class(run, shares) if class_index is None else class_index, threshold)
    if progress is not None:
        progress(1.0, "prototypes done")
    return PrototypeRunResult(
        run=run,
        explanation=explanation,
        class_shares=shares,
        model_info=model.describe(threshold),
        model=model_name,
        checkpoint=str(checkpoint or ""),
        device=str(model.prototype_vectors.device),
        seconds=time.perf_counter() - started,
        image_key=image_key(image),
    )
