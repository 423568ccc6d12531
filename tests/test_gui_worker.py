"""The worker thread: progress, cancel, stale results, errors, responsiveness, clean teardown."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time

import numpy as np
import pytest
import torch
from PySide6.QtCore import QThread, QTimer

from fssgui.explain.base import Cancelled
from fssgui.pipeline import jobs
from fssgui.pipeline import BRUSHED, ModelSpec
from fssgui.gui.worker import GpuWorker
from gui_testkit import TEST_EXPLAINERS, TINY_MODEL, make_gui_episode, register_tiny_model


@pytest.fixture
def worker(qtbot):
    w = GpuWorker(poll_ms=100)
    yield w
    assert w.shutdown(timeout_ms=10000)


def _steps(n: int, delay: float, record: list | None = None):
    def run(ctx, cache):
        for i in range(n):
            ctx.check()
            time.sleep(delay)
            ctx.progress((i + 1) / n, f"step {i + 1}")
        if record is not None:
            record.append(QThread.currentThread())
        return np.arange(n)

    return run


def test_job_runs_in_the_worker_thread_and_reports_progress(qtbot, worker):
    progress = []
    worker.progress.connect(lambda job, f, msg: progress.append((job, f, msg)))
    threads = []
    with qtbot.waitSignal(worker.finished, timeout=10000) as blocker:
        job = worker.submit("test", _steps(5, 0.06, threads))
    job_id, result = blocker.args
    assert job_id == job
    assert isinstance(result, np.ndarray) and result.tolist() == [0, 1, 2, 3, 4]
    assert threads and threads[0] is not QThread.currentThread()
    fractions = [f for j, f, _ in progress if j == job]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert not worker.is_busy


def test_event_loop_serves_timers_during_a_job(qtbot, worker):
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    started = time.monotonic()
    with qtbot.waitSignal(worker.finished, timeout=10000):
        worker.submit("test", _steps(10, 0.05))
    elapsed = time.monotonic() - started
    timer.stop()
    assert elapsed >= 0.45
    # the GUI thread was never blocked: the 10 ms timer fired throughout the ~0.5 s job
    assert len(ticks) >= 15
    gaps = np.diff([started] + ticks)
    assert gaps.max() < 0.3


def test_cancel_between_steps(qtbot, worker):
    done = []
    worker.finished.connect(lambda *a: done.append(a))
    job = worker.submit("test", _steps(200, 0.02))
    qtbot.wait(100)
    with qtbot.waitSignal(worker.cancelled, timeout=5000) as blocker:
        worker.cancel(job)
    assert blocker.args == [job]
    qtbot.wait(50)
    assert done == [] and not worker.is_busy


def test_a_newer_job_drops_the_older_result(qtbot, worker):
    finished, dropped, cancelled = [], [], []
    worker.finished.connect(lambda j, r: finished.append(j))
    worker.dropped.connect(dropped.append)
    worker.cancelled.connect(cancelled.append)

    def uncancellable(value):
        def run(ctx, cache):  # ignores cancellation on purpose: its result must still be dropped
            time.sleep(0.2)
            return value

        return run

    old = worker.submit("explain", uncancellable("old"))
    new = worker.submit("explain", uncancellable("new"))
    other = worker.submit("predict", uncancellable("other channel"))
    qtbot.waitUntil(lambda: not worker.is_busy, timeout=10000)
    assert old in dropped + cancelled and old not in finished
    assert new in finished and other in finished


def test_errors_are_reported_and_the_worker_keeps_running(qtbot, worker):
    def boom(ctx, cache):
        raise ValueError("bad thing happened")

    with qtbot.waitSignal(worker.failed, timeout=5000) as blocker:
        job = worker.submit("test", boom)
    job_id, message, trace = blocker.args
    assert job_id == job and "bad thing happened" in message and "ValueError" in trace
    with qtbot.waitSignal(worker.finished, timeout=5000):
        worker.submit("test", _steps(1, 0.0))


def test_cuda_out_of_memory_is_reported_with_advice(qtbot, worker):
    def oom(ctx, cache):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    with qtbot.waitSignal(worker.failed, timeout=5000) as blocker:
        worker.submit("test", oom)
    assert "out of memory" in blocker.args[1] and "CPU" in blocker.args[1]


def test_shutdown_cancels_a_running_job_and_joins_the_thread(qtbot):
    w = GpuWorker()
    started = threading.Event()

    def long_job(ctx, cache):
        started.set()
        for _ in range(1000):
            ctx.check()
            time.sleep(0.01)
        return "never"

    w.submit("test", long_job)
    assert started.wait(5)
    t0 = time.monotonic()
    assert w.shutdown(timeout_ms=10000)
    assert time.monotonic() - t0 < 3
    assert w._thread.isFinished()
    with pytest.raises(RuntimeError):
        w.submit("test", long_job)
    assert w.shutdown()  # idempotent


def test_model_jobs_return_numpy_results_at_image_resolution(qtbot, worker):
    register_tiny_model()
    episode = make_gui_episode(shots=2, size=(40, 56))
    spec = ModelSpec(TINY_MODEL, None, "cpu")
    with qtbot.waitSignal(worker.finished, timeout=20000) as blocker:
        worker.submit("predict", lambda ctx, cache: jobs.predict(ctx, cache, spec, episode))
    prediction = blocker.args[1]
    assert prediction.probability.shape == (40, 56) and prediction.probability.dtype == np.float32
    assert prediction.mask.dtype == bool and prediction.device == "cpu"
    # the tiny matcher finds the bright disc
    assert prediction.mask[episode.query_mask].mean() > 0.8
    region = episode.query_mask.copy()
    with qtbot.waitSignal(worker.finished, timeout=20000) as blocker:
        worker.submit("explain", lambda ctx, cache: jobs.explain(
            ctx, cache, spec, episode, region, BRUSHED, "test-mask", {}, TEST_EXPLAINERS))
    result = blocker.args[1]
    assert [m.shape for m in result.maps] == [s.image.shape[:2] for s in episode.supports]
    assert all(isinstance(m, np.ndarray) for m in result.maps)
    assert np.array_equal(result.region, region)
    # test-mask attributes shot i with (i+1) * its mask, brought back to the support's resolution
    assert result.maps[1].max() == pytest.approx(2.0)


def test_explain_job_with_empty_region_fails_with_a_clear_message(qtbot, worker):
    register_tiny_model()
    episode = make_gui_episode(shots=1)
    spec = ModelSpec(TINY_MODEL, None, "cpu")
    empty = np.zeros(episode.query_size, bool)
    with qtbot.waitSignal(worker.failed, timeout=20000) as blocker:
        worker.submit("explain", lambda ctx, cache: jobs.explain(
            ctx, cache, spec, episode, empty, BRUSHED, "test-mask", {}, TEST_EXPLAINERS))
    assert "region R" in blocker.args[1] and "empty" in blocker.args[1]


def test_job_context_check_raises_cancelled():
    ctx = jobs.JobContext(cancelled=lambda: True)
    with pytest.raises(Cancelled):
        ctx.check()
