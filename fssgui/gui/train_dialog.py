"""The "Train a model" dialog: episodic training of the models without published weights.

The training itself is ``fssgui train MODEL ... --events`` (:mod:`fssgui.train`) run as a **child
process** (:class:`TrainingProcess`, a ``QProcess``): a run of hours never occupies the app's one
GPU-job worker, and Stop simply ends the process. The trainer writes every checkpoint atomically
(temporary name, then rename), so a stopped run leaves the files of its last finished epoch intact
and *Resume* continues from there; only the epoch in progress is lost. Progress comes back as the
trainer's JSON event lines on the child's stdout (see the :mod:`fssgui.train` docstring); anything
else the child prints (warnings, a traceback) goes to the dialog's log as text.

The child command is the same program as the app: ``python -m fssgui train ...`` from a Python
installation, ``<bundle executable> train ...`` in the PyInstaller bundle (``sys.frozen``), whose
entry script is the same ``fssgui.cli.main``.

Before a process starts, the dataset folder is opened with :func:`fssgui.data.datasets.open_dataset`
(train and val splits, and one episode of the chosen shots each) on a background thread, so a wrong
folder or layout is refused with the reader's message, which names the path.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import pyqtgraph as pg
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Qt, QTimer, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import FssguiError
from ..train_setup import (CONFIG_JSON, LAYOUTS, MODEL_BEST, MODEL_LAST, OPTION_PRESETS, PRESET_CUSTOM, PRESET_PAPER,
                           TRAIN_STATE, TrainRequest, check_request, duration_text, format_option_value, format_percent,
                           model_option_defaults, optional_number, parse_option_value, percent,
                           read_saved_run, shell_quote, trainable_entries, training_command)
from .theme import PlotColours, follow_theme

STOP_GRACE_MS = 5000  # after terminate(), kill the child if it is still there


# ============================================================================ child process
class TrainingProcess(QObject):
    """``fssgui train ... --events`` in a child process; its JSON lines come back as ``event``."""

    event = Signal(dict)
    output = Signal(str)  # a line of the child's that is not an event (stderr, stray stdout)
    finished = Signal(int, bool)  # exit code, stopped by the user

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self._stdout = b""
        self._stderr = b""
        self.stop_requested = False
        self.pid = 0
        self.command: list[str] = []
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self._finished_sent = False

    def start(self, arguments: list[str]) -> None:
        program, args = training_command(arguments)
        self.command = [program, *args]
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        if not getattr(sys, "frozen", False):
            # the child imports this very fssgui, also when it is run from a source folder
            source_root = str(Path(__file__).resolve().parents[2])
            old = env.value("PYTHONPATH", "")
            env.insert("PYTHONPATH", source_root + (os.pathsep + old if old else ""))
        self.process.setProcessEnvironment(env)
        self.stop_requested = False
        self._finished_sent = False
        self.process.start(program, args)
        self.pid = int(self.process.processId() or 0)

    def is_running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def stop(self) -> None:
        """End the child: terminate (SIGTERM) and kill it if it is still there after a grace period
        (on Windows, where terminate() does not end a console program, kill at once)."""
        if not self.is_running():
            return
        self.stop_requested = True
        if sys.platform == "win32":
            self.process.kill()
        else:
            self.process.terminate()
            self._kill_timer.start(STOP_GRACE_MS)

    def _kill(self) -> None:
        if self.is_running():
            self.process.kill()

    def wait(self, msecs: int = 10000) -> bool:
        return self.process.waitForFinished(msecs)

    def _read_stdout(self) -> None:
        self._stdout += bytes(self.process.readAllStandardOutput().data())
        *lines, self._stdout = self._stdout.split(b"\n")
        for raw in lines:
            self._stdout_line(raw)

    def _stdout_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip():
            return
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "event" in event:
                self.event.emit(event)
                return
        self.output.emit(text)

    def _read_stderr(self) -> None:
        self._stderr += bytes(self.process.readAllStandardError().data())
        *lines, self._stderr = self._stderr.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if text.strip():
                self.output.emit(text)

    def _flush(self) -> None:
        self._read_stdout()
        self._read_stderr()
        if self._stdout.strip():
            self._stdout_line(self._stdout)
        if self._stderr.strip():
            self.output.emit(self._stderr.decode("utf-8", errors="replace").rstrip())
        self._stdout = self._stderr = b""

    def _on_finished(self, exit_code: int, _status) -> None:
        self._kill_timer.stop()
        self._flush()
        if not self._finished_sent:
            self._finished_sent = True
            self.finished.emit(int(exit_code), self.stop_requested)

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and not self._finished_sent:
            self._finished_sent = True
            self.output.emit(f"could not start {' '.join(self.command[:3])}…: {self.process.errorString()}")
            self.finished.emit(-1, False)


# ============================================================================ the dialog
class TrainingDialog(QDialog):
    """Set up, run, watch and stop a training run; hand its best checkpoint to the main window."""

    checkpointChosen = Signal(str, str)  # model name, checkpoint path
    runFinished = Signal(str)  # "done", "stopped" or "failed"
    summaryChanged = Signal(str)  # one line for the main window's status bar ("" = nothing to show)
    _checked = Signal(object, str, str)  # request, summary, error (from the dataset check thread)

    def __init__(self, settings=None, parent: Optional[QWidget] = None, *, model: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.setModal(False)
        self.settings = settings
        self.entries = {e.name: e for e in trainable_entries()}
        self.process: Optional[TrainingProcess] = None
        self.request: Optional[TrainRequest] = None
        self.state = "idle"  # idle, checking, running, done, stopped, failed
        self.history: list[dict] = []  # epoch events of the run shown
        self.step_losses: list[tuple[float, float]] = []  # (fractional epoch, mean loss of the steps since the last point)
        self.last_step: Optional[dict] = None
        self.start_info: Optional[dict] = None
        self.done_event: Optional[dict] = None
        self.error_message = ""
        self.current_epoch = 0
        self.phase = ""
        self._started_at = 0.0
        self._filling = False
        self._last_summary: Optional[str] = None  # what summaryChanged said last
        self._build_ui()
        self._checked.connect(self._on_checked)
        self._restore(model)
        self._set_state("idle")

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        outer.addWidget(splitter, 1)

        # ---- left: the setup form
        form_widget = QWidget(self)
        form_box = QVBoxLayout(form_widget)
        form_box.setContentsMargins(0, 0, 6, 0)

        model_group = QGroupBox("Model and data", form_widget)
        model_form = QFormLayout(model_group)
        self.model_combo = QComboBox(model_group)
        for name, entry in self.entries.items():
            self.model_combo.addItem(name, name)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.description, Qt.ItemDataRole.ToolTipRole)
        if not self.entries:
            self.model_combo.addItem("(no trainable model installed)", "")
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        model_form.addRow("Model", self.model_combo)
        self.data_edit = QLineEdit(model_group)
        self.data_edit.setPlaceholderText("the dataset folder")
        model_form.addRow("Dataset", self._with_browse(self.data_edit, self._browse_data))
        self.layout_combo = QComboBox(model_group)
        for name in LAYOUTS:
            self.layout_combo.addItem(name, name)
        self.layout_combo.setToolTip("folders: ROOT/<class>/images + masks; pascal5i: VOC 2012 (+SBD) with "
                                     "SegmentationClassAug; coco20i: COCO 2014 class-index label maps")
        model_form.addRow("Layout", self.layout_combo)
        row = QHBoxLayout()
        self.fold_spin = QSpinBox(model_group)
        self.fold_spin.setRange(-1, 3)
        self.fold_spin.setSpecialValueText("all classes")
        self.fold_spin.setToolTip("Held-out class fold (0..3): its classes validate, the others train; "
                                  "'all classes' (-1) trains and validates on every class")
        row.addWidget(self.fold_spin)
        row.addWidget(QLabel("Shots"))
        self.shots_spin = QSpinBox(model_group)
        self.shots_spin.setRange(1, 20)
        self.shots_spin.setToolTip("Support images per episode")
        row.addWidget(self.shots_spin)
        row.addStretch(1)
        model_form.addRow("Fold", row)
        form_box.addWidget(model_group)

        out_group = QGroupBox("Output", form_widget)
        out_form = QFormLayout(out_group)
        self.out_edit = QLineEdit(out_group)
        self.out_edit.setPlaceholderText("folder for model_best.pt, model_last.pt, config.json")
        self.out_edit.textChanged.connect(self._update_resume_box)
        out_form.addRow("Folder", self._with_browse(self.out_edit, self._browse_out))
        self.resume_check = QCheckBox("Resume the run saved in this folder", out_group)
        self.resume_check.toggled.connect(self._on_resume_toggled)
        out_form.addRow("", self.resume_check)
        self.resume_hint = QLabel("", out_group)
        self.resume_hint.setWordWrap(True)
        self.resume_hint.setVisible(False)
        out_form.addRow("", self.resume_hint)
        form_box.addWidget(out_group)

        sched_group = QGroupBox("Schedule", form_widget)
        sched_form = QFormLayout(sched_group)
        self.epochs_spin = self._spin(1, 100000, "Epochs: each is the steps below, then a validation and a "
                                                 "checkpoint")
        self.steps_spin = self._spin(1, 1000000, "Optimisation steps per epoch")
        row = QHBoxLayout()
        row.addWidget(self.epochs_spin)
        row.addWidget(QLabel("×"))
        row.addWidget(self.steps_spin)
        row.addWidget(QLabel("steps"))
        row.addStretch(1)
        sched_form.addRow("Epochs", row)
        row = QHBoxLayout()
        self.batch_spin = self._spin(1, 4096, "Episodes per optimisation step")
        self.val_spin = self._spin(1, 1000000, "Validation episodes after each epoch (a fixed list)")
        row.addWidget(self.batch_spin)
        row.addWidget(QLabel("Val episodes"))
        row.addWidget(self.val_spin)
        row.addStretch(1)
        sched_form.addRow("Batch size", row)
        row = QHBoxLayout()
        self.optimizer_combo = QComboBox(sched_group)
        self.lr_edit = QLineEdit(sched_group)
        validator = QDoubleValidator(0.0, 10.0, 12, self.lr_edit)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.lr_edit.setValidator(validator)
        self.lr_edit.setToolTip("Base learning rate (poly schedule); empty = the model's default")
        self.wd_edit = QLineEdit(sched_group)
        validator = QDoubleValidator(0.0, 1.0, 12, self.wd_edit)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.wd_edit.setValidator(validator)
        row.addWidget(self.optimizer_combo)
        row.addWidget(QLabel("LR"))
        row.addWidget(self.lr_edit, 1)
        row.addWidget(QLabel("WD"))
        row.addWidget(self.wd_edit, 1)
        sched_form.addRow("Optimizer", row)
        row = QHBoxLayout()
        self.size_spin = self._spin(0, 2048, "Input size in pixels (0 = the model's)")
        self.size_spin.setSuffix(" px")
        self.device_combo = QComboBox(sched_group)
        row.addWidget(self.size_spin)
        row.addWidget(QLabel("Device"))
        row.addWidget(self.device_combo, 1)
        sched_form.addRow("Size", row)
        self.backbone_edit = QLineEdit(sched_group)
        self.backbone_edit.setPlaceholderText("none: random-init, BatchNorm re-estimated")
        self.backbone_edit.setToolTip("ImageNet ResNet-50 weights (torchvision .pth or timm .safetensors) for the "
                                      "frozen backbone. Without "
                                      "it the backbone is random-init (the papers use ImageNet weights) and its "
                                      "BatchNorm statistics are re-estimated on training images.")
        sched_form.addRow("Backbone", self._with_browse(self.backbone_edit, self._browse_backbone))
        form_box.addWidget(sched_group)

        options_group = QGroupBox("Model options", form_widget)
        options_box = QVBoxLayout(options_group)
        self.preset_combo = QComboBox(options_group)
        self.preset_combo.activated.connect(self._on_preset_chosen)
        options_box.addWidget(self.preset_combo)
        self.options_table = QTableWidget(0, 3, options_group)
        self.options_table.setHorizontalHeaderLabels(["Option", "Value", "Default"])
        self.options_table.verticalHeader().setVisible(False)
        header = self.options_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.options_table.setToolTip("Keyword arguments of the model's builder (values as JSON: 3, 0.5, false). "
                                      "An empty value keeps the default.")
        self.options_table.setMinimumHeight(150)
        self.options_table.itemChanged.connect(self._on_option_edited)
        options_box.addWidget(self.options_table, 1)
        form_box.addWidget(options_group, 1)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(form_widget)
        scroll.setMinimumWidth(400)
        splitter.addWidget(scroll)

        # ---- right: the run
        run_widget = QWidget(self)
        run_box = QVBoxLayout(run_widget)
        run_box.setContentsMargins(6, 0, 0, 0)
        self.status_label = QLabel("", run_widget)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.status_label.font()
        font.setBold(True)
        self.status_label.setFont(font)
        # room for two lines: a wrapped QLabel does not grow its row when its text changes
        self.status_label.setMinimumHeight(2 * self.status_label.fontMetrics().lineSpacing() + 2)
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        run_box.addWidget(self.status_label)
        self.device_note = QLabel("", run_widget)
        self.device_note.setWordWrap(True)
        self.device_note.setVisible(False)
        self.device_note.setStyleSheet("QLabel { background: #fff3cd; color: #5c4400; border: 1px solid #e0c36a; "
                                       "border-radius: 3px; padding: 4px; }")
        run_box.addWidget(self.device_note)
        self.progress = QProgressBar(run_widget)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run yet")
        run_box.addWidget(self.progress)
        self.detail_label = QLabel("", run_widget)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        run_box.addWidget(self.detail_label)

        self.plot = pg.GraphicsLayoutWidget(run_widget)
        self.plot.setMinimumHeight(260)
        self.val_plot = self.plot.addPlot(row=0, col=0)
        self.val_plot.setTitle("Validation")
        self.val_plot.setLabel("left", "%")
        self.val_plot.setLabel("bottom", "epoch")
        self.val_plot.showGrid(x=True, y=True, alpha=0.25)
        self.val_plot.addLegend(offset=(-10, -10))
        self.val_plot.setYRange(0, 100, padding=0.02)
        self.miou_curve = self.val_plot.plot([], [], name="mIoU", symbol="o", symbolSize=6, connect="finite")
        self.fbiou_curve = self.val_plot.plot([], [], name="FB-IoU", symbol="s", symbolSize=6, connect="finite")
        self.loss_plot = self.plot.addPlot(row=0, col=1)
        self.loss_plot.setTitle("Training loss")
        self.loss_plot.setLabel("bottom", "epoch")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.25)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.step_curve = self.loss_plot.plot([], [], name="recent steps")
        self.loss_curve = self.loss_plot.plot([], [], name="epoch mean", symbol="o", symbolSize=6)
        for item in (self.val_plot, self.loss_plot):
            item.getAxis("left").enableAutoSIPrefix(False)
        self.plot_colours = follow_theme(self.plot, self._apply_plot_colours)
        run_box.addWidget(self.plot, 3)

        self.tabs = QTabWidget(run_widget)
        self.epoch_table = QTableWidget(0, 5, self.tabs)
        self.epoch_table.setHorizontalHeaderLabels(["Epoch", "val mIoU %", "FB-IoU %", "train loss", "checkpoint"])
        self.epoch_table.verticalHeader().setVisible(False)
        self.epoch_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.epoch_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.tabs.addTab(self.epoch_table, "Epochs")
        self.log_view = QPlainTextEdit(self.tabs)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("The trainer's messages appear here.")
        self.tabs.addTab(self.log_view, "Log")
        run_box.addWidget(self.tabs, 2)
        splitter.addWidget(run_widget)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([430, 620])

        # ---- buttons
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training", self)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("End the training process. The epoch in progress is lost; the checkpoints of "
                                    "the last finished epoch stay, and Resume continues from there.")
        self.stop_button.clicked.connect(self.stop)
        self.use_button = QPushButton("Use this checkpoint", self)
        self.use_button.setToolTip("Select this model and the run's model_best.pt in the main window")
        self.use_button.clicked.connect(self.use_checkpoint)
        self.close_button = QPushButton("Close", self)
        self.close_button.setToolTip("Hide this window; a running training goes on (Train a model… shows it again)")
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)
        outer.addLayout(buttons)
        self.resize(1120, 760)

    def _spin(self, low: int, high: int, tip: str) -> QSpinBox:
        spin = QSpinBox(self)
        spin.setRange(low, high)
        spin.setToolTip(tip)
        spin.setMinimumWidth(72)
        return spin

    def _with_browse(self, edit: QLineEdit, browse) -> QWidget:
        holder = QWidget(self)
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("Browse…", holder)
        button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        button.clicked.connect(browse)
        row.addWidget(button)
        holder.setProperty("browse_button", button)
        return holder

    def _fill_device_combo(self) -> None:
        import torch

        self.device_combo.clear()
        self.device_combo.addItem("auto", "auto")
        self.device_combo.setItemData(0, "CUDA when available, else the CPU", Qt.ItemDataRole.ToolTipRole)
        self.device_combo.addItem("CPU", "cpu")
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                self.device_combo.addItem(f"cuda:{i} {torch.cuda.get_device_name(i)}", f"cuda:{i}")
        else:
            self.device_combo.addItem("CUDA (not available)", "cuda")
            item = self.device_combo.model().item(self.device_combo.count() - 1)
            item.setEnabled(False)
            item.setToolTip("torch reports no usable CUDA device on this machine: training runs on the CPU")

    # ------------------------------------------------------------------ model-dependent fields
    @property
    def model_name(self) -> str:
        return self.model_combo.currentData() or ""

    def set_model(self, name: str) -> bool:
        index = self.model_combo.findData(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        return index >= 0

    def _on_model_changed(self, _index: int = 0) -> None:
        entry = self.entries.get(self.model_name)
        self.optimizer_combo.clear()
        defaults = dict(entry.extra.get("optimizer", {})) if entry is not None else {}
        default_name = str(defaults.get("name", "sgd"))
        self.optimizer_combo.addItem(f"default ({default_name})", "")
        self.optimizer_combo.addItem("SGD", "sgd")
        self.optimizer_combo.addItem("AdamW", "adamw")
        self.lr_edit.clear()  # a learning rate typed for another model is no default for this one
        self.lr_edit.setPlaceholderText(f"default {defaults.get('lr', 1e-3):g}")
        self.wd_edit.clear()
        default_wd = f"{float(defaults.get('weight_decay', 0.0)):g}"
        self.wd_edit.setPlaceholderText(default_wd)  # narrow field: the value alone, greyed
        self.wd_edit.setToolTip(f"Weight decay; empty = the model's default ({default_wd})")
        self.size_spin.setSpecialValueText(f"default ({entry.input_size} px)" if entry is not None else "default")
        self._fill_options_table(model_option_defaults(entry) if entry is not None else {})
        self.preset_combo.clear()
        self.preset_combo.addItem(PRESET_PAPER, None)
        for label, values in OPTION_PRESETS.get(self.model_name, ()):
            shown = ", ".join(f"{k}={format_option_value(v)}" for k, v in values.items())
            self.preset_combo.addItem(label, values)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, shown, Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setToolTip("Named sets of the options below")

    def _fill_options_table(self, defaults: dict[str, Any]) -> None:
        self._filling = True
        table = self.options_table
        table.setRowCount(0)
        for name, default in defaults.items():
            row = table.rowCount()
            table.insertRow(row)
            key = QTableWidgetItem(name)
            key.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            value = QTableWidgetItem("")
            shown_default = QTableWidgetItem(format_option_value(default))
            shown_default.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            table.setItem(row, 0, key)
            table.setItem(row, 1, value)
            table.setItem(row, 2, shown_default)
        self._filling = False

    def model_options(self) -> dict[str, Any]:
        """The options whose value cell is filled in."""
        options: dict[str, Any] = {}
        for row in range(self.options_table.rowCount()):
            text = self.options_table.item(row, 1).text().strip()
            if text:
                options[self.options_table.item(row, 0).text()] = parse_option_value(text)
        return options

    def set_model_options(self, options: dict[str, Any]) -> None:
        """Fill the value cells (unknown names get a row of their own, so nothing is dropped)."""
        self._filling = True
        table = self.options_table
        rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
        for row in rows.values():
            table.item(row, 1).setText("")
        for name, value in options.items():
            if name not in rows:
                row = table.rowCount()
                table.insertRow(row)
                key = QTableWidgetItem(name)
                key.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(row, 0, key)
                table.setItem(row, 1, QTableWidgetItem(""))
                unknown = QTableWidgetItem("?")
                unknown.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(row, 2, unknown)
                rows[name] = row
            table.item(rows[name], 1).setText(format_option_value(value))
        self._filling = False
        self._sync_preset()

    def _on_preset_chosen(self, index: int) -> None:
        values = self.preset_combo.itemData(index)
        self.set_model_options(dict(values or {}))

    def _on_option_edited(self, _item) -> None:
        if not self._filling:
            self._sync_preset()

    def _sync_preset(self) -> None:
        """Show the preset the option values match, or "Custom"."""
        current = self.model_options()
        custom = self.preset_combo.findText(PRESET_CUSTOM)
        for i in range(self.preset_combo.count()):
            values = self.preset_combo.itemData(i)
            if i != custom and (values or {}) == current:
                self.preset_combo.setCurrentIndex(i)
                if custom >= 0 and custom != i:
                    self.preset_combo.removeItem(custom)
                return
        if custom < 0:
            self.preset_combo.addItem(PRESET_CUSTOM, "__custom__")
            custom = self.preset_combo.count() - 1
        self.preset_combo.setCurrentIndex(custom)

    # ------------------------------------------------------------------ browsing, resume
    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.data_edit.text() or str(Path.home()))
        if folder:
            self.data_edit.setText(folder)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text() or str(Path.home()))
        if folder:
            self.out_edit.setText(folder)

    def _browse_backbone(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ResNet-50 weights", self.backbone_edit.text() or str(Path.home()),
                                              "ResNet-50 weights (*.pth *.pt *.safetensors);;All files (*)")
        if path:
            self.backbone_edit.setText(path)

    def _update_resume_box(self) -> None:
        text = self.out_edit.text().strip()
        saved = read_saved_run(text) if text else None
        self.resume_check.setEnabled(saved is not None and self.state not in ("checking", "running"))
        if saved is None:
            self.resume_check.setToolTip("The output folder holds no training run (config.json) to resume")
            if self.resume_check.isChecked():
                self.resume_check.setChecked(False)
            self.resume_hint.setVisible(False)
            return
        planned = (saved.get("config") or {}).get("epochs", "?")
        self.resume_check.setToolTip(f"{Path(text) / CONFIG_JSON}: {saved.get('model', '?')}, epoch "
                                     f"{saved.get('epoch', '?')} of {planned} saved")
        hint = (f"This folder holds a {saved.get('model', '?')} run saved at epoch {saved.get('epoch', '?')} of "
                f"{planned}.")
        if not self.resume_check.isChecked():
            hint += " Starting without Resume begins a new run and overwrites its checkpoints."
        self.resume_hint.setText(hint)
        self.resume_hint.setVisible(True)

    def _on_resume_toggled(self, checked: bool) -> None:
        if checked:
            saved = read_saved_run(self.out_edit.text().strip())
            if saved is not None:
                self._fill_from_saved(saved)
        self._lock_resume_fields(checked)
        self._update_resume_box()

    def _fill_from_saved(self, saved: dict) -> None:
        """The settings of the saved run (those a resume may not change are then locked)."""
        config = saved["config"]
        self.set_model(str(config.get("model", saved.get("model", ""))))
        if config.get("data_root"):
            self.data_edit.setText(str(config["data_root"]))
        self._set_combo(self.layout_combo, config.get("layout"))
        self.fold_spin.setValue(int(config.get("fold", self.fold_spin.value())))
        self.shots_spin.setValue(int(config.get("shots", self.shots_spin.value())))
        self.epochs_spin.setValue(max(int(config.get("epochs", 1)), int(saved.get("epoch", 0) or 0)))
        self.steps_spin.setValue(int(config.get("steps_per_epoch", self.steps_spin.value())))
        self.val_spin.setValue(int(config.get("val_episodes", self.val_spin.value())))
        self.batch_spin.setValue(int(config.get("batch_size", self.batch_spin.value())))
        if config.get("lr") is not None:
            self.lr_edit.setText(f"{float(config['lr']):g}")
        if config.get("weight_decay") is not None:
            self.wd_edit.setText(f"{float(config['weight_decay']):g}")
        self._set_combo(self.optimizer_combo, config.get("optimizer") or "")
        self.size_spin.setValue(int(config.get("size") or 0))
        device = str(config.get("device") or "auto")
        if self.device_combo.findData(device) < 0 or not self._device_usable(device):
            device = "auto"
        self._set_combo(self.device_combo, device)
        self.backbone_edit.setText(str(config.get("backbone_weights") or ""))
        self.set_model_options(dict(config.get("model_options") or {}))

    def _device_usable(self, device: str) -> bool:
        index = self.device_combo.findData(device)
        return index >= 0 and self.device_combo.model().item(index).isEnabled()

    @staticmethod
    def _set_combo(combo: QComboBox, data) -> None:
        index = combo.findData(data)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _lock_resume_fields(self, locked: bool) -> None:
        running = self.state in ("checking", "running")
        for widget in (self.model_combo, self.layout_combo, self.fold_spin, self.shots_spin, self.size_spin,
                       self.preset_combo, self.options_table):
            widget.setEnabled(not locked and not running)
            widget.setToolTip(widget.toolTip().split("\n(locked")[0]
                              + ("\n(locked: a resumed run keeps the settings it was started with)" if locked else ""))

    # ------------------------------------------------------------------ settings
    def current_request(self) -> TrainRequest:
        lr = optional_number(self.lr_edit.text(), "learning rate")
        weight_decay = optional_number(self.wd_edit.text(), "weight decay")
        return TrainRequest(
            model=self.model_name, data_root=self.data_edit.text().strip(),
            layout=self.layout_combo.currentData() or "folders", fold=self.fold_spin.value(),
            shots=self.shots_spin.value(), out_dir=self.out_edit.text().strip(), epochs=self.epochs_spin.value(),
            steps_per_epoch=self.steps_spin.value(), val_episodes=self.val_spin.value(),
            batch_size=self.batch_spin.value(), lr=lr, optimizer=self.optimizer_combo.currentData() or None,
            weight_decay=weight_decay,
            size=self.size_spin.value() or None, device=self.device_combo.currentData() or "auto",
            backbone_weights=self.backbone_edit.text().strip() or None, model_options=self.model_options(),
            resume=self.resume_check.isChecked() and self.resume_check.isEnabled(),
        )

    def _restore(self, model: str) -> None:
        """Defaults, then the last training settings (``Settings.training``), then ``model``."""
        self._fill_device_combo()
        saved: dict = dict(getattr(self.settings, "training", None) or {}) if self.settings is not None else {}
        if not self.set_model(str(saved.get("model", ""))):
            self._on_model_changed()
        self.layout_combo.setCurrentIndex(max(0, self.layout_combo.findData(saved.get("layout", "folders"))))
        self.data_edit.setText(str(saved.get("data_root", "")))
        self.fold_spin.setValue(int(saved.get("fold", 0)))
        self.shots_spin.setValue(int(saved.get("shots", 1)))
        self.out_edit.setText(str(saved.get("out_dir", "")))
        self.epochs_spin.setValue(int(saved.get("epochs", 50)))
        self.steps_spin.setValue(int(saved.get("steps_per_epoch", 500)))
        self.val_spin.setValue(int(saved.get("val_episodes", 1000)))
        self.batch_spin.setValue(int(saved.get("batch_size", 8)))
        if saved.get("lr") is not None:
            self.lr_edit.setText(f"{float(saved['lr']):g}")
        if saved.get("weight_decay") is not None:
            self.wd_edit.setText(f"{float(saved['weight_decay']):g}")
        self._set_combo(self.optimizer_combo, saved.get("optimizer") or "")
        self.size_spin.setValue(int(saved.get("size") or 0))
        device = str(saved.get("device") or "auto")
        self._set_combo(self.device_combo, device if self._device_usable(device) else "auto")
        self.backbone_edit.setText(str(saved.get("backbone_weights") or ""))
        options = (saved.get("model_options_by_model") or {}).get(self.model_name)
        if isinstance(options, dict):
            self.set_model_options(options)
        if model and model != self.model_name:
            self.set_model(model)
        self._update_resume_box()

    def _remember(self, request: TrainRequest) -> None:
        if self.settings is None or not hasattr(self.settings, "training"):
            return
        previous = dict(self.settings.training or {})
        by_model = dict(previous.get("model_options_by_model") or {})
        by_model[request.model] = dict(request.model_options)
        values = asdict(request)
        values.pop("resume", None)
        values["model_options_by_model"] = by_model
        self.settings.training = values
        try:
            self.settings.save()
        except OSError as exc:
            self._log(f"could not save the training settings: {exc}")

    # ------------------------------------------------------------------ running
    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def start(self) -> bool:
        """Check the settings and the dataset (on a thread), then start the child process.
        Returns False when the settings are refused at once."""
        if self.state in ("checking", "running"):
            return False
        try:
            request = self.current_request()
        except FssguiError as exc:
            self._refuse(str(exc))
            return False
        if (not request.resume and read_saved_run(request.out_dir) is not None
                and not self._confirm_overwrite(request.out_dir)):
            return False
        self._set_state("checking")
        self.status_label.setText(f"Checking the dataset {request.data_root}…")

        def check() -> None:
            try:
                summary, error = check_request(request), ""
            except FssguiError as exc:
                summary, error = "", str(exc)
            except Exception as exc:  # noqa: BLE001 - an unexpected reader failure is still a message
                summary, error = "", f"{request.data_root}: {type(exc).__name__}: {exc}"
            self._checked.emit(request, summary, error)

        threading.Thread(target=check, name="fssgui-train-check", daemon=True).start()
        return True

    def _confirm_overwrite(self, out_dir: str) -> bool:
        parent = self.parent()
        if parent is not None and getattr(parent, "unattended", False):
            return True
        answer = QMessageBox.question(
            self, "Start a new run?",
            f"{out_dir} holds a training run. Start a new run there and overwrite its checkpoints?\n"
            "(Tick Resume to continue it instead.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _refuse(self, message: str) -> None:
        self.error_message = message
        self._set_state("idle")
        self.status_label.setText(f"Cannot start: {message}")
        self.status_label.setStyleSheet("QLabel { color: #c0392b; }")
        self._log(f"cannot start: {message}")

    def _on_checked(self, request: TrainRequest, summary: str, error: str) -> None:
        if self.state != "checking":
            return
        if error:
            self._refuse(error)
            return
        self._remember(request)
        self._reset_run_view(keep_history=request.resume)
        self.request = request
        self.error_message = ""
        self._log(f"dataset: {summary}")
        self.process = TrainingProcess(self)
        self.process.event.connect(self._on_event)
        self.process.output.connect(self._log)
        self.process.finished.connect(self._on_process_finished)
        self._started_at = time.monotonic()
        self._set_state("running")
        self.status_label.setText(("Resuming" if request.resume else "Starting") + f" {request.model}…")
        self.process.start(request.arguments())
        self._log("$ " + " ".join(shell_quote(part) for part in self.process.command))

    def stop(self) -> None:
        if self.state == "checking":
            self._set_state("idle")
            self.status_label.setText("Not started.")
            return
        if self.is_running():
            self.status_label.setText("Stopping…")
            self.process.stop()

    def shutdown(self, wait_ms: int = 10000) -> None:
        """Stop a running child and wait for it (the app is quitting)."""
        if self.is_running():
            self.process.stop()
            if not self.process.wait(wait_ms):
                self.process._kill()
                self.process.wait(2000)

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "log":
            self._log(str(event.get("text", "")))
        elif kind == "start":
            self.start_info = event
            self.progress.setRange(0, max(1, int(event.get("total_steps") or 1)))
            self.progress.setFormat("step %v of %m")
            self._show_device(event)
            self.status_label.setText(f"Training {event.get('model')} on {event.get('device')}…")
        elif kind == "resumed":
            self.progress.setValue(int(event.get("global_step") or 0))
            self.history = [h for h in event.get("history") or [] if isinstance(h, dict)]
            self._refresh_epochs()
        elif kind == "phase":
            self.phase = str(event.get("phase", ""))
            self.current_epoch = int(event.get("epoch") or 0)
            self._show_phase()
            self._publish_summary()
        elif kind == "step":
            self.last_step = event
            self.progress.setValue(int(event.get("global_step") or 0))
            steps = max(1, int(event.get("steps") or 1))
            epoch = int(event.get("epoch") or 0)
            loss = event.get("recent_loss", event.get("loss"))  # older trainers sent only the epoch's running mean
            if loss is not None:
                self.step_losses.append((epoch - 1 + int(event.get("step") or 0) / steps, float(loss)))
                self._update_step_curve()
            self._show_phase()
            self._publish_summary()
        elif kind == "epoch":
            self.history = [h for h in self.history if h.get("epoch") != event.get("epoch")] + [event]
            self._refresh_epochs()
        elif kind == "done":
            self.done_event = event
        elif kind == "error":
            self.error_message = str(event.get("message", "")) or "the trainer failed"

    def _show_device(self, event: dict) -> None:
        device = str(event.get("device", ""))
        if device.startswith("cpu"):
            if not event.get("cuda_available"):
                note = ("CUDA is not available on this machine: training runs on the CPU, which is many times "
                        "slower. Small sizes, few steps and the CPU presets below keep it practical.")
            else:
                note = "Training on the CPU as chosen (CUDA is available: pick it under Device to train faster)."
            self.device_note.setText(note)
            self.device_note.setVisible(True)
        else:
            self.device_note.setVisible(False)

    def _epochs_total(self):
        """The run's epoch count: the trainer's (start event), else the request's."""
        return (self.start_info or {}).get("epochs") or (self.request.epochs if self.request else "?")

    def _show_phase(self) -> None:
        if self.state != "running":
            return
        epochs = self._epochs_total()
        epoch = self.current_epoch
        if self.phase == "calibrate":
            text = "Re-estimating the backbone's BatchNorm statistics…"
        elif self.phase == "validate":
            text = f"Epoch {epoch} of {epochs}: validating" + (" the untrained model" if epoch == 0 else "") + "…"
        else:
            text = f"Epoch {epoch} of {epochs}: training"
        self.status_label.setText(text)
        step = self.last_step
        if step is not None:
            parts = [f"epoch {step.get('epoch')}/{epochs}", f"step {step.get('step')}/{step.get('steps')}"]
            if step.get("loss") is not None:
                parts.append(f"loss {float(step['loss']):.4f}")
            if step.get("lr") is not None:
                parts.append(f"lr {float(step['lr']):.2e}")
            elapsed = time.monotonic() - self._started_at
            parts.append(f"{duration_text(elapsed)} elapsed")
            self.detail_label.setText("  ·  ".join(parts))

    def _on_process_finished(self, exit_code: int, stopped: bool) -> None:
        request = self.request
        out = Path(request.out_dir) if request is not None else None
        if stopped:
            saved = read_saved_run(out) if out is not None else None
            saved_epoch = int(saved.get("epoch", 0)) if saved else 0
            lost = self.current_epoch if self.phase != "validate" or self.current_epoch > saved_epoch else None
            text = "Stopped."
            if lost:
                text += f" Epoch {lost} was in progress and is lost."
            if saved_epoch:
                text += f" Epoch {saved_epoch} is saved: tick Resume and Start to continue from it."
            else:
                text += " No epoch had finished, so nothing was saved."
            self._remove_partial_files(out)
            state = "stopped"
            self._log(f"stopped by the user (process {self.process.pid if self.process else '?'} ended)")
        elif exit_code == 0 and self.done_event is not None:
            done = self.done_event
            best = done.get("best_miou")
            text = "Finished."
            if best is not None:
                text += f" Best val mIoU {100 * float(best):.2f} % at epoch {done.get('best_epoch')}."
            self.detail_label.setText(f"checkpoints in {done.get('out_dir') or out}")
            state = "done"
        else:
            message = self.error_message or f"the training process exited with code {exit_code} (see the log)"
            text = f"Failed: {message}"
            state = "failed"
        self._set_state(state)
        self.status_label.setText(text)
        if self.use_button.isEnabled():
            self.use_button.setDefault(True)
        self.status_label.setStyleSheet("QLabel { color: #c0392b; }" if state == "failed" else "")
        self._log(text)
        self._publish_summary()
        self.runFinished.emit(state)

    def _remove_partial_files(self, out: Optional[Path]) -> None:
        """The temporary files a killed child may leave (``.<name>.tmp<pid>``; never the checkpoints)."""
        if out is None or self.process is None or not self.process.pid:
            return
        for name in (MODEL_LAST, MODEL_BEST, TRAIN_STATE, CONFIG_JSON):
            partial = out / f".{name}.tmp{self.process.pid}"
            try:
                partial.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._log(f"could not remove {partial}: {exc}")

    def best_checkpoint(self) -> Optional[Path]:
        out = self.out_edit.text().strip() if self.request is None else self.request.out_dir
        path = Path(out) / MODEL_BEST if out else None
        return path if path is not None and path.is_file() else None

    def use_checkpoint(self) -> None:
        path = self.best_checkpoint()
        model = self.request.model if self.request is not None else self.model_name
        if path is None:
            self._log("no model_best.pt in the output folder yet")
            return
        self.checkpointChosen.emit(model, str(path.resolve()))
        self._log(f"using {path} for {model} in the main window")

    # ------------------------------------------------------------------ view state
    def _set_state(self, state: str) -> None:
        self.state = state
        busy = state in ("checking", "running")
        for widget in (self.data_edit, self.out_edit, self.epochs_spin, self.steps_spin, self.batch_spin,
                       self.val_spin, self.optimizer_combo, self.lr_edit, self.wd_edit, self.device_combo,
                       self.backbone_edit):
            widget.setEnabled(not busy)
        for holder in (self.data_edit.parentWidget(), self.out_edit.parentWidget(), self.backbone_edit.parentWidget()):
            button = holder.property("browse_button")
            if button is not None:
                button.setEnabled(not busy)
        self._lock_resume_fields(self.resume_check.isChecked())
        self.start_button.setEnabled(not busy and bool(self.entries))
        self.stop_button.setEnabled(busy)
        self.use_button.setEnabled(not busy and self.best_checkpoint() is not None)
        if state == "idle":
            self.status_label.setStyleSheet("")
            if not self.status_label.text():
                self.status_label.setText("Set up a run and press Start training." if self.entries
                                          else "No trainable model is installed.")
        self._update_resume_box()
        self._publish_summary()

    def summary_text(self) -> str:
        """One line on the run for the main window (the dialog may be closed while it trains)."""
        model = self.request.model if self.request is not None else self.model_name
        if self.state == "checking":
            return f"Training {model}: checking the dataset…"
        if self.state == "running":
            step = self.last_step or {}
            total = int((self.start_info or {}).get("total_steps") or 0)
            done = int(step.get("global_step") or 0)
            epochs = self._epochs_total()
            if self.phase == "calibrate":
                where = "re-estimating BatchNorm statistics"
            elif self.phase == "validate":
                where = f"validating epoch {self.current_epoch}/{epochs}"
            elif self.current_epoch:
                where = f"epoch {self.current_epoch}/{epochs}"
            else:
                where = "starting"
            percent = f" · {100 * done / total:.0f} %" if total else ""
            return f"Training {model}: {where}{percent}"
        if self.state == "done":
            best = (self.done_event or {}).get("best_miou")
            return f"Training {model} finished" + (f" (best val mIoU {100 * float(best):.1f} %)" if best is not None
                                                   else "")
        if self.state == "stopped":
            return f"Training {model} stopped"
        if self.state == "failed":
            return f"Training {model} failed"
        return ""

    def _publish_summary(self) -> None:
        text = self.summary_text()
        if text != self._last_summary:
            self._last_summary = text
            self.summaryChanged.emit(text)

    def _reset_run_view(self, keep_history: bool) -> None:
        self.use_button.setDefault(False)
        self.start_button.setDefault(True)
        self.history = [] if not keep_history else self.history
        self.step_losses = []
        self.last_step = None
        self.start_info = None
        self.done_event = None
        self.phase = ""
        self.current_epoch = 0
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.detail_label.setText("")
        self.device_note.setVisible(False)
        self.status_label.setStyleSheet("")
        if not keep_history:
            self.history = []
        self._refresh_epochs()
        self._update_step_curve()

    def _refresh_epochs(self) -> None:
        history = sorted(self.history, key=lambda h: int(h.get("epoch") or 0))
        epochs = [int(h.get("epoch") or 0) for h in history]
        miou = [percent(h.get("miou")) for h in history]
        fbiou = [percent(h.get("fbiou")) for h in history]
        self.miou_curve.setData(epochs, miou)
        self.fbiou_curve.setData(epochs, fbiou)
        trained = [(int(h["epoch"]), float(h["train_loss"])) for h in history if h.get("train_loss") is not None]
        self.loss_curve.setData([e for e, _ in trained], [v for _, v in trained])
        table = self.epoch_table
        table.setRowCount(len(history))
        for row, h in enumerate(history):
            # epoch events say whether they were saved and the best epoch so far; the history of a
            # resumed run (config.json) does not: its epochs > 0 were all saved
            saved = "saved" if h.get("saved", int(h.get("epoch") or 0) > 0) else "—"
            if saved == "saved" and h.get("best_epoch") is not None and h.get("epoch") == h.get("best_epoch"):
                saved = "saved, best so far"
            cells = (str(h.get("epoch")), format_percent(h.get("miou")), format_percent(h.get("fbiou")),
                     f"{float(h['train_loss']):.4f}" if h.get("train_loss") is not None else "—", saved)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                table.setItem(row, column, item)
        if history:
            table.scrollToBottom()

    def _update_step_curve(self) -> None:
        self.step_curve.setData([x for x, _ in self.step_losses], [y for _, y in self.step_losses])

    def _apply_plot_colours(self, colours: PlotColours) -> None:
        self.plot_colours = colours
        for index, curve in ((0, self.miou_curve), (1, self.fbiou_curve), (0, self.loss_curve)):
            colour = colours.series_colour(index)
            curve.setPen(pg.mkPen(colour, width=2))
            curve.setSymbolBrush(pg.mkBrush(colour))
            curve.setSymbolPen(pg.mkPen(colour))
        self.step_curve.setPen(pg.mkPen(colours.guide, width=1))

    def _log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def closeEvent(self, event) -> None:  # noqa: N802 - closing hides; the training goes on
        if self.is_running():
            self._log("window closed: the training goes on (the main window's status bar shows it; click there "
                      "or use Train a model… to see it again)")
        super().closeEvent(event)
