"""`fssgui causal EPISODE --model NAME ... --method M --metric iauc|dauc|iauc@p|miou-loss@p
--measure confidence|miou [--steps N] [--percentage p] --out DIR`.

Explains the episode with ``--method`` (same options as ``fssgui explain``), then runs the
insertion/deletion metric on that attribution. Writes ``curve.csv`` (``fraction,score``: the share
of support pixels inserted or deleted, and the score at that state) and ``summary.json`` (the AUC
or loss and every parameter). The miou measure scores against the query ground truth; when the
episode has none, against the model's own unperturbed prediction (said in the summary).
"""
from __future__ import annotations

import csv
import io
import json

from ..errors import ExplainError
from ..io import write_bytes_atomic
from .common import add_model_arguments, log_stderr, output_dir
from .explain import add_explainer_arguments, attribution_summary, build_explainer, explain_episode, prepare


def register(subparsers) -> None:
    from ..explain.causal import MEASURES, METRICS

    parser = subparsers.add_parser("causal", help="insertion/deletion metrics (IAUC, DAUC, IAUC@p, mIoULoss@p)")
    add_model_arguments(parser)
    add_explainer_arguments(parser)
    parser.add_argument("--metric", default="iauc", choices=METRICS, help="metric (default iauc)")
    parser.add_argument("--measure", default="confidence", choices=MEASURES, help="score (default confidence)")
    parser.add_argument("--steps", type=int, help="steps (default: 75 for iauc/dauc, 5 for iauc@p, 1 for miou-loss@p)")
    parser.add_argument("--percentage", type=float, metavar="p", help="share of pixels for iauc@p/miou-loss@p (default 0.01)")
    empty = parser.add_mutually_exclusive_group()
    empty.add_argument("--skip-empty", dest="skip_empty", action="store_true", default=None,
                       help="drop state 0 (default for the miou measure and miou-loss@p)")
    empty.add_argument("--keep-empty", dest="skip_empty", action="store_false", help="evaluate state 0")
    parser.add_argument("--batch-size", type=int, default=8, help="states per forward pass (default 8)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..explain.causal import run_causal_metric
    from ..explain.regions import ground_truth_at_size

    if args.percentage is not None and args.metric in ("iauc", "dauc"):
        raise ExplainError(f"--percentage applies to iauc@p and miou-loss@p, not {args.metric}")
    if args.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {args.batch_size}")
    explainer = build_explainer(args)
    episode, model, device, batch, prediction, region = prepare(args)
    attribution = explain_episode(args, explainer, model, batch, prediction, region)
    gt, gt_source = None, None
    if args.measure == "miou":
        gt = ground_truth_at_size(episode, int(model.entry.input_size))
        gt_source = "episode ground truth"
        if gt is None:
            gt = prediction.logits[0].argmax(0).long()
            gt_source = "model prediction (the episode has no query ground truth)"
            log_stderr("the episode has no query ground truth: mIoU is measured against the model's prediction")
        gt = gt.to(device)
    result = run_causal_metric(
        model, batch, attribution.maps.to(device), region, args.metric, args.measure,
        steps=args.steps, percentage=args.percentage, skip_empty=args.skip_empty, gt=gt,
        batch_size=args.batch_size,
    )
    out = output_dir(args.out)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fraction", "score"])
    for fraction, score in zip(result.fractions, result.scores):
        writer.writerow([f"{fraction:.8g}", f"{score:.8g}"])
    write_bytes_atomic(out / "curve.csv", buffer.getvalue().encode("utf-8"))
    value_name = "miou_loss" if args.metric == "miou-loss@p" else "auc"
    summary = {
        "metric": args.metric,
        "measure": args.measure,
        value_name: result.value,
        "value": result.value,
        "points": len(result.scores),
        **{k: v for k, v in result.params.items() if k not in ("metric", "measure")},
        "ground_truth": gt_source,
        "explanation": attribution_summary(args, attribution),
    }
    write_bytes_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    print(f"{out / 'summary.json'}: {args.metric} ({args.measure}) = {result.value:.4f} over {len(result.scores)} points")
    return 0
