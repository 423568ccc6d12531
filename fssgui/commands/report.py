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

from ..errors import ExplainError
from .common import add_model_arguments, load_model_from_args, log_stderr, output_dir


def register(subparsers) -> None:
    from ..metrics.causal import MEASURES, METRICS

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
    parser.add_argument("--batch-size", type=int, help="metric states per forward pass (default: chosen for the device)")
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
    from ..episode import load_episode
    from ..metrics.causal import METRICS, metric_settings
    from ..pipeline import EpisodeRun
    from ..pipeline.curves import run_curves
    from ..pipeline.models import device_description
    from ..pipeline.regions import canonical_source, check_region_source
    from ..pipeline.run import explainer_unavailable
    from ..explain.registry import EXPLAINER_NAMES, get_explainer

    methods = _names(args.methods, "method", EXPLAINER_NAMES)
    metrics = _names(args.metrics, "metric", METRICS)
    params = parse_method_params(args.param, methods)
    for metric in metrics:  # bad values before the (slow) model build
        metric_settings(metric, args.measure, args.steps, args.percentage)
    if args.batch_size is not None and args.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {args.batch_size}")
    explainers = {name: get_explainer(name, **params[name]) for name in methods}
    episode = load_episode(args.episode)
    region_source = canonical_source(args.region)
    check_region_source(region_source)
    loaded = load_model_from_args(args)
    for explainer in explainers.values():
        reason = explainer_unavailable(explainer, loaded)
        if reason:
            raise ExplainError(reason)
    run = EpisodeRun(loaded, episode)
    names = list(explainers)
    order = run.plan_methods([explainers[n] for n in names], region_source)  # one forward for every method
    region = run.region(region_source)
    explanations = {}
    for index in order:
        log_stderr(f"explaining with {names[index]}")
        explanations[names[index]] = run.explain(explainers[names[index]], region=region)
    explanations = {name: explanations[name] for name in names}  # the report lists them as asked
    curves = []
    if metrics:
        curves = run_curves(run, explanations, region, metrics=metrics, measure=args.measure, steps=args.steps,
                            percentage=args.percentage, batch_size=args.batch_size, on_progress=_Progress())
    notes = []
    if any(c.params.get("ground_truth", "").startswith("model prediction") for c in curves):
        notes.append("The episode has no query ground truth: the mIoU measure scores against the model's own "
                     "unperturbed prediction.")
        log_stderr("the episode has no query ground truth: mIoU is measured against the model's prediction")
    inputs = R.ReportInputs(
        episode=episode,
        episode_path=str(Path(args.episode).resolve()),
        model_name=args.model,
        model_description=getattr(loaded.entry, "description", "") or "",
        input_size=loaded.input_size,
        device=str(loaded.device),
        device_description=device_description(loaded.device),
        prediction=run.predicted().mask,
        region=region.image,
        region_source=region.source,
        methods=[R.MethodResult(name, e.maps, e.signed, e.params, e.seconds, e.level_weights, e.level_names,
                                e.levels_from) for name, e in explanations.items()],
        curves=curves,
        checkpoint=args.checkpoint,
        measure=args.measure,
        notes=notes,
    )
    out = output_dir(args.out)
    files = R.write_report(out, inputs, pdf=not args.no_pdf)
    summary = json.loads(files.summary.read_text(encoding="utf-8"))
    iou = summary["prediction"]["iou"]
    print(f"{files.html}: {', '.join(methods)} on {episode.shots} support(s), R = {region.source}"
          + (f", prediction IoU {iou:.4f}" if iou is not None else ""))
    for curve in curves:
        print(f"  {curve.method:<24} {curve.title:<11} {curve.value_name()} {curve.value:.4f}  ({curve.describe()})")
    return 0
