"""Arguments and steps shared by the headless commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.registry import DEFAULT_MODEL


def add_model_arguments(parser: argparse.ArgumentParser, several_episodes: bool = False) -> None:
    if several_episodes:
        parser.add_argument("episode", metavar="EPISODE", nargs="+",
                            help="episode folder(s) (or their episode.json); the model is loaded once")
    else:
        parser.add_argument("episode", metavar="EPISODE", help="episode folder (or its episode.json)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint file for models that need one")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")


def add_dataset_arguments(parser: argparse.ArgumentParser, episodes_help: str, episodes_required: bool = True
                          ) -> None:
    """The model and the episode list of a dataset, as ``evaluate`` and ``triage`` take them."""
    from ..data.datasets import LAYOUTS

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", metavar="FILE", help="checkpoint file for models that need one")
    parser.add_argument("--data", required=True, metavar="ROOT", help="dataset root folder")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="dataset layout")
    parser.add_argument("--fold", type=int, metavar="F",
                        help="fold whose held-out classes are used (default: all classes / all CSV rows)")
    parser.add_argument("--episodes", required=episodes_required, metavar="CSV|N", help=episodes_help)
    parser.add_argument("--shots", type=int, metavar="K", help="shots per episode (default 1; must match a CSV)")
    parser.add_argument("--split", default="val", choices=("train", "val"),
                        help="split --episodes N draws from (default val)")


def log_stderr(message: str) -> None:
    print(f"fssgui: {message}", file=sys.stderr)


def model_spec(args):
    from ..pipeline import ModelSpec

    return ModelSpec(args.model, args.checkpoint, args.device)


def load_model_from_args(args):
    """The pipeline's :class:`~fssgui.pipeline.LoadedModel` of ``--model``, ``--checkpoint`` and
    ``--device`` (the pipeline's device rule: it says so when it falls back to the CPU)."""
    from ..pipeline import load_model

    return load_model(model_spec(args), log=log_stderr)


def output_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
