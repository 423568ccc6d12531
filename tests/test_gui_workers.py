"""Job handles: the device worker and the pool report progress, streamed values, results, errors
and cancellation on each job's own handle; stale jobs are discarded by their owner; clean teardown."""
import threading
import time

import numpy as np
import pytest
import torch
from PySide6.QtCore import QThread, QTimer

from fssgui.gui.workers import DeviceWorker, JobState, LatestJob, WorkerPool


@pytest.fixture
def worker(qtbot):
    w = DeviceWorker(poll_ms=100)
    yield w
    assert w.shutdown(timeout_ms=10000)


@pytest.fixture
def pool(qtbot):
    p = WorkerPool("test", threads=1)
    yield p
    p.shutdown()


def _steps(n: int, delay: float, record: list | None = None):
    def run(ctx, cache=None):
        for i in range(n):
            ctx.check()
            time.sleep(delay)
            ctx.progress((i + 1) / n, f"step {i + 1}")
        if record is not None:
            record.append(QThread.currentThread())
        return np.arange(n)

    return run


def test_job_runs_in_the_device_thread_and_reports_on_its_handle(qtbot, worker):
    threads, progress, order = [], [], []
    handle = worker.submit(_steps(5, 0.06, threads), description="five steps")
    handle.progress.connect(lambda f, m: progress.append(f))
    for name in ("started", "finished", "ended"):
        getattr(handle, name).connect(lambda *_a, n=name: order.append(n))
    assert worker.is_busy and handle.description == "five steps"
    with qtbot.waitSignal(handle.ended, timeout=10000):
        pass
    assert order == ["started", "finished", "ended"]
    assert handle.state is JobState.FINISHED and handle.result.tolist() == [0, 1, 2, 3, 4]
    assert threads and threads[0] is not QThread.currentThread()
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    assert not worker.is_busy


def test_a_generator_job_streams_its_values_before_the_result(qtbot, pool):
    def frames(ctx, n):
        for i in range(n):
            yield i * i
        return "done"

    seen = []
    handle = pool.submit(frames, 4)
    handle.yielded.connect(seen.append)
    handle.finished.connect(lambda result: seen.append(result))
    with qtbot.waitSignal(handle.ended, timeout=5000):
        pass
    assert seen == [0, 1, 4, 9, "done"]


def test_event_loop_serves_timers_during_a_job(qtbot, worker):
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    started = time.monotonic()
    handle = worker.submit(_steps(10, 0.05))
    with qtbot.waitSignal(handle.finished, timeout=10000):
        pass
    elapsed = time.monotonic() - started
    timer.stop()
    assert elapsed >= 0.45
    # the GUI thread was never blocked: the 10 ms timer fired throughout the ~0.5 s job
    assert len(ticks) >= 15
    assert np.diff([started] + ticks).max() < 0.3


def test_cancel_between_steps_and_a_queued_job_never_starts(qtbot, worker):
    done = []
    running = worker.submit(_steps(200, 0.02))
    queued = worker.submit(_steps(1, 0.0))
    for handle in (running, queued):
        handle.finished.connect(done.append)
    queued.started.connect(lambda: done.append("queued started"))
    qtbot.wait(100)
    with qtbot.waitSignal(queued.cancelled, timeout=5000):
        running.cancel()
        queued.cancel()
    qtbot.waitUntil(lambda: not worker.is_busy, timeout=5000)
    assert running.state is JobState.CANCELLED and queued.state is JobState.CANCELLED
    assert done == []


def test_a_newer_job_discards_the_older_one(qtbot, worker):
    shown = []
    latest = LatestJob()

    def uncancellable(value):
        def run(ctx, cache):  # ignores cancellation on purpose: its result must still be dropped
            time.sleep(0.2)
            return value

        return run

    for value in ("old", "new"):
        handle = latest.start(worker.submit(uncancellable(value)))
        handle.finished.connect(shown.append)
    qtbot.waitUntil(lambda: not worker.is_busy, timeout=10000)
    assert shown == ["new"] and latest.handle is None


def test_errors_are_reported_on_the_handle_and_the_worker_keeps_running(qtbot, worker):
    def boom(ctx, cache):
        raise ValueError("bad thing happened")

    handle = worker.submit(boom)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    message, trace = blocker.args
    assert "bad thing happened" in message and "ValueError" in trace and isinstance(handle.error, ValueError)
    again = worker.submit(_steps(1, 0.0))
    with qtbot.waitSignal(again.finished, timeout=5000):
        pass


def test_cuda_out_of_memory_is_reported_with_advice(qtbot, worker):
    def oom(ctx, cache):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    handle = worker.submit(oom)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    assert "GPU memory ran out" in blocker.args[0] and "CPU" in blocker.args[0]


def test_a_pool_of_one_thread_runs_jobs_in_submission_order_off_the_gui_thread(qtbot, pool):
    gui_thread = threading.current_thread()
    ran = []

    def record(ctx, label, delay):
        time.sleep(delay)
        ran.append((label, threading.current_thread()))
        return label

    handles = [pool.submit(record, "slow", 0.2), pool.submit(record, "fast", 0.0)]
    assert handles[1].wait(10000) and handles[0].state is JobState.FINISHED
    assert [label for label, _ in ran] == ["slow", "fast"]
    assert all(thread is not gui_thread for _, thread in ran)


def test_wait_keeps_the_event_loop_running(qtbot, pool):
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    handle = pool.submit(lambda ctx: time.sleep(0.3) or "slept")
    assert handle.wait(10000) and handle.result == "slept"
    timer.stop()
    assert len(ticks) >= 10


def test_shutdown_cancels_a_running_job_and_joins_the_thread(qtbot):
    w = DeviceWorker()
    started = threading.Event()

    def long_job(ctx, cache):
        started.set()
        for _ in range(1000):
            ctx.check()
            time.sleep(0.01)
        return "never"

    w.submit(long_job)
    assert started.wait(5)
    t0 = time.monotonic()
    assert w.shutdown(timeout_ms=10000)
    assert time.monotonic() - t0 < 3
    assert w._thread.isFinished()
    with pytest.raises(RuntimeError):
        w.submit(long_job)
    assert w.shutdown()  # idempotent


def test_an_ended_handle_and_its_result_are_freed_even_when_a_slot_holds_the_handle(qtbot, worker, pool):
    """A slot that holds its own handle (``lambda h=handle: ...``) made a cycle through PySide's
    connection that the garbage collector cannot see: every handle, with its result, stayed alive
    for the life of the app (found by bench/soak.py). Finished, failed, cancelled and discarded
    handles are all freed once they have ended."""
    import gc
    import weakref

    def fail(ctx, cache):
        raise ValueError("no")

    def slow(ctx, cache):
        for _ in range(200):
            ctx.check()
            time.sleep(0.01)

    latest, refs, outcomes = LatestJob(), [], []
    handles = [pool.submit(lambda ctx: np.ones(1000)), worker.submit(_steps(2, 0.01)), worker.submit(fail),
               worker.submit(slow), latest.start(worker.submit(slow))]
    for handle in handles:
        handle.finished.connect(lambda result, h=handle: outcomes.append((h.id, "finished")))
        handle.failed.connect(lambda message, trace: outcomes.append((handle.id, handle.error)))
        handle.ended.connect(lambda h=handle: outcomes.append((h.id, "ended")))
        refs.append(weakref.ref(handle))
    qtbot.waitUntil(lambda: handles[3].state is JobState.RUNNING, timeout=5000)
    handles[3].cancel()
    latest.discard()
    del handles, handle
    qtbot.waitUntil(lambda: not worker.is_busy and not pool.is_busy, timeout=10000)
    assert sum(1 for _, what in outcomes if what == "ended") == 5
    gc.collect()
    assert [ref() for ref in refs] == [None] * 5


def test_what_a_job_reports_after_shutdown_reaches_nobody(qtbot):
    """A window shutting down discards its jobs: a result already on its way (posted, not yet
    delivered) must not reach slots of widgets the window is deleting, nor the runner's busy signal."""
    pool = WorkerPool("late")
    gate = threading.Event()
    handle = pool.submit(lambda ctx: gate.wait(5) and "late")
    got, ended = [], []
    handle.finished.connect(got.append)
    handle.failed.connect(lambda message, trace: got.append(message))
    pool.busyChanged.connect(got.append)
    handle.ended.connect(lambda: ended.append(True))
    gate.set()
    pool.shutdown(wait=True)  # the job has ended in its thread; its events wait in the GUI thread's queue
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    assert got == [] and handle.discarded


def test_a_pool_deleted_with_its_widget_discards_its_jobs(qtbot):
    """A widget closed while its pool draws: the drawing's result reaches nobody (its slots would
    touch deleted widgets)."""
    from PySide6.QtWidgets import QWidget

    owner = QWidget()
    pool = WorkerPool("owned", 1, owner)
    gate = threading.Event()
    handle = pool.submit(lambda ctx: gate.wait(5) and "drawn")
    got, ended = [], []
    handle.finished.connect(got.append)
    handle.ended.connect(lambda: ended.append(True))
    owner.deleteLater()
    qtbot.waitUntil(lambda: handle.discarded, timeout=5000)  # the pool went with its owner
    gate.set()
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    assert got == []
