"""The window's status bar: what the pointer is over, the job in progress (its description and a
progress bar whose text always fits the bar), the training run, and the device in use."""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QProgressBar, QToolButton

from ..pipeline import DeviceInfo
from .workers import JobHandle, JobState

PROGRESS_WIDTH = 180


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f}"


def device_text(info: Optional[DeviceInfo], requested: str, cuda_available: bool) -> str:
    """The device label: what the model runs on (or will, before it is loaded) and its memory."""
    if info is None:
        if cuda_available:
            return f"Device: {requested} (model not loaded yet)"
        return "Device: CPU · CUDA not available (model not loaded yet)"
    if info.is_cuda:
        return (f"Device: {info.device} {info.description} · GPU memory {_gib(info.allocated_bytes)} GiB allocated, "
                f"{_gib(info.reserved_bytes)} reserved, {_gib(info.free_bytes)} of {_gib(info.total_bytes)} free")
    return "Device: CPU" + ("" if info.cuda_available else " · CUDA not available")


class StatusBar:
    """The permanent widgets of ``window``'s status bar; :meth:`follow` shows a job's progress."""

    def __init__(self, window: QMainWindow) -> None:
        bar = window.statusBar()
        self.bar = bar
        self.hover_label = QLabel("")
        self.hover_label.setMinimumWidth(260)
        self.job_label = QLabel("")
        self.progress_bar = QProgressBar(window)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(PROGRESS_WIDTH)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setVisible(False)
        self.device_label = QLabel("")
        self.device_label.setToolTip("The device the model actually runs on")
        # a training run outlives its (non-modal) dialog: this says how it goes and reopens it
        self.training_button = QToolButton(window)
        self.training_button.setAutoRaise(True)
        self.training_button.setToolTip("Show the training window")
        self.training_button.setVisible(False)
        for widget in (self.training_button, self.hover_label, self.job_label, self.progress_bar, self.device_label):
            bar.addPermanentWidget(widget)
        self._jobs: list[JobHandle] = []  # running jobs, the newest last: the bar shows the newest

    # ------------------------------------------------------------------ jobs
    def follow(self, handle: JobHandle) -> None:
        """Show ``handle``'s description and progress while it runs (the newest job wins)."""
        self._jobs.append(handle)
        handle.started.connect(lambda h=handle: self._show(h))
        handle.progress.connect(lambda fraction, message, h=handle: self._progress(h, fraction, message))
        handle.ended.connect(lambda h=handle: self._ended(h))

    def _current(self) -> Optional[JobHandle]:
        running = [h for h in self._jobs if h.state is JobState.RUNNING]
        return running[-1] if running else None

    def _show(self, handle: JobHandle) -> None:
        if self._current() is handle:
            self.job_label.setText(handle.description)
            self.set_progress(handle.fraction, handle.progress_message)
            self.progress_bar.setVisible(True)

    def _progress(self, handle: JobHandle, fraction: float, message: str) -> None:
        if self._current() is handle:
            self.set_progress(fraction, message)

    def _ended(self, handle: JobHandle) -> None:
        self._jobs = [h for h in self._jobs if h is not handle]
        current = self._current()
        if current is not None:
            self._show(current)
        elif not self._jobs:
            self.progress_bar.setVisible(False)
            self.job_label.setText("")

    def set_progress(self, fraction: float, message: str = "") -> None:
        """The bar's value and text; a message too long for the bar is shortened (full text as tooltip)."""
        self.progress_bar.setValue(int(fraction * 1000))
        metrics = self.progress_bar.fontMetrics()
        room = self.progress_bar.width() - 16 - metrics.horizontalAdvance(" 100%")
        text = metrics.elidedText(message, Qt.TextElideMode.ElideRight, max(0, room)) if message else ""
        self.progress_bar.setFormat((text.replace("%", "%%") + " %p%").strip())  # %p: the percentage
        self.progress_bar.setToolTip(message)

    def set_job_text(self, text: str) -> None:
        self.job_label.setText(text)

    # ------------------------------------------------------------------ the rest
    def set_hover(self, text: str) -> None:
        self.hover_label.setText(text)

    def set_device(self, info: Optional[DeviceInfo], requested: str, cuda_available: bool) -> None:
        self.device_label.setText(device_text(info, requested, cuda_available))

    def set_training(self, text: str) -> None:
        self.training_button.setText(text)
        self.training_button.setVisible(bool(text))
