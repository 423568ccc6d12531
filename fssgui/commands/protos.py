"""`fssgui protos`: ScaleProtoSeg prototype group graph of one class on one image, headless.

Writes into ``--out`` the one export format of a class explanation, the same files as the
Prototypes tab's "Export…" (``<name>`` = the class name made file-safe; indices 0-based, as the
graph's node ids g0.., s0..):
  graph_class_<name>.json, .png     the group graph: nodes, edges, weights, threshold, provenance
  prototype_maps_class_<name>.npy   [M, h, w] the class's prototype activations on the feature grid
  group_maps_class_<name>.npy       [N, h, w] its group activations exp(W_α a) (stage-2 models)
  scale_maps_class_<name>.npy       [S, h, w] per scale, the max over the class's prototypes
  predicted_labels_class_<name>.npy [H, W] model class index per pixel (int16), image size
  prediction_class_<name>.png, mask_class_<name>.png, proto_<p>_scale_<s>_class_<name>.png,
  scale_<s>_class_<name>.png, group_<n>_class_<name>.png, group_max_class_<name>.png  overlays
  group_composition/class_<name>_group_<n>_<single-low|mutliple>/proto_info.json  official lists
The grid maps are in node order of the graph JSON ("prototypes"/"groups"); their values are raw
(log similarity 0..9.21, groups 1..1e4); the PNG overlays are min-max normalised in the class
region (--no-mask: over the whole image). See fssgui/prototypes/export.py for every file.
"""
from __future__ import annotations

import argparse
from pathlib import Path


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
                        help="class name or index (default: the class with prototypes predicted on most pixels)")
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
    from ..imaging import load_rgb
    from ..models.registry import resolve_device
    from ..models.scaleprotoseg import load_scaleprotoseg
    from ..prototypes.export import export_class
    from ..prototypes.graph import explain_image
    from ..prototypes.run import class_index_by_name

    device = resolve_device(args.device)
    image = load_rgb(args.image)
    model = load_scaleprotoseg(args.checkpoint, dataset=args.dataset, device=device, log=print)
    class_index = None if args.class_name is None else class_index_by_name(model.class_names, args.class_name)
    threshold = args.threshold if args.threshold > 0 else None
    result = explain_image(model, image, args.checkpoint, model_name=f"scaleprotoseg-{model.config.dataset}",
                           size=args.size, threshold=threshold, class_index=class_index,
                           projection_folder=args.prototypes, log=print)
    explanation = result.explanation
    out = Path(args.out)
    export_class(explanation, out, masked=not args.no_mask,
                 provenance={**result.provenance(), "image": str(args.image)})
    share = float(explanation.class_mask.mean())
    print(
        f"class {explanation.class_name!r} ({explanation.class_index}): {share:.1%} of the pixels, "
        f"{explanation.sparsity()['used_prototypes']}/{len(explanation.prototypes)} prototypes used "
        f"at threshold {threshold}; wrote {out}"
    )
    return 0
