"""The triage sweep: every episode of a dataset predicted by one model, through ``fssgui
evaluate``'s runner (:func:`fssgui.evaluate.runner.run_evaluation`) without methods, or with one
method and its IAUC/DAUC when asked; so the results folder, its resume after a cancel, its rows and
its numbers are those of ``fssgui evaluate`` (which can also sweep a large dataset with torchrun:
``fssgui evaluate --methods none``; the panel opens the merged folder).

Qt-free: the app's worker runs :func:`run_sweep` with the resident model cache, its progress and
its cancel flag.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from ..evaluate.metrics import MetricSpec, parse_metrics
from ..evaluate.runner import EvaluationConfig, RunHooks, run_evaluation
from ..pipeline import ModelSpec
from .results import TriageResults, open_results

Log = Callable[[str], None]


@dataclass(frozen=True)
class DatasetChoice:
    """What the dataset panel's form holds: the dataset and its episode list (as ``fssgui
    evaluate``'s options: ``episodes`` is a number to draw from ``seed`` or an episode CSV)."""

    root: str
    layout: str
    episodes: str = "100"
    shots: Optional[int] = 1  # None: the CSV's
    fold: Optional[int] = None
    split: str = "val"
    seed: int = 0
    use_ignore: bool = True


@dataclass(frozen=True)
class SweepRequest:
    """A sweep of ``dataset`` with ``spec`` into the results folder ``out``; with ``method`` each
    episode is also explained and scored with ``metrics`` (IAUC/DAUC)."""

    dataset: DatasetChoice
    spec: ModelSpec
    out: str
    method: Optional[str] = None
    metrics: tuple[MetricSpec, ...] = ()
    region: str = "prediction"
    batch_size: Optional[int] = None  # None: the device's choice
    affex_size: Optional[int] = None  # AffEx explanation size E (fssgui evaluate --size)
    affex_mode: Optional[str] = None  # AffEx mode (fssgui evaluate --mode)


#: R of the explanations when the results folder does not fix it: the ground truth (the prediction
#: of a failure may be empty, and R = prediction then has nothing to explain)
TRIAGE_REGION = "ground-truth"


def folder_method_settings(folder: str | Path) -> dict:
    """The method settings (metrics, region, seed, AffEx size and mode) of a results folder that
    holds method results, so that explaining more of its episodes joins them ({} otherwise)."""
    from ..evaluate import store

    document = store.read_settings_file(Path(folder))
    if document is None or store.predictions_only(document["settings"]):
        return {}
    settings = document["settings"]
    return {"metrics": tuple(MetricSpec(**m) for m in settings["metrics"]), "region": settings.get("region"),
            "seed": settings.get("seed"), "affex_size": settings.get("affex_size"),
            "affex_mode": settings.get("affex_mode")}


def with_method(request: SweepRequest, method: str, metrics: tuple[MetricSpec, ...]) -> SweepRequest:
    """``request`` explaining with ``method``: the metrics, region and AffEx settings of its results
    folder when it holds method results, else ``metrics`` and :data:`TRIAGE_REGION`."""
    settings = folder_method_settings(request.out)
    return replace(request, method=method, metrics=settings.get("metrics") or metrics,
                   region=settings.get("region") or TRIAGE_REGION, affex_size=settings.get("affex_size"),
                   affex_mode=settings.get("affex_mode"))


def causal_pair(measure: str = "miou", steps: Optional[int] = None) -> tuple[MetricSpec, ...]:
    """IAUC and DAUC of one measure (``miou`` or ``conf``), the optional per-episode metrics."""
    return tuple(parse_metrics([f"iauc-{measure}", f"dauc-{measure}"], steps=steps))


def evaluation_config(request: SweepRequest) -> EvaluationConfig:
    """The ``fssgui evaluate`` configuration of a sweep."""
    d = request.dataset
    return EvaluationConfig(
        model=request.spec.name, checkpoint=request.spec.checkpoint, data=d.root, layout=d.layout,
        episodes=str(d.episodes), methods=[request.method] if request.method else [],
        metrics=list(request.metrics), out=request.out, fold=d.fold, shots=d.shots, seed=d.seed,
        region=request.region, size=request.affex_size, mode=request.affex_mode, use_ignore=d.use_ignore,
        batch_size=request.batch_size,
        device=request.spec.device, progress=False, split=d.split,
    )


def results_folder(base: str | Path, dataset: DatasetChoice, spec: ModelSpec) -> Path:
    """Where the app keeps the sweep of ``dataset`` by ``spec``: ``base/<key>``, the key a hash of
    the dataset choice, the model and the checkpoint file (path, size, time), so reopening the same
    dataset with the same model finds what was computed. (The folder itself checks the real
    settings, the checkpoint's SHA-256 included, before it takes any row.)"""
    checkpoint = None
    if spec.checkpoint:
        path = Path(spec.checkpoint).resolve()
        stat = path.stat() if path.is_file() else None
        checkpoint = [str(path), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]
    key = {"root": str(Path(dataset.root).resolve()), "layout": dataset.layout, "episodes": str(dataset.episodes),
           "shots": dataset.shots, "fold": dataset.fold, "split": dataset.split, "seed": dataset.seed,
           "ignore": dataset.use_ignore, "model": spec.name, "checkpoint": checkpoint}
    if not str(dataset.episodes).strip().isdigit():  # an episode CSV: its content, wherever it lies
        csv_path = Path(str(dataset.episodes))
        key["episodes"] = [str(csv_path.resolve()), csv_path.stat().st_mtime_ns if csv_path.is_file() else None]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return Path(base) / f"{Path(dataset.root).name or 'dataset'}-{dataset.layout}-{digest}"


class SweepRate:
    """Episodes per second over the last ``window`` episodes, and the time left."""

    def __init__(self, window: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._times: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def update(self, done: int) -> None:
        self._times.append((self._clock(), done))

    @property
    def per_second(self) -> Optional[float]:
        if len(self._times) < 2:
            return None
        (t0, d0), (t1, d1) = self._times[0], self._times[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None

    def seconds_left(self, done: int, total: int) -> Optional[float]:
        rate = self.per_second
        return None if rate is None else max(0.0, (total - done) / rate)

    def describe(self, done: int, total: int) -> str:
        """``"12/300 episodes · 3.4 episodes/s · 1:25 left"``."""
        text = f"{done}/{total} episodes"
        rate = self.per_second
        if rate is not None:
            text += f" · {rate:.2f} episodes/s · {format_duration(self.seconds_left(done, total))} left"
        return text


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_sweep(request: SweepRequest, *, load_model: Optional[Callable] = None,
              progress: Optional[Callable[[float, str], None]] = None,
              cancelled: Optional[Callable[[], bool]] = None, log: Optional[Log] = None,
              method_episodes: Optional[tuple[int, ...]] = None, on_explained: Optional[Callable] = None
              ) -> TriageResults:
    """Sweep (or resume) ``request`` and return the folder read as a failure table.

    ``progress(fraction, "12/300 episodes · 3.4 episodes/s · 1:25 left")`` after each episode;
    ``cancelled()`` stops between episodes (and metric steps) with
    :class:`~fssgui.errors.Cancelled`, every finished episode already stored; ``load_model(spec)``:
    the app's model cache. ``method_episodes``/``on_explained``: see :class:`RunHooks` and
    :class:`~fssgui.evaluate.runner.EvaluationConfig` (the worst N of a batch report)."""
    rate = SweepRate()

    def on_episode(done: int, total: int) -> None:
        rate.update(done)
        if progress is not None:
            progress(done / max(total, 1), rate.describe(done, total))

    config = replace(evaluation_config(request), method_episodes=method_episodes)
    run_evaluation(config, log=log or (lambda _m: None),
                   hooks=RunHooks(load_model=load_model, cancelled=cancelled, on_episode=on_episode,
                                  on_explained=on_explained))
    return open_results(request.out)
