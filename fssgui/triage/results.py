"""A results folder of :mod:`fssgui.evaluate` read as a failure table: one :class:`FailureRecord`
per episode of its list (with the prediction's statistics once the sweep reached it, and the
metric values of the methods that ran on it), the per-class summary, and the ranking of failures.

The folder may be a finished ``fssgui evaluate`` run (single process or merged from torchrun
ranks), a sweep still running or cancelled (every row already written counts), or a folder written
before prediction rows existed (its episodes show as not predicted until a sweep resumes it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..evaluate import store
from ..evaluate.episodes import EpisodeRow, read_episode_csv
from ..evaluate import predictions as P


@dataclass
class FailureRecord:
    """One episode of the failure table."""

    row: EpisodeRow
    values: dict = field(default_factory=dict)  # the prediction's statistics (empty: not predicted yet)
    predicted: bool = False
    error: Optional[str] = None  # why the episode could not be predicted
    thumbnail: Optional[str] = None  # the predicted mask, base64 PNG
    support_shares: list[float] = field(default_factory=list)
    query_size: Optional[tuple[int, int]] = None
    metrics: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)  # method -> metric -> value
    metric_errors: dict[str, str] = field(default_factory=dict)  # method -> error

    @property
    def episode(self) -> int:
        return self.row.index

    @property
    def class_name(self) -> str:
        return self.row.class_name

    def value(self, key: str) -> Optional[float]:
        value = self.values.get(key)
        return None if value is None or not math.isfinite(float(value)) else float(value)

    @property
    def empty_prediction(self) -> bool:
        return self.predicted and not self.error and P.empty_prediction(self.values)

    def has_tiny_support(self, threshold: float = P.TINY_SUPPORT_SHARE) -> bool:
        return self.predicted and P.tiny_support(self.values, threshold)


@dataclass
class TriageResults:
    """Everything a results folder holds, for the failure table."""

    folder: Path
    settings: dict
    info: dict
    records: list[FailureRecord]
    classes: P.ClassSummary
    methods: list[str]
    metric_names: list[str]

    @property
    def data_root(self) -> Optional[str]:
        return self.info.get("data_root")

    @property
    def layout(self) -> str:
        return str(self.settings.get("layout", ""))

    @property
    def model(self) -> str:
        return str(self.settings.get("model", ""))

    @property
    def checkpoint(self) -> Optional[str]:
        return self.info.get("checkpoint")

    @property
    def predicted_count(self) -> int:
        return sum(1 for r in self.records if r.predicted)

    def record(self, episode: int) -> FailureRecord:
        for record in self.records:
            if record.episode == episode:
                return record
        raise KeyError(f"episode {episode} is not in {self.folder}")


def open_results(folder: str | Path) -> TriageResults:
    """Read ``folder`` (see the module docstring); a clear :class:`~fssgui.evaluate.store.ResultsError`
    when it is not a results folder."""
    folder = Path(folder)
    document = store.read_settings_file(folder)
    if document is None:
        raise store.ResultsError(f"{folder}: not an fssgui results folder (no {store.SETTINGS_FILE}; "
                                 f"sweep the dataset or run fssgui evaluate first)")
    settings, info = document["settings"], document.get("info") or {}
    episodes_csv = folder / "episodes.csv"
    if not episodes_csv.is_file():
        raise store.ResultsError(f"{episodes_csv}: missing (the folder's episode list)")
    rows = read_episode_csv(episodes_csv, str(settings.get("layout", "folders")))
    predictions = _first_per_key(store.read_all_rows(folder, document["prediction_hash"], store.PREDICTION_ROWS))
    method_rows = _first_per_key(store.read_all_rows(folder, document["hash"]))
    records = []
    methods: list[str] = []
    metric_names: list[str] = [m["name"] for m in settings.get("metrics") or [] if isinstance(m, dict)]
    for row in rows:
        record = FailureRecord(row)
        found = predictions.get((row.index, store.PREDICTION_METHOD))
        if found is not None:
            record.predicted = True
            record.values = dict(found.get("values") or {})
            record.error = found.get("error")
            record.thumbnail = found.get("thumbnail")
            record.support_shares = list(found.get("support_shares") or [])
            size = found.get("query_size")
            record.query_size = (int(size[0]), int(size[1])) if size else None
        records.append(record)
    by_episode = {r.episode: r for r in records}
    for (episode, method), row in method_rows.items():
        record = by_episode.get(episode)
        if record is None:
            continue
        if method not in methods:
            methods.append(method)
        record.metrics[method] = dict(row.get("values") or {})
        if row.get("error"):
            record.metric_errors[method] = row["error"]
    summary = P.class_summary([p for p in predictions.values() if p["episode"] in by_episode])
    return TriageResults(folder, settings, info, records, summary, methods, metric_names)


def _first_per_key(rows: Sequence[dict]) -> dict[tuple[int, str], dict]:
    """One row per (episode, method): the first written (later ones are duplicates of a crash)."""
    chosen: dict[tuple[int, str], dict] = {}
    for row in rows:
        chosen.setdefault(store.row_key(row), row)
    return chosen


def rank(records: Sequence[FailureRecord], key: str = "iou", count: Optional[int] = None) -> list[FailureRecord]:
    """The predicted records, worst first by the statistic ``key`` (see
    :data:`fssgui.evaluate.predictions.STAT_COLUMNS`: a low IoU, a high false-negative share...);
    records without that value and unreadable episodes are left out. Ties keep episode order."""
    sign = 1.0 if P.column(key).worse_when_low else -1.0
    ranked = sorted((r for r in records if r.predicted and not r.error and r.value(key) is not None),
                    key=lambda r: (sign * r.value(key), r.episode))
    return ranked if count is None else ranked[:count]
