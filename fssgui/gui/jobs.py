"""What the GUI's worker thread runs: thin glue between the window and the core (no Qt here).

Every function takes plain inputs (an :class:`~fssgui.episode.Episode` copy, numpy masks, names)
and returns plain dataclasses of numpy arrays, so nothing that crosses the thread boundary is a
torch tensor, let alone a CUDA tensor. No model math lives here: models come from
``fssgui.models.registry``, explainers from ``fssgui.explain.registry``; this module only
converts the episode to tensors, calls them and brings the result back to image resolution.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from ..episode import Episode
from ..errors import ModelError
from ..pipeline import EpisodeRun, ExplanationResult, ModelCache, ModelSpec, PredictionResult


class JobContext:
    """What a running job may call: ``progress(fraction, message)``, ``cancelled()``, ``log(text)``."""

    def __init__(
        self,
        progress: Callable[[float, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._progress = progress
        self._cancelled = cancelled
        self._log = log

    def progress(self, fraction: float, message: str = "") -> None:
        if self._progress is not None:
            self._progress(float(fraction), message)

    def cancelled(self) -> bool:
        return bool(self._cancelled and self._cancelled())

    def check(self) -> None:
        """Raise :class:`fssgui.explain.base.Cancelled` when the job was cancelled."""
        from ..explain.base import Cancelled

        if self.cancelled():
            raise Cancelled()

    def log(self, text: str) -> None:
        if self._log is not None:
            self._log(text)


# ---------------------------------------------------------------------------- the chain
def predict(ctx: JobContext, cache: ModelCache, spec: ModelSpec, episode: Episode) -> PredictionResult:
    """The pipeline's prediction of the episode (probability and mask at the query's resolution)."""
    loaded = cache.get(spec, ctx.log)
    ctx.check()
    ctx.progress(0.2, "predicting")
    result = EpisodeRun(loaded, episode).predicted()
    ctx.progress(1.0, "prediction done")
    return result


ExplainerFactory = Callable[..., Any]


def make_explainer(name: str, params: dict[str, Any], factories: Optional[dict[str, ExplainerFactory]] = None):
    """An explainer by name: from ``factories`` (tests, plug-ins) or ``fssgui.explain.registry``."""
    if factories and name in factories:
        explainer = factories[name](**params)
        explainer.name = explainer.name or name
        return explainer
    from ..explain.registry import get_explainer

    return get_explainer(name, **params)


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
) -> ExplanationResult:
    """The pipeline's explanation of R (brushed: ``region`` at the query's resolution; prediction;
    ground truth) with one explainer; maps at each support's resolution."""
    loaded = cache.get(spec, ctx.log)
    ctx.check()
    explainer = make_explainer(explainer_name, dict(params), factories)
    ctx.progress(0.05, explainer_name)

    def explainer_progress(fraction: float) -> None:
        ctx.progress(0.05 + 0.9 * float(fraction), explainer_name)

    result = EpisodeRun(loaded, episode).explain(explainer, region=region_source, mask=region,
                                                 progress=explainer_progress, cancelled=ctx.cancelled)
    ctx.progress(1.0, "explanation done")
    return result


# ------------------------------------------------------------------- explainers per model
def model_specific_explainers() -> dict[str, tuple[str, ...]]:
    """Explainers that only some models support: ``{explainer: (model names that list it)}``.

    A model entry lists them in ``extra["explainers"]`` (SimPropNet: "prototype-share")."""
    from ..models.registry import list_models

    owners: dict[str, list[str]] = {}
    for entry in list_models():
        for name in entry.extra.get("explainers", ()) or ():
            owners.setdefault(str(name), []).append(entry.name)
    return {name: tuple(models) for name, models in owners.items()}


def explainer_needs_matching(name: str, factories: Optional[dict[str, ExplainerFactory]] = None) -> bool:
    """Whether explainer ``name`` needs matching scores (AffEx), without running anything."""
    try:
        explainer = make_explainer(name, {}, factories)
    except Exception:  # noqa: BLE001 - an explainer that cannot be built: its own error shows at run time
        return False
    return bool(getattr(explainer, "needs_matching", False))


def explainer_unavailable_reason(
    name: str,
    entry: Any,
    factories: Optional[dict[str, ExplainerFactory]] = None,
    specific: Optional[dict[str, tuple[str, ...]]] = None,
) -> str:
    """Why explainer ``name`` cannot explain the model of registry ``entry`` ("" when it can).

    * AffEx variants (``needs_matching``) need a model that exposes matching scores
      (``entry.matching``);
    * a model-specific explainer (listed in some entry's ``extra["explainers"]``) works only for
      the models that list it;
    * the others (captum baselines, LIME, noise, random) perturb the supports and work for every
      few-shot model.
    """
    if entry is None:
        return ""
    specific = model_specific_explainers() if specific is None else specific
    if name in specific and entry.name not in specific[name]:
        return (f"{name} is specific to {', '.join(specific[name])}: it decomposes that architecture's "
                f"prototype similarity, which {entry.name} does not have")
    if not getattr(entry, "matching", True) and explainer_needs_matching(name, factories):
        return (f"{name} needs a matching model (attention / correlation scores between query and support "
                f"pixels); {entry.name} exposes none")
    return ""


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


def describe_oom(device: Optional[torch.device]) -> str:
    """A one-line message for a CUDA out-of-memory error, with the memory left."""
    text = "GPU out of memory"
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        text += f" on {device} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free after clearing the cache)"
    return text + ": try fewer shots, a smaller explanation size, or the CPU"


def model_error_hint(exc: BaseException) -> str:
    """The one-line message shown for an error raised by a job."""
    if isinstance(exc, ModelError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
