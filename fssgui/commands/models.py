"""`fssgui models`: the registry, each model's input size and whether it needs a checkpoint."""
from __future__ import annotations

from ..models.registry import DEFAULT_MODEL, list_models


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the available models")
    parser.set_defaults(func=run)


def _rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for e in list_models():
        default = " (default)" if e.name == DEFAULT_MODEL else ""
        checkpoint = "required" if e.needs_checkpoint else "none"
        rows.append((e.name, f"{e.input_size}x{e.input_size}", checkpoint, f"few-shot: {e.description}{default}"))
    try:
        from ..models.scaleprotoseg import list_semseg_models
    except ModuleNotFoundError:  # pragma: no cover - family not in this build
        return rows
    for e in list_semseg_models():
        checkpoint = "required" if e.needs_checkpoint else "none"
        rows.append((e.name, "image", checkpoint, f"semantic (fssgui protos): {e.description}"))
    return rows


def run(args) -> int:
    rows = _rows()
    width = max(len(r[0]) for r in rows)
    print(f"{'model':<{width}}  {'input':>7}  {'checkpoint':<10}  description")
    for name, size, checkpoint, description in rows:
        print(f"{name:<{width}}  {size:>7}  {checkpoint:<10}  {description}")
    return 0
