"""The dataset panel's form: root, layout, fold, split, shots, episodes (a number drawn from the seed,
or an episode CSV in the fssgui or the AffEx reference layout) and seed, i.e. the episode-list
options of ``fssgui evaluate``; :meth:`DatasetForm.choice` gives them as a
:class:`~fssgui.triage.sweep.DatasetChoice`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...data.datasets import LAYOUTS
from ...errors import FssguiError
from ...triage.sweep import DatasetChoice


class DatasetForm(QWidget):
    changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.root_edit = QLineEdit(self)
        self.root_edit.setPlaceholderText("dataset root folder")
        self.browse_button = QPushButton("Browse…", self)
        self.layout_combo = QComboBox(self)
        self.layout_combo.addItems(LAYOUTS)
        self.fold_spin = QSpinBox(self)
        self.fold_spin.setRange(-1, 3)
        self.fold_spin.setSpecialValueText("all")
        self.fold_spin.setToolTip("fold whose held-out classes are swept (all: every class)")
        self.split_combo = QComboBox(self)
        self.split_combo.addItems(["val", "train"])
        self.shots_spin = QSpinBox(self)
        self.shots_spin.setRange(1, 20)
        self.episodes_edit = QLineEdit("100", self)
        self.episodes_edit.setToolTip("a number of episodes to draw from the seed, or an episode CSV "
                                      "(fssgui layout, or the AffEx reference image_ids,classes files)")
        self.csv_button = QPushButton("CSV…", self)
        self.seed_spin = QSpinBox(self)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.ignore_check = QCheckBox("ignore label 255", self)
        self.ignore_check.setChecked(True)
        row = [("Root", self.root_edit, 3), (None, self.browse_button, 1), ("Layout", self.layout_combo, 1),
               ("Fold", self.fold_spin, 1), ("Split", self.split_combo, 1)]
        self._place(grid, 0, row)
        row = [("Episodes", self.episodes_edit, 2), (None, self.csv_button, 1), ("Shots", self.shots_spin, 1),
               ("Seed", self.seed_spin, 1), (None, self.ignore_check, 2)]
        self._place(grid, 1, row)
        self.browse_button.clicked.connect(self._browse_root)
        self.csv_button.clicked.connect(self._browse_csv)
        for signal in (self.root_edit.editingFinished, self.episodes_edit.editingFinished,
                       self.layout_combo.currentIndexChanged, self.fold_spin.valueChanged,
                       self.split_combo.currentIndexChanged, self.shots_spin.valueChanged,
                       self.seed_spin.valueChanged, self.ignore_check.toggled):
            signal.connect(lambda *_: self.changed.emit())

    @staticmethod
    def _place(grid: QGridLayout, row: int, items) -> None:
        column = 0
        for label, widget, span in items:
            if label:
                grid.addWidget(QLabel(label), row, column)
                column += 1
            grid.addWidget(widget, row, column, 1, span)
            column += span

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset root folder", self.root_edit.text())
        if folder:
            self.root_edit.setText(folder)
            self.changed.emit()

    def _browse_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Episode CSV", self.root_edit.text(), "Episode lists (*.csv)")
        if path:
            self.episodes_edit.setText(path)
            self.changed.emit()

    def choice(self) -> DatasetChoice:
        """The form as a :class:`DatasetChoice`; a clear error when a field is unusable."""
        root = self.root_edit.text().strip()
        if not root:
            raise FssguiError("choose the dataset's root folder")
        if not Path(root).is_dir():
            raise FssguiError(f"{root}: dataset folder not found")
        episodes = self.episodes_edit.text().strip()
        if not episodes.isdigit() and not Path(episodes).is_file():
            raise FssguiError(f"episodes {episodes!r}: give a number of episodes or an episode CSV file")
        if episodes.isdigit() and int(episodes) < 1:
            raise FssguiError("episodes: draw at least one")
        fold = self.fold_spin.value()
        return DatasetChoice(root=root, layout=self.layout_combo.currentText(), episodes=episodes,
                             shots=self.shots_spin.value() if episodes.isdigit() else None,
                             fold=None if fold < 0 else fold, split=self.split_combo.currentText(),
                             seed=self.seed_spin.value(), use_ignore=self.ignore_check.isChecked())

    def set_choice(self, choice: DatasetChoice) -> None:
        blockers = [w.blockSignals(True) for w in self._widgets()]
        try:
            self.root_edit.setText(str(choice.root))
            self.layout_combo.setCurrentText(choice.layout)
            self.fold_spin.setValue(-1 if choice.fold is None else int(choice.fold))
            self.split_combo.setCurrentText(choice.split)
            self.shots_spin.setValue(int(choice.shots or 1))
            self.episodes_edit.setText(str(choice.episodes))
            self.seed_spin.setValue(int(choice.seed))
            self.ignore_check.setChecked(bool(choice.use_ignore))
        finally:
            for widget, blocked in zip(self._widgets(), blockers):
                widget.blockSignals(blocked)
        self.changed.emit()

    def _widgets(self) -> list[QWidget]:
        return [self.root_edit, self.layout_combo, self.fold_spin, self.split_combo, self.shots_spin,
                self.episodes_edit, self.seed_spin, self.ignore_check]
