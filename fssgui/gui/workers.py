"""The one way the app runs work in the background: submitting a job returns a :class:`JobHandle`.

Two runners hand out handles (napari's ``create_worker`` / ``thread_worker`` is the example):

* :class:`DeviceWorker`: the one thread that owns the device and the resident models (a
  :class:`~fssgui.pipeline.ModelCache`); model jobs are ``function(ctx, cache, *args)`` and run one
  after the other, in submission order;
* :class:`WorkerPool`: threads for file and CPU work (episode I/O, exports, prototype maps);
  jobs are ``function(ctx, *args)``. A pool of one thread runs its jobs in submission order.

(Training runs in a child process of its own: :mod:`fssgui.gui.training.process`.)

A job's function gets a :class:`~fssgui.pipeline.jobs.JobContext`: ``progress(fraction, message)``,
``cancelled()`` / ``check()`` (cooperative cancel between steps), ``log(text)`` and
``publish(value)``. A generator function streams: each value it yields is published, and the
cancel flag is checked between yields; what it returns is the result.

The handle lives in the GUI thread; whatever its job reports arrives there, in order, as the
handle's own signals: ``started``, ``progress``, ``yielded``, then exactly one of ``finished``
(the result), ``failed`` (one-line message, traceback; the exception is ``handle.error``) or
``cancelled``, then ``ended``. Nobody filters a shared signal by job id: whoever submits a job
connects to its handle. An owner that no longer wants a result calls :meth:`JobHandle.discard`
(cancel, and emit nothing but ``ended``); :class:`LatestJob` does that for "a newer request
replaces the older one".

Errors never escape a job: every exception becomes ``failed`` with a one-line message
(:func:`~fssgui.pipeline.jobs.job_error_message`: running out of GPU memory also clears the cache and
says how much is left).
"""
from __future__ import annotations

import enum
import functools
import inspect
import itertools
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import shiboken6
from PySide6.QtCore import QEventLoop, QMetaMethod, QObject, QThread, QTimer, Qt, Signal, Slot

from ..errors import Cancelled
from ..pipeline import ModelCache, device_info
from ..pipeline.jobs import JobContext, job_error_message

#: progress is forwarded at most this often (plus the first and the last), to keep the GUI thread's queue short
PROGRESS_INTERVAL_S = 0.05
_ids = itertools.count(1)


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def over(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)


class JobHandle(QObject):
    """One submitted job, seen from the GUI thread (see the module docstring)."""

    started = Signal()
    progress = Signal(float, str)  # fraction 0..1, message
    yielded = Signal(object)  # a published partial result
    finished = Signal(object)  # the result
    failed = Signal(str, str)  # one-line message, traceback
    cancelled = Signal()
    ended = Signal()  # always last, whatever the outcome (also after discard)

    _event = Signal(str, object)  # from the thread that runs the job (queued into the GUI thread)

    def __init__(self, description: str, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.id = next(_ids)
        self.description = description
        self.state = JobState.QUEUED
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.message = ""  # the one-line message of a failure
        self.trace = ""  # and its traceback
        self.discarded = False
        self.fraction = 0.0
        self.progress_message = ""
        self._cancel = threading.Event()
        self._event.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)

    # ------------------------------------------------------------------ GUI thread
    def cancel(self) -> None:
        """Ask the job to stop at its next step (``cancelled`` follows; a queued job never starts)."""
        self._cancel.set()

    def discard(self) -> None:
        """Cancel, and drop whatever the job still reports (only ``ended`` is emitted)."""
        self.discarded = True
        self._cancel.set()

    @property
    def running(self) -> bool:
        return not self.state.over

    def wait(self, timeout_ms: int = -1) -> bool:
        """Keep the event loop running (the window repaints) until the job is over; True when it is."""
        if self.state.over:
            return True
        loop = QEventLoop()
        self.ended.connect(loop.quit)
        if timeout_ms >= 0:
            QTimer.singleShot(timeout_ms, loop.quit)
        if not self.state.over:
            loop.exec()
        return self.state.over

    @Slot(str, object)
    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "started":
            self.state = JobState.RUNNING
            if not self.discarded:
                self.started.emit()
        elif kind == "progress":
            self.fraction, self.progress_message = payload
            if not self.discarded and not self._cancel.is_set():
                self.progress.emit(*payload)
        elif kind == "yielded":
            if not self.discarded:
                self.yielded.emit(payload)
        else:  # the outcome, then "ended"
            if kind == "finished":
                self.state, self.result = JobState.FINISHED, payload
            elif kind == "failed":
                self.state = JobState.FAILED
                self.message, self.trace, self.error = payload
            else:
                self.state = JobState.CANCELLED
            if not self.discarded:
                if kind == "finished":
                    self.finished.emit(payload)
                elif kind == "failed":
                    self.failed.emit(self.message, self.trace)
                else:
                    self.cancelled.emit()
            self.ended.emit()
            self._drop_connections()

    def _drop_connections(self) -> None:
        """Disconnect every slot of this handle once it has ended (nothing is emitted after ``ended``).

        A slot is often a lambda that holds the handle itself (``lambda h=handle: ...``, or one that
        reads ``handle.error``): PySide keeps such a slot alive as long as the sender lives, and the
        sender lives as long as the slot holds it, a cycle the garbage collector cannot see. Without
        this every handle, and the result it holds, stayed in memory for the life of the app."""
        meta = self.metaObject()
        for index in range(meta.methodOffset(), meta.methodCount()):
            method = meta.method(index)
            if method.methodType() == QMetaMethod.MethodType.Signal and self.isSignalConnected(method):
                getattr(self, bytes(method.name()).decode()).disconnect()

    # ------------------------------------------------------------------ the job's thread
    def _post(self, kind: str, payload: Any = None) -> None:
        self._event.emit(kind, payload)

    def _context(self, log: Callable[[str], None], on_progress: Callable[[], None] | None = None) -> JobContext:
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if fraction in (0.0, 1.0) or now - last[0] >= PROGRESS_INTERVAL_S:
                last[0] = now
                self._post("progress", (max(0.0, min(1.0, float(fraction))), message))
            if on_progress is not None:
                on_progress()

        return JobContext(progress, self._cancel.is_set, log, lambda value: self._post("yielded", value))

    def _run(self, function: Callable[..., Any], args: tuple, ctx: JobContext,
             describe_error: Callable[[BaseException], str] = job_error_message) -> None:
        """Run ``function(ctx, *args)`` here (the worker's thread) and post its outcome."""
        if self._cancel.is_set():
            self._post("cancelled")
            return
        self._post("started")
        try:
            value = function(ctx, *args)
            if inspect.isgenerator(value):
                value = _drain(value, ctx)
            ctx.check()
        except Cancelled:
            self._post("cancelled")
        except Exception as exc:  # noqa: BLE001 - every error is reported; the worker keeps running
            self._post("failed", (describe_error(exc), traceback.format_exc(), exc))
        else:
            self._post("finished", value)


def _drain(generator, ctx: JobContext) -> Any:
    """Publish what ``generator`` yields (checking the cancel flag between yields); its return value."""
    while True:
        ctx.check()
        try:
            value = next(generator)
        except StopIteration as stop:
            return stop.value
        ctx.publish(value)


class _Runner(QObject):
    """What both runners share: the handles not over yet, busy state, cancel all."""

    jobSubmitted = Signal(object)  # JobHandle: the status bar follows every job
    busyChanged = Signal(bool)
    log = Signal(str)  # lines a job logs (the window's log pane)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._active: dict[int, JobHandle] = {}
        self._running = True
        # deleted with its owner (a widget closing while a job runs): the jobs report to nobody, as
        # after shutdown (the slot holds the handles, not this runner, whose C++ side is gone)
        self.destroyed.connect(functools.partial(_discard_all, self._active))

    def _track(self, handle: JobHandle) -> JobHandle:
        if not self._running:
            raise RuntimeError(f"{type(self).__name__} has been shut down")
        was_busy = self.is_busy
        self._active[handle.id] = handle
        handle.ended.connect(lambda h=handle: self._untrack(h))
        self.jobSubmitted.emit(handle)
        if not was_busy:
            self.busyChanged.emit(True)
        return handle

    def _untrack(self, handle: JobHandle) -> None:
        if self._active.pop(handle.id, None) is not None and not self._active and self._running \
                and shiboken6.isValid(self):
            self.busyChanged.emit(False)  # (after shutdown or deletion, nobody listens)

    def _close(self) -> None:
        """No new job; every job not over yet is discarded: what it still reports (a result drawn
        for a widget the closing window is deleting) reaches nobody."""
        self._running = False
        _discard_all(self._active)

    @property
    def is_busy(self) -> bool:
        return bool(self._active)

    def cancel_all(self) -> None:
        for handle in list(self._active.values()):
            handle.cancel()

    @property
    def running(self) -> bool:
        return self._running


# ============================================================================ the device worker
class _DeviceCore(QObject):
    """Runs model jobs in the device thread. Only :class:`DeviceWorker` talks to it."""

    log = Signal(str)
    device_status = Signal(object)  # DeviceInfo

    def __init__(self, model_builder: Callable[..., Any] | None, poll_ms: int) -> None:
        super().__init__()
        self.cache = ModelCache(model_builder)
        self.stopping = threading.Event()
        self._poll_ms = poll_ms
        self._timer: Optional[QTimer] = None
        self._last_memory = 0.0

    @Slot()
    def start(self) -> None:
        # created here, so that the timer belongs to (and fires in) the device thread
        self._timer = QTimer()
        self._timer.setInterval(self._poll_ms)
        self._timer.timeout.connect(self._poll_memory)
        self._timer.start()

    def _on_cuda(self) -> bool:
        return self.cache.device is not None and self.cache.device.type == "cuda"

    @Slot()
    def _poll_memory(self) -> None:
        if self._on_cuda():
            self._emit_memory()

    def _emit_memory(self) -> None:
        try:
            self.device_status.emit(device_info(self.cache.device, self.cache.spec.device if self.cache.spec else "auto"))
        except Exception as exc:  # memory queries must never kill the worker
            self.log.emit(f"could not read device memory: {exc}")
        self._last_memory = time.monotonic()

    def _describe_error(self, exc: BaseException) -> str:
        return job_error_message(exc, self.cache.device)

    @Slot(object, object, object)
    def run_job(self, handle: JobHandle, function: Callable[..., Any], args: tuple) -> None:
        if self.stopping.is_set():
            handle.cancel()

        def memory_now_and_then() -> None:
            if self._on_cuda() and time.monotonic() - self._last_memory >= 1.0:
                self._emit_memory()

        device_before = self.cache.device
        ctx = handle._context(self.log.emit, memory_now_and_then)
        handle._run(function, (self.cache, *args), ctx, self._describe_error)
        if self.cache.device is not device_before or self._on_cuda():
            self._emit_memory()

    @Slot()
    def stop(self) -> None:
        """Release the models in the thread that owns them, then end the thread's event loop."""
        self.stopping.set()
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            self.cache.release()
        finally:
            QThread.currentThread().quit()


class DeviceWorker(_Runner):
    """The device thread, seen from the GUI thread (all methods are called from the GUI thread)."""

    deviceStatus = Signal(object)  # DeviceInfo, after a job that moved a model and now and then on CUDA

    _submit = Signal(object, object, object)
    _stop = Signal()

    def __init__(self, parent: QObject | None = None, model_builder: Callable[..., Any] | None = None,
                 poll_ms: int = 1000) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("fssgui-device")
        self._core = _DeviceCore(model_builder, poll_ms)
        self._core.moveToThread(self._thread)
        self._thread.started.connect(self._core.start)
        self._submit.connect(self._core.run_job)
        self._stop.connect(self._core.stop)
        self._core.log.connect(self.log)
        self._core.device_status.connect(self.deviceStatus)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any, description: str = "") -> JobHandle:
        """Queue ``function(ctx, model_cache, *args)`` on the device thread; returns its handle."""
        handle = self._track(JobHandle(description or getattr(function, "__name__", "job")))
        self._submit.emit(handle, function, args)
        return handle

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Discard every job (see WorkerPool.shutdown), release the models in the device thread, stop and join it.

        Returns True when the thread ended within ``timeout_ms``."""
        if not self._running:
            return True
        self._close()
        self._core.stopping.set()
        self._stop.emit()
        ended = self._thread.wait(timeout_ms)
        if not ended:
            # a job that never checks cancelled(): as a last resort at exit, stop the thread
            self._thread.terminate()
            ended = self._thread.wait(5000)
        self._active.clear()
        return bool(ended)


def _discard_all(active: dict[int, JobHandle]) -> None:
    for handle in list(active.values()):
        handle.discard()


# ============================================================================ the pool
class WorkerPool(_Runner):
    """Threads for file and CPU work. ``threads=1``: the jobs run one at a time, in submission order."""

    def __init__(self, name: str, threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=max(1, int(threads)), thread_name_prefix=f"fssgui-{name}")

    def submit(self, function: Callable[..., Any], *args: Any, description: str = "") -> JobHandle:
        """Queue ``function(ctx, *args)`` on the pool; returns its handle."""
        handle = self._track(JobHandle(description or getattr(function, "__name__", "job")))
        self._executor.submit(lambda: handle._run(function, args, handle._context(self.log.emit)))
        return handle

    def shutdown(self, wait: bool = True) -> None:
        """Discard the jobs not over (the queued ones never start, what the running ones still report
        reaches nobody); with ``wait``, let the running ones end first."""
        if not self._running:
            return
        self._close()
        self._executor.shutdown(wait=wait)


_ONCE_PER_PROCESS: dict[Callable[..., Any], JobHandle] = {}


def once_per_process(pool: WorkerPool, function: Callable[..., Any], callback: Callable[[Any], None],
                     description: str = "") -> JobHandle:
    """Run ``function(ctx)`` on ``pool`` once in this process (the CUDA list, the explainers'
    descriptions: answers that do not change while it runs) and hand its result to ``callback``: now
    if it is in, else when it arrives. A run that ended without a result is submitted again."""
    handle = _ONCE_PER_PROCESS.get(function)
    if handle is None or (not handle.running and handle.result is None):
        handle = _ONCE_PER_PROCESS[function] = pool.submit(function, description=description)
    if handle.running:
        handle.finished.connect(callback)
    else:
        callback(handle.result)
    return handle


class LatestJob:
    """An owner's one current job of a kind: starting a new one discards the previous one, so a
    result that arrives late can never replace a newer one."""

    def __init__(self) -> None:
        self.handle: Optional[JobHandle] = None

    def start(self, handle: JobHandle) -> JobHandle:
        self.discard()
        self.handle = handle
        handle.ended.connect(lambda h=handle: self._ended(h))
        return handle

    def _ended(self, handle: JobHandle) -> None:
        if self.handle is handle:
            self.handle = None

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.discard()
            self.handle = None
