"""The Prototypes tab: pick a ScaleProtoSeg model and checkpoint, run it on the query, show the
class's group graph (:class:`~fssgui.gui.prototypes.graph_view.ProtoGraphView`) with a class picker.

The panel only holds the controls and shows results; the window owns the job (channel
``"prototypes"`` on the one worker thread, with the window's progress bar, cancel and error log):

* ``runRequested`` -> the window submits :func:`fssgui.gui.jobs.prototypes` for the query image;
* :meth:`show_result` gets the :class:`~fssgui.prototypes.graph.PrototypeRunResult` (one forward + the
  graph of the class predicted on the largest area);
* picking another class recomputes its graph from the stored activations (cheap numpy, no model),
  keeping the threshold α chosen on the graph's slider;
* two inner tabs: "Group graph" (the graph, the maps and the pixel inspector: click the map) and
  "Compare classes" (:class:`~fssgui.gui.prototypes.compare_view.ClassCompareView`, shared normalisation);
* selecting a prototype (its graph node, a row of the inspector's prototype or nearest table)
  opens the detail pane beside the tabs (:class:`~fssgui.gui.prototypes.detail_pane.PrototypeDetailPane`):
  its push source image with boxes, its self-activation and its nearest patches in a dataset
  folder; the window runs the pane's model jobs on its worker thread
  (``detail_pane.attach_worker``);
* "Export…" writes the shown class in the one export format that ``fssgui protos`` writes too
  (:func:`fssgui.prototypes.export.export_class`: graph JSON and PNG, grid maps, overlays,
  group-assignment map, official ``proto_info.json`` lists), plus the comparison and the
  inspected cell, with the run's provenance; failures are shown in the tab and sent to the
  window's error log (``errorRaised``), never raised.

The tab's plots and tables follow the app's theme (see the two views); the panel's own messages
(errors, the stale-result warning) are coloured for the theme in use and recoloured on a switch.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...models.registry import TASK_SEMSEG, list_models
from ...prototypes.graph import PrototypeRunResult
from .compare_view import ClassCompareView
from .detail_pane import PrototypeDetailPane
from .graph_view import ProtoGraphView
from .inspector import message_html, text_label

STATE_IDLE, STATE_RUNNING = "idle", "running"


class PrototypePanel(QWidget):
    """Controls of the Prototypes tab above the group-graph view (see the module docstring)."""

    runRequested = Signal()
    cancelRequested = Signal()
    browseRequested = Signal()
    classShown = Signal(int)  # model class index now shown in the graph
    resultShown = Signal(object)  # PrototypeRunResult
    errorRaised = Signal(str)  # a one-line message for the window's error log
    exported = Signal(list)  # the files written by an export

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.result: Optional[PrototypeRunResult] = None
        self.state = STATE_IDLE
        self._stale = ""
        self._status: tuple[str, bool] = ("", False)  # the status message (plain text) and whether it is an error
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        root.setSpacing(4)

        row = QHBoxLayout()
        row.addWidget(QLabel("Model"))
        self.model_combo = QComboBox(self)
        for entry in list_models(TASK_SEMSEG):
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
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip("Write the shown class into a folder, in the format of `fssgui protos`: the "
                                      "graph (JSON and PNG), the maps, the overlays, the group-assignment map and "
                                      "the official proto_info.json lists")
        self.export_button.setEnabled(False)
        row.addWidget(self.export_button)
        root.addLayout(row)
        self.export_dir = ""
        self.info_label = text_label("Choose a ScaleProtoSeg checkpoint and press “Run on query”.")
        root.addWidget(self.info_label)

        self.status_label = text_label()
        self.status_label.setVisible(False)
        root.addWidget(self.status_label)

        self.view = ProtoGraphView(self)
        self.compare_view = ClassCompareView(self)
        self.inner_tabs = QTabWidget(self)
        self.inner_tabs.setDocumentMode(True)
        self.inner_tabs.addTab(self.view, "Group graph")
        self.inner_tabs.addTab(self.compare_view, "Compare classes")
        self.inner_tabs.setTabToolTip(0, "The class's group graph, its maps, and the pixel inspector (click the map)")
        self.inner_tabs.setTabToolTip(1, "Failure analysis: two classes side by side with shared colour ranges")
        self.inner_tabs.setMinimumHeight(1310)  # graph and maps; the tab scrolls
        # the prototype detail pane opens beside the tabs when a prototype is selected
        self.detail_pane = PrototypeDetailPane(self)
        self.detail_pane.size_provider = lambda: self.input_size
        self.detail_pane.setVisible(False)
        self.detail_splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.detail_splitter.addWidget(self.inner_tabs)
        self.detail_splitter.addWidget(self.detail_pane)
        self.detail_splitter.setStretchFactor(0, 3)
        self.detail_splitter.setStretchFactor(1, 1)
        self.detail_splitter.setChildrenCollapsible(False)
        root.addWidget(self.detail_splitter, 1)

        self.run_button.clicked.connect(self._on_run_clicked)
        self.browse_button.clicked.connect(self.browseRequested)
        self.class_combo.currentIndexChanged.connect(self._on_class_picked)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._update_run_button())
        self.export_button.clicked.connect(self.choose_export_folder)
        self.view.thresholdChanged.connect(lambda alpha: self.compare_view.set_threshold(alpha if alpha > 0 else None))
        self.compare_view.errorRaised.connect(self._report_error)
        self.view.cellClicked.connect(lambda _i, _j: self.reveal_inspector())
        self.view.prototypeSelected.connect(self.show_prototype_detail)
        self.view.thresholdChanged.connect(lambda alpha: self.detail_pane.set_threshold(alpha if alpha > 0 else None))
        self.detail_pane.errorRaised.connect(self.errorRaised)
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
            tip = "no ScaleProtoSeg model is registered"
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
        self.view.clear_inspection()  # a new image: the old cell means nothing on it
        self.detail_pane.set_run(result.run, result.explanation.threshold)  # closes the old run's detail
        self.view.set_result(result.explanation)
        self.export_button.setEnabled(True)
        self._set_status("")
        shown = result.explanation.class_index
        items = [(f"{names[c]} · {share:.1%}", c) for c, share in result.class_shares if prototypes[c]]
        items += [(f"{names[c]} (not predicted)", c) for c in others if prototypes[c]]
        second = next((c for c, _ in result.class_shares if c != shown and prototypes[c]), None)
        self.compare_view.set_run(result.run, result.explanation.threshold, items, shown, second)
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
        from ...prototypes.graph import explain_class

        self.view.set_result(explain_class(self.result.run, int(class_index), threshold))
        if self.compare_view.second_combo.currentData() != class_index:
            self.compare_view.set_classes(int(class_index), self.compare_view.second_combo.currentData())
        self._show_info()
        self.classShown.emit(int(class_index))

    def show_prototype_detail(self, index: int):
        """Open the detail pane on prototype ``index`` (any class) of the shown run, at the
        graph's threshold; returns its :class:`~fssgui.prototypes.detail.PrototypeDetail`."""
        if self.result is None:
            return None
        shown = self.view.result
        threshold = shown.threshold if shown is not None else self.result.explanation.threshold
        try:
            return self.detail_pane.show_prototype(self.result.run, int(index), threshold)
        except Exception as exc:  # a bad index or metadata: reported, never a crash
            self._report_error(f"prototype detail of p{index} failed: {exc}")
            return None

    def reveal_inspector(self) -> None:
        """After a click on the map, scroll the enclosing scroll area (the window's tab scrolls)
        just enough to show the inspector's first rows, keeping most of the map in view."""
        scroll = self.parentWidget()
        while scroll is not None and not isinstance(scroll, QScrollArea):
            scroll = scroll.parentWidget()
        if scroll is None or scroll.widget() is None:
            return
        inspector = self.view.inspector
        top = inspector.mapTo(scroll.widget(), inspector.rect().topLeft())
        scroll.ensureVisible(top.x(), top.y() + min(inspector.height(), 230), 0, 8)

    # ------------------------------------------------------------------------- export
    def choose_export_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the prototype maps and weights to", self.export_dir
                                                  or str(Path.home()))
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str | Path) -> Optional[list[Path]]:
        """Export the shown class (see the module docstring); returns the files, None on failure
        (the message is shown in the tab and emitted as ``errorRaised``)."""
        explanation = self.view.result
        if explanation is None:
            self._report_error("nothing to export: run the model first")
            return None
        from ...prototypes.export import export_class

        try:
            files = export_class(explanation, folder, masked=self.view.mask_check.isChecked(),
                                 comparison=self.compare_view.current_comparison(),
                                 inspection=self.view.inspection, provenance=self._provenance())
        except Exception as exc:  # a failed export is reported in the window, never a crash
            self._report_error(f"export to {folder} failed: {exc}")
            return None
        self.export_dir = str(folder)
        self._set_status(f"exported {len(files)} files to {folder}")
        self.exported.emit(files)
        return files

    def _provenance(self) -> dict:
        """The shown run's model, checkpoint and device, and the image it ran on (the query)."""
        if self.result is None:
            return {}
        return {**self.result.provenance(), "image": "the query image of the open episode"}

    def _report_error(self, message: str) -> None:
        self._set_status(message, error=True)
        self.errorRaised.emit(message)

    def _set_status(self, message: str, error: bool = False) -> None:
        """Show ``message`` (plain text) under the controls; an error in the theme's error colour."""
        self._status = (message, error)
        self.status_label.setText(message_html(message, "error", self.palette()) if error else html.escape(message))
        self.status_label.setVisible(bool(message))

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # theme switch: recolour the messages
            if self._status[1]:
                self._set_status(*self._status)
            if self._stale:
                self._show_info()

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
            text += "<br>" + message_html(f"⚠ {self._stale}", "warning", self.palette())
        self._set_info(text)
