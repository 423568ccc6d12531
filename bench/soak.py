"""Hours of use in one process: N jobs through the real window, then through the headless pipeline.

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen python bench/soak.py [--jobs 200] [--size 128]

Phase 1 drives the real :class:`~fssgui.gui.main_window.MainWindow` (offscreen) the way a person
does, with the helpers of ``bench/gui_latency.py`` (the event loop runs while each job runs). The
jobs go round a cycle of eight, on the demo episodes (``fssgui.resources.demo_episodes()``) in turn:

  open the next demo episode · Predict · Explain R = prediction · brush R and Explain R = brushed ·
  Explain R = ground truth · run IAUC / DAUC in the playback tab and scrub every frame · export the
  frames (ZIP) and the curves (CSV) · save the episode and write the report (HTML + PDF)

(the explainers rotate over :data:`METHODS`, so each explanation has another method or R source).
Phase 2 does the same work through the headless pipeline (:class:`~fssgui.pipeline.EpisodeRun`,
:func:`~fssgui.pipeline.curves.run_curves`, a :class:`~fssgui.pipeline.ModelCache` kept for the
whole phase, the CLI's writers).

After every job the event loop is let run until the window is idle, then a full garbage
collection; the resident set (``VmRSS``) is read then. Printed per phase:

* the resident-set growth between job ``--from`` (default 50: the caches and pools have filled by
  then) and job N, and the same after ``malloc_trim`` (what the C allocator holds but could give back);
* live Python objects: ``gc.get_objects()`` counted by type at job 50 and every 25 jobs after; the
  types with the largest growth, and those that grew at every count (monotone growth: a leak);
  for the window also its Qt descendants (walked with ``children()``: PySide's ``findChildren`` keeps
  a reference from the window to every wrapper it returns, so counting with it made the wrappers of
  deleted widgets pile up, a leak of the measurement), and live job handles;
* torch's allocator: ``torch.cuda.memory_allocated`` when the model runs on CUDA; on the CPU
  torch has no allocator statistic, so the live tensors (counted by gc) and the RSS stand for it;
* the slowest job relative to the median of the same work (same kind, method and number of
  shots), in wall time and in process CPU time (all threads), jobs of the first cycle left out
  (model loading, first draws).

``--tracemalloc`` also traces Python allocations from job ``--from`` on and prints the lines that
grew most (slower; for hunting a leak). Goals: growth <= 20 MiB over 150 jobs, no monotone growth
of objects, no job slower than 2x the median for the same work. The last line is
``soak: rss growth <X> MiB over <N> jobs``, X being the window's growth plus the pipeline's (each
from job ``--from`` to job N).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Optional

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import ROOT, _status_kib, machine  # noqa: E402,F401  (ROOT puts the repository on sys.path)

BASE_MODEL = "matcher-lite2"  # the default model, at a small input size (--size)
METHODS = ("affex-signed", "saliency", "affex", "integrated-gradients", "affex-masked")
CYCLE = ("open", "predict", "explain-prediction", "explain-brushed", "explain-ground-truth", "curves",
         "export-frames", "export-report")
STEPS = 8  # IAUC / DAUC steps of every causal run
COUNT_EVERY = 25  # jobs between two object counts
GOAL_MIB = 20.0
GOAL_RATIO = 2.0


def register_model(size: int) -> str:
    """``matcher-lite2`` at a ``size``-pixel input (the same network), registered under its own name."""
    from fssgui.models.registry import get_entry, list_models, register

    name = f"{BASE_MODEL}-{size}px"
    if name not in {entry.name for entry in list_models()}:
        register(dataclasses.replace(get_entry(BASE_MODEL), name=name, input_size=size,
                                     description=f"{BASE_MODEL} at a {size}-pixel input (bench/soak.py)"))
    return name


# ------------------------------------------------------------------------------ measurements
def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def trimmed_rss_mib() -> float:
    """The resident set after glibc gave back the free memory it holds (``malloc_trim``)."""
    from fssgui.pipeline.models import release_freed_memory

    release_freed_memory()
    return rss_mib()


class Tally(collections.Counter):
    """Object counts by type; a type of this module, so the soak's own records are not counted."""


def object_counts() -> Tally:
    """Live gc-tracked objects by type (module-qualified name), the soak's own records left out."""
    counts = Tally()
    for obj in gc.get_objects():
        kind = type(obj)
        if kind.__module__ != __name__:
            counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


@dataclasses.dataclass
class Count:
    index: int
    counts: Tally

    def __iter__(self):  # (index, counts), as a pair
        return iter((self.index, self.counts))


@dataclasses.dataclass
class Job:
    index: int  # 1-based
    work: str  # what was done: jobs with the same work are compared
    wall: float
    cpu: float
    rss: float
    rss_trimmed: float


class Soak:
    """One phase: runs the jobs, records the figures, prints the summary."""

    def __init__(self, name: str, jobs: int, start: int, extra_counts: Callable[[], dict] | None = None,
                 trace: bool = False) -> None:
        self.name, self.jobs, self.start = name, jobs, start
        self.extra_counts = extra_counts or (lambda: {})
        self.trace = trace
        self.records: list[Job] = []
        self.counts: list[Count] = []
        self.cuda: list[tuple[int, int]] = []
        self.snapshot = None

    def record(self, index: int, run: Callable[[], str], settle: Callable[[], None]) -> None:
        """Run job ``index`` (``run()`` returns what it did), let it settle, measure."""
        wall, cpu = time.perf_counter(), time.process_time()
        work = run()
        settle()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        gc.collect()
        rss = rss_mib()
        self.records.append(Job(index, work, wall, cpu, rss, trimmed_rss_mib()))
        if index == self.start or (index > self.start and (index - self.start) % COUNT_EVERY == 0) \
                or index == self.jobs:
            counts = object_counts()
            counts.update(self.extra_counts())
            self.counts.append(Count(index, counts))
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self.cuda.append((index, torch.cuda.memory_allocated()))
        if self.trace and index == self.start:
            tracemalloc.start(8)
            self.snapshot = tracemalloc.take_snapshot()
        if index % 10 == 0 or index == self.jobs:
            print(f"  {self.name} job {index:4d}/{self.jobs}: {work:<34} {wall:6.2f} s  rss {rss:7.1f} MiB",
                  flush=True)

    # ---------------------------------------------------------------------------- summary
    def growth(self) -> float:
        at = {job.index: job for job in self.records}
        return at[self.jobs].rss - at[self.start].rss

    def summary(self) -> float:
        at = {job.index: job for job in self.records}
        first, last = at[self.start], at[self.jobs]
        span = self.jobs - self.start
        growth = last.rss - first.rss
        print(f"\n{self.name}: {self.jobs} jobs in {sum(j.wall for j in self.records) / 60:.1f} min")
        print(f"  rss: {first.rss:.1f} MiB at job {self.start}, {last.rss:.1f} MiB at job {self.jobs}: "
              f"growth {growth:+.1f} MiB over {span} jobs ({1024 * growth / max(1, span):+.1f} KiB per job); "
              f"after malloc_trim {first.rss_trimmed:.1f} -> {last.rss_trimmed:.1f} MiB "
              f"({last.rss_trimmed - first.rss_trimmed:+.1f})")
        peak = max(self.records, key=lambda j: j.rss)
        print(f"  rss peak {peak.rss:.1f} MiB at job {peak.index} ({peak.work})")
        self._print_objects()
        if self.cuda:
            (i0, a0), (i1, a1) = self.cuda[0], self.cuda[-1]
            print(f"  torch.cuda.memory_allocated: {a0 / 2**20:.1f} MiB at job {i0}, {a1 / 2**20:.1f} MiB at job {i1} "
                  f"({(a1 - a0) / 2**20:+.1f})")
        else:
            print("  torch allocator: the CPU has no allocator statistic (see the RSS and the live tensors above)")
        self._print_times()
        if self.snapshot is not None:
            self._print_trace()
        return growth

    def _print_objects(self) -> None:
        (i0, c0), (i1, c1) = self.counts[0], self.counts[-1]
        total0, total1 = sum(v for k, v in c0.items() if not k.startswith("qt.")), \
            sum(v for k, v in c1.items() if not k.startswith("qt."))
        print(f"  live objects (gc): {total0} at job {i0}, {total1} at job {i1} ({total1 - total0:+d})")
        grown = sorted(((c1[k] - c0[k], k) for k in set(c0) | set(c1) if c1[k] != c0[k]), reverse=True)
        if grown:
            print("    largest changes: " + ", ".join(f"{k.split('.')[-1]} {d:+d}" for d, k in grown[:8]))
        monotone = [k for k in set(c1) if len(self.counts) >= 3
                    and all(b[k] > a[k] for (_, a), (_, b) in zip(self.counts, self.counts[1:]))]
        counts_at = ", ".join(str(i) for i, _ in self.counts)
        print(f"    monotone growth (grew at every count, jobs {counts_at}): "
              + (", ".join(f"{k} {c0[k]}->{c1[k]}" for k in sorted(monotone)) if monotone else "none"))
        for key in sorted(k for k in c1 if k.startswith("qt.")):
            print(f"    {key[3:]}: " + " -> ".join(str(c[key]) for _, c in self.counts))

    def _print_times(self) -> None:
        first_cycle = len(CYCLE)
        by_work: dict[str, list[Job]] = collections.defaultdict(list)
        for job in self.records:
            if job.index > first_cycle:
                by_work[job.work].append(job)
        worst_wall, worst_cpu = (0.0, None), (0.0, None)
        print(f"  time per work (jobs after the first cycle): median wall / cpu s, slowest / median")
        for work, jobs in sorted(by_work.items()):
            wall_median = statistics.median(j.wall for j in jobs)
            cpu_median = statistics.median(j.cpu for j in jobs)
            slow_wall = max(jobs, key=lambda j: j.wall)
            slow_cpu = max(jobs, key=lambda j: j.cpu)
            ratio_wall = slow_wall.wall / wall_median if wall_median > 0 else 1.0
            ratio_cpu = slow_cpu.cpu / cpu_median if cpu_median > 0 else 1.0
            if len(jobs) >= 3:
                worst_wall = max(worst_wall, (ratio_wall, slow_wall), key=lambda t: t[0])
                worst_cpu = max(worst_cpu, (ratio_cpu, slow_cpu), key=lambda t: t[0])
            print(f"    {work:<34} n {len(jobs):3d}  {wall_median:6.2f} / {cpu_median:6.2f}   "
                  f"{ratio_wall:4.2f}x wall (job {slow_wall.index}), {ratio_cpu:4.2f}x cpu (job {slow_cpu.index})")
        for what, (ratio, job) in (("wall", worst_wall), ("cpu", worst_cpu)):
            if job is not None:
                print(f"  slowest job ({what}): job {job.index} ({job.work}) {ratio:.2f}x the median of its work "
                      f"(goal <= {GOAL_RATIO:.0f}x; works with >= 3 jobs)")

    def _print_trace(self) -> None:
        stats = tracemalloc.take_snapshot().compare_to(self.snapshot, "traceback")
        tracemalloc.stop()
        print(f"  tracemalloc, jobs {self.start}-{self.jobs}: the allocations that grew most")
        for stat in stats[:8]:
            frames = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback[:4])
            print(f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+6d} blocks  {frames}")


# ------------------------------------------------------------------------------- the window
def window_phase(args, model: str, scratch: Path) -> Soak:
    import numpy as np
    from PySide6.QtWidgets import QApplication

    from gui_latency import later, run_loop_until, stroke_steps, wait_handle, wait_signal
    from fssgui.gui.main_window import MainWindow
    from fssgui.gui.workers import JobHandle
    from fssgui.pipeline import GROUND_TRUTH, PREDICTION
    from fssgui.resources import demo_episodes
    from fssgui.settings import Autosave, Settings

    app = QApplication.instance() or QApplication([])
    window = MainWindow(Settings(model=model, device=args.device, explainer=METHODS[0]),
                        autosave=Autosave(scratch / "autosave"), unattended=True)
    window.resize(1600, 1000)
    window.show()
    episodes = demo_episodes()
    playback = window.playback_widget
    playback.set_parameters(steps=STEPS)
    tabs = window.analysis.tabs
    explained = [0]

    def descendants(obj) -> int:
        return sum(1 + descendants(child) for child in obj.children())

    def live_handles() -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is JobHandle)

    def qt_counts() -> dict:
        return {"qt.QObjects under the window": descendants(window),
                "qt.JobHandles alive": live_handles()}

    soak = Soak("window", args.jobs, args.start, qt_counts, args.tracemalloc)

    def idle() -> bool:
        return not (window.device_worker.is_busy or window.files.is_busy or window.compute.is_busy)

    def settle() -> None:
        run_loop_until(app, idle)
        app.processEvents()
        app.sendPostedEvents(None, 52)  # QEvent.DeferredDelete: what the event loop does when it returns

    def explain(source: str, brush: Optional[int] = None) -> str:
        method = METHODS[explained[0] % len(METHODS)]
        explained[0] += 1
        window.model_bar.explainer_combo.setCurrentIndex(window.model_bar.explainer_combo.findData(method))
        tabs.setCurrentIndex(0)
        if brush is not None:
            window.actions["region_brushed"].trigger()
            window.query.clear_region()
            h, w = window.query.image.shape[:2]
            shift = 0.02 * (brush % 10)
            points = [(w * (0.3 + shift + 0.02 * i), h * (0.4 + 0.01 * i + shift)) for i in range(12)]
            later(app, stroke_steps(window.query.canvas, points), gap_ms=5)
        else:
            window.query.set_region_source(source)
        errors = len(window.errors)
        wait_signal(app, window.runs.pipelineFinished, window.runs.run_pipeline)
        if len(window.errors) > errors:
            raise RuntimeError(f"explain {method}: {window.errors[-1]}")
        return f"explain {method}"

    def curves() -> str:
        tabs.setCurrentWidget(tabs.widget(3))
        wait_signal(app, playback.runFinished, playback.run)
        if playback.state.value != "done":
            raise RuntimeError(f"IAUC / DAUC: {playback.message}")
        frames = playback.frame_count()
        later(app, [lambda i=i: playback.set_frame(i) for i in range(frames)], gap_ms=5)
        return "curves + scrub"

    def export_frames() -> str:
        wait_handle(app, playback.exports.frames(scratch / "frames.zip"))
        wait_handle(app, playback.exports.curves_csv(scratch / "curves.csv"))
        return "export frames + csv"

    def export_report() -> str:
        if not window.episode_io.save_to(scratch / "episode", wait=True):
            raise RuntimeError(f"save: {window.errors[-1] if window.errors else '?'}")
        wait_handle(app, playback.exports.report(scratch / "report"))
        return "save episode + report"

    def job(index: int) -> str:
        step = CYCLE[(index - 1) % len(CYCLE)]
        episode = episodes[((index - 1) // len(CYCLE)) % len(episodes)]
        if step == "open":
            if not window.episode_io.open(episode, wait=True):
                raise RuntimeError(f"open {episode}: {window.errors[-1] if window.errors else '?'}")
            return f"open ({episode.name})"
        shots = f" K={window.support_panel.count()}"
        if step == "predict":
            wait_signal(app, window.runs.predictionShown, window.runs.predict)
            return "predict" + shots
        if step == "explain-prediction":
            return explain(PREDICTION) + shots
        if step == "explain-brushed":
            return explain("brushed", brush=index) + shots
        if step == "explain-ground-truth":
            return explain(GROUND_TRUTH) + shots
        if step == "curves":
            return curves() + shots
        if step == "export-frames":
            return export_frames() + shots
        return export_report() + shots

    print(f"window: {args.jobs} jobs, model {model} on {args.device}, {len(episodes)} demo episodes", flush=True)
    for index in range(1, args.jobs + 1):
        soak.record(index, lambda: job(index), settle)
    window.shutdown()
    window.close()
    window.deleteLater()
    app.sendPostedEvents(None, 52)
    return soak


# ----------------------------------------------------------------------------- the pipeline
def pipeline_phase(args, model: str, scratch: Path) -> Soak:
    import numpy as np

    from fssgui import report as R
    from fssgui.commands.explain import write_attribution
    from fssgui.episode import load_episode, save_episode
    from fssgui.pipeline import GROUND_TRUTH, PREDICTION, EpisodeRun, ModelCache, ModelSpec
    from fssgui.pipeline.curves import run_curves
    from fssgui.pipeline.models import device_description
    from fssgui.resources import demo_episodes

    cache = ModelCache()
    spec = ModelSpec(model, None, args.device)
    episodes = demo_episodes()
    soak = Soak("pipeline", args.jobs, args.start, None, args.tracemalloc)
    state: dict = {}
    explained = [0]

    def explain(source: str, mask: Optional[np.ndarray] = None) -> str:
        method = METHODS[explained[0] % len(METHODS)]
        explained[0] += 1
        run = state["run"]
        region = run.region(source, mask)
        state["result"], state["region"] = run.explain(method, {}, region), region
        return f"explain {method}"

    def job(index: int) -> str:
        step = CYCLE[(index - 1) % len(CYCLE)]
        path = episodes[((index - 1) // len(CYCLE)) % len(episodes)]
        if step == "open":
            episode = load_episode(path)
            state.clear()
            state.update(path=path, episode=episode, run=EpisodeRun(cache.get(spec), episode))
            return f"open ({path.name})"
        episode, run = state["episode"], state["run"]
        shots = f" K={episode.shots}"
        if step == "predict":
            run.predicted()
            return "predict" + shots
        if step == "explain-prediction":
            return explain(PREDICTION) + shots
        if step == "explain-brushed":
            h, w = episode.query_size
            mask = np.zeros((h, w), bool)
            shift = 0.02 * (index % 10)
            mask[int(h * (0.4 + shift)):int(h * (0.55 + shift)), int(w * (0.3 + shift)):int(w * (0.55 + shift))] = True
            return explain("brushed", mask) + shots
        if step == "explain-ground-truth":
            return explain(GROUND_TRUTH) + shots
        result, region = state["result"], state["region"]
        if step == "curves":
            state["curves"] = run_curves(run, {result.method: result}, region, steps=STEPS)
            return "curves" + shots
        if step == "export-frames":
            write_attribution(scratch / "attribution", episode, result)
            R.write_curves_csv(scratch / "curves.csv", state["curves"])
            return "export maps + csv" + shots
        save_episode(episode, scratch / "episode")
        loaded = cache.get(spec)
        inputs = R.ReportInputs(
            episode=episode, episode_path=str(state["path"]), model_name=model,
            model_description=getattr(loaded.entry, "description", "") or "", input_size=loaded.input_size,
            device=str(loaded.device), device_description=device_description(loaded.device),
            prediction=run.predicted().mask, region=region.image, region_source=region.source,
            methods=[R.MethodResult(result.method, result.maps, result.signed, result.params, result.seconds,
                                    result.level_weights, result.level_names)],
            curves=state["curves"], measure="confidence")
        R.write_report(scratch / "report", inputs, pdf=True)
        return "save episode + report" + shots

    (scratch / "attribution").mkdir(parents=True, exist_ok=True)
    print(f"\npipeline: {args.jobs} jobs, model {model} on {args.device}", flush=True)
    for index in range(1, args.jobs + 1):
        soak.record(index, lambda: job(index), lambda: None)
    cache.release()
    return soak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per phase (window, then pipeline)")
    parser.add_argument("--from", dest="start", type=int, default=50,
                        help="growth is measured from this job on (at most N/4)")
    parser.add_argument("--size", type=int, default=128, help=f"input size of {BASE_MODEL} (the default is 384)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations from job --from on")
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error("--jobs must be at least 2")
    args.start = max(1, min(args.start, args.jobs // 4))

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    scratch = Path(tempfile.mkdtemp(prefix="fssgui-soak-"))
    os.environ["FSSGUI_HOME"] = str(scratch / "home")
    try:
        model = register_model(args.size)
        print(f"# bench/soak.py --jobs {args.jobs}: {machine()}", flush=True)
        window = window_phase(args, model, scratch)
        pipeline = pipeline_phase(args, model, scratch)
        growth = window.summary() + pipeline.summary()
        print(f"\ngoal: growth <= {GOAL_MIB:.0f} MiB over 150 jobs per phase; load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"soak: rss growth {growth:.1f} MiB over {args.jobs} jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
