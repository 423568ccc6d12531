"""`fssgui triage --model NAME [--checkpoint FILE] --data ROOT --layout folders|pascal5i|coco20i
--episodes CSV|N [--shots K] [--fold F] --worst N --method M [--rank-by iou] --out DIR`.

Finds where a model fails across a dataset and explains the worst episodes in one report:

1. every episode is predicted and scored against its ground truth (the sweep: ``fssgui evaluate
   --methods none``'s runner, resumable; ``DIR/results/``, or ``--results EVALDIR`` to reuse a
   folder of ``fssgui evaluate``: what it holds is not computed again);
2. the episodes are ranked by ``--rank-by`` (a low foreground IoU by default; or a high
   false-negative share, ...); the ``--worst`` N are explained with ``--method`` (R: the ground
   truth by default, as a failure's prediction may be empty) and scored with the folder's metrics
   (default iauc-miou,dauc-miou) by the same runner, so the numbers equal ``fssgui evaluate``'s
   for those episodes;
3. ``DIR/report.html`` and ``report.pdf``: a front page (setup, per-class IoU, mIoU and FB-IoU of
   the sweep, the table of the N worst with their statistics and metric values) and a page per
   episode (query, prediction, R, ground truth, per-support maps, curves); ``DIR/summary.json``
   holds every number, ``DIR/worst.csv`` the front table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_METRICS = "iauc-miou,dauc-miou"


def register(subparsers) -> None:
    from ..evaluate.predictions import STAT_KEYS
    from ..evaluate.runner import REGIONS
    from .common import add_dataset_arguments

    parser = subparsers.add_parser(
        "triage", help="find the episodes a model fails on across a dataset; explain the worst N in one report",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(parser, "episode CSV, or a number of episodes to draw from --seed (default: the episode "
                                  "list of --results)", episodes_required=False)
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument("--seed", type=int, help="seed of the drawn episodes and the random explainers "
                                                 "(default: that of --results, else 0)")
    parser.add_argument("--no-ignore", dest="use_ignore", action="store_false",
                        help="count label-255 pixels as background (default: ignore them)")
    parser.add_argument("--worst", type=int, default=10, metavar="N", help="episodes to explain (default 10)")
    parser.add_argument("--rank-by", default="iou", choices=STAT_KEYS,
                        help="failure statistic to rank by (default iou: the lowest foreground IoU first)")
    parser.add_argument("--method", default="affex-signed",
                        help="explainer of the worst episodes (default affex-signed)")
    parser.add_argument("--metrics", metavar="X1,X2",
                        help=f"metrics of the worst episodes (default: those of --results, else {DEFAULT_METRICS})")
    parser.add_argument("--steps", type=int, default=75, metavar="T", help="steps of iauc/dauc (default 75)")
    parser.add_argument("--p-steps", type=int, metavar="T", help="steps of iauc-*@p (default 5)")
    parser.add_argument("--region", choices=REGIONS,
                        help="R of the explanations (default: that of --results, else the ground truth: a failure's "
                             "prediction may be empty)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed states per forward pass (default: 1 on the CPU, what fits in free GPU memory)")
    parser.add_argument("--results", metavar="EVALDIR",
                        help="results folder to use and extend (an fssgui evaluate --out folder; default DIR/results)")
    parser.add_argument("--no-pdf", action="store_true", help="write no report.pdf")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ExplainError
    from ..evaluate.metrics import parse_metrics
    from ..pipeline import ModelSpec
    from ..triage.batch import BatchRequest, explain_worst
    from ..triage.sweep import TRIAGE_REGION, DatasetChoice, SweepRequest, folder_method_settings
    from .common import log_stderr
    from .evaluate import _split
    from .report import _Progress

    out = Path(args.out)
    results = Path(args.results) if args.results else out / "results"
    defaults = folder_method_settings(results)
    episodes = args.episodes
    if episodes is None:
        if not (results / "episodes.csv").is_file():
            raise ExplainError(f"--episodes is needed ({results / 'episodes.csv'} does not exist yet)")
        episodes = str(results / "episodes.csv")
    if args.steps < 1:
        raise ExplainError(f"--steps must be at least 1, got {args.steps}")
    metrics = (tuple(parse_metrics(_split(args.metrics), steps=args.steps, p_steps=args.p_steps)) if args.metrics
               else defaults.get("metrics") or tuple(parse_metrics(_split(DEFAULT_METRICS), steps=args.steps)))
    seed = args.seed if args.seed is not None else (defaults.get("seed") or 0)
    dataset = DatasetChoice(root=args.data, layout=args.layout, episodes=episodes, shots=args.shots,
                            fold=args.fold, split=args.split, seed=seed, use_ignore=args.use_ignore)
    region = args.region or defaults.get("region") or TRIAGE_REGION
    sweep = SweepRequest(dataset, ModelSpec(args.model, args.checkpoint, args.device), str(results),
                         method=args.method, metrics=metrics, region=region, batch_size=args.batch_size,
                         affex_size=defaults.get("affex_size"), affex_mode=defaults.get("affex_mode"))
    result = explain_worst(BatchRequest(sweep, args.worst, str(out), args.rank_by, pdf=not args.no_pdf),
                           log=log_stderr, progress=_Progress())
    files = result.files
    print(f"{files.html}: the {len(result.episodes)} worst episode(s) by {args.rank_by} "
          f"({', '.join(map(str, result.episodes))}) explained with {args.method}")
    print(f"{results}: results folder ({len(result.computed)} episode(s) explained and stored by this run)")
    return 0
