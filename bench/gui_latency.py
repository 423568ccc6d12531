"""How long the window's GUI thread stalls during each user action (offscreen, the real window).

A 5 ms ``QTimer`` on the GUI thread records when the event loop gets to run it; the longest gap
between two ticks during an action is that action's worst stall (the time the window could not
repaint or react: a gap of the timer's interval means no stall). Two figures per action: the gap in
wall time ("wall ms": what a person sees, but on a shared CPU it also counts the time the GUI thread
waited for a core or for the GIL), and the GUI thread's own CPU time between two ticks ("cpu ms":
the work the window did on its thread in one go, independent of the machine's load). The first row
measures an idle window: its wall figure is the machine's noise floor at that moment. The script drives the window
through a scripted sequence, each step started from the event loop and waited for while the loop
runs, as a person would use it:

  build the window (reported apart: the constructor runs before the event loop) · open the demo
  episode · Predict · brush R (strokes of synthesized mouse events) · Explain R · run IAUC / DAUC
  in the playback tab and scrub every frame · run the ScaleProtoSeg model (random weights) and
  sweep the threshold slider and pick classes · exports: the playback's frames ZIP and HTML+PDF
  report, the prototype export · undo / redo · switch the theme.

Run: ``OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen python bench/gui_latency.py`` (goal: every
action's worst stall <= 50 ms). ``--trace MS`` samples the GUI thread's Python stack during
stalls longer than MS and prints where they were spent.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_MS = 50.0
TICK_MS = 5


class StallMeter:
    """The longest gap between two ticks of a ``TICK_MS`` timer on the GUI thread, per action.

    With ``trace``, a watchdog thread samples the GUI thread's Python stack whenever it has not
    ticked for ``trace`` ms, so the report can say where the longest stalls were spent."""

    def __init__(self, trace: float = 0.0) -> None:
        import threading

        from PySide6.QtCore import QTimer

        self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.samples: dict[str, int] = {}
        self._gui_thread = threading.get_ident()
        if trace:
            threading.Thread(target=self._watch, args=(trace / 1000.0,), daemon=True).start()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.worst = max(self.worst, now - self.last)
        self.worst_cpu = max(self.worst_cpu, cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu

    def reset(self) -> None:
        self.last, self.last_cpu = time.perf_counter(), time.thread_time()
        self.worst = self.worst_cpu = 0.0
        self.samples = {}

    def _watch(self, threshold: float) -> None:
        import traceback

        while True:
            time.sleep(0.005)
            if time.perf_counter() - self.last < threshold:
                continue
            frame = sys._current_frames().get(self._gui_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-6:]
            key = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
            self.samples[key] = self.samples.get(key, 0) + 1


def run_loop_until(app, done, timeout_s: float = 600.0) -> None:
    """Let the event loop run (as the app does) until ``done()`` or the timeout."""
    from PySide6.QtCore import QEventLoop

    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError("the action did not finish in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 20)


def wait_signal(app, signal, start) -> None:
    """Call ``start()`` and let the event loop run until ``signal`` is emitted."""
    box = {}

    def done(*_args) -> None:
        box["done"] = True

    signal.connect(done)
    try:
        start()
        run_loop_until(app, lambda: "done" in box)
    finally:
        signal.disconnect(done)


def wait_handle(app, handle) -> None:
    """Let the event loop run until the job of ``handle`` is over; raise when it failed."""
    run_loop_until(app, lambda: not handle.running)
    if handle.error is not None:
        raise RuntimeError(f"{handle.description}: {handle.message}")


def later(app, steps, gap_ms: int = 15) -> None:
    """Run the callables of ``steps`` one by one from the event loop, ``gap_ms`` apart (like input events)."""
    from PySide6.QtCore import QTimer

    pending = list(steps)
    state = {"left": len(pending)}

    def next_step() -> None:
        if pending:
            pending.pop(0)()
            state["left"] = len(pending)
            QTimer.singleShot(gap_ms, next_step)

    QTimer.singleShot(0, next_step)
    run_loop_until(app, lambda: state["left"] == 0 and not pending)


def stroke_steps(canvas, points):
    """Mouse press, moves and release on ``canvas`` through image points, as separate events."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    def send(kind, x, y, button, buttons):
        pos = QPointF(canvas.mapFromScene(QPointF(x, y)))
        event = QMouseEvent(kind, pos, QPointF(canvas.viewport().mapToGlobal(pos.toPoint())), button, buttons,
                            Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(canvas.viewport(), event)

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    steps = [lambda: send(QEvent.Type.MouseButtonPress, *points[0], left, left)]
    steps += [lambda p=p: send(QEvent.Type.MouseMove, *p, none, left) for p in points[1:]]
    steps.append(lambda: send(QEvent.Type.MouseButtonRelease, *points[-1], left, none))
    return steps


def scaleprotoseg_checkpoint(folder: Path) -> Path:
    """A random-weight Cityscapes-layout ScaleProtoSeg (one block per stage) saved as a state dict."""
    import torch

    from fssgui.models.scaleprotoseg import ScaleProtoSeg, ScaleProtoSegConfig

    torch.manual_seed(3)
    model = ScaleProtoSeg(ScaleProtoSegConfig(n_blocks=(1, 1, 1, 1))).eval()
    path = folder / "scaleprotoseg-random.pth"
    torch.save(model.state_dict(), path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="IAUC / DAUC steps of the playback run")
    parser.add_argument("--proto-size", type=int, default=129, help="ScaleProtoSeg input size")
    parser.add_argument("--trace", type=float, default=0.0, metavar="MS",
                        help="sample the GUI thread's stack during stalls longer than MS and print the commonest")
    parser.add_argument("--profile", metavar="TEXT", default="",
                        help="profile the GUI thread (cProfile) during the actions whose name contains TEXT and "
                             "print its costliest functions (cumulative time; the C++ work of Qt shows under the "
                             "Python call that entered it)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    scratch = Path(tempfile.mkdtemp(prefix="fssgui-latency-"))
    os.environ["FSSGUI_HOME"] = str(scratch / "home")
    from fssgui.gui.main_window import MainWindow
    from fssgui.settings import Autosave, Settings

    meter = StallMeter(args.trace)
    results: list[tuple[str, float, float, float]] = []  # name, worst wall gap, worst GUI CPU gap (ms), seconds

    def measure(name: str, action) -> None:
        run_loop_until(app, lambda: True)  # settle
        app.processEvents()
        meter.reset()
        profiler = cProfile.Profile() if args.profile and args.profile in name else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        action()
        app.processEvents()
        if profiler is not None:
            profiler.disable()
        meter._tick()
        seconds = time.perf_counter() - started
        results.append((name, meter.worst * 1000.0, meter.worst_cpu * 1000.0, seconds))
        print(f"  {name:<36} {meter.worst * 1000:8.1f} {meter.worst_cpu * 1000:8.1f} {seconds:8.2f}", flush=True)
        for stack, count in sorted(meter.samples.items(), key=lambda item: -item[1])[:4]:
            print(f"      {count:4d} x {stack}")
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)

    started = time.perf_counter()
    window = MainWindow(Settings(), autosave=Autosave(scratch / "autosave"), unattended=True)
    window.resize(1600, 1000)
    window.show()
    build_s = time.perf_counter() - started
    print(f"  (build the window: the constructor, before the event loop runs: {build_s:.1f} s)")
    print(f"  {'action':<36} {'wall ms':>8} {'cpu ms':>8} {'s':>8}", flush=True)
    measure("idle window, 3 s (the machine's noise)", lambda: later(app, [lambda: None] * 2, gap_ms=1500))

    measure("open the demo episode", lambda: wait_signal(app, window.episode_io.opened, window.episode_io.open_default_demo))
    measure("predict", lambda: wait_signal(app, window.runs.predictionShown, window.runs.predict))
    h, w = window.query.image.shape[:2]
    points = [(w * (0.3 + 0.02 * i), h * (0.4 + 0.01 * i)) for i in range(15)]
    window.actions["region_brushed"].trigger()
    measure("brush R (3 strokes)", lambda: later(app, stroke_steps(window.query.canvas, points) * 3))
    measure("explain R (affex-signed)", lambda: wait_signal(app, window.runs.resultShown, window.runs.explain))
    measure("undo / redo", lambda: later(app, [window.actions["undo"].trigger, window.actions["redo"].trigger] * 3))

    playback = window.playback_widget
    window.analysis.tabs.setCurrentWidget(window.analysis.tabs.widget(3))
    playback.set_parameters(steps=args.steps)
    measure("playback: run IAUC / DAUC", lambda: wait_signal(app, playback.runFinished, playback.run))
    frames = playback.frame_count()
    measure(f"playback: scrub {frames} frames", lambda: later(app, [lambda i=i: playback.set_frame(i)
                                                                   for i in range(frames)], gap_ms=10))
    measure("playback: play to the end", lambda: (playback.fps_spin.setValue(30), playback.set_frame(0),
                                                  playback.play(),
                                                  run_loop_until(app, lambda: not playback.is_playing())))
    measure("export: all frames (ZIP)", lambda: wait_handle(app, playback.exports.frames(scratch / "frames.zip")))
    measure("export: report (HTML + PDF)", lambda: wait_handle(app, playback.exports.report(scratch / "report")))

    panel = window.proto_panel
    window.analysis.tabs.setCurrentWidget(window.analysis.tabs.widget(4))
    panel.set_model("scaleprotoseg-cityscapes")
    panel.set_checkpoint(str(scaleprotoseg_checkpoint(scratch)))
    panel.size_spin.setValue(args.proto_size)
    measure("prototypes: run on the query", lambda: wait_signal(app, panel.resultShown, panel.run))
    slider = panel.view.threshold_slider
    sweep = [lambda v=v: slider.setValue(v) for v in list(range(5, 51, 3)) + list(range(50, 0, -4))]
    measure("prototypes: threshold slider sweep", lambda: (later(app, sweep, gap_ms=10),
                                                           run_loop_until(app, lambda: not panel.view.job.running)))
    classes = [panel.class_combo.itemData(i) for i in range(panel.class_combo.count())
               if panel.class_combo.itemData(i) is not None][:5]
    measure(f"prototypes: pick {len(classes)} classes", lambda: (
        later(app, [lambda c=c: panel.select_class(c) for c in classes], gap_ms=30),
        run_loop_until(app, lambda: not panel.view.job.running)))
    compare = panel.compare_view
    measure("prototypes: compare tab", lambda: (panel.inner_tabs.setCurrentWidget(compare),
                                                run_loop_until(app, lambda: not compare.job.running)))
    measure("export: prototypes", lambda: wait_handle(app, panel.export_to(scratch / "protos")))
    measure("theme: dark and back", lambda: later(app, [lambda: window.set_theme("dark"),
                                                        lambda: window.set_theme("light")], gap_ms=50))

    window.shutdown()
    worst_wall = max(wall for _, wall, _, _ in results)
    worst_cpu = max(cpu for _, _, cpu, _ in results)
    print(f"\nworst stall over all actions: {worst_wall:.1f} ms wall, {worst_cpu:.1f} ms of GUI-thread CPU "
          f"(goal <= {GOAL_MS:.0f} ms); load average {os.getloadavg()[0]:.1f}; {torch.get_num_threads()} torch thread(s)")
    over = [name for name, _, cpu, _ in results if cpu > GOAL_MS]
    print("over the goal (GUI-thread CPU): " + (", ".join(over) if over else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
