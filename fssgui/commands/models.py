"""`fssgui models`: the registry, each model's task, input size and whether it needs a checkpoint."""
from __future__ import annotations

from ..models.registry import DEFAULT_MODEL, TASK_FSS, TASK_LABELS, TASK_USES, list_models


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the available models and their task")
    parser.set_defaults(func=run)


def _rows() -> list[tuple[str, str, str, str, str]]:
    """(name, task, input size, checkpoint, description): few-shot models first, then the others."""
    rows = []
    entries = list_models()
    for e in sorted(entries, key=lambda e: e.task != TASK_FSS):
        default = " (default)" if e.name == DEFAULT_MODEL else ""
        checkpoint = "required" if e.needs_checkpoint else "none"
        size = f"{e.input_size}x{e.input_size}" if e.task == TASK_FSS else "image"
        rows.append((e.name, e.task, size, checkpoint, f"{e.description}{default}"))
    return rows


def run(args) -> int:
    rows = _rows()
    width = max(len(r[0]) for r in rows)
    print(f"{'model':<{width}}  {'task':<6}  {'input':>7}  {'checkpoint':<10}  description")
    for name, task, size, checkpoint, description in rows:
        print(f"{name:<{width}}  {task:<6}  {size:>7}  {checkpoint:<10}  {description}")
    tasks = sorted({r[1] for r in rows}, key=lambda t: t != TASK_FSS)
    print()
    for task in tasks:
        print(f"task {task}: {TASK_LABELS[task]} ({TASK_USES[task]})")
    return 0
