"""Start-up of ``fssgui --demo --screenshot``: where the time goes from process start to the saved
screenshot (goal, issue 20: within 3 s once the package is installed).

    python bench/startup.py [--runs 3] [--threads N] [--out DIR]

Each run is a fresh process (``python bench/startup.py --child FILE.png``) that runs the real
entry point, ``fssgui.cli.main(["--demo", "--screenshot", FILE.png])``, offscreen, with a few
timestamps taken from outside the application's code (nothing in the app is changed for this):

* ``python``: from the process's start (``/proc/self/stat``) to the first line of the child,
  i.e. the interpreter's own start-up;
* ``imports``: ``fssgui.cli``, ``fssgui.gui.app``, ``fssgui.gui.main_window`` and what they pull in
  (torch, PySide6, pyqtgraph, numpy, OpenCV...), imported before ``main`` runs;
* ``window``: from there to the main window's first paint (``QApplication``, the window, the
  demo episode read);
* ``weights``: ``fssgui.models.registry.build_model`` (the default model built, weights loaded;
  wrapped before any module imports it, so every caller gets the wrapped one); it runs on the
  worker thread, so it may overlap ``window``;
* ``first forward``: the built model's first ``predict``;
* ``explanation``: from the end of the first forward to the window being grabbed (AffEx, the
  displays);
* ``screenshot``: the grab, the PNG and the shutdown, to the end of the process.

The times are offsets from the process start (wall clock), each run's in one line, then the
median over the runs; the same events are also stamped with the process's CPU time (user +
system, all threads, ``time.process_time``), printed below: on a machine shared with other jobs
the wall times vary with the load, the CPU times much less. (The CPU time spent before the
child's first line, the interpreter's start, is not in those.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("python", "imports", "window", "weights", "first forward", "explanation", "screenshot")
GOAL_S = 3.0


def _process_start_epoch() -> float:
    """Wall-clock time (epoch seconds) at which this process started (Linux ``/proc``)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22 of stat: starttime, clock ticks after boot
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def _child(png: str) -> int:
    """Run the app's entry point with timestamps (see the module docstring); print them as JSON."""
    events: dict[str, float] = {"start": _process_start_epoch(), "python": time.time()}
    cpu: dict[str, float] = {"python": time.process_time()}

    def stamp(name: str) -> None:
        if name not in events:
            events[name] = time.time()
            cpu[name] = time.process_time()

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import fssgui.models.registry as registry  # before anything imports build_model from it

    original_build = registry.build_model

    def build_model(*args, **kwargs):
        stamp("weights start")
        model = original_build(*args, **kwargs)
        stamp("weights")
        predict = model.predict

        def timed_predict(*p_args, **p_kwargs):
            stamp("first forward start")
            out = predict(*p_args, **p_kwargs)
            stamp("first forward")
            return out

        model.predict = timed_predict
        return model

    registry.build_model = build_model
    import fssgui.cli as cli
    import fssgui.gui.app  # noqa: F401
    from fssgui.gui import main_window

    stamp("imports")
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    class FirstPaint(QObject):
        def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Paint and "window" not in events:
                if isinstance(getattr(watched, "window", lambda: None)(), main_window.MainWindow):
                    stamp("window")
            return False

    app = QApplication.instance() or QApplication(sys.argv[:1])
    painter = FirstPaint()
    app.installEventFilter(painter)
    original_grab = main_window.MainWindow.grab

    def grab(self, *args):
        stamp("explanation")
        return original_grab(self, *args)

    main_window.MainWindow.grab = grab
    code = cli.main(["--demo", "--screenshot", png])
    stamp("screenshot")
    print("STARTUP " + json.dumps({"wall": events, "cpu": cpu}), flush=True)
    return code


def _run(png: Path, threads: int | None) -> tuple[dict[str, float], dict[str, float]]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(png)],
                         capture_output=True, text=True, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("STARTUP ")]
    if out.returncode != 0 or not line:
        raise SystemExit(f"the demo screenshot run failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    stamps = json.loads(line[-1][len("STARTUP "):])
    start = stamps["wall"].pop("start")
    return {k: v - start for k, v in stamps["wall"].items()}, stamps["cpu"]


def _durations(at: dict[str, float]) -> dict[str, float]:
    """Phase durations from event times (see the module docstring)."""
    durations = {
        "python": at["python"],
        "imports": at["imports"] - at["python"],
        "window": at["window"] - at["imports"],
        "weights": at["weights"] - at["weights start"],
        "first forward": at["first forward"] - at["first forward start"],
        "explanation": at["explanation"] - at["first forward"],
        "screenshot": at["screenshot"] - at["explanation"],
    }
    assert tuple(durations) == PHASES
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: unset)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the screenshots (default: a temp folder)")
    parser.add_argument("--child", metavar="FILE.png", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_average, machine

    out = args.out or Path(tempfile.mkdtemp(prefix="fssgui-startup-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"# bench/startup.py: fssgui --demo --screenshot, {args.runs} fresh processes, "
          f"OMP_NUM_THREADS={args.threads or os.environ.get('OMP_NUM_THREADS', 'unset')}; goal {GOAL_S:.0f} s")
    print(f"# machine: {machine()}", flush=True)
    columns = ("python", "imports", "window", "weights start", "weights", "first forward start", "first forward",
               "explanation", "screenshot")
    print("run " + " ".join(f"{c:>13}" for c in columns) + "   (seconds from process start; wall | cpu)")
    walls, cpus = [], []
    for i in range(args.runs):
        wall, cpu = _run(out / f"demo-{i}.png", args.threads)
        walls.append(wall)
        cpus.append(cpu)
        print(f"{i:>3} " + " ".join(f"{wall.get(c, float('nan')):>13.2f}" for c in columns), flush=True)
        print("cpu " + " ".join(f"{cpu.get(c, float('nan')):>13.2f}" for c in columns), flush=True)
    wall = {c: statistics.median(r[c] for r in walls) for c in columns}
    cpu = {c: statistics.median(r[c] for r in cpus) for c in columns}
    print("med " + " ".join(f"{wall[c]:>13.2f}" for c in columns))
    print("cpu " + " ".join(f"{cpu[c]:>13.2f}" for c in columns))
    for label, at in (("wall", wall), ("cpu", cpu)):
        print(f"# median phase durations, {label} s: "
              + ", ".join(f"{k} {v:.2f}" for k, v in _durations(at).items()))
    total = wall["screenshot"]
    print(f"# first paint {wall['window']:.2f} s, screenshot saved and exited {total:.2f} s after the process "
          f"started (goal {GOAL_S:.0f} s: {'met' if total <= GOAL_S else 'missed'}); CPU {cpu['screenshot']:.2f} s "
          f"after the interpreter's start; load average {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
