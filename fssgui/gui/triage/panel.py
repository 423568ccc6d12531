"""The dataset panel: open a dataset (or a results folder of ``fssgui evaluate``), sweep it on the
device worker, sort and filter the failure table, open an episode in the workspace with R on its
largest error, save it as an episode folder, explain the worst N into one report.

The panel talks to the window through :attr:`TriagePanel.openEpisode` ``(Episode, region mask or
None, note)`` and a ``model_spec()`` callable (the toolbar's model, checkpoint and device). Its model
jobs run on the device worker, its file reads on a worker pool, each followed on its own job handle
(:mod:`fssgui.gui.workers`); every job function is a plain call into :mod:`fssgui.triage` (Qt-free).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QItemSelectionModel, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...errors import FssguiError
from ...evaluate.episodes import EpisodeSource
from ...pipeline import FALSE_NEGATIVE, FALSE_POSITIVE, ModelSpec
from ...pipeline.regions import region_title
from ...triage.results import FailureRecord, TriageResults, open_results
from ...triage.sweep import DatasetChoice, SweepRequest, causal_pair, results_folder, with_method
from .dataset_form import DatasetForm
from .table_model import FailureFilter, FailureTableModel
from ..workers import DeviceWorker, JobHandle, LatestJob, WorkerPool
from .thumbnails import ThumbnailCache

THUMBNAIL_SIDE = 48
REFRESH_MS = 2000  # the table follows a running sweep at this interval


def _explainers() -> list[str]:
    from ...explain.registry import EXPLAINER_NAMES

    return list(EXPLAINER_NAMES)


def _worker_job(call: Callable, request):
    """A worker job ``fn(ctx, cache)`` running ``call(request, ...)`` of :mod:`fssgui.triage` with the
    worker's resident models, the job's progress and cancel flag, and its log."""

    def job(ctx, cache):
        return call(request, load_model=lambda spec: cache.get(spec, ctx.log), progress=ctx.progress,
                    cancelled=ctx.cancelled, log=ctx.log)

    return job


class TriagePanel(QWidget):
    openEpisode = Signal(object, object, str)  # Episode, R (bool [H, W]) or None, note
    resultsShown = Signal(object)  # TriageResults (or None)
    jobEnded = Signal(str, bool, str)  # kind ("sweep", "open", "save", "report"), ok, message
    message = Signal(str)
    errorRaised = Signal(str)

    def __init__(self, device: DeviceWorker, pool: WorkerPool, model_spec: Callable[[], ModelSpec],
                 results_base: Path, parent: Optional[QWidget] = None, unattended: bool = False) -> None:
        super().__init__(parent)
        self.device = device
        self.pool = pool
        self._window_spec = model_spec
        self.results_base = Path(results_base)
        self.unattended = unattended
        self.choice: Optional[DatasetChoice] = None
        self.folder: Optional[Path] = None
        self.spec_override: Optional[ModelSpec] = None  # the model of a results folder opened as it is
        self.results: Optional[TriageResults] = None
        self.source: Optional[EpisodeSource] = None
        self.jobs: dict[JobHandle, str] = {}  # the model jobs running: handle -> kind (sweep, open, save, report)
        self.read_job = LatestJob()  # the results folder being read
        self.thumbnails = ThumbnailCache(None, self, side=THUMBNAIL_SIDE)  # its own pool: many short jobs
        self.model = FailureTableModel(self.thumbnails, self)
        self.proxy = FailureFilter(self)
        self.proxy.setSourceModel(self.model)
        self._refresh = QTimer(self)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(lambda: self.reload(quiet=True))
        self._build()

    # ---------------------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.form = DatasetForm(self)
        layout.addWidget(self.form)
        run = QHBoxLayout()
        self.load_button = QPushButton("Open dataset", self)
        self.load_button.setToolTip("Show what was already swept for this dataset and model")
        self.results_button = QPushButton("Open results folder…", self)
        self.results_button.setToolTip("A folder of fssgui evaluate or fssgui triage (torchrun results included)")
        self.sweep_button = QPushButton("▶ Sweep", self)
        self.sweep_button.setToolTip("Predict every episode not swept yet (resumes where it stopped)")
        self.cancel_button = QPushButton("✕ Cancel", self)
        self.metrics_check = QCheckBox("with IAUC/DAUC of", self)
        self.method_combo = QComboBox(self)
        self.method_combo.addItems(_explainers())
        self.method_combo.setCurrentText("affex-signed")
        self.measure_combo = QComboBox(self)
        self.measure_combo.addItems(["miou", "conf"])
        self.model_label = QLabel("", self)
        for widget in (self.load_button, self.results_button, self.sweep_button, self.cancel_button,
                       self.metrics_check, self.method_combo, self.measure_combo):
            run.addWidget(widget)
        run.addWidget(self.model_label, 1)
        layout.addLayout(run)
        status = QHBoxLayout()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.hide()  # shown while a job of the panel runs
        self.status_label = QLabel("Open a dataset (File ▸ Open dataset…).", self)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        status.addWidget(self.progress)
        status.addWidget(self.status_label, 1)
        layout.addLayout(status)
        self.summary_label = QLabel("", self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.summary_label)
        filters = QHBoxLayout()
        self.class_combo = QComboBox(self)
        self.class_combo.addItem("all classes", "")
        self.iou_min = QDoubleSpinBox(self)
        self.iou_max = QDoubleSpinBox(self)
        for spin, value in ((self.iou_min, 0.0), (self.iou_max, 1.0)):
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setDecimals(2)
            spin.setValue(value)
        self.empty_check = QCheckBox("empty prediction", self)
        self.tiny_check = QCheckBox("support mask tiny", self)
        self.shown_label = QLabel("", self)
        for widget in (QLabel("Class"), self.class_combo, QLabel("IoU from"), self.iou_min, QLabel("to"),
                       self.iou_max, self.empty_check, self.tiny_check):
            filters.addWidget(widget)
        filters.addWidget(self.shown_label, 1)
        layout.addLayout(filters)
        self.view = QTableView(self)
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.view.verticalHeader().setDefaultSectionSize(THUMBNAIL_SIDE + 6)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.sort_by("iou")  # the worst first until the user sorts otherwise
        layout.addWidget(self.view, 1)
        actions = QHBoxLayout()
        self.error_combo = QComboBox(self)
        self.error_combo.addItem("R = largest false negative", FALSE_NEGATIVE)
        self.error_combo.addItem("R = largest false positive", FALSE_POSITIVE)
        self.open_button = QPushButton("Open in workspace", self)
        self.open_button.setToolTip("Double-click a row: the episode opens with R on its largest error")
        self.save_button = QPushButton("Save as episode folder…", self)
        self.worst_spin = QSpinBox(self)
        self.worst_spin.setRange(1, 1000)
        self.worst_spin.setValue(10)
        self.report_button = QPushButton("Explain the worst → report…", self)
        self.report_button.setToolTip("Explain the N lowest-IoU episodes with the method above into one HTML + PDF")
        for widget in (self.error_combo, self.open_button, self.save_button, QLabel("  Worst"), self.worst_spin,
                       self.report_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        layout.addLayout(actions)

        self.load_button.clicked.connect(lambda: self.load())
        self.results_button.clicked.connect(lambda: self.open_results_folder())
        self.sweep_button.clicked.connect(lambda: self.sweep())
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button.clicked.connect(lambda: self.open_selected())
        self.save_button.clicked.connect(lambda: self.save_selected())
        self.report_button.clicked.connect(lambda: self.explain_worst())
        self.view.doubleClicked.connect(lambda index: self.open_record(self._record_at(index.row())))
        self.form.changed.connect(self._on_form_changed)
        for signal in (self.class_combo.currentIndexChanged, self.iou_min.valueChanged, self.iou_max.valueChanged,
                       self.empty_check.toggled, self.tiny_check.toggled):
            signal.connect(lambda *_: self.apply_filters())
        self._update_buttons()

    # ------------------------------------------------------------------------- state
    def model_spec(self) -> ModelSpec:
        """The results folder's model when one was opened as it is, else the toolbar's."""
        window = self._window_spec()
        if self.spec_override is not None:
            return ModelSpec(self.spec_override.name, self.spec_override.checkpoint, window.device)
        return window

    def _running(self, kind: str) -> bool:
        return kind in self.jobs.values()

    def _update_buttons(self) -> None:
        has_results = self.results is not None
        self.progress.setVisible(bool(self.jobs))
        sweeping = self._running("sweep")
        self.sweep_button.setEnabled(not sweeping)
        self.cancel_button.setEnabled(bool(self.jobs))
        for button in (self.open_button, self.save_button, self.report_button):
            button.setEnabled(has_results)
        spec = self.model_spec()
        where = " (from the results folder)" if self.spec_override is not None else ""
        self.model_label.setText(f"  model {spec.name}{where}"
                                 + (f", checkpoint {Path(spec.checkpoint).name}" if spec.checkpoint else ""))

    def _error(self, text: str) -> None:
        self.status_label.setText(f"<span style='color:#e0464e'>{html.escape(text)}</span>")
        self.errorRaised.emit(text)

    def _on_form_changed(self) -> None:
        self.spec_override = None  # a dataset chosen in the form is swept with the toolbar's model
        self._update_buttons()

    # ------------------------------------------------------------------ opening
    def open_dataset(self, choice: DatasetChoice) -> None:
        """Fill the form with ``choice`` and show what was already swept of it."""
        self.form.set_choice(choice)
        self.load()

    def load(self, wait: bool = False) -> bool:
        """Read the results folder of the form's dataset and the current model (if any)."""
        try:
            choice = self.form.choice()
            spec = self.model_spec()
            folder = results_folder(self.results_base, choice, spec)
            source = EpisodeSource(choice.root, choice.layout, use_ignore=choice.use_ignore, split=choice.split)
        except FssguiError as exc:
            self._error(str(exc))
            return False
        self.choice, self.folder, self.source = choice, folder, source
        self.thumbnails.set_source(source)
        self._read_folder(folder, wait)
        return True

    def open_results_folder(self, folder: Optional[str | Path] = None, wait: bool = False) -> bool:
        """Open a results folder of ``fssgui evaluate`` / ``fssgui triage`` as it is (its dataset, its
        episodes and its model); a sweep from here resumes it."""
        folder = self._ask_folder(folder, "Results folder (fssgui evaluate --out)")
        if folder is None:
            return False
        try:
            results = open_results(folder)
            if not results.data_root:
                raise FssguiError(f"{folder}: the folder does not say where its dataset is")
            shots = results.settings.get("shots")
            choice = DatasetChoice(root=results.data_root, layout=results.layout,
                                   episodes=str(Path(folder) / "episodes.csv"), shots=shots,
                                   fold=results.settings.get("fold"), seed=int(results.settings.get("seed") or 0),
                                   use_ignore=bool(results.settings.get("ignore_label_255", True)))
            source = EpisodeSource(choice.root, choice.layout, use_ignore=choice.use_ignore)
        except FssguiError as exc:
            self._error(str(exc))
            return False
        self.form.set_choice(choice)
        self.spec_override = ModelSpec(results.model, results.checkpoint)
        self.choice, self.folder, self.source = choice, Path(folder), source
        self.thumbnails.set_source(source)
        self._read_folder(Path(folder), wait)
        return True

    def _ask_folder(self, folder: Optional[str | Path], title: str) -> Optional[str | Path]:
        """``folder``, or the one the user picks (None: cancelled, or no dialog when unattended)."""
        if folder is not None:
            return folder
        if self.unattended:
            return None
        return QFileDialog.getExistingDirectory(self, title) or None

    def _read_folder(self, folder: Path, wait: bool) -> None:
        """Read ``folder`` on the pool (the table shows it when done; a newer read replaces this one)."""
        def read(ctx) -> Optional[TriageResults]:
            return open_results(folder) if (folder / "settings.json").is_file() else None

        handle = self.read_job.start(self.pool.submit(read, description=f"reading {folder.name}"))
        handle.finished.connect(lambda results: folder == self.folder and self.show_results(results))
        handle.failed.connect(lambda message, _trace: folder == self.folder and self._error(f"{folder}: {message}"))
        if wait:
            handle.wait()

    def reload(self, quiet: bool = False) -> None:
        if self.folder is not None:
            self._read_folder(self.folder, wait=False)

    def show_results(self, results: Optional[TriageResults]) -> None:
        """Fill the table (keeping the sort and the selection's episode)."""
        selected = self.selected_record()
        self.results = results
        self.model.set_results(results)
        classes = [] if results is None else sorted({r.class_name for r in results.records})
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("all classes", "")
        for name in classes:
            self.class_combo.addItem(name, name)
        self.class_combo.setCurrentIndex(max(0, self.class_combo.findData(current or "")))
        self.class_combo.blockSignals(False)
        self.apply_filters()
        self._show_summary()
        self._fit_columns()
        if results is not None and not self.jobs:
            self.status_label.setText(f"results folder {results.folder}")
        if selected is not None:
            self.select_episode(selected.episode)
        self._update_buttons()
        self.resultsShown.emit(results)

    def _show_summary(self) -> None:
        results = self.results
        if results is None:
            self.summary_label.setText("Nothing swept yet for this dataset and model: press Sweep.")
            return
        c = results.classes
        done = f"{results.predicted_count} of {len(results.records)} episodes predicted"
        if c.miou is None:
            self.summary_label.setText(f"{done}. Press Sweep to predict the others.")
            return
        cells = " · ".join(f"{html.escape(name)} <b>{c.iou[name]:.1f}</b> ({c.episodes[name]})" for name in c.classes)
        self.summary_label.setText(
            f"{done} · <b>mIoU {c.miou:.2f}</b> · FB-IoU {c.fb_iou:.2f} <span style='color:gray'>(IoU per class: "
            f"summed intersection / summed union, x 100)</span><br>{cells}")

    # ---------------------------------------------------------------------- table
    def _fit_columns(self) -> None:
        """Pictures as wide as a thumbnail; the other columns as wide as what they show."""
        for column, spec in enumerate(self.model.columns):
            if spec.kind == "picture":
                header = self.view.horizontalHeader().sectionSizeHint(column)
                self.view.setColumnWidth(column, max(THUMBNAIL_SIDE + 16, header))
            elif spec.kind != "error":
                self.view.resizeColumnToContents(column)

    def apply_filters(self) -> None:
        low, high = sorted((self.iou_min.value(), self.iou_max.value()))
        self.proxy.set_filters(class_name=self.class_combo.currentData() or "", iou_range=(low, high),
                               empty_only=self.empty_check.isChecked(), tiny_only=self.tiny_check.isChecked())
        self.shown_label.setText(f"{self.proxy.rowCount()} of {self.model.rowCount()} episodes shown")

    def sort_by(self, key: str, ascending: bool = True) -> None:
        """Sort the table by a statistic (``iou``, ``false_negative_share``, ...)."""
        order = Qt.SortOrder.AscendingOrder if ascending else Qt.SortOrder.DescendingOrder
        self.view.sortByColumn(self.model.column_index("stat", key), order)

    def visible_records(self) -> list[FailureRecord]:
        """The rows as shown (filtered and sorted)."""
        return [self._record_at(row) for row in range(self.proxy.rowCount())]

    def _record_at(self, proxy_row: int) -> FailureRecord:
        return self.model.record(self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row())

    def selected_record(self) -> Optional[FailureRecord]:
        rows = self.view.selectionModel().selectedRows() if self.view.selectionModel() else []
        return self._record_at(rows[0].row()) if rows else None

    def select_episode(self, episode: int) -> None:
        for row in range(self.proxy.rowCount()):
            if self._record_at(row).episode == episode:
                index = self.proxy.index(row, 0)
                self.view.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                                  | QItemSelectionModel.SelectionFlag.Rows)
                self.view.scrollTo(index)
                return

    # ------------------------------------------------------------------------ jobs
    def _submit(self, kind: str, description: str, function: Callable[[Any, Any], Any]) -> JobHandle:
        queued = self.device.is_busy
        handle = self.device.submit(function, description=description)
        self.jobs[handle] = kind
        handle.progress.connect(self._on_progress)
        handle.finished.connect(lambda result: self._on_finished(kind, result))
        handle.failed.connect(lambda message, _trace: self._on_failed(kind, message))
        handle.cancelled.connect(lambda: self._on_cancelled(kind))
        handle.ended.connect(lambda: (self.jobs.pop(handle, None), self._update_buttons()))
        self.progress.setValue(0)
        self.progress.show()
        if queued:
            self.status_label.setText(f"{description}: queued behind the device's other work")
        self._update_buttons()
        return handle

    def _sweep_request(self, method: Optional[str] = None) -> SweepRequest:
        """The sweep of the open dataset; with ``method``, its IAUC/DAUC (or the metrics of a results
        folder that holds some)."""
        if self.choice is None or self.folder is None:
            raise FssguiError("open a dataset first (File ▸ Open dataset…)")
        request = SweepRequest(self.choice, self.model_spec(), str(self.folder))
        return with_method(request, method, causal_pair(self.measure_combo.currentText())) if method else request

    def sweep(self) -> Optional[JobHandle]:
        """Sweep (or resume) the open dataset on the worker; optionally with IAUC/DAUC of a method."""
        if self.choice is None and not self.load(wait=True):
            return None
        method = self.method_combo.currentText() if self.metrics_check.isChecked() else None
        try:
            request = self._sweep_request(method)
        except FssguiError as exc:
            self._error(str(exc))
            return None
        from ...triage.sweep import run_sweep

        self._refresh.start()
        return self._submit("sweep", f"Sweep {Path(request.dataset.root).name} ({request.spec.name})",
                            _worker_job(run_sweep, request))

    def cancel(self) -> None:
        for handle in list(self.jobs):
            handle.cancel()

    def _diagnosis_job(self, record: FailureRecord, save_to: Optional[Path] = None):
        from ...triage.diagnosis import open_for_diagnosis, save_for_diagnosis

        spec, source, kind = self.model_spec(), self.source, self.error_combo.currentData()

        def job(ctx, cache):
            diagnosis = open_for_diagnosis(cache.get(spec, ctx.log), source, record, kind)
            if save_to is not None:
                return save_for_diagnosis(diagnosis, save_to)
            return diagnosis

        return job

    def open_record(self, record: Optional[FailureRecord]) -> Optional[JobHandle]:
        """Open ``record``'s episode in the workspace with R on its largest error."""
        if record is None or self.source is None:
            self._error("select an episode of the table first")
            return None
        title = region_title(self.error_combo.currentData())
        return self._submit("open", f"Open episode {record.episode} (R = {title})", self._diagnosis_job(record))

    def open_selected(self) -> Optional[JobHandle]:
        return self.open_record(self.selected_record())

    def save_selected(self, folder: Optional[str | Path] = None) -> Optional[JobHandle]:
        """Write the selected episode (R preset) as an episode folder."""
        record = self.selected_record()
        if record is None or self.source is None:
            self._error("select an episode of the table first")
            return None
        folder = self._ask_folder(folder, "Save the episode into a new folder")
        if folder is None:
            return None
        return self._submit("save", f"Save episode {record.episode}", self._diagnosis_job(record, Path(folder)))

    def explain_worst(self, out: Optional[str | Path] = None, count: Optional[int] = None) -> Optional[JobHandle]:
        """Explain the worst episodes (by IoU) with the chosen method into one report in ``out``."""
        from ...triage.batch import BatchRequest, explain_worst

        out = self._ask_folder(out, "Folder of the report")
        if out is None:
            return None
        try:
            request = BatchRequest(self._sweep_request(self.method_combo.currentText()),
                                   int(count or self.worst_spin.value()), str(out))
        except FssguiError as exc:
            self._error(str(exc))
            return None

        return self._submit("report", f"Explain the {request.worst} worst ({request.sweep.method})",
                            _worker_job(explain_worst, request))

    # -------------------------------------------------------------------- job events
    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(1000 * fraction))
        self.status_label.setText(message)

    def _on_finished(self, kind: str, result: object) -> None:
        self.progress.setValue(1000)
        if kind == "sweep":
            self._refresh.stop()
            self.show_results(result)
            text = f"swept: {result.predicted_count} of {len(result.records)} episodes predicted ({result.folder})"
        elif kind == "open":
            text = result.note
            self.openEpisode.emit(result.episode, result.region, result.note)
        elif kind == "save":
            text = f"episode saved: {Path(result).parent}"
        else:
            text = f"report written: {result.files.html}"
            self.reload()
        self.status_label.setText(text)
        self.message.emit(text)
        self.jobEnded.emit(kind, True, text)

    def _on_failed(self, kind: str, message: str) -> None:
        self._refresh.stop()
        self._error(f"{kind} failed: {message}")
        if kind == "sweep":
            self.reload()
        self.jobEnded.emit(kind, False, message)

    def _on_cancelled(self, kind: str) -> None:
        self._refresh.stop()
        self.status_label.setText(f"{kind} cancelled: what was computed is kept (Sweep resumes)")
        self.reload()
        self.jobEnded.emit(kind, False, "cancelled")

    def shutdown(self) -> None:
        self._refresh.stop()
        self.thumbnails.shutdown()
        self.read_job.discard()
