"""Compare mode of the Prototypes tab (failure analysis): two classes side by side.

A thin view of :func:`fssgui.prototypes.compare.compare_classes`: pick the two classes (by
default the shown class and the other class predicted on the largest area), and the sheet shows
for each its logit map, its group maps and its prototype maps in scale columns, every map kind
coloured with ONE min/max shared by both classes, so that "hotter" means the same on both sides.
The comparison and its sheet are computed on the worker pool (a newer request discards an older
one); a change made while the tab is hidden is computed when it is shown.

Theme: the sheet is drawn on the theme's side (dark background and light captions in the dark
theme; the maps are the same pixels), the exported PNG is always the white figure; the area around
it takes the palette's base colour, and messages their theme's colour
(:func:`~fssgui.gui.prototypes.inspector.message_html`), also after a theme switch at run time.
"""
from __future__ import annotations

import html
from typing import Optional

import numpy as np
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QImage, QPalette, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ...prototypes.compare import ClassComparison, compare_classes
from ..theme import palette_is_dark
from ..workers import LatestJob, WorkerPool
from .inspector import message_html, text_label


class ClassCompareView(QWidget):
    """Two class pickers, a region toggle and the comparison sheet (see the module docstring)."""

    comparisonShown = Signal(object)  # ClassComparison
    errorRaised = Signal(str)

    def __init__(self, pool: Optional[WorkerPool] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.pool = pool if pool is not None else WorkerPool("prototype-compare", 1, self)
        self.job = LatestJob()
        self.run = None
        self.threshold: Optional[float] = None
        self.comparison: Optional[ClassComparison] = None
        self._dirty = False  # inputs changed while hidden: recompute when shown or asked for
        root = QVBoxLayout(self)
        root.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        self.first_combo = QComboBox(self)
        self.second_combo = QComboBox(self)
        for combo, tip in ((self.first_combo, "Left: e.g. the class you expected here"),
                           (self.second_combo, "Right: e.g. the class the model predicted instead")):
            combo.setMinimumContentsLength(14)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setToolTip(tip)
            combo.setEnabled(False)
        self.swap_button = QPushButton("⇄", self)
        self.swap_button.setToolTip("Swap the two classes")
        self.swap_button.setFixedWidth(32)
        self.mask_check = QCheckBox("only their predicted regions", self)
        self.mask_check.setChecked(True)
        self.mask_check.setToolTip("Normalise and show the maps inside the union of the two classes' predicted "
                                   "regions (unticked: over the whole image)")
        row.addWidget(QLabel("Compare"))
        row.addWidget(self.first_combo, 1)
        row.addWidget(self.swap_button)
        row.addWidget(self.second_combo, 1)
        row.addWidget(self.mask_check)
        root.addLayout(row)
        self.summary_label = text_label("Run the model first; then pick two classes.")
        root.addWidget(self.summary_label)
        # the sheet is drawn 1:1 (crisp captions), its tile size chosen from the width available
        self.sheet_label = QLabel()
        self.sheet_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.sheet_label.setBackgroundRole(QPalette.ColorRole.Base)  # the theme's, around the sheet
        self.sheet_label.setAutoFillBackground(True)
        self.sheet_scroll = QScrollArea(self)
        self.sheet_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.sheet_scroll.setWidgetResizable(True)
        self.sheet_scroll.setWidget(self.sheet_label)
        root.addWidget(self.sheet_scroll, 1)
        self._sheet: Optional[np.ndarray] = None
        self._tile = 0
        self._error = ""  # the message shown in the summary when the last comparison failed

        self.first_combo.currentIndexChanged.connect(lambda _i: self._request_refresh())
        self.second_combo.currentIndexChanged.connect(lambda _i: self._request_refresh())
        self.mask_check.toggled.connect(lambda _c: self._request_refresh())
        self.swap_button.clicked.connect(self.swap)

    # ------------------------------------------------------------------ public API
    def set_run(self, run, threshold: Optional[float], items: list[tuple[str, int]], first: int,
                second: Optional[int]) -> None:
        """A new run: ``items`` are the picker entries (label, class index) of classes that have
        prototypes; ``first``/``second`` the default pair."""
        self.run, self.threshold = run, threshold
        for combo in (self.first_combo, self.second_combo):
            combo.blockSignals(True)
            combo.clear()
            for label, class_index in items:
                combo.addItem(label, class_index)
            combo.setEnabled(len(items) > 1)
            combo.blockSignals(False)
        if second is None:
            second = next((c for _, c in items if c != first), first)
        self.set_classes(first, second)

    def set_classes(self, first: int, second: int) -> None:
        for combo, class_index in ((self.first_combo, first), (self.second_combo, second)):
            combo.blockSignals(True)
            index = combo.findData(class_index)
            if index >= 0:
                combo.setCurrentIndex(index)
            combo.blockSignals(False)
        self._request_refresh()

    def set_threshold(self, threshold: Optional[float]) -> None:
        self.threshold = threshold
        self._request_refresh()

    def current_comparison(self) -> Optional[ClassComparison]:
        """The comparison shown (None while the inputs changed and it is not recomputed yet)."""
        return None if self._dirty or self.job.running else self.comparison

    def current_choice(self) -> Optional[tuple[int, int, Optional[float], bool]]:
        """(first class, second class, threshold, masked) of the comparison the pickers ask for."""
        first, second = self.first_combo.currentData(), self.second_combo.currentData()
        if self.run is None or first is None or second is None or first == second:
            return None
        return int(first), int(second), self.threshold, self.mask_check.isChecked()

    def _request_refresh(self) -> None:
        if self.isVisible():
            self.refresh()
        else:
            self._dirty = True

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    def swap(self) -> None:
        first, second = self.first_combo.currentData(), self.second_combo.currentData()
        if first is not None and second is not None:
            self.set_classes(second, first)

    def refresh(self) -> None:
        """Compute the comparison the pickers ask for (on the pool) and show it when it arrives."""
        self._dirty = False
        self._error = ""
        first, second = self.first_combo.currentData(), self.second_combo.currentData()
        if self.run is None or first is None or second is None:
            return
        choice = self.current_choice()
        if choice is None:
            self.job.discard()
            self.comparison = None
            self._show_sheet(None)
            self.summary_label.setText("Pick two different classes.")
            return
        tile, dark = self._fitting_tile(), palette_is_dark(self.palette())
        run = self.run

        def compare(ctx) -> tuple[ClassComparison, np.ndarray]:
            comparison = compare_classes(run, choice[0], choice[1], choice[2], masked=choice[3])
            ctx.check()
            return comparison, comparison.render_sheet(tile=tile, dark=dark)

        handle = self.job.start(self.pool.submit(compare, description="compare two classes"))
        handle.finished.connect(lambda done: self._show_comparison(*done, tile))
        handle.failed.connect(lambda message, _trace: self._failed(message))

    def _failed(self, message: str) -> None:
        self.comparison = None
        self._show_sheet(None)
        self._error = f"compare failed: {message}"
        self.summary_label.setText(message_html(self._error, "error", self.palette()))
        self.errorRaised.emit(self._error)

    def _show_comparison(self, comparison: ClassComparison, sheet: np.ndarray, tile: int) -> None:
        self.comparison = comparison
        self._tile = tile
        self._show_sheet(sheet)
        a, b = comparison.explanations
        region = ("the union of both predicted regions" if comparison.region is not None
                  else "the whole image" + (" (neither class is predicted)" if self.mask_check.isChecked() else ""))
        ranges = ", ".join(f"{kind} {lo:.3g}…{hi:.3g}" for kind, (lo, hi) in comparison.limits.items())
        self.summary_label.setText(
            f"<b>{html.escape(a.class_name)}</b> ({a.class_mask.mean():.1%} of pixels) vs "
            f"<b>{html.escape(b.class_name)}</b> ({b.class_mask.mean():.1%}); colours normalised over {region} "
            f"with one range per map kind shared by both classes: {ranges}.")
        self.comparisonShown.emit(comparison)

    def sheet(self) -> Optional[np.ndarray]:
        """The comparison sheet shown (RGB uint8), None when there is none."""
        return self._sheet

    def _fitting_tile(self) -> int:
        """Tile side so that both class blocks (4 columns each) fit the scroll area's width."""
        width = self.sheet_scroll.viewport().width() or self.width()
        return int(max(72, min(220, (width - 30) // 8 - 8)))

    def _render(self) -> None:
        """Draw the shown comparison again (another width or theme), on the pool."""
        comparison = self.comparison
        if comparison is None or self.job.running:
            return
        tile, dark = self._fitting_tile(), palette_is_dark(self.palette())
        self._tile = tile
        handle = self.job.start(self.pool.submit(lambda ctx: comparison.render_sheet(tile=tile, dark=dark),
                                                 description="draw the comparison"))
        handle.finished.connect(lambda sheet: comparison is self.comparison and self._show_sheet(sheet))

    def _show_sheet(self, sheet: Optional[np.ndarray]) -> None:
        self._sheet = sheet
        if sheet is None:
            self.sheet_label.clear()
            return
        sheet = np.ascontiguousarray(sheet)
        h, w = sheet.shape[:2]
        image = QImage(sheet.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.sheet_label.setPixmap(QPixmap.fromImage(image))

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            if self._error:
                self.summary_label.setText(message_html(self._error, "error", self.palette()))
            elif self.comparison is not None and self._sheet is not None:
                self._render()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self.comparison is not None and abs(self._fitting_tile() - self._tile) >= 8:
            self._render()
