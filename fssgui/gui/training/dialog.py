"""The "Train a model" dialog: episodic training of the models without published weights.

The setup form (:class:`~.form.TrainingForm`) on the left, how the run goes
(:class:`~.run_view.RunView`) on the right. Start first checks the settings and opens the dataset
(train and val splits, one episode of the chosen shots each) on the worker pool, so a wrong folder
or layout is refused with the reader's message, which names the path; then ``fssgui train ...
--events`` runs as a child process (:class:`~.process.TrainingProcess`). Stop ends the process; the
checkpoints of the last finished epoch stay and *Resume* continues from there. Closing the dialog
hides it: the run goes on, and the main window's status bar follows it (``summaryChanged``).
"""
from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDialog, QFrame, QHBoxLayout, QMessageBox, QPushButton, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from ...errors import FssguiError
from ...train_setup import (CONFIG_JSON, MODEL_BEST, MODEL_LAST, TRAIN_STATE, TrainRequest, check_request,
                            read_saved_run, shell_quote)
from ..workers import LatestJob, WorkerPool
from .form import TrainingForm
from .process import TrainingProcess
from .run_view import RunView


class TrainingState(str, enum.Enum):
    IDLE = "idle"
    CHECKING = "checking"
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def busy(self) -> bool:
        return self in (TrainingState.CHECKING, TrainingState.RUNNING)


class TrainingDialog(QDialog):
    """Set up, run, watch and stop a training run; hand its best checkpoint to the main window."""

    checkpointChosen = Signal(str, str)  # model name, checkpoint path
    runFinished = Signal(str)  # "done", "stopped" or "failed"
    summaryChanged = Signal(str)  # one line for the main window's status bar ("" = nothing to show)

    def __init__(self, settings=None, parent: Optional[QWidget] = None, *, model: str = "",
                 pool: Optional[WorkerPool] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.setModal(False)
        self.pool = pool if pool is not None else WorkerPool("training-check", 1, self)
        self.check_job = LatestJob()
        self.process: Optional[TrainingProcess] = None
        self.request: Optional[TrainRequest] = None
        self.state = TrainingState.IDLE
        self._last_summary: Optional[str] = None  # what summaryChanged said last
        outer = QVBoxLayout(self)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        outer.addWidget(splitter, 1)
        self.form = TrainingForm(settings, self.pool, self)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.form)
        scroll.setMinimumWidth(400)
        splitter.addWidget(scroll)
        self.view = RunView(self)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([430, 620])
        outer.addLayout(self._buttons())
        self.resize(1120, 760)
        self.form.message.connect(self.view.log)
        self.view.changed.connect(self._publish_summary)
        self.form.restore(model)
        self._set_state(TrainingState.IDLE)

    def _buttons(self) -> QHBoxLayout:
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
        for button in (self.start_button, self.stop_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)
        return buttons

    @property
    def model_name(self) -> str:
        return self.form.model_name

    def set_model(self, name: str) -> bool:
        return self.form.set_model(name)

    # ------------------------------------------------------------------ running
    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def start(self) -> bool:
        """Check the settings and the dataset (on the pool), then start the child process.
        Returns False when the settings are refused at once."""
        if self.state.busy:
            return False
        try:
            request = self.form.current_request()
        except FssguiError as exc:
            self._refuse(str(exc))
            return False
        if (not request.resume and read_saved_run(request.out_dir) is not None
                and not self._confirm_overwrite(request.out_dir)):
            return False
        self._set_state(TrainingState.CHECKING)
        self.view.status_label.setText(f"Checking the dataset {request.data_root}…")
        handle = self.check_job.start(self.pool.submit(lambda ctx: check_request(request),
                                                       description="checking the dataset"))
        handle.finished.connect(lambda summary: self._checked(request, summary))
        handle.failed.connect(lambda message, _trace: self._check_failed(request, handle.error))
        return True

    def _check_failed(self, request: TrainRequest, error: BaseException) -> None:
        if self.state == TrainingState.CHECKING:
            # an unexpected reader failure is still a message naming the folder
            self._refuse(str(error) if isinstance(error, FssguiError)
                         else f"{request.data_root}: {type(error).__name__}: {error}")

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
        self.view.error_message = message
        self._set_state(TrainingState.IDLE)
        self.view.status_label.setText(f"Cannot start: {message}")
        self.view.status_label.setStyleSheet("QLabel { color: #c0392b; }")
        self.view.log(f"cannot start: {message}")

    def _checked(self, request: TrainRequest, summary: str) -> None:
        if self.state != TrainingState.CHECKING:
            return
        self.form.remember(request)
        self.use_button.setDefault(False)
        self.start_button.setDefault(True)
        self.view.reset(keep_history=request.resume)
        self.view.planned_epochs = request.epochs
        self.request = request
        self.view.error_message = ""
        self.view.log(f"dataset: {summary}")
        self.process = TrainingProcess(self)
        self.process.event.connect(self.view.on_event)
        self.process.output.connect(self.view.log)
        self.process.finished.connect(self._on_process_finished)
        self.view.started_at = time.monotonic()
        self._set_state(TrainingState.RUNNING)
        self.view.status_label.setText(("Resuming" if request.resume else "Starting") + f" {request.model}…")
        self.process.start(request.arguments())
        self.view.log("$ " + " ".join(shell_quote(part) for part in self.process.command))

    def stop(self) -> None:
        if self.state == TrainingState.CHECKING:
            self.check_job.discard()
            self._set_state(TrainingState.IDLE)
            self.view.status_label.setText("Not started.")
            return
        if self.is_running():
            self.view.status_label.setText("Stopping…")
            self.process.stop()

    def shutdown(self, wait_ms: int = 10000) -> None:
        """Stop a running child and wait for it (the app is quitting)."""
        if self.is_running():
            self.process.stop()
            if not self.process.wait(wait_ms):
                self.process._kill()
                self.process.wait(2000)

    def _on_process_finished(self, exit_code: int, stopped: bool) -> None:
        view, request = self.view, self.request
        out = Path(request.out_dir) if request is not None else None
        if stopped:
            saved = read_saved_run(out) if out is not None else None
            saved_epoch = int(saved.get("epoch", 0)) if saved else 0
            lost = view.current_epoch if view.phase != "validate" or view.current_epoch > saved_epoch else None
            text = "Stopped."
            if lost:
                text += f" Epoch {lost} was in progress and is lost."
            if saved_epoch:
                text += f" Epoch {saved_epoch} is saved: tick Resume and Start to continue from it."
            else:
                text += " No epoch had finished, so nothing was saved."
            self._remove_partial_files(out)
            state = TrainingState.STOPPED
            view.log(f"stopped by the user (process {self.process.pid if self.process else '?'} ended)")
        elif exit_code == 0 and view.done_event is not None:
            best = view.done_event.get("best_miou")
            text = "Finished."
            if best is not None:
                text += f" Best val mIoU {100 * float(best):.2f} % at epoch {view.done_event.get('best_epoch')}."
            view.detail_label.setText(f"checkpoints in {view.done_event.get('out_dir') or out}")
            state = TrainingState.DONE
        else:
            message = view.error_message or f"the training process exited with code {exit_code} (see the log)"
            text = f"Failed: {message}"
            state = TrainingState.FAILED
        self._set_state(state)
        view.status_label.setText(text)
        if self.use_button.isEnabled():
            self.use_button.setDefault(True)
        view.status_label.setStyleSheet("QLabel { color: #c0392b; }" if state == TrainingState.FAILED else "")
        view.log(text)
        self._publish_summary()
        self.runFinished.emit(state.value)

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
                self.view.log(f"could not remove {partial}: {exc}")

    def best_checkpoint(self) -> Optional[Path]:
        out = self.form.out_edit.text().strip() if self.request is None else self.request.out_dir
        path = Path(out) / MODEL_BEST if out else None
        return path if path is not None and path.is_file() else None

    def use_checkpoint(self) -> None:
        path = self.best_checkpoint()
        model = self.request.model if self.request is not None else self.model_name
        if path is None:
            self.view.log("no model_best.pt in the output folder yet")
            return
        self.checkpointChosen.emit(model, str(path.resolve()))
        self.view.log(f"using {path} for {model} in the main window")

    # ------------------------------------------------------------------ state
    def _set_state(self, state: TrainingState) -> None:
        self.state = state
        self.form.set_busy(state.busy)
        self.start_button.setEnabled(not state.busy and bool(self.form.entries))
        self.stop_button.setEnabled(state.busy)
        self.use_button.setEnabled(not state.busy and self.best_checkpoint() is not None)
        if state == TrainingState.IDLE:
            self.view.status_label.setStyleSheet("")
            if not self.view.status_label.text():
                self.view.status_label.setText("Set up a run and press Start training." if self.form.entries
                                               else "No trainable model is installed.")
        self._publish_summary()

    def summary_text(self) -> str:
        """One line on the run for the main window (the dialog may be closed while it trains)."""
        view = self.view
        model = self.request.model if self.request is not None else self.model_name
        if self.state == TrainingState.CHECKING:
            return f"Training {model}: checking the dataset…"
        if self.state == TrainingState.RUNNING:
            total = int((view.start_info or {}).get("total_steps") or 0)
            done = int((view.last_step or {}).get("global_step") or 0)
            epochs = view.epochs_total()
            if view.phase == "calibrate":
                where = "re-estimating BatchNorm statistics"
            elif view.phase == "validate":
                where = f"validating epoch {view.current_epoch}/{epochs}"
            elif view.current_epoch:
                where = f"epoch {view.current_epoch}/{epochs}"
            else:
                where = "starting"
            return f"Training {model}: {where}" + (f" · {100 * done / total:.0f} %" if total else "")
        if self.state == TrainingState.DONE:
            best = (view.done_event or {}).get("best_miou")
            return f"Training {model} finished" + (f" (best val mIoU {100 * float(best):.1f} %)" if best is not None
                                                   else "")
        if self.state in (TrainingState.STOPPED, TrainingState.FAILED):
            return f"Training {model} {self.state.value}"
        return ""

    def _publish_summary(self) -> None:
        text = self.summary_text()
        if text != self._last_summary:
            self._last_summary = text
            self.summaryChanged.emit(text)

    def closeEvent(self, event) -> None:  # noqa: N802 - closing hides; the training goes on
        if self.is_running():
            self.view.log("window closed: the training goes on (the main window's status bar shows it; click there "
                          "or use Train a model… to see it again)")
        super().closeEvent(event)
