"""`fssgui` entry point: no arguments opens the GUI; subcommands run headless.

Each subcommand lives in its own module under ``fssgui.commands`` with a
``register(subparsers)`` function that adds its parser and sets ``func=run``.
User errors (:class:`fssgui.errors.FssguiError`) and running out of memory (on the GPU or the host)
print one line and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__
from .errors import FssguiError

COMMAND_MODULES = (
    "fssgui.commands.models",
    "fssgui.commands.predict",
    "fssgui.commands.explain",
    "fssgui.commands.causal",
    "fssgui.commands.report",
    "fssgui.commands.protos",
    "fssgui.commands.train",
    "fssgui.commands.evaluate",
    "fssgui.commands.triage",
    "fssgui.commands.selftest",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fssgui",
        description="Diagnose few-shot semantic segmentation models. Without a command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"fssgui {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--demo", action="store_true", help="open the window on the default demo episode")
    parser.add_argument("--screenshot", metavar="FILE.png", help="with --demo: run, save a screenshot, exit")
    parser.add_argument("--episode", metavar="DIR", help="open this episode folder in the window")
    parser.add_argument("--dataset", metavar="ROOT", help="open the window on the dataset panel with this dataset")
    parser.add_argument("--layout", dest="dataset_layout", default="folders", metavar="LAYOUT",
                        choices=("folders", "pascal5i", "coco20i"), help="with --dataset: its layout (default folders)")
    parser.add_argument("--check-display", action="store_true",
                        help="check that the window can open here (the system libraries Qt needs), then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            from .gui.app import run_gui

            return int(run_gui(args) or 0)
        return int(args.func(args) or 0)
    except FssguiError as exc:
        if args.debug:
            raise
        print(f"fssgui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fssgui: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - out of memory is a user-facing condition, the rest is a bug
        from .pipeline.models import is_out_of_memory, out_of_memory_message

        if args.debug or not is_out_of_memory(exc):
            raise
        print(f"fssgui: error: {out_of_memory_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
