"""`fssgui report EPISODE --model NAME [--checkpoint PATH] [--device cpu|cuda] --methods M1,M2
[--metrics iauc,dauc] [--measure confidence|miou] [--steps N] [--percentage p]
[--region prediction|ground-truth|episode|PNG] [--param METHOD.NAME=VALUE ...] --out DIR`.

Explains the episode with every method, runs the causal metrics on each map and writes to DIR:

* ``report.html``: self-contained (figures embedded as base64 PNG); ``report.pdf`` (A4);
* ``summary.json``: every number the report shows (episode, model, checkpoint SHA-256, device,
  prediction IoU, region, methods and parameters, level weights, curves and their values);
* ``figure_episode.png`` (query, prediction, R, ground truth, supports, one row of maps per
  method), ``figure_curves_<metric>.png``, ``figure_level_weights_<method>.png``;
* ``curves.csv``: every curve point (method, metric, parameters, fraction, score, value).

The mIoU measure scores against the query's ground truth; when the episode has none, against
the model's own unperturbed prediction (the report says so).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ExplainError
from .common import add_model_arguments, load_model_from_args, log_stderr, output_dir


def register(subparsers) -> None:
    from ..explain.causal import MEASURES, METRICS

    parser = subparsers.add_parser(
        "report", help="HTML + PDF report: maps of several methods, causal curves, every number in summary.json",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--methods", default="affex-signed",
                        help="comma-separated explainers (default affex-signed), e.g. affex-signed,saliency")
    parser.add_argument("--metrics", default="iauc,dauc",
                        help=f"comma-separated causal metrics among {', '.join(METRICS)} (default iauc,dauc; "
                             "'none' for no metric)")
    parser.add_argument("--measure", default="confidence", choices=MEASURES, help="score of the curves (default confidence)")
    parser.add_argument("--steps", type=int, help="steps per curve (default: 75 for iauc/dauc, 5 for iauc@p, 1 for miou-loss@p)")
    parser.add_argument("--percentage", type=float, metavar="p",
                        help="share of the support pixels the curves cover (iauc@p, miou-loss@p: default 0.01; "
                             "iauc/dauc: a truncated curve)")
    parser.add_argument("--region", default="prediction", metavar="prediction|ground-truth|episode|PNG",
                        help="query region R to explain and score (default: the prediction)")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="an explainer parameter, e.g. affex-signed.size=96 (repeatable)")
    parser.add_argument("--batch-size", type=int, default=8, help="metric states per forward pass (default 8)")
    parser.add_argument("--no-pdf", action="store_true", help="write no report.pdf")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def _value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_method_params(items: list[str], methods: list[str]) -> dict[str, dict]:
    params: dict[str, dict] = {m: {} for m in methods}
    for item in items:
        name, sep, value = item.partition("=")
        method, dot, key = name.rpartition(".")
        if not sep or not dot or not key:
            raise ExplainError(f"--param {item!r}: expected METHOD.NAME=VALUE, e.g. affex-signed.size=96")
        if method not in params:
            raise ExplainError(f"--param {item!r}: {method!r} is not one of --methods ({', '.join(methods)})")
        params[method][key.strip()] = _value(value)
    return params


def _names(text: str, what: str, known) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if what == "metric" and names == ["none"]:
        return []
    if not names:
        raise ExplainError(f"--{what}s: give at least one {what}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ExplainError(f"unknown {what}(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if len(set(names)) != len(names):
        raise ExplainError(f"--{what}s: {text!r} names a {what} twice")
    return names


def _full_resolution_region(source: str, episode, prediction_full: np.ndarray) -> np.ndarray:
    from ..imaging import load_mask, resize_mask

    if source == "prediction":
        return prediction_full
    if source in ("ground-truth", "gt"):
        return episode.query_mask
    if source == "episode":
        return episode.region
    return resize_mask(load_mask(source), episode.query_size)


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU, torch {torch.__version__}"


class _Progress:
    """Progress lines on stderr, at most every 2 s."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= 2.0 or fraction >= 1.0:
            self.last = now
            print(f"fssgui: {100 * fraction:5.1f}% {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    from .. import report as R
    from ..episode import episode_to_tensors, load_episode
    from ..explain.causal import METRICS
    from ..explain.regions import ground_truth_at_size, resolve_region
    from ..explain.registry import EXPLAINER_NAMES, get_explainer
    from ..imaging import logits_to_size, resize_map

    methods = _names(args.methods, "method", EXPLAINER_NAMES)
    metrics = _names(args.metrics, "metric", METRICS)
    params = parse_method_params(args.param, methods)
    if args.steps is not None and args.steps < 1:
        raise ExplainError(f"--steps must be at least 1, got {args.steps}")
    if args.percentage is not None and not 0.0 < args.percentage <= 1.0:
        raise ExplainError(f"--percentage must be in (0, 1], got {args.percentage}")
    if args.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {args.batch_size}")
    explainers = {name: get_explainer(name, **params[name]) for name in methods}

    episode = load_episode(args.episode)
    region_source = args.region
    if region_source not in ("prediction", "ground-truth", "gt", "episode") and not Path(region_source).is_file():
        raise ExplainError(f"{region_source}: region file not found (or use prediction, ground-truth, episode)")
    model, device = load_model_from_args(args)
    for name, explainer in explainers.items():
        if explainer.needs_matching and not getattr(model, "is_matching", False):
            raise ExplainError(f"{name} needs a matching model; {args.model!r} exposes no matching scores")
    size = int(model.entry.input_size)
    batch = episode_to_tensors(episode, model.entry).to(device)
    with torch.no_grad():
        prediction = model.predict(batch, with_scores=bool(getattr(model, "is_matching", False)))
    logits_full = logits_to_size(prediction.logits[0], episode.query_size)
    prediction_full = logits_full[1] > logits_full[0]
    region = resolve_region(region_source, episode, size, prediction).to(device)
    region_full = _full_resolution_region(region_source, episode, prediction_full)
    notes: list[str] = []

    sizes = [s.image.shape[:2] for s in episode.supports]
    results, model_maps = [], {}
    for name, explainer in explainers.items():
        started = time.perf_counter()
        log_stderr(f"explaining with {name}")
        attribution = explainer.explain(model, batch, region, prediction=prediction if explainer.needs_matching
                                        else None)
        seconds = time.perf_counter() - started
        maps = attribution.maps.detach().float()
        model_maps[name] = maps
        numpy_maps = maps.cpu().numpy()
        weights = attribution.level_weights
        results.append(R.MethodResult(
            name, [resize_map(m, s) for m, s in zip(numpy_maps, sizes)], bool(attribution.signed),
            dict(attribution.params or params[name]), seconds,
            None if weights is None else weights.detach().float().cpu().numpy(),
            list(attribution.level_names) if attribution.level_names is not None else None,
        ))

    gt = None
    if metrics and args.measure == "miou":
        gt = ground_truth_at_size(episode, size)
        if gt is None:
            gt = prediction.logits[0].argmax(0).long()
            notes.append("The episode has no query ground truth: the mIoU measure scores against the model's own "
                         "unperturbed prediction.")
            log_stderr("the episode has no query ground truth: mIoU is measured against the model's prediction")
        gt = gt.to(device)
    curves = []
    if metrics:
        curves = R.run_causal_curves(model, batch, model_maps, region, metrics=metrics, measure=args.measure,
                                     steps=args.steps, percentage=args.percentage, gt=gt,
                                     batch_size=args.batch_size, on_progress=_Progress())
    inputs = R.ReportInputs(
        episode=episode,
        episode_path=str(Path(args.episode).resolve()),
        model_name=args.model,
        model_description=getattr(model.entry, "description", "") or "",
        input_size=size,
        device=str(device),
        device_description=_device_description(device),
        prediction=prediction_full,
        region=np.asarray(region_full, bool),
        region_source=region_source,
        methods=results,
        curves=curves,
        checkpoint=args.checkpoint,
        measure=args.measure,
        notes=notes,
    )
    out = output_dir(args.out)
    files = R.write_report(out, inputs, pdf=not args.no_pdf)
    summary = json.loads(files.summary.read_text(encoding="utf-8"))
    iou = summary["prediction"]["iou"]
    print(f"{files.html}: {', '.join(methods)} on {episode.shots} support(s), R = {region_source}"
          + (f", prediction IoU {iou:.4f}" if iou is not None else ""))
    for curve in curves:
        print(f"  {curve.method:<24} {R.METRIC_TITLES.get(curve.metric, curve.metric):<11} "
              f"{curve.value_name()} {curve.value:.4f}  ({curve.describe()})")
    return 0
