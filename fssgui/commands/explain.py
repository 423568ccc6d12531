"""`fssgui explain EPISODE --model NAME [--checkpoint PATH] [--device cpu|cuda] --method NAME
--region prediction|ground-truth|episode|PNG [--size E] [--mode paper|reference] --out DIR`.

Writes to DIR:

* ``attribution.npy``: float32 ``[K, H, W]`` at the support images' size (the model-size map
  resized bilinearly). When the supports differ in size, one ``attribution_<k>.npy`` ``[H_k, W_k]``
  per support instead.
* ``overlay_<k>.png``: the map over support k (inferno from 0 to the largest value over all
  supports; the signed AffEx map with a diverging map centred at its zero level).
* ``explanation.json``: method, parameters, region, model and, for AffEx, the level names and
  weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..episode import episode_to_tensors, load_episode
from ..errors import ExplainError
from ..imaging import heatmap_overlay, resize_map, save_npy_atomic, save_png_atomic, write_bytes_atomic
from .common import add_model_arguments, load_model_from_args, output_dir

_AFFEX_ONLY = ("size", "mode")


def add_explainer_arguments(parser) -> None:
    from ..explain.registry import EXPLAINER_NAMES

    parser.add_argument("--method", default="affex", choices=EXPLAINER_NAMES, help="explainer (default affex)")
    parser.add_argument(
        "--region", default="prediction", metavar="prediction|ground-truth|episode|PNG",
        help="query region R to explain: the prediction (default), the ground truth, the episode's "
             "stored region, or a mask PNG (any size; resized to the query)",
    )
    parser.add_argument("--size", type=int, metavar="E", help="AffEx explanation size (default: model input size)")
    parser.add_argument("--mode", choices=("paper", "reference"), help="AffEx mode (default paper)")
    parser.add_argument("--seed", type=int, help="seed of the random/sampling explainers")


def build_explainer(args):
    from ..explain.registry import AFFEX_NAMES, explainer_parameters, get_explainer

    params = {}
    if args.method in AFFEX_NAMES:
        if args.size is not None:
            params["size"] = args.size
        if args.mode is not None:
            params["mode"] = args.mode
    else:
        given = [f"--{name}" for name in _AFFEX_ONLY if getattr(args, name) is not None]
        if given:
            raise ExplainError(f"{', '.join(given)}: valid only with the AffEx methods, not {args.method!r}")
    if args.seed is not None:
        if "seed" not in explainer_parameters(args.method):
            raise ExplainError(f"--seed does not apply to {args.method!r}")
        params["seed"] = args.seed
    return get_explainer(args.method, **params)


def prepare(args):
    """Episode, model, device, batch, prediction (with scores when the model matches) and R."""
    from ..explain.regions import resolve_region

    episode = load_episode(args.episode)
    model, device = load_model_from_args(args)
    batch = episode_to_tensors(episode, model.entry).to(device)
    with torch.no_grad():
        prediction = model.predict(batch, with_scores=bool(getattr(model, "is_matching", False)))
    size = int(model.entry.input_size)
    region_source = args.region
    if region_source not in ("prediction", "ground-truth", "gt", "episode") and not Path(region_source).is_file():
        raise ExplainError(f"{region_source}: region file not found (or use prediction, ground-truth, episode)")
    region = resolve_region(region_source, episode, size, prediction).to(device)
    return episode, model, device, batch, prediction, region


def explain_episode(args, explainer, model, batch, prediction, region):
    if explainer.needs_matching and not getattr(model, "is_matching", False):
        raise ExplainError(f"{args.method} needs a matching model; {args.model!r} exposes no matching scores")
    return explainer.explain(model, batch, region, prediction=prediction)


def write_attribution(out: Path, episode, attribution) -> list[Path]:
    """attribution.npy (or attribution_<k>.npy when support sizes differ) and overlay_<k>.png."""
    maps = attribution.maps.detach().float().cpu().numpy()
    sizes = [s.image.shape[:2] for s in episode.supports]
    resized = [resize_map(m, size) for m, size in zip(maps, sizes)]
    written = []
    if len(set(sizes)) == 1:
        path = out / "attribution.npy"
        save_npy_atomic(path, np.stack(resized).astype(np.float32))
        written.append(path)
    else:
        for k, values in enumerate(resized):
            path = out / f"attribution_{k}.npy"
            save_npy_atomic(path, values.astype(np.float32))
            written.append(path)
    zero = attribution.params.get("zero_level") if attribution.signed else None
    # one colour scale for all supports: 0 .. the largest value (1 for the min-max-scaled maps;
    # exact attributions such as prototype-share are shares of a total and much smaller)
    top = max(float(np.max(values)) for values in resized)
    top = top if top > 0 else 1.0
    for k, (support, values) in enumerate(zip(episode.supports, resized)):
        if zero is not None:
            half = max(zero, 1.0 - zero)
            overlay = heatmap_overlay(support.image, values, "diverging", vmin=zero - half, vmax=zero + half)
        else:
            overlay = heatmap_overlay(support.image, values, "inferno", vmin=0.0, vmax=top)
        path = out / f"overlay_{k}.png"
        save_png_atomic(path, overlay)
        written.append(path)
    return written


def attribution_summary(args, attribution) -> dict:
    summary = {
        "method": attribution.method,
        "params": attribution.params,
        "signed": attribution.signed,
        "model": args.model,
        "checkpoint": args.checkpoint,
        "episode": str(args.episode),
        "region": args.region,
    }
    if attribution.level_weights is not None:
        summary["level_names"] = attribution.level_names
        summary["level_weights"] = [float(w) for w in attribution.level_weights]
    return summary


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain a prediction: which support pixels mattered")
    add_model_arguments(parser)
    add_explainer_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    explainer = build_explainer(args)  # parameter errors before the (slow) model build
    episode, model, _device, batch, prediction, region = prepare(args)
    attribution = explain_episode(args, explainer, model, batch, prediction, region)
    out = output_dir(args.out)
    written = write_attribution(out, episode, attribution)
    summary = attribution_summary(args, attribution)
    summary["files"] = [p.name for p in written]
    write_bytes_atomic(out / "explanation.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    print(f"{written[0]}: {attribution.method} over {episode.shots} support(s), R = {args.region}")
    return 0
