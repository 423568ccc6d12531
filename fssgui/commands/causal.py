"""`fssgui causal EPISODE --model NAME ... --method M --metric iauc|dauc|iauc@p|miou-loss@p
--measure confidence|miou [--steps N] [--percentage p] --out DIR`.

Explains the episode with ``--method`` (same options as ``fssgui explain``), then runs the
insertion/deletion metric on that attribution. Writes ``curve.csv`` (``fraction,score``: the share
of support pixels inserted or deleted, and the score at that state) and ``summary.json`` (the AUC
or loss and every parameter). The miou measure scores against the query ground truth; when the
episode has none, against the model's own unperturbed prediction (said in the summary).
``--percentage`` limits any metric to the top p of the support pixels (a truncated IAUC/DAUC).
"""
from __future__ import annotations

import csv
import io
import json

from ..episode import load_episode
from ..errors import ExplainError
from ..io import write_bytes_atomic
from .common import add_model_arguments, load_model_from_args, log_stderr, output_dir
from .explain import add_explainer_arguments, build_explainer, explanation_summary


def register(subparsers) -> None:
    from ..metrics.causal import MEASURES, METRICS

    parser = subparsers.add_parser("causal", help="insertion/deletion metrics (IAUC, DAUC, IAUC@p, mIoULoss@p)")
    add_model_arguments(parser)
    add_explainer_arguments(parser)
    parser.add_argument("--metric", default="iauc", choices=METRICS, help="metric (default iauc)")
    parser.add_argument("--measure", default="confidence", choices=MEASURES, help="score (default confidence)")
    parser.add_argument("--steps", type=int, help="steps (default: 75 for iauc/dauc, 5 for iauc@p, 1 for miou-loss@p)")
    parser.add_argument("--percentage", type=float, metavar="p",
                        help="share of the support pixels the curve covers (iauc@p, miou-loss@p: default 0.01; "
                             "iauc/dauc: a truncated curve)")
    empty = parser.add_mutually_exclusive_group()
    empty.add_argument("--skip-empty", dest="skip_empty", action="store_true", default=None,
                       help="drop state 0 (default for the miou measure and miou-loss@p)")
    empty.add_argument("--keep-empty", dest="skip_empty", action="store_false", help="evaluate state 0")
    parser.add_argument("--batch-size", type=int, help="states per forward pass (default: chosen for the device)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..metrics.causal import metric_settings
    from ..pipeline import EpisodeRun
    from ..pipeline.regions import canonical_source, check_region_source

    metric_settings(args.metric, args.measure, args.steps, args.percentage)  # bad values before the model build
    if args.batch_size is not None and args.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {args.batch_size}")
    explainer = build_explainer(args)
    region_source = canonical_source(args.region)
    check_region_source(region_source)
    episode = load_episode(args.episode)
    run = EpisodeRun(load_model_from_args(args), episode)
    explanation = run.explain(explainer, region=region_source)
    curve = run.causal_metric(explanation, explanation.region_info, args.metric, args.measure, steps=args.steps,
                              percentage=args.percentage, skip_empty=args.skip_empty, batch_size=args.batch_size)
    if curve.params.get("ground_truth", "").startswith("model prediction"):
        log_stderr("the episode has no query ground truth: mIoU is measured against the model's prediction")
    out = output_dir(args.out)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fraction", "score"])
    for fraction, score in zip(curve.fractions, curve.scores):
        writer.writerow([f"{fraction:.8g}", f"{score:.8g}"])
    write_bytes_atomic(out / "curve.csv", buffer.getvalue().encode("utf-8"))
    value_name = "miou_loss" if args.metric == "miou-loss@p" else "auc"
    summary = {
        "metric": args.metric,
        "measure": args.measure,
        value_name: curve.value,
        "value": curve.value,
        "points": len(curve.scores),
        **{k: v for k, v in curve.params.items() if k not in ("metric", "measure")},
        "explanation": explanation_summary(explanation, args.episode),
    }
    write_bytes_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    print(f"{out / 'summary.json'}: {args.metric} ({args.measure}) = {curve.value:.4f} over {len(curve.scores)} points")
    return 0
