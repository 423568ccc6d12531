"""The failure table as a Qt model/view pair: :class:`FailureTableModel` (one row per episode of a
:class:`~fssgui.triage.results.TriageResults`; pictures from the lazy :class:`ThumbnailCache`) and
:class:`FailureFilter` (sorting on raw values, the filters of the panel). The numbers come from the
results folder; nothing is computed here."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Slot

from ...evaluate.predictions import STAT_COLUMNS, TINY_SUPPORT_SHARE
from ...triage.results import FailureRecord, TriageResults
from ...triage.thumbnails import KINDS, PREDICTION, QUERY, TRUTH
from .thumbnails import ThumbnailCache

SORT_ROLE = Qt.ItemDataRole.UserRole + 1  # the raw value a column sorts on (None sorts last)
PICTURE_TITLES = {QUERY: "Query", PREDICTION: "Prediction", TRUTH: "Ground truth"}


@dataclass(frozen=True)
class Column:
    title: str
    kind: str  # "picture", "episode", "class", "stat", "metric", "error"
    key: str = ""  # the picture kind, the statistic, or "method/metric"
    tooltip: str = ""


def table_columns(results: Optional[TriageResults]) -> list[Column]:
    columns = [Column(PICTURE_TITLES[k], "picture", k) for k in KINDS]
    columns += [Column("Episode", "episode"), Column("Class", "class")]
    columns += [Column(c.title, "stat", c.key, f"{c.key} ({'low' if c.worse_when_low else 'high'} is worse)")
                for c in STAT_COLUMNS]
    if results is not None:
        columns += [Column(f"{metric} ({method})", "metric", f"{method}/{metric}")
                    for method in results.methods for metric in results.metric_names]
    columns.append(Column("Error", "error"))
    return columns


def _percent(key: str) -> bool:
    return key.endswith("_share") or key == "support_share_min"


class FailureTableModel(QAbstractTableModel):
    def __init__(self, thumbnails: ThumbnailCache, parent=None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.results: Optional[TriageResults] = None
        self.records: list[FailureRecord] = []
        self.columns = table_columns(None)
        self._row_of: dict[int, int] = {}
        thumbnails.ready.connect(self._picture_ready)

    def set_results(self, results: Optional[TriageResults]) -> None:
        self.beginResetModel()
        self.results = results
        self.records = [] if results is None else list(results.records)
        self.columns = table_columns(results)
        self._row_of = {r.episode: i for i, r in enumerate(self.records)}
        self.endResetModel()

    def record(self, row: int) -> FailureRecord:
        return self.records[row]

    def column_index(self, kind: str, key: str = "") -> int:
        for i, c in enumerate(self.columns):
            if c.kind == kind and (not key or c.key == key):
                return i
        raise KeyError(f"no {kind} column {key}")

    # ----------------------------------------------------------------------------- Qt API
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.columns[section].tooltip or None
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record, column = self.records[index.row()], self.columns[index.column()]
        if column.kind == "picture":
            if role == Qt.ItemDataRole.DecorationRole:
                return self.thumbnails.pixmap(record, column.key)
            return None
        value = self._value(record, column)
        if role == SORT_ROLE:
            return value
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(record, column, value)
        if role == Qt.ItemDataRole.TextAlignmentRole and column.kind in ("stat", "metric", "episode"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(record)
        return None

    def _value(self, record: FailureRecord, column: Column):
        if column.kind == "episode":
            return record.episode
        if column.kind == "class":
            return record.class_name
        if column.kind == "stat":
            return record.value(column.key)
        if column.kind == "metric":
            method, metric = column.key.split("/", 1)
            value = record.metrics.get(method, {}).get(metric)
            return None if value is None or not math.isfinite(value) else float(value)
        if column.kind == "error":
            return record.error or record.metric_errors.get(next(iter(record.metric_errors), ""), "") or ""
        return None

    @staticmethod
    def _text(record: FailureRecord, column: Column, value) -> str:
        if column.kind in ("stat", "metric"):
            if value is None:
                return "" if record.predicted else "…"
            return f"{100 * value:.1f}%" if column.kind == "stat" and _percent(column.key) else f"{value:.3f}"
        return "" if value is None else str(value)

    @staticmethod
    def _tooltip(record: FailureRecord) -> str:
        row = record.row
        text = f"episode {row.index} · {row.class_name}\nquery {row.query}\nsupports {', '.join(row.supports)}"
        if record.empty_prediction:
            text += "\nempty prediction"
        if record.has_tiny_support():
            text += f"\na support mask covers under {100 * TINY_SUPPORT_SHARE:g}% of its image"
        if record.error:
            text += f"\n{record.error}"
        return text

    @Slot(int)
    def _picture_ready(self, episode: int) -> None:
        row = self._row_of.get(episode)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(KINDS) - 1),
                                  [Qt.ItemDataRole.DecorationRole])


class FailureFilter(QSortFilterProxyModel):
    """Sorts on the raw values (missing values last in either order) and keeps the rows that pass
    the filters: a class, an IoU range, empty predictions only, tiny support masks only."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.class_name = ""
        self.iou_range = (0.0, 1.0)
        self.empty_only = False
        self.tiny_only = False

    def set_filters(self, *, class_name: str = "", iou_range=(0.0, 1.0), empty_only: bool = False,
                    tiny_only: bool = False) -> None:
        modern = hasattr(self, "beginFilterChange")  # Qt >= 6.9; invalidateRowsFilter() before
        if modern:
            self.beginFilterChange()
        self.class_name, self.iou_range = class_name, (float(iou_range[0]), float(iou_range[1]))
        self.empty_only, self.tiny_only = empty_only, tiny_only
        if modern:
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:  # noqa: N802
        record = self.sourceModel().record(source_row)
        if self.class_name and record.class_name != self.class_name:
            return False
        if self.empty_only and not record.empty_prediction:
            return False
        if self.tiny_only and not record.has_tiny_support():
            return False
        if self.iou_range != (0.0, 1.0):
            iou = record.value("iou")
            if iou is None or not self.iou_range[0] <= iou <= self.iou_range[1]:
                return False
        return True

    def lessThan(self, left, right) -> bool:  # noqa: N802
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        if a is None or b is None:  # missing values last whichever the order
            ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
            return (a is not None) if ascending else (a is None and b is not None)
        if isinstance(a, str) or isinstance(b, str):
            return str(a) < str(b)
        return a < b
