"""`fssgui evaluate --model NAME [--checkpoint FILE] --data ROOT --layout pascal5i|coco20i|folders
[--fold F] --episodes CSV|N --shots K --methods affex,saliency,... --metrics iauc-miou,dauc-miou,...
--steps 75 [--seed S] [--device cpu|cuda] --out DIR`.

Batch evaluation in the layout of the AffEx paper's tables: every episode of a fixed list is
explained with every method and scored with every causal metric exactly as ``fssgui causal``
scores one episode; the table (methods x metrics, means x 100) goes to ``DIR/table.md``,
``table.csv`` and ``table.json``.

* ``--episodes N`` draws N episodes from the ``--split`` (default ``val``) of ``--fold`` (default: all classes)
  with ``--seed`` and writes them to ``DIR/episodes.csv``; ``--episodes FILE.csv`` reads a fixed
  list (the fssgui layout ``[episode,]class,query,support_1..K`` or the AffEx repository's
  ``image_ids,classes`` files; see :mod:`fssgui.evaluate.episodes`).
* Results are appended per (episode, method) to ``DIR/results/rank-NNN.jsonl`` and fsynced:
  after a crash or Ctrl-C the same command resumes where it stopped. ``DIR/settings.json`` holds
  the settings hash; a rerun with other settings is refused.
* Scale-out: ``torchrun --nproc-per-node N -m fssgui.cli evaluate ...`` shards the episodes
  round-robin over the ranks (each on ``cuda:LOCAL_RANK`` with CUDA, else the CPU); rank 0 merges
  the results and writes the table.
* Every episode's prediction is also scored against its ground truth (IoU, FB-IoU, foreground
  shares, false positives and negatives, confidence): ``DIR/predictions.csv`` and the per-class
  IoU, mIoU and FB-IoU of the papers in ``DIR/miou.md``. ``--methods none`` only predicts (a
  sweep: what the app's dataset panel and ``fssgui triage`` read; a sweep may join a folder of
  another evaluation of the same model, checkpoint and episodes).
"""
from __future__ import annotations

import argparse

DEFAULT_METRICS = "iauc-miou,dauc-miou,iauc-conf,dauc-conf,iauc-conf@0.01,miou-loss@0.01,miou-loss@0.05"


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def method_names(text: str) -> list[str]:
    """``--methods``: comma-separated explainers, or ``none`` (predictions only)."""
    from ..errors import ExplainError

    names = _split(text)
    if names == ["none"]:
        return []
    if not names:
        raise ExplainError("no method given (--methods; 'none' for predictions only)")
    return names


def register(subparsers) -> None:
    from ..evaluate.runner import REGIONS
    from .common import add_dataset_arguments

    parser = subparsers.add_parser(
        "evaluate", help="batch evaluation: causal-metric table over fixed episodes (resumable, torchrun-able)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(parser, "episode CSV, or a number of episodes to draw deterministically from --seed")
    parser.add_argument("--methods", default="affex,affex-masked,affex-signed", metavar="M1,M2,...|none",
                        help="explainers, comma-separated (default affex,affex-masked,affex-signed); "
                             "none: predictions only")
    parser.add_argument("--metrics", default=DEFAULT_METRICS, metavar="X1,X2,...",
                        help=f"table columns, comma-separated (default {DEFAULT_METRICS})")
    parser.add_argument("--steps", type=int, default=75, metavar="T", help="steps of iauc/dauc (default 75)")
    parser.add_argument("--p-steps", type=int, metavar="T",
                        help="steps of iauc-*@p (default 5, the paper's IAUC_Conf@0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn episodes and the random explainers")
    parser.add_argument("--region", default="prediction", choices=REGIONS,
                        help="query region R to explain and score (default: the prediction, as the paper; "
                             "false-positive / false-negative: the prediction's largest error)")
    parser.add_argument("--size", type=int, metavar="E", help="AffEx explanation size (default: model input size)")
    parser.add_argument("--mode", choices=("paper", "reference"), help="AffEx mode (default paper)")
    parser.add_argument("--no-ignore", dest="use_ignore", action="store_false",
                        help="count label-255 pixels as background in the IoU (default: ignore them)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed states per forward pass (default: 1 on the CPU, what fits in free GPU memory)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available; "
                                                       "under torchrun cuda:LOCAL_RANK)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (reused to resume)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate.metrics import parse_metrics
    from ..evaluate.runner import EvaluationConfig, run_evaluation

    if args.steps < 1:
        from ..errors import ExplainError

        raise ExplainError(f"--steps must be at least 1, got {args.steps}")
    config = EvaluationConfig(
        model=args.model,
        checkpoint=args.checkpoint,
        data=args.data,
        layout=args.layout,
        fold=args.fold,
        episodes=args.episodes,
        shots=args.shots,
        methods=method_names(args.methods),
        metrics=parse_metrics(_split(args.metrics), steps=args.steps, p_steps=args.p_steps),
        split=args.split,
        seed=args.seed,
        region=args.region,
        size=args.size,
        mode=args.mode,
        use_ignore=args.use_ignore,
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
        progress=args.progress,
    )
    summary = run_evaluation(config)
    if summary is not None:
        print(summary.markdown, end="")
        if config.methods:
            print(f"{summary.out / 'table.md'}: {len(config.methods)} method(s) x {len(config.metrics)} metric(s)")
        classes = summary.classes
        if classes is not None and classes.miou is not None:
            print(f"{summary.out / 'miou.md'}: prediction mIoU {classes.miou:.2f}, FB-IoU {classes.fb_iou:.2f} "
                  f"over {len(summary.predictions)} episode(s)")
    return 0
