"""`fssgui models`: the registry, each model's input size and whether it needs a checkpoint."""
from __future__ import annotations

from ..models.registry import DEFAULT_MODEL, list_models


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the available models")
    parser.set_defaults(func=run)


def run(args) -> int:
    entries = list_models()
    width = max(len(e.name) for e in entries)
    print(f"{'model':<{width}}  {'input':>7}  {'checkpoint':<10}  description")
    for e in entries:
        checkpoint = "required" if e.needs_checkpoint else "none"
        default = " (default)" if e.name == DEFAULT_MODEL else ""
        size = f"{e.input_size}x{e.input_size}"
        print(f"{e.name:<{width}}  {size:>7}  {checkpoint:<10}  {e.description}{default}")
    return 0
