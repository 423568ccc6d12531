"""The paper-style table: methods as rows, metrics as columns, NaN-ignoring means x 100.

Each cell is ``100 * mean`` over the episodes whose value is finite (the reference's
``compute()`` is a NaN-ignoring mean of the per-episode values; the paper reports x 100).
When both ``iauc-X`` and ``dauc-X`` are present a ``diff-X`` column (IAUC - DAUC, the paper's
"Diff") follows them. ``episodes`` counts the rows of a method, ``failed`` those with an error.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..io import write_bytes_atomic
from .metrics import MetricSpec


@dataclass
class TableColumn:
    name: str
    higher_is_better: bool
    source: tuple[str, ...]  # the metric(s) it is computed from (one; two for a diff)


@dataclass
class Table:
    columns: list[TableColumn]
    methods: list[str]
    values: dict[str, dict[str, Optional[float]]]  # method -> column -> mean x 100 (None: no value)
    counts: dict[str, dict[str, int]]  # method -> column -> episodes with a finite value
    episodes: dict[str, int]
    failed: dict[str, int]
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def value(self, method: str, column: str) -> Optional[float]:
        return self.values[method][column]


def table_columns(metrics: Sequence[MetricSpec]) -> list[TableColumn]:
    columns = []
    names = [m.name for m in metrics]
    for spec in metrics:
        columns.append(TableColumn(spec.name, spec.higher_is_better, (spec.name,)))
        if spec.metric == "dauc":
            measure = spec.name.split("-", 1)[1]
            partner = f"iauc-{measure}"
            if partner in names:
                columns.append(TableColumn(f"diff-{measure}", True, (partner, spec.name)))
    return columns


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def _mean(values: list[float]) -> Optional[float]:
    return 100.0 * math.fsum(values) / len(values) if values else None


def build_table(rows: Sequence[dict], methods: Sequence[str], metrics: Sequence[MetricSpec], title: str = "") -> Table:
    columns = table_columns(metrics)
    values: dict[str, dict[str, Optional[float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    episodes: dict[str, int] = {}
    failed: dict[str, int] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        episodes[method] = len(mine)
        failed[method] = sum(1 for r in mine if r.get("error"))
        values[method], counts[method] = {}, {}
        for column in columns:
            if len(column.source) == 1:
                found = [float(r["values"].get(column.source[0])) for r in mine
                         if _finite(r["values"].get(column.source[0]))]
                values[method][column.name] = _mean(found)
                counts[method][column.name] = len(found)
            else:
                first, second = (values[method].get(s) for s in column.source)
                values[method][column.name] = None if first is None or second is None else first - second
                counts[method][column.name] = min(counts[method][s] for s in column.source)
    return Table(columns, list(methods), values, counts, episodes, failed, title)


def _cell(value: Optional[float], digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_markdown(table: Table, digits: int = 2) -> str:
    arrows = {True: "↑", False: "↓"}
    header = ["Method"] + [f"{c.name} {arrows[c.higher_is_better]}" for c in table.columns] + ["Episodes"]
    lines = []
    if table.title:
        lines += [table.title, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for method in table.methods:
        cells = [method] + [_cell(table.values[method][c.name], digits) for c in table.columns]
        count = str(table.episodes[method])
        if table.failed[method]:
            count += f" ({table.failed[method]} failed)"
        lines.append("| " + " | ".join(cells + [count]) + " |")
    lines.append("")
    lines.append("Values are means over episodes x 100 (episodes without a value are skipped).")
    lines.extend(table.notes)
    return "\n".join(lines) + "\n"


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method"] + [c.name for c in table.columns] + ["episodes", "failed"])
    for method in table.methods:
        cells = [table.values[method][c.name] for c in table.columns]
        writer.writerow([method] + ["" if v is None else f"{v:.6f}" for v in cells]
                        + [table.episodes[method], table.failed[method]])
    return buffer.getvalue()


def table_json(table: Table, settings: Optional[dict] = None) -> dict:
    return {
        "columns": [{"name": c.name, "higher_is_better": c.higher_is_better, "from": list(c.source)}
                    for c in table.columns],
        "methods": table.methods,
        "values_x100": table.values,
        "counts": table.counts,
        "episodes": table.episodes,
        "failed": table.failed,
        "settings": settings or {},
    }


def write_table(out: Path, table: Table, settings: Optional[dict] = None) -> list[Path]:
    """``table.md``, ``table.csv`` and ``table.json`` (full precision) in ``out``."""
    written = []
    for name, text in (("table.md", table_markdown(table)), ("table.csv", table_csv(table)),
                       ("table.json", json.dumps(table_json(table, settings), indent=2) + "\n")):
        write_bytes_atomic(out / name, text.encode("utf-8"))
        written.append(out / name)
    return written


def results_csv(rows: Sequence[dict], metrics: Sequence[MetricSpec]) -> str:
    """One line per (episode, method) with the raw per-episode values (not x 100)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [m.name for m in metrics]
    writer.writerow(["episode", "method", "class", "query", "supports"] + names
                    + ["prediction_iou", "explainer_seed", "error"])
    for row in rows:
        vals = ["" if row["values"].get(n) is None else repr(float(row["values"][n])) for n in names]
        iou = row.get("prediction_iou")
        writer.writerow([row["episode"], row["method"], row.get("class", ""), row.get("query", ""),
                         " ".join(row.get("supports", []))] + vals
                        + ["" if iou is None else repr(float(iou)),
                           "" if row.get("explainer_seed") is None else row["explainer_seed"],
                           row.get("error") or ""])
    return buffer.getvalue()
