"""The training dialog's right side: how the run goes.

The run's status line, the device note (training on a CPU is slow), the progress bar over all
steps, the validation curves (mIoU, FB-IoU per epoch) and the training loss, the table of epochs
(with which were saved) and the trainer's log. :meth:`RunView.on_event` takes the trainer's JSON
events (:mod:`fssgui.train`); the view keeps what they said (``history``, ``last_step``, ...).
"""
from __future__ import annotations

import time
from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QPlainTextEdit, QProgressBar, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from ...train_setup import duration_text, format_percent, percent
from ..theme import PlotColours, follow_theme


class RunView(QWidget):
    """See the module docstring."""

    changed = Signal()  # the run's phase or step changed (the dialog's one-line summary follows)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        run_box = QVBoxLayout(self)
        run_box.setContentsMargins(6, 0, 0, 0)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.status_label.font()
        font.setBold(True)
        self.status_label.setFont(font)
        # room for two lines: a wrapped QLabel does not grow its row when its text changes
        self.status_label.setMinimumHeight(2 * self.status_label.fontMetrics().lineSpacing() + 2)
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        run_box.addWidget(self.status_label)
        self.device_note = QLabel("", self)
        self.device_note.setWordWrap(True)
        self.device_note.setVisible(False)
        self.device_note.setStyleSheet("QLabel { background: #fff3cd; color: #5c4400; border: 1px solid #e0c36a; "
                                       "border-radius: 3px; padding: 4px; }")
        run_box.addWidget(self.device_note)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run yet")
        run_box.addWidget(self.progress)
        self.detail_label = QLabel("", self)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        run_box.addWidget(self.detail_label)

        self.plot = pg.GraphicsLayoutWidget(self)
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

        self.tabs = QTabWidget(self)
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
        self.history: list[dict] = []  # epoch events of the run shown
        self.step_losses: list[tuple[float, float]] = []  # (fractional epoch, mean loss of the recent steps)
        self.last_step: Optional[dict] = None
        self.start_info: Optional[dict] = None
        self.done_event: Optional[dict] = None
        self.error_message = ""
        self.current_epoch = 0
        self.phase = ""
        self.started_at = 0.0
        self.planned_epochs = None  # the request's epoch count (the start event's when it comes)

    def on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "log":
            self.log(str(event.get("text", "")))
        elif kind == "start":
            self.start_info = event
            self.progress.setRange(0, max(1, int(event.get("total_steps") or 1)))
            self.progress.setFormat("step %v of %m")
            self._show_device(event)
            self.status_label.setText(f"Training {event.get('model')} on {event.get('device')}…")
        elif kind == "resumed":
            self.progress.setValue(int(event.get("global_step") or 0))
            self.history = [h for h in event.get("history") or [] if isinstance(h, dict)]
            self.refresh_epochs()
        elif kind == "phase":
            self.phase = str(event.get("phase", ""))
            self.current_epoch = int(event.get("epoch") or 0)
            self.show_phase()
            self.changed.emit()
        elif kind == "step":
            self.last_step = event
            self.progress.setValue(int(event.get("global_step") or 0))
            steps = max(1, int(event.get("steps") or 1))
            epoch = int(event.get("epoch") or 0)
            loss = event.get("recent_loss", event.get("loss"))  # older trainers sent only the epoch's running mean
            if loss is not None:
                self.step_losses.append((epoch - 1 + int(event.get("step") or 0) / steps, float(loss)))
                self.update_step_curve()
            self.show_phase()
            self.changed.emit()
        elif kind == "epoch":
            self.history = [h for h in self.history if h.get("epoch") != event.get("epoch")] + [event]
            self.refresh_epochs()
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

    def epochs_total(self):
        """The run's epoch count: the trainer's (start event), else the request's."""
        return (self.start_info or {}).get("epochs") or self.planned_epochs or "?"

    def show_phase(self, running: bool = True) -> None:
        if not running:
            return
        epochs = self.epochs_total()
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
            elapsed = time.monotonic() - self.started_at
            parts.append(f"{duration_text(elapsed)} elapsed")
            self.detail_label.setText("  ·  ".join(parts))

    def reset(self, keep_history: bool) -> None:
        """A new run (a resumed one keeps the epochs already shown)."""
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
        self.refresh_epochs()
        self.update_step_curve()

    def refresh_epochs(self) -> None:
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

    def update_step_curve(self) -> None:
        self.step_curve.setData([x for x, _ in self.step_losses], [y for _, y in self.step_losses])

    def _apply_plot_colours(self, colours: PlotColours) -> None:
        self.plot_colours = colours
        for index, curve in ((0, self.miou_curve), (1, self.fbiou_curve), (0, self.loss_curve)):
            colour = colours.series_colour(index)
            curve.setPen(pg.mkPen(colour, width=2))
            curve.setSymbolBrush(pg.mkBrush(colour))
            curve.setSymbolPen(pg.mkPen(colour))
        self.step_curve.setPen(pg.mkPen(colours.guide, width=1))

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)
