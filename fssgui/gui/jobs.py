"""What the GUI's worker thread runs: thin glue between the window and the core (no Qt here).

Every function takes plain inputs (an :class:`~fssgui.episode.Episode` copy, numpy masks, names)
and returns plain dataclasses of numpy arrays, so nothing that crosses the thread boundary is a
torch tensor, let alone a CUDA tensor. No model math lives here: models come from
``fssgui.models.registry``, explainers from ``fssgui.explain.registry``; this module only
converts the episode to tensors, calls them and brings the result back to image resolution.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..episode import Episode, episode_to_tensors, region_to_model
from ..errors import ExplainError, ModelError
from ..imaging import resize_map, resize_mask
from ..models.base import check_finite

#: region sources, as shown to the user
REGION_BRUSHED = "brushed"
REGION_PREDICTION = "prediction"
REGION_GROUND_TRUTH = "ground truth"
REGION_SOURCES = (REGION_BRUSHED, REGION_PREDICTION, REGION_GROUND_TRUTH)


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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    checkpoint: Optional[str] = None
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:i"


@dataclass
class DeviceInfo:
    """The device a model actually runs on, and GPU memory when it is CUDA."""

    device: str  # e.g. "cpu", "cuda:0"
    description: str  # e.g. "NVIDIA H100 80GB HBM3" or "CPU"
    cuda_available: bool
    requested: str = "auto"
    allocated_bytes: int = 0
    reserved_bytes: int = 0
    free_bytes: int = 0
    total_bytes: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class PredictionResult:
    probability: np.ndarray  # [H, W] float32 foreground probability at query resolution
    mask: np.ndarray  # [H, W] bool predicted foreground
    model: str
    device: str
    seconds: float
    input_key: str


@dataclass
class ExplanationResult:
    method: str
    params: dict[str, Any]
    signed: bool
    maps: list[np.ndarray]  # per support: [Hs, Ws] float32 at the support image's resolution
    region: np.ndarray  # [H, W] bool: the query region R that was explained
    region_source: str
    prediction: PredictionResult
    model: str
    device: str
    seconds: float
    input_key: str
    level_maps: Optional[np.ndarray] = None  # [L, K, E, E]
    level_weights: Optional[np.ndarray] = None  # [L]
    level_names: Optional[list[str]] = None
    label: str = ""  # filled by the window: "#3 affex-signed, R = prediction"
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- hashing
def input_key(episode: Episode, region: Optional[np.ndarray] = None, *extra: Any) -> str:
    """A short hash of everything a result depends on (images, masks, region, names, params)."""
    digest = hashlib.sha1()

    def add(array: Optional[np.ndarray]) -> None:
        if array is None:
            digest.update(b"none")
            return
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())

    add(episode.query_image)
    for support in episode.supports:
        add(support.image)
        add(support.mask.astype(bool))
    add(None if region is None else region.astype(bool))
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------- models
class ModelCache:
    """The models the worker thread owns: one resident few-shot model (a new spec replaces it)
    and, apart from it, one resident ScaleProtoSeg model for the Prototypes tab."""

    def __init__(self, builder: Callable[..., Any] | None = None) -> None:
        self._builder = builder
        self.spec: Optional[ModelSpec] = None
        self.model = None
        self.device: Optional[torch.device] = None
        self.semseg_spec: Optional[ModelSpec] = None
        self.semseg_model = None

    def get_semseg(self, spec: ModelSpec, ctx: JobContext) -> tuple[Any, torch.device]:
        """The ScaleProtoSeg model of ``spec`` (built by ``fssgui.models.scaleprotoseg``)."""
        from ..models.registry import resolve_device
        from ..models.scaleprotoseg import build_semseg_model

        if self.semseg_model is not None and spec == self.semseg_spec:
            return self.semseg_model, self.semseg_model.prototype_vectors.device
        self.semseg_spec, self.semseg_model = None, None
        device = resolve_device(spec.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        ctx.progress(0.0, f"loading {spec.name} on {device}")
        started = time.perf_counter()
        model = build_semseg_model(spec.name, spec.checkpoint, device=device, log=ctx.log)
        ctx.log(f"model {spec.name} ready on {device} ({time.perf_counter() - started:.1f} s)")
        self.semseg_spec, self.semseg_model = spec, model
        return model, device

    def get(self, spec: ModelSpec, ctx: JobContext) -> tuple[Any, torch.device]:
        from ..models.registry import build_model, resolve_device

        if self.model is not None and spec == self.spec:
            return self.model, self.device
        self.release()
        device = resolve_device(spec.device)
        if spec.device in ("auto", None) and device.type == "cpu":
            ctx.log("CUDA is not available: running on the CPU")
        if device.type == "cuda":
            # The current CUDA device is thread-local: set it in this (the worker) thread.
            torch.cuda.set_device(device)
        ctx.progress(0.0, f"loading {spec.name} on {device}")
        builder = self._builder or build_model
        started = time.perf_counter()
        model = builder(spec.name, spec.checkpoint, device=device, log=ctx.log)
        ctx.log(f"model {spec.name} ready on {device} ({time.perf_counter() - started:.1f} s)")
        self.spec, self.model, self.device = spec, model, device
        return model, device

    def release(self) -> None:
        self.spec, self.model, self.device = None, None, None
        self.semseg_spec, self.semseg_model = None, None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def device_info(device: Optional[torch.device], requested: str = "auto") -> DeviceInfo:
    cuda = torch.cuda.is_available()
    if device is None or device.type != "cuda":
        return DeviceInfo("cpu", "CPU", cuda, requested)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return DeviceInfo(
        f"cuda:{index}",
        torch.cuda.get_device_name(index),
        True,
        requested,
        int(torch.cuda.memory_allocated(index)),
        int(torch.cuda.memory_reserved(index)),
        int(free),
        int(total),
    )


def load_model(ctx: JobContext, cache: ModelCache, spec: ModelSpec) -> DeviceInfo:
    _, device = cache.get(spec, ctx)
    return device_info(device, spec.device)


# ---------------------------------------------------------------------------- prediction
def _check_episode(episode: Episode) -> None:
    episode.validate("episode")


def _predict(model, batch) -> Any:
    with torch.no_grad():
        return model.predict(batch, with_scores=False)


def _prediction_result(prediction, episode: Episode, spec: ModelSpec, device, seconds: float, key: str):
    check_finite(prediction, spec.name)
    probability = prediction.foreground_probability()[0].float().cpu().numpy()
    probability = np.clip(resize_map(probability, episode.query_size), 0.0, 1.0).astype(np.float32)
    mask = resize_mask(prediction.mask()[0].cpu().numpy(), episode.query_size)
    return PredictionResult(probability, mask, spec.name, str(device), seconds, key)


def predict(ctx: JobContext, cache: ModelCache, spec: ModelSpec, episode: Episode) -> PredictionResult:
    """Run the model on the episode; probability and mask at the query's resolution."""
    _check_episode(episode)
    model, device = cache.get(spec, ctx)
    ctx.check()
    ctx.progress(0.2, "predicting")
    started = time.perf_counter()
    batch = episode_to_tensors(episode, model.entry).to(device)
    prediction = _predict(model, batch)
    key = input_key(episode, None, spec)
    result = _prediction_result(prediction, episode, spec, device, time.perf_counter() - started, key)
    ctx.progress(1.0, "prediction done")
    return result


# ---------------------------------------------------------------------------- explanation
ExplainerFactory = Callable[..., Any]


def make_explainer(name: str, params: dict[str, Any], factories: Optional[dict[str, ExplainerFactory]] = None):
    """An explainer by name: from ``factories`` (tests, plug-ins) or ``fssgui.explain.registry``."""
    if factories and name in factories:
        return factories[name](**params)
    try:
        from ..explain.registry import get_explainer
    except ImportError:
        raise ExplainError(f"explainer {name!r} is not available: fssgui.explain.registry is missing") from None
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
    """Predict, pick the region R (brushed / prediction / ground truth), explain, resize the maps."""
    from ..explain.base import Cancelled

    _check_episode(episode)
    model, device = cache.get(spec, ctx)
    ctx.check()
    started = time.perf_counter()
    entry = model.entry
    explainer = make_explainer(explainer_name, dict(params), factories)
    if getattr(explainer, "needs_matching", False) and not getattr(model, "is_matching", False):
        raise ExplainError(f"{explainer_name} needs a matching model; {spec.name} exposes no matching scores")
    ctx.progress(0.02, "predicting")
    batch = episode_to_tensors(episode, entry).to(device)
    with_scores = bool(getattr(explainer, "needs_matching", False))
    pred_key = input_key(episode, None, spec)
    # R known before the forward (brushed, ground truth) and a model that streams its matching
    # scores (DCAMA): AffEx runs the forward itself and reduces each level's scores as they come,
    # so the scores are never all held (peak memory of a plain forward); its prediction comes back
    # with the attribution
    streamed = (region_source != REGION_PREDICTION and with_scores
                and bool(getattr(model, "streams_scores", False)) and bool(getattr(explainer, "streams", False)))
    prediction = pred_result = None
    if not streamed:
        with torch.no_grad():
            prediction = model.predict(batch, with_scores=with_scores)
        pred_result = _prediction_result(prediction, episode, spec, device, time.perf_counter() - started, pred_key)
    if region_source == REGION_PREDICTION:
        region = pred_result.mask
    elif region_source == REGION_GROUND_TRUTH:
        if episode.query_mask is None:
            raise ExplainError("R = ground truth, but this episode has no query ground-truth mask")
        region = episode.query_mask
    if region is None or not np.any(region):
        raise ExplainError(f"the region R to explain is empty (R = {region_source}): brush it on the query")
    region = np.asarray(region, dtype=bool)
    ctx.check()
    region_model = region_to_model(region, entry.input_size).to(device)
    if not bool(region_model.any()):
        raise ExplainError("the region R vanishes at the model's input size: brush a larger region")

    def explainer_progress(fraction: float) -> None:
        ctx.progress(0.05 + 0.9 * float(fraction), f"{explainer_name}")

    ctx.progress(0.05, explainer_name)
    attribution = explainer.explain(
        model,
        batch,
        region_model,
        prediction=prediction if with_scores else None,
        progress=explainer_progress,
        cancelled=ctx.cancelled,
    )
    if ctx.cancelled():
        raise Cancelled()
    if streamed:
        prediction, attribution.prediction = attribution.prediction, None
        if prediction is None:
            raise ExplainError(f"{explainer_name} returned no prediction for its own forward")
        pred_result = _prediction_result(prediction, episode, spec, device, time.perf_counter() - started, pred_key)
    maps = attribution.maps.detach().float().cpu().numpy()
    support_maps = [resize_map(maps[i], s.image.shape[:2]) for i, s in enumerate(episode.supports)]

    def numpy_or_none(t) -> Optional[np.ndarray]:
        return None if t is None else t.detach().float().cpu().numpy()

    level_names = attribution.level_names
    if level_names is None and attribution.level_maps is not None:
        level_names = prediction.extras.get("level_names") if prediction is not None else None
    result = ExplanationResult(
        method=attribution.method or explainer_name,
        params=dict(attribution.params or params),
        signed=bool(attribution.signed),
        maps=support_maps,
        region=region,
        region_source=region_source,
        prediction=pred_result,
        model=spec.name,
        device=str(device),
        seconds=time.perf_counter() - started,
        input_key=input_key(episode, region, spec, explainer_name, sorted(params.items())),
        level_maps=numpy_or_none(attribution.level_maps),
        level_weights=numpy_or_none(attribution.level_weights),
        level_names=list(level_names) if level_names is not None else None,
    )
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
#: the official group-weight threshold (checkpoints named th-0.05-...)
DEFAULT_PROTOTYPE_THRESHOLD = 0.05


@dataclass
class PrototypeRunResult:
    """One ScaleProtoSeg forward on the query and the graph of its default class (numpy only)."""

    run: Any  # fssgui.explain.prototypes.ScaleProtoSegRun
    explanation: Any  # fssgui.explain.prototypes.PrototypeExplanation of the default class
    class_shares: list[tuple[int, float]]  # predicted classes (model index, pixel share), largest first
    model_info: dict[str, Any]  # ScaleProtoSeg.describe(threshold)
    model: str
    checkpoint: str
    device: str
    seconds: float
    image_key: str


def image_key(image: np.ndarray) -> str:
    digest = hashlib.sha1()
    image = np.ascontiguousarray(image)
    digest.update(str((image.shape, image.dtype.str)).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]


def predicted_class_shares(run: Any, threshold: Optional[float]) -> list[tuple[int, float]]:
    """(model class index, pixel share) of the classes predicted on the image, largest first."""
    from ..explain.prototypes import upsample_logits_argmax

    logits, _ = run.head.logits(run.activations, threshold if run.head.grouped else None)
    labels = upsample_logits_argmax(logits, run.image_hw)
    counts = np.bincount(labels.ravel(), minlength=len(run.head.class_names))
    total = float(counts.sum()) or 1.0
    return [(int(c), float(counts[c] / total)) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]


def prototypes(
    ctx: JobContext,
    cache: ModelCache,
    spec: ModelSpec,
    image: np.ndarray,
    size: Optional[int] = None,
    threshold: Optional[float] = DEFAULT_PROTOTYPE_THRESHOLD,
) -> PrototypeRunResult:
    """Run ScaleProtoSeg ``spec`` on ``image`` (RGB uint8) and explain the class predicted on the
    largest area (the graph of any other class is then cheap numpy: ``explain_class``)."""
    from ..explain.prototypes import ProjectionMetadata, explain_class, run_scaleprotoseg

    if not spec.checkpoint:
        raise ModelError(f"{spec.name} needs a checkpoint: choose its file in the Prototypes tab")
    model, device = cache.get_semseg(spec, ctx)
    ctx.check()
    started = time.perf_counter()
    projection, note = ProjectionMetadata.find(Path(spec.checkpoint), None, model.num_scales)
    ctx.log(note)
    ctx.progress(0.3, f"{spec.name}: forward on the query")
    run = run_scaleprotoseg(model, image, size or None, projection, note)
    ctx.check()
    ctx.progress(0.8, "prototype graph")
    shares = predicted_class_shares(run, threshold)
    usable = [c for c, _ in shares if run.head.class_prototypes[c]]
    if not usable:
        usable = [c for c in range(len(run.head.class_names)) if run.head.class_prototypes[c]]
    if not usable:
        raise ExplainError(f"{spec.name}: the model has no prototypes")
    explanation = explain_class(run, usable[0], threshold)
    ctx.progress(1.0, "prototypes done")
    return PrototypeRunResult(
        run=run,
        explanation=explanation,
        class_shares=shares,
        model_info=model.describe(threshold),
        model=spec.name,
        checkpoint=str(spec.checkpoint),
        device=str(device),
        seconds=time.perf_counter() - started,
        image_key=image_key(image),
    )


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
