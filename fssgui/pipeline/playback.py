"""The playback tab's computation, without Qt: the causal curves of several methods on one episode,
streamed step by step (:func:`curves_job`), and how the tab's inputs are normalised (:class:`MethodInput`).

The job publishes, in order: one :class:`RunStart` (the shared frame data and the unperturbed
prediction), then a :class:`~fssgui.report.CausalFrame` per computed step and each
:class:`~fssgui.metrics.causal.Curve` when it is complete; it returns every curve. Frame *i* and
curve point *i* come from the same step, so a view cannot show them a step apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .. import report as R
from ..errors import ExplainError
from ..imaging import resize_map
from .jobs import JobContext
from .models import ModelCache, ModelSpec
from .regions import PREDICTION

METRICS = ("iauc", "dauc")


@dataclass
class MethodInput:
    """One method's maps as handed to the widget, with what the report shows about it."""

    name: str
    maps: Any  # tensor/array [K, h, w] (model size when it came from an Attribution) or list of [Hs, Ws]
    signed: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    level_weights: Optional[np.ndarray] = None
    level_names: Optional[list[str]] = None
    seconds: Optional[float] = None
    ranked: Optional[np.ndarray] = None  # [K, S, S]: the maps the explainer returned (what is ranked)

    def model_maps(self, size: int) -> np.ndarray:
        """``[K, S, S]`` float32 for ranking: the explainer's own model-size maps when known (an
        explanation of the pipeline), else the given maps resized bilinearly to S."""
        if self.ranked is not None and self.ranked.shape[-2:] == (size, size):
            return np.asarray(self.ranked, np.float32)
        maps = self.maps
        if hasattr(maps, "detach"):
            maps = maps.detach().float().cpu().numpy()
        return np.stack([resize_map(np.asarray(m, np.float32), (size, size)) for m in maps]).astype(np.float32)

    def support_maps(self, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        maps = self.maps
        if hasattr(maps, "detach"):
            maps = maps.detach().float().cpu().numpy()
        return [resize_map(np.asarray(m, np.float32), size) for m, size in zip(maps, sizes)]


def method_input(name: str, value: Any) -> MethodInput:
    """Normalise an Attribution, an ExplanationResult, an array/tensor or a list of maps."""
    if isinstance(value, MethodInput):
        return value

    def numpy_or_none(x):
        if x is None:
            return None
        return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    if hasattr(value, "maps") and hasattr(value, "method"):  # Attribution or ExplanationResult
        return MethodInput(name, value.maps, bool(getattr(value, "signed", False)), dict(getattr(value, "params", {})),
                           numpy_or_none(getattr(value, "level_weights", None)),
                           list(value.level_names) if getattr(value, "level_names", None) is not None else None,
                           getattr(value, "seconds", None), numpy_or_none(getattr(value, "model_maps", None)))
    return MethodInput(name, value)


@dataclass
class RunStart:
    """First message of a run: the shared frame data and what the model predicted unperturbed."""

    base: R.FrameBase
    device: str
    prediction: np.ndarray  # [H, W] bool at the query's resolution
    region: np.ndarray  # [H, W] bool: the R actually scored
    input_size: int
    model_description: str


def curves_job(
    ctx: JobContext,
    cache: ModelCache,
    spec: ModelSpec,
    episode,
    methods: Mapping[str, MethodInput],
    region: Optional[np.ndarray],
    *,
    region_source: str = PREDICTION,
    metrics: Sequence[str] = METRICS,
    measure: str = "confidence",
    steps: Optional[int] = None,
    percentage: Optional[float] = None,
    batch_size: Optional[int] = None,
) -> list:
    """The pipeline's curves of ``methods`` for R (its ``region_source``; a brushed R is the mask
    ``region``), published as they are computed (see the module docstring); returns the curves."""
    from .curves import run_curves
    from .run import EpisodeRun  # torch: imported by the job, not by the window that imports this module

    run = EpisodeRun(cache.get(spec, ctx.log), episode)
    ctx.check()
    size = run.size
    r = run.region(region_source, region)
    attributions = {}
    for name, m in methods.items():
        maps = m.model_maps(size)
        if maps.shape[0] != episode.shots:
            raise ExplainError(f"{name}: {maps.shape[0]} map(s) for {episode.shots} support(s); rerun the explainer")
        attributions[name] = maps
    entry = run.loaded.entry
    ctx.publish(RunStart(R.frame_base(episode, run.batch, entry), str(run.device), run.predicted().mask, r.image,
                         size, getattr(entry, "description", "") or ""))

    def on_step(curve, step) -> None:
        ctx.publish(R.CausalFrame.from_step(curve.method, curve.metric, step))

    return run_curves(run, attributions, r, metrics=metrics, measure=measure, steps=steps, percentage=percentage,
                      batch_size=batch_size, cancelled=ctx.cancelled, on_step=on_step, on_curve=ctx.publish,
                      on_progress=ctx.progress)
