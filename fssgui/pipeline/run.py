"""THE chain, for one episode on one loaded model: predict -> region R -> explain -> causal metric.

:class:`EpisodeRun` computes each step once and reuses it (the episode's tensors, the prediction,
the query's backbone features for the metrics), so a front-end that explains with several
methods, or runs several metrics, pays for one forward. Every front-end (the app's jobs, the
playback tab, ``fssgui predict/explain/causal/report/evaluate/triage``) goes through it and does
none of these steps itself, so they all give the same numbers.

Streaming: when R is known before the forward (ground truth, brushed, stored, a PNG), nothing was
predicted yet, and an explainer that can run its own forward streaming the matching scores (AffEx)
meets a model that streams them (DCAMA), the explainer runs the forward itself and the scores are
never all held; its prediction becomes this run's prediction.

AffEx variants: what AffEx computes before its variant (the forward, the level maps, the level
weights) depends on the inputs, R and a few settings only (``levels_key``). The loaded model keeps
the latest such explanation (:class:`~fssgui.pipeline.models.LatestLevels`, one entry), so the other
variants of the same R (Unmasked, Masked, Signed, another blur) are made from its levels
(``from_levels``) with no forward or ablation, in this run or a later one (the app makes a run per
job); such a result names its source in ``levels_from``.
"""
from __future__ import annotations

import random
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import CancelledFn, ExplainError, ProgressFn, check_cancelled
from ..imaging import resize_map
from ..metrics.causal import CausalRun, Curve
from ..models.base import check_finite, default_causal_batch_size, resize_logits
from . import regions as R
from .models import LoadedModel
from .results import ExplanationResult, PredictionResult, input_key


def make_explainer(method: Any, params: Optional[dict] = None):
    """An explainer from its registry name and parameters (an explainer object is used as it is)."""
    if not isinstance(method, str):
        return method
    from ..explain.registry import get_explainer

    return get_explainer(method, **(params or {}))


def explainer_unavailable(explainer, loaded: LoadedModel) -> str:
    """Why ``explainer`` cannot explain this model ("" when it can)."""
    if getattr(explainer, "needs_matching", False) and not getattr(loaded.model, "is_matching", False):
        return (f"{explainer.name} needs a matching model; {loaded.spec.name!r} exposes no matching scores "
                f"(attention / correlation between query and support pixels)")
    return ""


def reseed(seed: int) -> None:
    """Seed the global generators an explainer might draw from (torch, numpy, random)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _needs_scores(explainer) -> bool:
    """Whether ``explainer`` needs the model's matching scores (AffEx)."""
    return bool(getattr(explainer, "needs_matching", False))


class EpisodeRun:
    """One episode on one loaded model (see the module docstring).

    ``episode``: an :class:`~fssgui.episode.Episode`; or None with ``batch`` (tensors already at
    the model size, as the parity tests have), the query then being S x S. ``ignore``: query
    pixels excluded from the mIoU measure (a dataset's label-255 border)."""

    def __init__(self, loaded: LoadedModel, episode=None, *, batch=None, ignore: Optional[np.ndarray] = None
                 ) -> None:
        if episode is None and batch is None:
            raise ValueError("an EpisodeRun needs an episode or its tensors")
        if episode is not None:
            episode.validate("episode")
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.episode = episode
        self.ignore = ignore
        self.size = loaded.input_size
        self._batch = None if batch is None else batch.to(self.device)
        self._prediction = None  # fssgui.models.base.Prediction (tensors)
        self._prediction_seconds = 0.0
        self._result: Optional[PredictionResult] = None
        self._query_features = None
        self._causal_batch: Optional[int] = None

    # ------------------------------------------------------------------------------- inputs
    @property
    def batch(self):
        """The episode at the model size (:class:`EpisodeTensors`, B = 1) on the model's device."""
        if self._batch is None:
            from ..episode import episode_to_tensors

            self._batch = episode_to_tensors(self.episode, self.loaded.entry).to(self.device)
        return self._batch

    @property
    def query_size(self) -> tuple[int, int]:
        return self.episode.query_size if self.episode is not None else (self.size, self.size)

    @property
    def shots(self) -> int:
        return self.batch.shots

    def key(self, region: Optional[np.ndarray] = None, *extra: Any) -> str:
        if self.episode is None:
            return ""
        return input_key(self.episode, region, self.loaded.spec, *extra)

    # ---------------------------------------------------------------------------- predict
    def prediction(self, with_scores: bool = False):
        """The forward pass (cached); ``with_scores`` keeps the matching scores (AffEx on a given
        prediction), recomputing once if the cached prediction has none. A model that replays its
        scores keeps what they are computed from instead (``replay_scores``: no score matrix held,
        AffEx streams them after the forward, memory 1.0x a forward)."""
        want = with_scores and bool(getattr(self.model, "is_matching", False))
        if self._prediction is None or (want and not self._prediction.has_scores):
            options = {"replay_scores": True} if want and getattr(self.model, "replays_scores", False) else {}
            started = time.perf_counter()
            with torch.no_grad():
                self._set_prediction(self.model.predict(self.batch, with_scores=want, **options))
            self._prediction_seconds = time.perf_counter() - started
        return self._prediction

    def _set_prediction(self, prediction) -> None:
        check_finite(prediction, self.loaded.spec.name)
        self._prediction, self._result = prediction, None

    def adopt_prediction(self, result: Optional[PredictionResult]) -> bool:
        """Take a prediction this run's inputs already had (the app's shown one: same episode, model
        and input size, by ``input_key``) as :meth:`predicted`'s answer, so that R from the prediction
        needs no forward before the explainer's own (AffEx then streams its forward: no score matrix
        held). Returns whether it was taken; another run's prediction is ignored."""
        if result is None or self._prediction is not None or self.episode is None or result.input_key != self.key(None):
            return False
        self._result = result
        return True

    def predicted(self) -> PredictionResult:
        """The prediction at the query's resolution (numpy; see :class:`PredictionResult`)."""
        if self._result is None:
            prediction = self.prediction()
            size = self.query_size
            logits = resize_logits(prediction.logits[0].detach().float(), size)
            self._result = PredictionResult(
                model=self.loaded.spec.name, checkpoint=self.loaded.spec.checkpoint, device=str(self.device),
                input_size=self.size,
                logits=logits.cpu().numpy().astype(np.float32),
                probability=torch.softmax(logits, dim=0)[1].cpu().numpy().astype(np.float32),
                mask=prediction.mask(size)[0].cpu().numpy(),
                model_mask=prediction.mask()[0].cpu().numpy(),
                seconds=self._prediction_seconds, input_key=self.key(None),
            )
        return self._result

    def plan_methods(self, explainers: Sequence[Any], region_source: str) -> list[int]:
        """Before several methods explain one region: make the forward now when it must come first,
        and return the order (indices into ``explainers``) that lets one forward serve them all with
        the least memory. R from the prediction needs the forward first; so do two or more methods
        that need the matching scores (held once, for all of them); then the scores are kept if a
        method needs them. One such method with R known in advance goes first and, on a model that
        streams, makes the forward itself without holding the scores (AffEx: memory 1.0x a forward);
        the other methods reuse its prediction."""
        order = list(range(len(explainers)))
        scored = [i for i in order if _needs_scores(explainers[i])]
        if R.needs_prediction(R.canonical_source(region_source)) or len(scored) > 1 \
                or (scored and not self._streams(explainers[scored[0]])):
            self.prediction(with_scores=bool(scored))
            return order
        return scored + [i for i in order if i not in scored]

    def _streams(self, explainer) -> bool:
        """Whether ``explainer`` can run its own forward streaming this model's matching scores."""
        return bool(getattr(explainer, "streams", False)) and bool(getattr(self.model, "streams_scores", False))

    # ----------------------------------------------------------------------------- region
    def region(self, source: str = R.PREDICTION, mask: Optional[np.ndarray] = None) -> R.Region:
        """R from ``source`` (see :mod:`fssgui.pipeline.regions`); ``mask`` is the brushed region
        (``source="brushed"``) at the query's resolution. The error sources (``false-positive``,
        ``false-negative``) compare the official prediction with the ground truth outside the
        run's ``ignore`` pixels."""
        source = R.canonical_source(source)
        if source == R.PREDICTION:
            result = self.predicted()
            return R.region_from_prediction(result.model_mask, result.mask)
        if source in R.ERROR_SOURCES:
            truth, _ = R.user_mask(R.GROUND_TRUTH, self.episode)
            values = R.largest_error_region(self.predicted().mask, truth, self.ignore, source)
            return R.region_from_user_mask(source, values, self.query_size, self.size, R.region_title(source))
        values, what = R.user_mask(source, self.episode, mask)
        return R.region_from_user_mask(source, values, self.query_size, self.size, what)

    def ground_truth(self) -> tuple[torch.Tensor, str]:
        """The mIoU measure's ground truth at S on the device, and where it came from: the query's
        ground truth (ignore pixels excluded), or without one the model's own official prediction."""
        query_mask = None if self.episode is None else self.episode.query_mask
        gt = R.ground_truth_at_size(query_mask, self.size, self.ignore)
        if gt is not None:
            return gt.to(self.device), "episode ground truth"
        return (self.prediction().mask()[0].long().to(self.device),
                "model prediction (the episode has no query ground truth)")

    # ---------------------------------------------------------------------------- explain
    def explain(self, method: Any, params: Optional[dict] = None, region: R.Region | str = R.PREDICTION, *,
                mask: Optional[np.ndarray] = None, progress: ProgressFn = None,
                cancelled: CancelledFn = None) -> ExplanationResult:
        """Explain R with ``method`` (a registry name with ``params``, or an explainer object).

        ``region``: a :class:`Region` already derived, or its source (with ``mask`` when brushed).
        An explainer with a ``seed`` parameter reseeds the global generators with it first, so the
        same seed gives the same map in every front-end."""
        started = time.perf_counter()
        explainer = make_explainer(method, params)
        reason = explainer_unavailable(explainer, self.loaded)
        if reason:
            raise ExplainError(reason)
        needs_scores = _needs_scores(explainer)
        streams = needs_scores and self._prediction is None and self._streams(explainer)
        if isinstance(region, str):
            region = R.canonical_source(region)
            if R.needs_prediction(region) and self._result is None:
                self.prediction(with_scores=needs_scores)  # R needs the forward: keep its scores
                streams = False
            region = self.region(region, mask)
        levels_key = self._levels_key(explainer, region)
        shared = self.loaded.latest_levels.get(levels_key)
        if shared is not None:
            return self._explain_from_levels(explainer, shared, region, started, progress)
        if levels_key:
            self.loaded.latest_levels.clear()  # its arrays must not add to this explanation's peak
        if not streams:
            self.prediction(with_scores=needs_scores)
        check_cancelled(cancelled)
        seed = getattr(explainer, "seed", None)
        if isinstance(seed, int):
            reseed(seed)
        attribution = explainer.explain(
            self.model, self.batch, region.tensor(self.device),
            prediction=self._prediction if needs_scores and not streams else None,
            progress=progress, cancelled=cancelled,
        )
        check_cancelled(cancelled)
        if streams:
            if attribution.prediction is None:
                raise ExplainError(f"{explainer.name} returned no prediction for its own forward")
            self._set_prediction(attribution.prediction)
            self._prediction_seconds = time.perf_counter() - started
            attribution.prediction = None
        result = self._explanation(explainer, attribution, region, time.perf_counter() - started)
        if levels_key and result.level_maps is not None and result.level_weights is not None:
            self.loaded.latest_levels.put(levels_key, result)
        return result

    def _levels_key(self, explainer, region: R.Region) -> str:
        """The key of what an explainer by levels (``levels_key``, ``from_levels``: AffEx) computes
        before its variant: these inputs, R and its settings; "" for other explainers and for runs
        without an episode."""
        levels_key = getattr(explainer, "levels_key", None)
        if levels_key is None or not hasattr(explainer, "from_levels"):
            return ""
        return self.key(region.model, *levels_key(self.size))

    def _explain_from_levels(self, explainer, shared: ExplanationResult, region: R.Region, started: float,
                             progress: ProgressFn) -> ExplanationResult:
        """Another variant of the latest explanation's levels (same inputs, R and settings): no
        forward, no ablation. Its prediction is this run's (the same inputs gave it)."""
        if self._result is None:
            self._result = shared.prediction
        attribution = explainer.from_levels(torch.from_numpy(shared.level_maps), torch.from_numpy(shared.level_weights),
                                            shared.level_names, self.batch)
        if progress is not None:
            progress(1.0)
        result = self._explanation(explainer, attribution, region, time.perf_counter() - started)
        result.levels_from = shared.levels_from or shared.method
        return result

    def _explanation(self, explainer, attribution, region: R.Region, seconds: float) -> ExplanationResult:
        model_maps = attribution.maps.detach().float().cpu().numpy()
        if model_maps.shape != (self.shots, self.size, self.size):
            raise ExplainError(f"{explainer.name} returned maps of shape {model_maps.shape}, expected "
                               f"{(self.shots, self.size, self.size)}")
        sizes = ([s.image.shape[:2] for s in self.episode.supports] if self.episode is not None
                 else [(self.size, self.size)] * self.shots)

        def numpy_or_none(t) -> Optional[np.ndarray]:
            return None if t is None else t.detach().float().cpu().numpy()

        names = attribution.level_names
        if names is None and attribution.level_maps is not None and self._prediction is not None:
            names = self._prediction.extras.get("level_names")
        params = dict(attribution.params or {})
        return ExplanationResult(
            method=attribution.method or explainer.name, params=params, signed=bool(attribution.signed),
            maps=[resize_map(m, s) for m, s in zip(model_maps, sizes)], model_maps=model_maps,
            region_info=region, prediction=self.predicted(), model=self.loaded.spec.name,
            checkpoint=self.loaded.spec.checkpoint, device=str(self.device), seconds=seconds,
            input_key=self.key(region.image, explainer.name, sorted(params.items())),
            level_maps=numpy_or_none(attribution.level_maps),
            level_weights=numpy_or_none(attribution.level_weights),
            level_names=None if names is None else list(names),
        )

    # ----------------------------------------------------------------------------- metrics
    def query_features(self):
        """The query's backbone features, encoded once for every metric state of this episode."""
        if self._query_features is None:
            with torch.no_grad():
                self._query_features = self.model.encode_query(self.batch.query)
        return self._query_features

    def causal_batch_size(self) -> int:
        """Metric states per forward on this run's device (:func:`default_causal_batch_size`:
        1 on the CPU, what fits in the free memory on a GPU), decided once per run."""
        if self._causal_batch is None:
            self._causal_batch = default_causal_batch_size(self.model, self.batch,
                                                           query_features=self.query_features())
        return self._causal_batch

    def causal(self, maps, region: R.Region, metric: str = "iauc", measure: str = "confidence", *,
               method: str = "", steps: Optional[int] = None, percentage: Optional[float] = None,
               skip_empty: Optional[bool] = None, batch_size: Optional[int] = None,
               cancelled: CancelledFn = None) -> CausalRun:
        """A causal curve of the attribution ``maps`` (``[K, S, S]``: an explanation's
        ``model_maps``, or an :class:`ExplanationResult`) for R; iterate it for its steps, or call
        ``.run()`` for the finished :class:`~fssgui.metrics.causal.Curve`."""
        if isinstance(maps, ExplanationResult):
            method = method or maps.method
            maps = maps.model_maps
        attribution = torch.as_tensor(np.asarray(maps, np.float32)).to(self.device)
        if tuple(attribution.shape) != (self.shots, self.size, self.size):
            raise ExplainError(f"{method or 'attribution'}: maps of shape {tuple(attribution.shape)} do not fit "
                               f"{self.shots} support(s) at the model size {self.size}; explain again")
        gt, gt_source = (self.ground_truth() if measure == "miou" else (None, None))
        prediction = self.prediction()
        return CausalRun(
            self.model, self.batch, attribution, region.tensor(self.device), metric, measure, method=method,
            steps=steps, percentage=percentage, skip_empty=skip_empty, gt=gt,
            batch_size=self.causal_batch_size() if batch_size is None else batch_size,
            query_features=self.query_features(), reference_logits=prediction.logits, cancelled=cancelled,
            params={"region": region.source, **({"ground_truth": gt_source} if gt_source else {})},
        )

    def causal_metric(self, maps, region: R.Region, metric: str = "iauc", measure: str = "confidence",
                      **options) -> Curve:
        """:meth:`causal` run to the end."""
        return self.causal(maps, region, metric, measure, **options).run()

