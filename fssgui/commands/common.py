"""Arguments and steps shared by the headless commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.registry import DEFAULT_MODEL, build_model, resolve_device


def add_model_arguments(parser: argparse.ArgumentParser, several_episodes: bool = False) -> None:
    if several_episodes:
        parser.add_argument("episode", metavar="EPISODE", nargs="+",
                            help="episode folder(s) (or their episode.json); the model is loaded once")
    else:
        parser.add_argument("episode", metavar="EPISODE", help="episode folder (or its episode.json)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint file for models that need one")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")


def log_stderr(message: str) -> None:
    print(f"fssgui: {message}", file=sys.stderr)


def load_model_from_args(args):
    """Resolve the device (saying so when falling back to CPU) and build the model."""
    device = resolve_device(args.device)
    if args.device is None and device.type == "cpu":
        log_stderr("CUDA is not available: running on the CPU")
    return build_model(args.model, args.checkpoint, device=device, log=log_stderr), device


def output_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
