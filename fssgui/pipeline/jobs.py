"""What the app's background jobs run: thin calls into the pipeline with progress, cancel and log (no Qt).

A job is ``function(ctx, cache, ...)``: :class:`JobContext` carries the hooks of the thread that
runs it (``progress``, ``cancelled``, ``log``, and ``publish`` for partial results a view shows
while the job goes on); ``cache`` is the device worker's :class:`~fssgui.pipeline.ModelCache`.
Every function takes plain inputs (an :class:`~fssgui.episode.Episode` copy, numpy masks, names)
and returns plain dataclasses of numpy arrays, so nothing that crosses the thread boundary is a
torch tensor, let alone a CUDA tensor. The GUI's job handles (:mod:`fssgui.gui.workers`) run
them; tests call them directly, without a QApplication.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ..episode import Episode
from ..errors import FssguiError, ModelError, check_cancelled
from .explainers import ExplainerFactory, built_model_unavailable, make_explainer
from .models import ModelCache, ModelSpec, is_out_of_memory, out_of_memory_message
from .results import BuiltRestrictions, ExplanationResult, PredictionResult

if TYPE_CHECKING:  # the pipeline's run (torch) is imported by the jobs that run: the window imports this module
    import torch


class JobContext:
    """What a running job may call: ``progress(fraction, message)``, ``cancelled()``, ``check()``,
    ``log(text)`` and ``publish(value)`` (a partial result, delivered in order before the result)."""

    def __init__(
        self,
        progress: Callable[[float, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        log: Callable[[str], None] | None = None,
        publish: Callable[[Any], None] | None = None,
    ) -> None:
        self._progress = progress
        self._cancelled = cancelled
        self._log = log
        self._publish = publish

    def progress(self, fraction: float, message: str = "") -> None:
        if self._progress is not None:
            self._progress(float(fraction), message)

    def cancelled(self) -> bool:
        return bool(self._cancelled and self._cancelled())

    def check(self) -> None:
        """Raise :class:`fssgui.errors.Cancelled` when the job was cancelled."""
        check_cancelled(self.cancelled)

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)

    def publish(self, value: Any) -> None:
        if self._publish is not None:
            self._publish(value)


# ---------------------------------------------------------------------------- the chain
def load(ctx: JobContext, cache: ModelCache, spec: ModelSpec) -> str:
    """Build the model of ``spec`` (imports, weights) ahead of the first job that needs it; its name."""
    cache.get(spec, ctx.log)
    return spec.name


def built_restrictions(ctx: JobContext, cache: ModelCache, spec: ModelSpec) -> BuiltRestrictions:
    """Which explainers the built model of ``spec`` rules out. Not part of :func:`load`: the check
    imports captum (about 1.5 s of CPU, matplotlib included), which must not delay the jobs queued
    behind a load."""
    loaded = cache.get(spec, ctx.log)
    return BuiltRestrictions(spec.name, built_model_unavailable(loaded.model))


def predict(ctx: JobContext, cache: ModelCache, spec: ModelSpec, episode: Episode) -> PredictionResult:
    """The pipeline's prediction of the episode (probability and mask at the query's resolution)."""
    from .run import EpisodeRun

    loaded = cache.get(spec, ctx.log)
    ctx.check()
    ctx.progress(0.2, "predicting")
    result = EpisodeRun(loaded, episode).predicted()
    ctx.progress(1.0, "prediction done")
    return result


def explain(
    ctx: JobContext,
    cache: ModelCache,
    spec: ModelSpec,
    episode: Episode,
    region: Optional[np.ndarray],
    region_source: str,
    explainer_name: str,
    params: dict[str, Any],
    factories: Optional[dict[str, ExplainerFactory]] = None,
    prediction: Optional[PredictionResult] = None,
) -> ExplanationResult:
    """The pipeline's explanation of R (brushed: ``region`` at the query's resolution; prediction;
    ground truth) with one explainer; maps at each support's resolution. ``prediction``: the one
    the caller shows for these inputs, if any (R from it needs no forward of its own; ignored when
    it is not this episode's, model's and size's)."""
    from .run import EpisodeRun

    loaded = cache.get(spec, ctx.log)
    ctx.check()
    explainer = make_explainer(explainer_name, dict(params), factories)
    ctx.progress(0.05, explainer_name)

    def explainer_progress(fraction: float) -> None:
        ctx.progress(0.05 + 0.9 * float(fraction), explainer_name)

    run = EpisodeRun(loaded, episode)
    run.adopt_prediction(prediction)
    result = run.explain(explainer, region=region_source, mask=region,
                         progress=explainer_progress, cancelled=ctx.cancelled)
    ctx.progress(1.0, "explanation done")
    return result


# ------------------------------------------------------------------------ prototypes (ScaleProtoSeg)
def prototypes(ctx: JobContext, cache: ModelCache, spec: ModelSpec, image: np.ndarray, size: Optional[int] = None):
    """The Prototypes tab's job: ScaleProtoSeg ``spec`` (the worker's resident ``semseg`` model)
    on ``image`` (RGB uint8), explained by :func:`fssgui.prototypes.graph.explain_image` at the
    default threshold; returns its :class:`~fssgui.prototypes.graph.PrototypeRunResult`."""
    from ..prototypes.graph import explain_image

    if not spec.checkpoint:
        raise ModelError(f"{spec.name} needs a checkpoint: choose its file in the Prototypes tab")
    model, _device = cache.get_semseg(spec, ctx.log)
    ctx.check()
    return explain_image(model, image, spec.checkpoint, model_name=spec.name, size=size,
                         progress=ctx.progress, log=ctx.log, check=ctx.check)


def job_error_message(exc: BaseException, device: Optional[torch.device] = None) -> str:
    """The one-line message shown for an error raised by a job: running out of memory says what ran
    out and what to try (:func:`~fssgui.pipeline.models.out_of_memory_message`), a user-facing error
    says it all, anything else names its type."""
    if is_out_of_memory(exc):
        return out_of_memory_message(exc, device)
    return model_error_hint(exc)


def model_error_hint(exc: BaseException) -> str:
    """The one-line message shown for an error raised by a job (a user-facing error says it all)."""
    if isinstance(exc, FssguiError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def prototype_detail(ctx: JobContext, cache: ModelCache, spec: ModelSpec, request):
    """A prototype-detail request (:class:`fssgui.prototypes.detail.SourceRequest` or
    ``NearestRequest``) with ScaleProtoSeg ``spec``, the worker's resident ``semseg`` model."""
    model, _device = cache.get_semseg(spec, ctx.log)
    ctx.check()
    return request.run(model, ctx.progress, ctx.cancelled)


def release(ctx: JobContext, cache: ModelCache) -> None:
    """Drop the resident models and empty the device's memory cache."""
    cache.release()
