"""The Prototypes tab: pick a ScaleProtoSeg model and checkpoint, run it on the query, show the
class's group graph (:class:`~fssgui.gui.proto_graph.ProtoGraphView`) with a class picker.

The panel only holds the controls and shows results; the window owns the job (channel
``"prototypes"`` on the one worker thread, with the window's progress bar, cancel and error log):

* ``runRequested`` -> the window submits :func:`fssgui.gui.jobs.prototypes` for the query image;
* :meth:`show_result` gets the :class:`~fssgui.gui.jobs.PrototypeRunResult` (one forward + the
  graph of the class predicted on the largest area);
* picking another class recomputes its graph from the stored activations (cheap numpy, no model),
  keeping the threshold α chosen on the graph's slider.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .jobs import PrototypeRunResult
from .proto_graph import ProtoGraphView

STATE_IDLE, STATE_RUNNING = "idle", "running"


def semseg_entries() -> list:
    """ScaleProtoSeg entries (``fssgui.models.scaleprotoseg``), empty when that module is absent."""
    try:
        from ..models.scaleprotoseg import list_semseg_models
    except ImportError:
        return []
    return list_semseg_models()


class PrototypePanel(QWidget):
    """Controls of the Prototypes tab above the group-graph view (see the module docstring)."""

    runRequested = Signal()
    cancelRequested = Signal()
    browseRequested = Signal()
    classShown = Signal(int)  # model class index now shown in the graph
    resultShown = Signal(object)  # PrototypeRunResult

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.result: Optional[PrototypeRunResult] = None
        self.state = STATE_IDLE
        self._stale = ""
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        root.setSpacing(4)

        row = QHBoxLayout()
        row.addWidget(QLabel("Model"))
        self.model_combo = QComboBox(self)
        for entry in semseg_entries():
            self.model_combo.addItem(entry.name, entry.name)
            self.model_combo.setItemData(self.model_combo.count() - 1,
                                         f"{entry.description}\nCheckpoint: {entry.checkpoint_format}",
                                         Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setToolTip("ScaleProtoSeg model: the dataset fixes the class list and the input size")
        row.addWidget(self.model_combo)
        row.addWidget(QLabel("Checkpoint"))
        self.checkpoint_edit = QLineEdit(self)
        self.checkpoint_edit.setReadOnly(True)
        self.checkpoint_edit.setPlaceholderText("choose the model's checkpoint file…")
        self.checkpoint_edit.setMinimumWidth(160)
        row.addWidget(self.checkpoint_edit, 1)
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("Official whole-module pickles are read without running their code; "
                                      "state dicts, converted files and safetensors work too")
        row.addWidget(self.browse_button)
        root.addLayout(row)

        row = QHBoxLayout()
        row.addWidget(QLabel("Input size"))
        self.size_spin = QSpinBox(self)
        self.size_spin.setRange(0, 2048)
        self.size_spin.setSingleStep(32)
        self.size_spin.setSpecialValueText("dataset default")
        self.size_spin.setToolTip("Model input size: the square side for Pascal (default 513), the shorter side "
                                  "for ADE20K (default 512) and Cityscapes (default: the image's own size).\n"
                                  "Smaller is faster on a CPU, at some cost in accuracy.")
        row.addWidget(self.size_spin)
        self.run_button = QPushButton("Run on query", self)
        self.run_button.setToolTip("Run the ScaleProtoSeg model on the current query image (on the worker thread)")
        row.addWidget(self.run_button)
        row.addSpacing(12)
        row.addWidget(QLabel("Class"))
        self.class_combo = QComboBox(self)
        self.class_combo.setMinimumContentsLength(24)
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_combo.setToolTip("The class whose group graph is shown; predicted classes first, with their "
                                    "share of the image's pixels")
        self.class_combo.setEnabled(False)
        row.addWidget(self.class_combo, 1)
        root.addLayout(row)
        self.info_label = QLabel("Choose a ScaleProtoSeg checkpoint and press “Run on query”.")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.info_label)

        self.view = ProtoGraphView(self)
        self.view.setMinimumHeight(880)  # graph and maps; the tab scrolls
        root.addWidget(self.view, 1)

        self.run_button.clicked.connect(self._on_run_clicked)
        self.browse_button.clicked.connect(self.browseRequested)
        self.class_combo.currentIndexChanged.connect(self._on_class_picked)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._update_run_button())
        self._update_run_button()

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt override
        # The word-wrapped labels make the layout height-for-width, and the tab's scroll area
        # would then size the panel from the plots' preferred heights (far taller than the
        # window). -1: no preference, so the panel fills the viewport (down to its minimum).
        return -1

    # ------------------------------------------------------------------------- state
    @property
    def model_name(self) -> str:
        return self.model_combo.currentData() or ""

    @property
    def checkpoint(self) -> str:
        return self.checkpoint_edit.text().strip()

    @property
    def input_size(self) -> Optional[int]:
        return self.size_spin.value() or None

    def set_model(self, name: str) -> None:
        index = self.model_combo.findData(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)

    def set_checkpoint(self, path: str | Path) -> None:
        self.checkpoint_edit.setText(str(path) if path else "")
        self.checkpoint_edit.setToolTip(str(path) if path else "")
        self._update_run_button()

    def set_running(self, running: bool, message: str = "") -> None:
        self.state = STATE_RUNNING if running else STATE_IDLE
        self._update_run_button()
        if message:
            self._set_info(message)

    def mark_stale(self, reason: str) -> None:
        """The query changed after the shown result was computed."""
        if self.result is not None and reason != self._stale:
            self._stale = reason
            self._show_info()

    def _update_run_button(self) -> None:
        if self.state == STATE_RUNNING:
            self.run_button.setText("Cancel")
            self.run_button.setToolTip("Cancel the ScaleProtoSeg run (the previous graph is kept)")
            self.run_button.setEnabled(True)
            return
        self.run_button.setText("Run on query")
        ready = bool(self.model_name) and bool(self.checkpoint)
        self.run_button.setEnabled(ready)
        if not self.model_name:
            tip = "fssgui.models.scaleprotoseg is not available in this build"
        elif not self.checkpoint:
            tip = "Choose the model's checkpoint file first (Browse…)"
        else:
            tip = "Run the ScaleProtoSeg model on the current query image (on the worker thread)"
        self.run_button.setToolTip(tip)

    def _on_run_clicked(self) -> None:
        if self.state == STATE_RUNNING:
            self.cancelRequested.emit()
        else:
            self.runRequested.emit()

    # ------------------------------------------------------------------------ results
    def show_result(self, result: PrototypeRunResult) -> None:
        """A new run: fill the class picker (default = the predicted class with the largest area)."""
        self.result = result
        self._stale = ""
        names = result.run.head.class_names
        prototypes = result.run.head.class_prototypes
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        predicted = {c for c, _ in result.class_shares}
        for c, share in result.class_shares:
            self.class_combo.addItem(f"{names[c]} · {share:.1%} of the image", c)
        others = [c for c in range(len(names)) if c not in predicted]
        if others:
            self.class_combo.insertSeparator(self.class_combo.count())
            for c in others:
                self.class_combo.addItem(f"{names[c]} (not predicted)", c)
        for i in range(self.class_combo.count()):
            c = self.class_combo.itemData(i)
            if c is not None and not prototypes[c]:
                item = self.class_combo.model().item(i)
                item.setEnabled(False)
                item.setToolTip(f"{names[c]} has no prototypes in this model")
        self.class_combo.setCurrentIndex(max(0, self.class_combo.findData(result.explanation.class_index)))
        self.class_combo.setEnabled(True)
        self.class_combo.blockSignals(False)
        self.view.set_result(result.explanation)
        self._show_info()
        self.classShown.emit(result.explanation.class_index)
        self.resultShown.emit(result)

    def select_class(self, class_index: int) -> None:
        """Show the graph of model class ``class_index`` (as picking it in the combo does)."""
        index = self.class_combo.findData(class_index)
        if index < 0:
            raise KeyError(f"class {class_index} is not in the picker")
        self.class_combo.setCurrentIndex(index)

    def _on_class_picked(self, index: int) -> None:
        if self.result is None or index < 0:
            return
        class_index = self.class_combo.itemData(index)
        shown = self.view.result
        if class_index is None or (shown is not None and shown.class_index == class_index):
            return
        threshold = shown.threshold if shown is not None else self.result.explanation.threshold
        from ..explain.prototypes import explain_class

        self.view.set_result(explain_class(self.result.run, int(class_index), threshold))
        self._show_info()
        self.classShown.emit(int(class_index))

    def _set_info(self, text: str) -> None:
        self.info_label.setText(text)

    def _show_info(self) -> None:
        result = self.result
        if result is None:
            return
        info = result.model_info
        scales = info.get("prototypes_per_scale") or []
        text = (f"<b>{html.escape(result.model)}</b> ({html.escape(Path(result.checkpoint).name)}): "
                f"{info.get('dataset', '?')}, stage {info.get('stage', '?')}, {info.get('num_classes', '?')} classes, "
                f"{info.get('num_prototypes', '?')} prototypes ({' / '.join(str(s) for s in scales)} per scale)")
        if info.get("groups_per_class"):
            text += (f", {info['groups_per_class']} groups per class, α = {info.get('threshold')}, "
                     f"{info.get('used_prototypes', '?')} prototypes active")
        h, w = result.run.image_hw
        ih, iw = result.run.input_hw
        text += f"<br>query {w}×{h}, run at {iw}×{ih} on {result.device} in {result.seconds:.1f} s"
        if self._stale:
            text += f"<br><span style='color:#d9822b'>⚠ {html.escape(self._stale)}</span>"
        self._set_info(text)
