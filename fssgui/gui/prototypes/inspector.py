"""Pixel inspector of the Prototypes tab: the numbers at one clicked feature cell.

A thin view of :class:`fssgui.prototypes.inspection.CellInspection` (all numbers are computed
there, without Qt): the selected class's prototype activations with their scales, its group
activations, every class's logit and softmax at the cell, and the three nearest used prototypes
of all classes with their grown boxes and, when the checkpoint has push metadata, their training
patches. Each numeric cell keeps its exact value under ``Qt.UserRole`` (tests and copy/paste).

Theme: the rows' colours come from the widget's palette (:func:`table_colours`): tinted cells
(group labels, the shown class's row) are a tint of the group / highlight colour over the table's
base with the palette's text on top (at least 4.5:1), greyed rows stay at least 3:1; on a palette
change (a theme switch at run time) the tables are filled again with the new colours. The
nearest-prototype ranks keep the colours of their boxes on the map, with black or white text,
whichever reads better.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPalette, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...prototypes.inspection import CellInspection
from ...prototypes.overlays import GROUP_COLOURS
from ..theme import contrast_ratio, readable_colour

#: colours of the nearest-prototype boxes drawn on the map (rank 1, 2, 3), as in the official plots
NEAREST_COLOURS = [(230, 40, 40), (40, 170, 40), (40, 90, 230)]
USED_ROLE = Qt.ItemDataRole.UserRole + 1  # on a prototype row's first item: used after α
PATCH_ICON = (54, 36)  # width, height of the training-patch thumbnails in the nearest table
HIGHLIGHT_COLOUR = (255, 193, 7)  # amber: the shown class's row in the logit table (tinted)
ERROR_COLOUR, WARNING_COLOUR = (224, 70, 78), (217, 130, 43)  # message text (made readable per theme)
TINT = 0.3  # share of a highlight colour over the table's base in tinted cells
TEXT_CONTRAST = 4.5  # text on tinted cells and secondary text (WCAG AA)
DIM_CONTRAST = 3.0  # greyed rows (unused prototypes): dimmer than the text, still legible


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved towards ``b`` by ``t`` (0..1)."""
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def _readable_on(colour: QColor, backgrounds: Sequence[QColor], ratio: float) -> QColor:
    """``colour`` made readable (at ``ratio``) on every one of ``backgrounds`` (all light or all dark)."""
    for background in backgrounds:
        colour = readable_colour(colour, background, ratio)
    return colour


def _tint(rgb: Sequence[int], base: QColor, text: QColor) -> QColor:
    """A tint of ``rgb`` over ``base`` under which ``text`` keeps >= TEXT_CONTRAST."""
    amount = TINT
    tinted = _blend(base, QColor(*(int(v) for v in rgb)), amount)
    while contrast_ratio(text, tinted) < TEXT_CONTRAST and amount > 0.0:
        amount = max(0.0, amount - 0.05)
        tinted = _blend(base, QColor(*(int(v) for v in rgb)), amount)
    return tinted


def text_on(background: QColor) -> QColor:
    """Black or white, whichever contrasts more with ``background``."""
    black, white = QColor(0, 0, 0), QColor(255, 255, 255)
    return black if contrast_ratio(black, background) >= contrast_ratio(white, background) else white


@dataclass(frozen=True)
class TableColours:
    """Colours of the inspector's tables in one palette (see the module docstring)."""

    text: QColor
    dim: QColor  # rows of prototypes unused at α
    muted: QColor  # secondary rows ("others")
    group_backgrounds: tuple[QColor, ...]  # group labels, in the groups' colours
    highlight_background: QColor  # the shown class's row in the logit table


def table_colours(palette: QPalette) -> TableColours:
    text = QColor(palette.color(QPalette.ColorRole.Text))
    base = QColor(palette.color(QPalette.ColorRole.Base))
    rows = (base, QColor(palette.color(QPalette.ColorRole.AlternateBase)))
    disabled = QColor(palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
    return TableColours(
        text=text,
        dim=_readable_on(disabled, rows, DIM_CONTRAST),
        muted=_readable_on(disabled, rows, TEXT_CONTRAST),
        group_backgrounds=tuple(_tint(rgb, base, text) for rgb in GROUP_COLOURS),
        highlight_background=_tint(HIGHLIGHT_COLOUR, base, text),
    )


def message_colour(kind: str, palette: QPalette) -> QColor:
    """Text colour of an "error" / "warning" message on the window background of ``palette``."""
    rgb = ERROR_COLOUR if kind == "error" else WARNING_COLOUR
    return readable_colour(QColor(*rgb), QColor(palette.color(QPalette.ColorRole.Window)), TEXT_CONTRAST)


def message_html(text: str, kind: str, palette: QPalette) -> str:
    """``text`` (escaped) in the message colour of ``kind``."""
    return f"<span style='color:{message_colour(kind, palette).name()}'>{html.escape(text)}</span>"


def text_label(text: str = "") -> QLabel:
    """A word-wrapped label whose text can be selected and copied (messages, numbers)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _item(text: str, value: Any = None, align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if value is not None:
        item.setData(Qt.ItemDataRole.UserRole, value)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _table(headers: Sequence[str], tip: str) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(20)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setAlternatingRowColors(True)
    table.setToolTip(tip)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    font = QFont(table.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
    table.setFont(font)
    return table


def _title(text: str) -> QLabel:
    label = QLabel(f"<b>{html.escape(text)}</b>")
    label.setContentsMargins(0, 4, 0, 0)
    return label


class CellInspectorWidget(QWidget):
    """Tables of one :class:`CellInspection` (see the module docstring)."""

    nodeRequested = Signal(str)  # "p<index>" / "g<n>" of the shown class, when its row is clicked
    prototypeRequested = Signal(int)  # global prototype index of a clicked nearest-prototype row (any class)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.inspection: Optional[CellInspection] = None
        root = QVBoxLayout(self)
        root.setContentsMargins(2, 2, 2, 2)
        root.setSpacing(2)
        self.header_label = text_label("Click the image on the left to inspect a feature cell.")
        self.header_label.setMinimumHeight(3 * self.header_label.fontMetrics().lineSpacing() + 4)
        root.addWidget(self.header_label)

        self.prototype_table = _table(
            ["proto", "scale (dil.)", "activation", "distance", "weight per group"],
            "The selected class's prototypes at the cell: log activation log((d+1)/(d+1e-4)) (0..9.21), the "
            "squared distance d it comes from, and the prototype's weight in each of the class's groups.\n"
            "Grey rows: prototypes no group uses at this threshold α.")
        self.group_table = _table(
            ["group", "act.", "→class", "contrib."],
            "The class's groups at the cell: exp of the weighted sum of prototype activations (1..1e4), the "
            "group→class weight and their product (the group's share of the class logit)")
        self.class_table = _table(
            ["class", "logit", "softmax"],
            "Every class's logit and softmax probability at the cell (largest first), at the graph's threshold α")
        self.group_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.group_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.nearest_table = _table(
            ["#", "class", "scale", "proto", "activation", "distance", "box x, y, w×h", "training patch"],
            "The 3 used prototypes (non-zero group weight after α) of all classes closest to the cell's feature, "
            "with the box grown from the cell over pixels whose activation is ≥ 0.99 × its activation at the "
            "cell, inside the region of the class predicted there (drawn on the map in the row's colour)")

        tables = QGridLayout()
        tables.setHorizontalSpacing(6)
        tables.setVerticalSpacing(0)
        tables.addWidget(_title("Prototypes of the selected class"), 0, 0)
        tables.addWidget(self.prototype_table, 1, 0, 3, 1)
        tables.addWidget(_title("Groups"), 0, 1)
        tables.addWidget(self.group_table, 1, 1)
        tables.addWidget(_title("Class logits at the cell"), 2, 1)
        tables.addWidget(self.class_table, 3, 1)
        tables.setColumnStretch(0, 11)
        tables.setColumnStretch(1, 8)
        tables.setRowStretch(1, 2)
        tables.setRowStretch(3, 3)
        root.addLayout(tables, 3)
        root.addWidget(_title("Nearest used prototypes (all classes)"))
        root.addWidget(self.nearest_table, 1)
        self.projection_label = QLabel("")
        self.projection_label.setWordWrap(True)
        self.projection_label.setMinimumHeight(2 * self.projection_label.fontMetrics().lineSpacing() + 4)
        root.addWidget(self.projection_label)
        self.prototype_table.cellClicked.connect(lambda row, _col: self._request_row(self.prototype_table, row))
        self.group_table.cellClicked.connect(lambda row, _col: self._request_row(self.group_table, row))
        self.nearest_table.cellClicked.connect(lambda row, _col: self._request_nearest(row))
        self.group_table.setFixedHeight(self.group_table.horizontalHeader().sizeHint().height() + 4 * 20 + 6)
        self.nearest_table.setFixedHeight(self.nearest_table.horizontalHeader().sizeHint().height() + 3 * 20 + 6)
        self.nearest_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.nearest_table.setIconSize(QSize(*PATCH_ICON))
        self.class_table.setMinimumHeight(66)
        self.prototype_table.setMinimumHeight(120)

    # ------------------------------------------------------------------ public API
    def clear(self, message: str = "Click the image on the left to inspect a feature cell.") -> None:
        self.inspection = None
        self.header_label.setText(message)
        for table in (self.prototype_table, self.group_table, self.class_table, self.nearest_table):
            table.setRowCount(0)
        self.projection_label.setText("")

    def show_inspection(self, inspection: CellInspection) -> None:
        self.inspection = inspection
        i, j = inspection.cell
        y0, y1, x0, x1 = inspection.box
        names = {c.class_index: c.class_name for c in inspection.classes}
        alpha = "" if inspection.threshold is None else f", α = {inspection.threshold:.2f}"
        self.header_label.setText(
            f"<b>cell (i={i}, j={j})</b> = image pixels x {x0}–{x1 - 1}, y {y0}–{y1 - 1}; "
            f"{html.escape(inspection.grid.describe())}.<br>Predicted here: "
            f"<b>{html.escape(names[inspection.predicted_class])}</b>; numbers for "
            f"<b>{html.escape(inspection.class_name)}</b>{alpha}.")
        self._fill_prototypes(inspection)
        self._fill_groups(inspection)
        self._fill_classes(inspection)
        self._fill_nearest(inspection)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.inspection is not None:
            self.show_inspection(self.inspection)  # the rows' colours follow the new theme

    def colours(self) -> TableColours:
        """The rows' colours in the palette in use now."""
        return table_colours(self.palette())

    def values(self, table: QTableWidget, column: int) -> list[Any]:
        """The exact values stored in a column (``Qt.UserRole``)."""
        return [table.item(r, column).data(Qt.ItemDataRole.UserRole) for r in range(table.rowCount())]

    # ------------------------------------------------------------------- internals
    def _fill_prototypes(self, inspection: CellInspection) -> None:
        table = self.prototype_table
        table.setRowCount(len(inspection.prototypes))
        grey = QBrush(self.colours().dim)
        for row, p in enumerate(inspection.prototypes):
            items = [
                _item(f"p{p.index}", p.index),
                _item(f"{p.scale + 1} ({p.dilation})", p.scale),
                _item(f"{p.activation:.4f}", p.activation, True),
                _item(f"{p.distance:.4g}", p.distance, True),
                _item("/".join(f"{w:.3f}" for w in p.group_weights) or "—", list(p.group_weights)),
            ]
            items[0].setData(USED_ROLE, p.used)
            for col, item in enumerate(items):
                if not p.used:
                    item.setForeground(grey)
                    item.setToolTip(f"p{p.index} is unused at this threshold: all its group weights are below α")
                table.setItem(row, col, item)

    def _fill_groups(self, inspection: CellInspection) -> None:
        table = self.group_table
        if not inspection.groups:
            table.setRowCount(1)
            table.setItem(0, 0, _item("stage 1: no groups"))
            for col in range(1, table.columnCount()):
                table.setItem(0, col, _item(""))
            return
        table.setRowCount(len(inspection.groups) + 1)
        colours = self.colours()
        for row, g in enumerate(inspection.groups):
            label = _item(f"group {g.group + 1}", g.group)
            label.setToolTip(f"keeps {g.num_prototypes} prototypes at this threshold")
            label.setBackground(QBrush(colours.group_backgrounds[g.group % len(colours.group_backgrounds)]))
            label.setForeground(QBrush(colours.text))
            for col, item in enumerate([label, _item(f"{g.activation:.4g}", g.activation, True),
                                        _item(f"{g.head_weight:.3f}", g.head_weight, True),
                                        _item(f"{g.contribution:.4g}", g.contribution, True)]):
                table.setItem(row, col, item)
        # the rest of the class logit: other classes' groups through their (off-class) weights
        other = inspection.other_groups_contribution
        row = len(inspection.groups)
        label = _item("others", None)
        label.setToolTip("The class logit also sums the other classes' groups times their (off-class) weights "
                         "to this class; their total is here")
        for col, item in enumerate([label, _item(""), _item(""), _item(f"{other:.4g}", other, True)]):
            item.setForeground(QBrush(colours.muted))
            table.setItem(row, col, item)

    def _fill_classes(self, inspection: CellInspection) -> None:
        table = self.class_table
        ranked = inspection.ranked_classes()
        table.setRowCount(len(ranked))
        bold = QFont(table.font())
        bold.setBold(True)
        colours = self.colours()
        for row, c in enumerate(ranked):
            items = [_item(c.class_name, c.class_index), _item(f"{c.logit:.4f}", c.logit, True),
                     _item(f"{c.probability:.2%}", c.probability, True)]
            for col, item in enumerate(items):
                if c.class_index == inspection.class_index:
                    item.setFont(bold)
                    item.setBackground(QBrush(colours.highlight_background))
                    item.setForeground(QBrush(colours.text))
                table.setItem(row, col, item)

    def _fill_nearest(self, inspection: CellInspection) -> None:
        table = self.nearest_table
        table.setRowCount(len(inspection.nearest))
        for row, n in enumerate(inspection.nearest):
            p = n.prototype
            y0, y1, x0, x1 = n.box
            rank = _item(str(n.rank), n.rank)
            rank_colour = QColor(*NEAREST_COLOURS[row % 3])
            rank.setBackground(QBrush(rank_colour))
            rank.setForeground(QBrush(text_on(rank_colour)))
            if n.projection is not None:
                pr = n.projection
                patch = f"train image {pr.image_id or '#' + str(pr.image_index)}, box h{pr.box[:2]} w{pr.box[2:]}"
            elif inspection.projection_available:
                patch = "no push record for this prototype"
            else:
                patch = "no projection metadata"
            items = [rank, _item(p.class_name, p.class_index), _item(f"{p.scale + 1}", p.scale),
                     _item(f"p{p.index}", p.index), _item(f"{p.activation:.4f}", p.activation, True),
                     _item(f"{p.distance:.4g}", p.distance, True),
                     _item(f"{x0}, {y0}, {x1 - x0}×{y1 - y0}", list(n.box)), _item(patch, patch)]
            for col, item in enumerate(items):
                table.setItem(row, col, item)
            self._show_patch(table.item(row, 7), n)
        rows = max(3, len(inspection.nearest))
        table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows * table.rowHeight(0) + 6
                             if inspection.nearest else table.height())
        self.projection_label.setText(
            f"<i>{html.escape(inspection.projection_note)}</i>" if not inspection.projection_available else
            f"<i>training patches from the push: {html.escape(inspection.projection_note)}</i>")

    def _show_patch(self, item: QTableWidgetItem, nearest) -> None:
        """The push's training patch as the row's icon (its tooltip shows it full size)."""
        projection = nearest.projection
        path = None if projection is None else (projection.patch_path or projection.original_with_box_path)
        if path is None:
            return
        from ...imaging import load_rgb

        try:
            image = load_rgb(path)
        except Exception as exc:  # an unreadable file is reported in the row, not fatal
            item.setText(f"{item.text()} (patch unreadable: {exc})")
            return
        h, w = image.shape[:2]
        qimage = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        item.setData(Qt.ItemDataRole.DecorationRole,
                     QPixmap.fromImage(qimage).scaled(PATCH_ICON[0], PATCH_ICON[1], Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
        item.setToolTip(f"<img src='{html.escape(path.as_uri())}'><br>{html.escape(str(path))}")
        self.nearest_table.setRowHeight(item.row(), PATCH_ICON[1] + 4)

    def _request_row(self, table: QTableWidget, row: int) -> None:
        if self.inspection is None:
            return
        if table is self.prototype_table and row < len(self.inspection.prototypes):
            self.nodeRequested.emit(f"p{self.inspection.prototypes[row].index}")
        elif table is self.group_table and row < len(self.inspection.groups):
            self.nodeRequested.emit(f"g{self.inspection.groups[row].group}")

    def _request_nearest(self, row: int) -> None:
        if self.inspection is not None and 0 <= row < len(self.inspection.nearest):
            self.prototypeRequested.emit(int(self.inspection.nearest[row].prototype.index))
