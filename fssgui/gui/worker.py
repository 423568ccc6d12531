"""The one long-lived worker thread that owns the models and the device.

GUI side: :class:`GpuWorker` (lives in the GUI thread). It starts a ``QThread`` and moves a
:class:`_WorkerCore` into it; jobs are sent to the core through a queued signal, so the GUI
thread never waits on the model. Each job has an id and a *channel* ("predict", "explain", ...):
submitting a job cancels the previous job of its channel, and a result whose id is no longer the
latest of its channel is dropped (``dropped`` is emitted instead of ``finished``), so an old heat
map can never be painted over a newer request.

Cancellation is cooperative: ``cancel(job_id)`` sets a ``threading.Event`` that the job checks
between steps (explainers and metrics call ``cancelled()`` at their step boundaries).

Errors never escape: every exception becomes ``failed(job_id, message, traceback)``; a CUDA
out-of-memory error also clears the cache and says how much memory is left.

Shutdown: :meth:`GpuWorker.shutdown` cancels everything, asks the core (in its own thread) to
release the models and quit, then waits for the thread, so no "QThread: Destroyed while thread
is still running" at exit.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from ..pipeline import ModelCache, device_info
from ..pipeline.jobs import JobContext, describe_oom, model_error_hint

JobFunction = Callable[[JobContext, ModelCache], Any]


@dataclass
class Job:
    id: int
    channel: str
    function: JobFunction
    description: str = ""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


class _WorkerCore(QObject):
    """Runs jobs in the worker thread. Only :class:`GpuWorker` talks to it."""

    started = Signal(int, str)  # job id, description
    progress = Signal(int, float, str)  # job id, fraction 0..1, message
    finished = Signal(int, object)  # job id, result
    failed = Signal(int, str, str)  # job id, one-line message, traceback
    cancelled = Signal(int)
    log = Signal(str)
    device_status = Signal(object)  # DeviceInfo
    stopped = Signal()

    def __init__(self, model_builder: Callable[..., Any] | None = None, poll_ms: int = 1000) -> None:
        super().__init__()
        self.cache = ModelCache(model_builder)
        self._stopping = threading.Event()
        self._poll_ms = poll_ms
        self._timer: Optional[QTimer] = None
        self._last_progress = 0.0
        self._last_memory = 0.0

    @Slot()
    def start(self) -> None:
        # Created here so that the timer belongs to (and fires in) the worker thread.
        self._timer = QTimer()
        self._timer.setInterval(self._poll_ms)
        self._timer.timeout.connect(self._poll_memory)
        self._timer.start()

    @Slot()
    def _poll_memory(self) -> None:
        if self.cache.device is not None and self.cache.device.type == "cuda":
            self._emit_memory()

    def _emit_memory(self) -> None:
        try:
            self.device_status.emit(device_info(self.cache.device, self.cache.spec.device if self.cache.spec else "auto"))
        except Exception as exc:  # memory queries must never kill the worker
            self.log.emit(f"could not read device memory: {exc}")
        self._last_memory = time.monotonic()

    @Slot(object)
    def run_job(self, job: Job) -> None:
        if self._stopping.is_set() or job.cancel_event.is_set():
            self.cancelled.emit(job.id)
            return
        from ..explain.base import Cancelled

        self.started.emit(job.id, job.description)
        self._last_progress = 0.0

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            # Coarse progress (every >= 50 ms) keeps the GUI thread's queue short.
            if fraction in (0.0, 1.0) or now - self._last_progress >= 0.05:
                self._last_progress = now
                self.progress.emit(job.id, max(0.0, min(1.0, fraction)), message)
            if self.cache.device is not None and self.cache.device.type == "cuda" and now - self._last_memory >= 1.0:
                self._emit_memory()

        def is_cancelled() -> bool:
            return job.cancel_event.is_set() or self._stopping.is_set()

        ctx = JobContext(progress, is_cancelled, self.log.emit)
        device_before = self.cache.device
        try:
            result = job.function(ctx, self.cache)
            if is_cancelled():
                raise Cancelled()
        except Cancelled:
            self.cancelled.emit(job.id)
        except Exception as exc:  # noqa: BLE001 - every error is reported, the worker keeps running
            import torch

            if isinstance(exc, torch.cuda.OutOfMemoryError):
                message = describe_oom(self.cache.device)
            else:
                message = model_error_hint(exc)
            self.failed.emit(job.id, message, traceback.format_exc())
        else:
            self.finished.emit(job.id, result)
        if self.cache.device is not device_before or (self.cache.device is not None and self.cache.device.type == "cuda"):
            self._emit_memory()

    @Slot()
    def stop(self) -> None:
        """Release the models in the thread that owns them, then end the thread's event loop."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            self.cache.release()
        finally:
            self.stopped.emit()
            thread = QThread.currentThread()
            thread.quit()


class GpuWorker(QObject):
    """GUI-side handle of the worker thread. All methods are called from the GUI thread."""

    jobStarted = Signal(int, str)
    progress = Signal(int, float, str)
    finished = Signal(int, object)
    failed = Signal(int, str, str)
    cancelled = Signal(int)
    dropped = Signal(int)  # a result arrived for a job that is no longer the latest of its channel
    log = Signal(str)
    deviceStatus = Signal(object)
    busyChanged = Signal(bool)

    _submit = Signal(object)
    _stop = Signal()

    def __init__(self, parent: QObject | None = None, model_builder: Callable[..., Any] | None = None,
                 poll_ms: int = 1000) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._latest: dict[str, int] = {}
        self._thread = QThread()
        self._thread.setObjectName("fssgui-worker")
        self._core = _WorkerCore(model_builder, poll_ms)
        self._core.moveToThread(self._thread)
        self._thread.started.connect(self._core.start)
        self._submit.connect(self._core.run_job)
        self._stop.connect(self._core.stop)
        self._core.started.connect(self.jobStarted)
        self._core.progress.connect(self._on_progress)
        self._core.finished.connect(self._on_finished)
        self._core.failed.connect(self._on_failed)
        self._core.cancelled.connect(self._on_cancelled)
        self._core.log.connect(self.log)
        self._core.device_status.connect(self.deviceStatus)
        self._running = False
        self._thread.start()
        self._running = True

    # ------------------------------------------------------------------------------ jobs
    def submit(self, channel: str, function: JobFunction, description: str = "") -> int:
        """Queue ``function(ctx, model_cache)`` in the worker thread; returns the job id.

        The previous job of the same channel is cancelled and its result will be dropped."""
        if not self._running:
            raise RuntimeError("the worker has been shut down")
        job = Job(next(self._ids), channel, function, description or channel)
        previous = self._latest.get(channel)
        if previous is not None and previous in self._jobs:
            self._jobs[previous].cancel_event.set()
        self._latest[channel] = job.id
        was_busy = self.is_busy
        self._jobs[job.id] = job
        self._submit.emit(job)
        if not was_busy:
            self.busyChanged.emit(True)
        return job.id

    def cancel(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel_event.set()

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.cancel_event.set()

    def is_latest(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and self._latest.get(job.channel) == job_id

    @property
    def is_busy(self) -> bool:
        return bool(self._jobs)

    def pending_jobs(self) -> list[int]:
        return sorted(self._jobs)

    def job_description(self, job_id: int) -> str:
        job = self._jobs.get(job_id)
        return job.description if job else ""

    # ----------------------------------------------------------------------- from the core
    def _pop(self, job_id: int) -> Optional[Job]:
        job = self._jobs.pop(job_id, None)
        if not self._jobs:
            self.busyChanged.emit(False)
        return job

    @Slot(int, float, str)
    def _on_progress(self, job_id: int, fraction: float, message: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None and not job.cancel_event.is_set():
            self.progress.emit(job_id, fraction, message)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        job = self._jobs.get(job_id)
        stale = job is None or job.cancel_event.is_set() or self._latest.get(job.channel) != job_id
        self._pop(job_id)
        if stale:
            self.dropped.emit(job_id)
        else:
            self.finished.emit(job_id, result)

    @Slot(int, str, str)
    def _on_failed(self, job_id: int, message: str, trace: str) -> None:
        job = self._jobs.get(job_id)
        stale = job is None or self._latest.get(job.channel) != job_id
        self._pop(job_id)
        if stale:
            self.dropped.emit(job_id)
        else:
            self.failed.emit(job_id, message, trace)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        self._pop(job_id)
        self.cancelled.emit(job_id)

    # ---------------------------------------------------------------------------- shutdown
    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel all jobs, release the models in the worker thread, stop and join it.

        Returns True when the thread ended within ``timeout_ms``."""
        if not self._running:
            return True
        self._running = False
        self.cancel_all()
        self._core._stopping.set()
        self._stop.emit()
        ended = self._thread.wait(timeout_ms)
        if not ended:
            # A job that never checks cancelled(): as a last resort at exit, stop the thread.
            self._thread.terminate()
            ended = self._thread.wait(5000)
        self._jobs.clear()
        return bool(ended)

    @property
    def running(self) -> bool:
        return self._running
