"""The one export format of a ScaleProtoSeg class explanation, written by ``fssgui protos`` and by
the Prototypes tab's "Export…" (both call :func:`export_class`).

One class of one image per export; every name carries the class (``<name>`` = the class name made
file-safe, "traffic light" -> ``traffic_light``), so several classes can be exported into one
folder. Indices are those of the graph's node ids (0-based: ``g0`` is the app's "group 1", scale
``0`` its "Scale 1"); names follow the official analyses where they exist::

    graph_class_<name>.json        the graph document (format "fssgui-prototype-graph", version 2):
                                   threshold, sizes, class score, nodes (peak / mean activation,
                                   push record), edges, groups with their official proto_info
                                   lists, group -> class weights (stage 2) or prototype -> class
                                   weights (stage 1), masked_overlays, and the provenance (model,
                                   checkpoint, image, device) when the caller knows it
    graph_class_<name>.png         the graph drawn (node thumbnails are the overlays below)
    prototype_maps_class_<name>.npy  [M, h, w] float32 the class's prototype activations on the
                                   feature grid (log similarity, 0..9.21), in the order of the
                                   graph's prototype nodes
    group_maps_class_<name>.npy    [N, h, w] float32 its group activations exp(W_α a) (stage 2)
    scale_maps_class_<name>.npy    [S, h, w] float32 per scale, the max over its prototypes
    predicted_labels_class_<name>.npy  [H, W] int16 model class per pixel at image size, with
                                   the groups thresholded at α
    prediction_class_<name>.png    the predicted labels over the image (0.3 image + 0.7 colour)
    mask_class_<name>.png          the predicted class region (255 inside)
    proto_<p>_scale_<s>_class_<name>.png  each prototype's activation overlay
    scale_<s>_class_<name>.png     each scale map's overlay
    group_<n>_class_<name>.png     each group map's overlay (stage 2)
    group_max_class_<name>.png     the group-assignment map: the group that wins each pixel of the
                                   region in red / green / blue (stage 2)
    group_composition/class_<name>_group_<n>_<single-low|mutliple>/proto_info.json
                                   the bare official list per group (stage 2)
    compare_<a>_vs_<b>.png, .json  with a class comparison (the tab's "Compare classes")
    cell_<i>_<j>_class_<name>.json with an inspected feature cell (the tab's pixel inspector)

Overlays are 0.5 image + 0.5 JET of the map upsampled bicubically to the image, min-max
normalised inside the predicted class region (the image plain outside it), or over the whole
image with ``masked=False``. Every file is written atomically (temporary file + rename).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ExplainError
from ..io import save_npy_atomic, save_png_atomic, write_bytes_atomic
from .compare import ClassComparison
from .graph import PrototypeExplanation, class_slug, render_graph_png
from .inspection import CellInspection
from .overlays import assignment_overlay, prediction_overlay


def export_class(explanation: PrototypeExplanation, folder: str | Path, masked: bool = True,
                 comparison: Optional[ClassComparison] = None, inspection: Optional[CellInspection] = None,
                 provenance: Optional[dict[str, Any]] = None) -> list[Path]:
    """Write ``explanation`` into ``folder`` (created if needed) in the layout of the module
    docstring; returns the files written, in writing order. ``provenance`` (model, checkpoint,
    image, device, ...) goes into the graph JSON as given."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExplainError(f"{folder}: exists and is not a folder")
    name = class_slug(explanation.class_name, explanation.class_index)
    written: list[Path] = []

    def write(file_name: str, save, data) -> None:
        path = folder / file_name
        save(path, data)
        written.append(path)

    def png(file_name: str, image: np.ndarray) -> None:
        write(file_name, save_png_atomic, image)

    def json_file(file_name: str, data: Any) -> None:
        write(file_name, write_bytes_atomic, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    document = explanation.to_json()
    document["masked_overlays"] = masked
    if provenance:
        document["provenance"] = dict(provenance)
    json_file(f"graph_class_{name}.json", document)
    png(f"graph_class_{name}.png", render_graph_png(explanation, masked=masked))

    write(f"prototype_maps_class_{name}.npy", save_npy_atomic, explanation.prototype_maps.astype(np.float32))
    if explanation.group_maps is not None:
        write(f"group_maps_class_{name}.npy", save_npy_atomic, explanation.group_maps.astype(np.float32))
    write(f"scale_maps_class_{name}.npy", save_npy_atomic, explanation.scale_maps.astype(np.float32))
    write(f"predicted_labels_class_{name}.npy", save_npy_atomic, explanation.predicted_labels.astype(np.int16))
    labels, num_classes = explanation.predicted_labels, len(explanation.run.head.class_names)
    png(f"prediction_class_{name}.png", prediction_overlay(explanation.image, labels, num_classes))
    png(f"mask_class_{name}.png", explanation.class_mask)

    for p in explanation.prototypes:
        png(f"proto_{p.index}_scale_{p.scale}_class_{name}.png", explanation.overlay(p.node_id, masked=masked))
    for s in range(len(explanation.scale_maps)):
        png(f"scale_{s}_class_{name}.png", explanation.overlay(f"s{s}", masked=masked))
    for g in explanation.groups:
        png(f"group_{g.index}_class_{name}.png", explanation.overlay(g.node_id, masked=masked))
    if explanation.group_assignment is not None:
        png(f"group_max_class_{name}.png", assignment_overlay(explanation.image, explanation.group_assignment))
    for group in document["groups"]:
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
