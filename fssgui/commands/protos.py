"""`fssgui protos`: ScaleProtoSeg prototype group graph of one class on one image, headless.

Writes to ``--out``:
  graph.png, graph.json          the group graph (nodes, edges, weights, threshold)
  prototype_maps.npy [M, h, w]   the class's prototype activations on the feature grid
  group_maps.npy [N, h, w]       its group activations exp(W_α a) (stage-2 models)
  scale_maps.npy [S, h, w]       per scale, the max over the class's prototypes of that scale
  predicted_labels.npy [H, W]    model class index per pixel (int16), image size
  class_mask.png, prediction.png, scale_<s>.png, group_<n>.png, group_assignment.png  overlays
The grid maps are in node order of graph.json ("prototypes"/"groups"); their values are raw
(log similarity 0..9.21, groups 1..1e4); the PNG overlays are min-max normalised in the mask.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "protos",
        help="ScaleProtoSeg: prototype group graph and activation maps of a class on an image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="RGB image file")
    parser.add_argument("--checkpoint", required=True, help="ScaleProtoSeg checkpoint (official pickle, state dict, safetensors)")
    parser.add_argument("--class", dest="class_name", default=None,
                        help="class name or index (default: the class predicted on most pixels)")
    parser.add_argument("--dataset", choices=("pascal", "cityscapes", "ade"), default=None,
                        help="class list / input policy (default: inferred from the number of classes)")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="group weights below this are dropped, not renormalised (default 0.05; 0 keeps all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--size", type=int, default=None,
                        help="input size: square side for pascal (default 513), shorter side for ade (default 512) "
                             "and cityscapes (default: native size)")
    parser.add_argument("--prototypes", default=None,
                        help="push output folder with bbNone.npy (default: <checkpoint dir>/prototypes or ../prototypes)")
    parser.add_argument("--no-mask", action="store_true", help="overlays over the whole image, not only the class mask")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explain.prototypes import (
        ProjectionMetadata,
        assignment_overlay,
        class_index_by_name,
        explain_class,
        prediction_overlay,
        render_graph_png,
        run_scaleprotoseg,
    )
    from ..imaging import load_rgb
    from ..io import save_npy_atomic, save_png_atomic, write_bytes_atomic
    from ..models.registry import resolve_device
    from ..models.scaleprotoseg import load_scaleprotoseg

    device = resolve_device(args.device)
    image = load_rgb(args.image)
    model = load_scaleprotoseg(args.checkpoint, dataset=args.dataset, device=device, log=print)
    projection, note = ProjectionMetadata.find(
        Path(args.checkpoint), Path(args.prototypes) if args.prototypes else None, model.num_scales
    )
    print(note)
    run_result = run_scaleprotoseg(model, image, args.size, projection, note)
    threshold = args.threshold if args.threshold > 0 else None

    if args.class_name is None:
        first = explain_class(run_result, model.group_classes[0] if model.grouped else 0, threshold)
        class_index = first.predicted_classes()[0][0]
    else:
        class_index = class_index_by_name(model.class_names, args.class_name)
    explanation = explain_class(run_result, class_index, threshold)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masked = not args.no_mask
    save_npy_atomic(out / "prototype_maps.npy", explanation.prototype_maps.astype(np.float32))
    save_npy_atomic(out / "scale_maps.npy", explanation.scale_maps.astype(np.float32))
    if explanation.group_maps is not None:
        save_npy_atomic(out / "group_maps.npy", explanation.group_maps.astype(np.float32))
    save_npy_atomic(out / "predicted_labels.npy", explanation.predicted_labels.astype(np.int16))
    save_png_atomic(out / "class_mask.png", explanation.class_mask)
    save_png_atomic(out / "prediction.png", prediction_overlay(image, explanation.predicted_labels, model.num_classes))
    for s in range(len(explanation.scale_maps)):
        save_png_atomic(out / f"scale_{s + 1}.png", explanation.overlay(f"s{s}", masked))
    for g in explanation.groups:
        save_png_atomic(out / f"group_{g.index + 1}.png", explanation.overlay(g.node_id, masked))
    if explanation.group_assignment is not None:
        save_png_atomic(out / "group_assignment.png", assignment_overlay(image, explanation.group_assignment))
    save_png_atomic(out / "graph.png", render_graph_png(explanation, masked=masked))
    document = explanation.to_json()
    document["model"] = model.describe(threshold)
    document["image"] = str(args.image)
    document["checkpoint"] = str(args.checkpoint)
    document["device"] = str(device)
    document["masked_overlays"] = masked
    write_bytes_atomic(out / "graph.json", json.dumps(document, indent=2).encode("utf-8"))

    share = float(explanation.class_mask.mean())
    print(
        f"class {explanation.class_name!r} ({class_index}): {share:.1%} of the pixels, "
        f"{explanation.sparsity()['used_prototypes']}/{len(explanation.prototypes)} prototypes used "
        f"at threshold {threshold}; wrote {out}"
    )
    return 0
