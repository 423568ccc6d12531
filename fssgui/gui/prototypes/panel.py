"""The Prototypes tab: pick a ScaleProtoSeg model and checkpoint, run it on the query, show the
class's group graph (:class:`~fssgui.gui.prototypes.graph_view.ProtoGraphView`) with a class picker.

The panel owns its jobs: "Run on query" submits :func:`fssgui.pipeline.jobs.prototypes` for the
window's query image on the device worker (the window's status bar follows it, errors go to the
window's log through ``errorRaised``); Cancel cancels it:

* :meth:`show_result` gets the :class:`~fssgui.prototypes.graph.PrototypeRunResult` (one forward + the
  graph of the class predicted on the largest area);
* picking another class recomputes its graph from the stored activations (no model, but full-size
  upsampling: on the compute pool, see :meth:`ProtoGraphView.request`), keeping the threshold α
  chosen on the graph's slider;
* two inner tabs: "Group graph" (the graph, the maps and the pixel inspector: click the map) and
  "Compare classes" (:class:`~fssgui.gui.prototypes.compare_view.ClassCompareView`, shared normalisation);
* selecting a prototype (its graph node, a row of the inspector's prototype or nearest table)
  opens the detail pane beside the tabs (:class:`~fssgui.gui.prototypes.detail_pane.PrototypeDetailPane`):
  its push source image with boxes, its self-activation and its nearest patches in a dataset
  folder; the pane's model jobs run on the device worker with the shown result's model;
* "Export…" writes the shown class in the one export format that ``fssgui protos`` writes too
  (:func:`fssgui.prototypes.export.export_class`: graph JSON and PNG, grid maps, overlays,
  group-assignment map, official ``proto_info.json`` lists), plus the comparison and the
  inspected cell, with the run's provenance, written on the file pool; failures are shown in the
  tab and sent to the window's error log (``errorRaised``), never raised.

The tab's plots and tables follow the app's theme (see the two views); the panel's own messages
(errors, the stale-result warning) are coloured for the theme in use and recoloured on a switch.
"""
from __future__ import annotations

import enum
import html
from pathlib import Path
from typing import Callable, Optional

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
from ...pipeline import ModelSpec, jobs
from ...prototypes.graph import PrototypeRunResult
from ...prototypes.run import image_key
from .compare_view import ClassCompareView
from .detail_pane import PrototypeDetailPane
from .graph_view import ProtoGraphView
from ..workers import DeviceWorker, JobHandle, LatestJob, WorkerPool
from .inspector import message_html, text_label

CHECKPOINT_FILTER = "Checkpoints (*.pt *.pth *.ckpt *.tar *.bin *.safetensors);;All files (*)"


class PanelState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"


class PrototypePanel(QWidget):
    """Controls of the Prototypes tab above the group-graph view (see the module docstring)."""

    classShown = Signal(int)  # model class index now shown in the graph
    resultShown = Signal(object)  # PrototypeRunResult
    errorRaised = Signal(str)  # a one-line message for the window's error log
    message = Signal(str)  # a line for the window's log
    exported = Signal(list)  # the files written by an export

    def __init__(self, device: Optional[DeviceWorker] = None, compute: Optional[WorkerPool] = None,
                 files: Optional[WorkerPool] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.device = device
        self.compute = compute if compute is not None else WorkerPool("prototype-maps", 1, self)
        self.files = files if files is not None else self.compute
        self.job = LatestJob()  # the model run on the query
        self.query_image = None  # the window's query (set_query)
        self.spec: Optional[ModelSpec] = None  # the model of the result shown (detail jobs use it)
        self.device_choice: Callable[[], str] = lambda: "auto"  # the window's device picker
        self.checkpoint_folder: Callable[[], str] = lambda: ""  # where Browse… starts without a checkpoint
        self.result: Optional[PrototypeRunResult] = None
        self.state = PanelState.IDLE
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

        self.view = ProtoGraphView(self.compute, self)
        self.compare_view = ClassCompareView(self.compute, self)
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
        self.browse_button.clicked.connect(self.choose_checkpoint)
        self.class_combo.currentIndexChanged.connect(self._on_class_picked)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._update_run_button())
        self.export_button.clicked.connect(self.choose_export_folder)
        self.view.thresholdChanged.connect(lambda alpha: self.compare_view.set_threshold(alpha if alpha > 0 else None))
        self.compare_view.errorRaised.connect(self._report_error)
        self.view.cellClicked.connect(lambda _i, _j: self.reveal_inspector())
        self.view.prototypeSelected.connect(self.show_prototype_detail)
        self.view.thresholdChanged.connect(lambda alpha: self.detail_pane.set_threshold(alpha if alpha > 0 else None))
        self.detail_pane.errorRaised.connect(self.errorRaised)
        self.detail_pane.attach_submit(self._submit_detail)
        self.view.resultShown.connect(self._on_graph_shown)
        self.view.errorRaised.connect(self._report_error)
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
        self.state = PanelState.RUNNING if running else PanelState.IDLE
        self._update_run_button()
        if message:
            self._set_info(message)

    def choose_checkpoint(self) -> None:
        start = str(Path(self.checkpoint).parent) if self.checkpoint else (self.checkpoint_folder() or str(Path.home()))
        path, _ = QFileDialog.getOpenFileName(self, "ScaleProtoSeg checkpoint", start, CHECKPOINT_FILTER)
        if path:
            self.set_checkpoint(str(Path(path).resolve()))
            self.message.emit(f"ScaleProtoSeg checkpoint: {self.checkpoint}")

    # ------------------------------------------------------------------------- jobs
    def set_query(self, image) -> None:
        """The window's query image (what Run explains); a result of another image is marked stale."""
        self.query_image = image
        if self.result is not None and (image is None or image_key(image) != self.result.image_key):
            self.mark_stale("computed on a previous query image: press Run on query again")

    def run(self) -> Optional[JobHandle]:
        """Run the chosen ScaleProtoSeg model on the query, on the device worker; returns the job."""
        problem = ("no episode is open: the Prototypes tab explains the query image" if self.query_image is None
                   else "no ScaleProtoSeg model is available in this build" if not self.model_name
                   else f"{self.model_name} needs a checkpoint: choose its file in the Prototypes tab (Browse…)"
                   if not self.checkpoint else "no worker thread attached: the model cannot run here"
                   if self.device is None else "")
        if problem:
            self._report_error(problem)
            return None
        spec = ModelSpec(self.model_name, self.checkpoint, self.device_choice())
        handle = self.job.start(self.device.submit(jobs.prototypes, spec, self.query_image, self.input_size,
                                                   description=f"Prototypes ({spec.name})"))
        handle.finished.connect(lambda result: self._ran(spec, result))
        handle.failed.connect(lambda message, _trace: (
            self.set_running(False, message_html(f"failed: {message}", "error", self.palette())),
            self.errorRaised.emit(f"prototypes failed: {message}")))
        handle.cancelled.connect(lambda: self.set_running(False, "cancelled; the previous graph is kept"))
        self.set_running(True, f"running {spec.name} on the query…")
        return handle

    def cancel(self) -> None:
        if self.job.running:
            self.job.cancel()
            self.set_running(True, "cancelling…")

    def _ran(self, spec: ModelSpec, result: PrototypeRunResult) -> None:
        """The model ran: draw the graph's images on the compute pool, then show the result."""
        from ...prototypes.overlays import explanation_images

        masked = self.view.mask_check.isChecked()
        handle = self.job.start(self.compute.submit(lambda ctx: explanation_images(result.explanation, masked),
                                                    description="draw the prototype maps"))
        handle.finished.connect(lambda images: self._show_ran(spec, result, images))
        handle.failed.connect(lambda message, _trace: (self.set_running(False), self._report_error(message)))
        handle.cancelled.connect(lambda: self.set_running(False, "cancelled; the previous graph is kept"))

    def _show_ran(self, spec: ModelSpec, result: PrototypeRunResult, images) -> None:
        self.set_running(False)
        self.spec = spec
        self.show_result(result, images)
        self.message.emit(f"prototypes: {result.model} on the query in {result.seconds:.1f} s on {result.device}; "
                          f"class {result.explanation.class_name}")
        if self.query_image is None or image_key(self.query_image) != result.image_key:
            self.mark_stale("computed on another query image: press Run on query again")

    def _submit_detail(self, request) -> Optional[JobHandle]:
        """A prototype-detail request, run with the shown result's model on the device worker."""
        if self.spec is None or self.device is None:
            self._report_error("prototype detail: run the ScaleProtoSeg model on the query first")
            return None
        return self.device.submit(jobs.prototype_detail, self.spec, request, description=request.description)

    def mark_stale(self, reason: str) -> None:
        """The query changed after the shown result was computed."""
        if self.result is not None and reason != self._stale:
            self._stale = reason
            self._show_info()

    def _update_run_button(self) -> None:
        if self.state == PanelState.RUNNING:
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
        if self.state == PanelState.RUNNING:
            self.cancel()
        else:
            self.run()

    # ------------------------------------------------------------------------ results
    def show_result(self, result: PrototypeRunResult, images=None) -> None:
        """A new run: fill the class picker (default = the predicted class with the largest area).
        ``images``: the graph's images drawn on a worker (else the graph view draws them)."""
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
        self.view.set_result(result.explanation, images=images)
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
        self.view.request(class_index=int(class_index))  # computed on the pool; shown by _on_graph_shown

    def _on_graph_shown(self, explanation) -> None:
        """The graph view shows a recomputed class or threshold."""
        class_index = explanation.class_index
        combo_index = self.class_combo.findData(class_index)
        if combo_index >= 0 and self.class_combo.currentIndex() != combo_index:
            self.class_combo.blockSignals(True)
            self.class_combo.setCurrentIndex(combo_index)
            self.class_combo.blockSignals(False)
        if self.compare_view.first_combo.currentData() != class_index:
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

    def export_to(self, folder: str | Path) -> Optional[JobHandle]:
        """Export the shown class (see the module docstring) on the file pool; returns the job
        (its result: the files written), None when there is nothing to export. A failure is shown in
        the tab and emitted as ``errorRaised``."""
        explanation = self.view.result
        if explanation is None:
            self._report_error("nothing to export: run the model first")
            return None
        from ...prototypes.compare import compare_classes
        from ...prototypes.export import export_class

        comparison, choice = self.compare_view.current_comparison(), self.compare_view.current_choice()
        masked, inspection, provenance = self.view.mask_check.isChecked(), self.view.inspection, self._provenance()

        def export(ctx) -> list[Path]:
            shown = comparison
            if shown is None and choice is not None:  # asked for, not computed yet: computed here
                shown = compare_classes(explanation.run, choice[0], choice[1], choice[2], masked=choice[3])
            return export_class(explanation, folder, masked=masked, comparison=shown, inspection=inspection,
                                provenance=provenance)

        handle = self.files.submit(export, description=f"exporting {explanation.class_name}")
        self._set_status(f"exporting to {folder}…")
        handle.finished.connect(lambda files: self._exported(folder, files))
        handle.failed.connect(lambda message, _trace: self._report_error(f"export to {folder} failed: {message}"))
        return handle

    def _exported(self, folder, files: list[Path]) -> None:
        self.export_dir = str(folder)
        self._set_status(f"exported {len(files)} files to {folder}")
        self.exported.emit(files)

    def _provenance(self) -> dict:
        """The shown run's model, checkpoint and device, and the image it ran on (the query)."""
        if self.result is None:
            return {}
        return {**self.result.provenance(), "image": "the query image of the open episode"}

    # ------------------------------------------------------------------------- settings
    def apply_settings(self, s) -> None:
        if s.proto_model:
            self.set_model(s.proto_model)
        if s.proto_checkpoint and Path(s.proto_checkpoint).is_file():
            self.set_checkpoint(s.proto_checkpoint)
        self.size_spin.setValue(max(0, int(s.proto_size)))
        if s.proto_dataset_dir and Path(s.proto_dataset_dir).is_dir():
            self.detail_pane.set_dataset_folder(s.proto_dataset_dir, announce=False)

    def store_settings(self, s) -> None:
        s.proto_model = self.model_name or s.proto_model
        s.proto_checkpoint = self.checkpoint
        s.proto_size = int(self.size_spin.value())
        s.proto_dataset_dir = self.detail_pane.dataset_folder or s.proto_dataset_dir

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
