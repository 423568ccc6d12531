"""Several causal curves of one episode (methods x metrics) with overall progress: what the report
and the app's playback tab run. Each curve is one :class:`~fssgui.metrics.causal.CausalRun` of the
episode's :class:`~fssgui.pipeline.run.EpisodeRun`, so the query is encoded and predicted once."""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

from ..errors import CancelledFn
from ..metrics.causal import METRIC_TITLES, CausalStep, Curve
from .regions import Region
from .run import EpisodeRun

StepHook = Callable[[Curve, CausalStep], None]


def run_curves(run: EpisodeRun, maps: Mapping[str, object], region: Region, *,
               metrics: Sequence[str] = ("iauc", "dauc"), measure: str = "confidence",
               steps: Optional[int] = None, percentage: Optional[float] = None,
               batch_size: Optional[int] = None, cancelled: CancelledFn = None,
               on_step: Optional[StepHook] = None, on_curve: Optional[Callable[[Curve], None]] = None,
               on_progress: Optional[Callable[[float, str], None]] = None) -> list[Curve]:
    """Every ``(method, metric)`` curve of ``maps`` (``{method: [K, S, S] maps or an
    ExplanationResult}``), in that order. ``on_step(curve, step)`` sees each step as it is computed
    (the curve already holds its point), ``on_curve`` each finished curve, ``on_progress(fraction,
    message)`` the overall progress; ``cancelled()`` is checked between batches of steps."""
    plan = [(method, metric, run.causal(values, region, metric, measure, method=method, steps=steps,
                                        percentage=percentage, batch_size=batch_size, cancelled=cancelled))
            for method, values in maps.items() for metric in metrics]
    total, done = max(1, sum(causal.total for *_, causal in plan)), 0
    curves = []
    for method, metric, causal in plan:
        for step in causal:
            if on_step is not None:
                on_step(causal.curve, step)
            done += 1
            if on_progress is not None:
                on_progress(done / total, f"{method} {METRIC_TITLES.get(metric, metric)} "
                                          f"step {step.index + 1}/{causal.total}")
        curves.append(causal.curve)
        if on_curve is not None:
            on_curve(causal.curve)
    return curves
