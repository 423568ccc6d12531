"""The common model interface every few-shot segmentation model implements.

Explainers and metrics talk to models only through this module, so they need no knowledge
of an architecture.

Conventions
-----------
* ``EpisodeTensors`` hold the episode at the model's input size S: ImageNet-normalised (or the
  model's own normalisation) float32 NCHW images and {0,1} float masks.
* ``Prediction.logits`` is ``[B, 2, S, S]``: channel 0 background, channel 1 foreground.
* ``Prediction.matching_scores`` is a list of L tensors ``[B, Hq*Wq, K*Hs*Ws]`` of
  *pre-softmax* matching scores, one per matching level, the support axis ordered
  (shot, row, col) and the query axis (row, col). ``level_shapes[l]`` is ``(h, w)`` of level l
  (query and support grids have the same size in every model we have).
* ``Prediction.head(keep)`` reruns only the part of the model after the matching: ``keep`` is a
  float tensor ``[N, L]`` (1 keeps a level, 0 ablates it) and the result is ``[N, B, 2, S, S]``
  logits. ``head(torch.ones(1, L))[0]`` equals ``logits``.
* **Streaming the scores** (optional, for memory): a model whose class sets
  ``streams_scores = True`` accepts ``predict(..., score_sink=sink)``. It then calls
  ``sink(level, (h, w), start, scores)`` with each matching level's pre-softmax scores (layout as
  above) as soon as they are computed, in row chunks: ``scores`` ``[B, n, K*Hs*Ws]`` holds the query
  rows ``start .. start + n - 1`` of level ``level``. The calls come in level order and, within a
  level, in row order, each chunk starting where the previous one ended (``start`` 0 first); a level
  is complete when its ``Hq*Wq`` rows are all given, and every level is given. A model may hand a
  level over whole (one call, ``start`` 0) or in chunks of at most :data:`SCORE_CHUNK_BYTES` (what
  :func:`score_chunk_rows` gives), so that a level's whole score matrix is never written out. It
  keeps no reference to a chunk afterwards: the returned ``matching_scores`` is ``None``, while
  ``level_shapes`` and ``head`` are filled as with ``with_scores=True``. The sink must not keep
  the tensor if the memory is to be saved (AffEx reduces each chunk to two small sums inside the
  sink). Callers check ``getattr(model, "streams_scores", False)`` first; other models take no
  ``score_sink``. ``Prediction.num_levels`` is ``len(level_shapes)`` when no scores are held.
* **Replaying the scores** (optional, for memory when the scores are wanted *after* the forward,
  e.g. for R = the prediction): a model whose class sets ``replays_scores = True`` accepts
  ``predict(..., with_scores=True, replay_scores=True)``. It then keeps what its scores are computed
  from (DCAMA: each level's projected queries and keys, a fraction of the score matrices' size)
  instead of the scores: ``matching_scores`` is ``None`` and ``Prediction.score_replay(sink)``
  recomputes every level's scores and hands them to ``sink`` exactly as a streaming ``predict``
  does (same order, same chunks), as often as asked. ``Prediction.has_scores`` is true for held
  and for replayable scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CancelledFn, ModelError, check_cancelled

#: ``sink(level, (h, w), start, scores)``: receives the query rows ``start .. start + n - 1`` of one
#: matching level's pre-softmax scores, ``[B, n, K*Hs*Ws]``, from a streaming ``predict`` (see the
#: module docstring)
ScoreSink = Callable[[int, tuple[int, int], int, Tensor], None]

#: the most bytes of one chunk of float32 scores, where scores are handled by query rows: a
#: streaming model's chunks (:func:`score_chunk_rows`) and AffEx's reduction of a held level
SCORE_CHUNK_BYTES = 8 * 2**20


def score_chunk_rows(columns: int, batch: int = 1, chunk_bytes: Optional[int] = None) -> int:
    """How many query rows of float32 scores ``[batch, rows, columns]`` fit in ``chunk_bytes``
    (default :data:`SCORE_CHUNK_BYTES`, read at call time); at least one."""
    limit = SCORE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    return max(1, int(limit // (4 * batch * columns)))

@dataclass
class EpisodeTensors:
    """An episode (batch of B episodes with K shots each) at the model's input size."""

    query: Tensor  # [B, 3, S, S]
    supports: Tensor  # [B, K, 3, S, S]
    support_masks: Tensor  # [B, K, S, S] in {0, 1}

    @property
    def shots(self) -> int:
        return int(self.supports.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.query.shape[0])

    def to(self, device: torch.device | str) -> "EpisodeTensors":
        return EpisodeTensors(self.query.to(device), self.supports.to(device), self.support_masks.to(device))


@dataclass
class Prediction:
    """What a forward pass returns to explainers, metrics and the GUI."""

    logits: Tensor  # [B, 2, S, S]
    matching_scores: Optional[list[Tensor]] = None  # L x [B, Hq*Wq, K*Hs*Ws], pre-softmax
    level_shapes: Optional[list[tuple[int, int]]] = None  # (h, w) per level
    head: Optional[Callable[[Tensor], Tensor]] = None  # keep [N, L] -> logits [N, B, 2, S, S]
    extras: dict[str, Any] = field(default_factory=dict)
    #: ``score_replay(sink)``: the scores recomputed into a sink (a model that replays them, see the
    #: module docstring); None otherwise
    score_replay: Optional[Callable[[ScoreSink], None]] = None

    @property
    def has_scores(self) -> bool:
        """Whether the matching scores can be had from this prediction: held, or replayable."""
        return self.matching_scores is not None or self.score_replay is not None

    @property
    def num_levels(self) -> int:
        """L: the number of matching levels; from ``level_shapes`` when the scores are not held
        (streamed to a ``score_sink``, or not asked for), 0 for a model without matching levels."""
        if self.matching_scores is not None:
            return len(self.matching_scores)
        return 0 if self.level_shapes is None else len(self.level_shapes)

    def foreground_probability(self) -> Tensor:
        """[B, S, S] softmax probability of the foreground channel."""
        return torch.softmax(self.logits, dim=1)[:, 1]

    def mask(self, size: Optional[Sequence[int]] = None) -> Tensor:
        """``[B, h, w]`` bool: the model's official predicted foreground at ``size`` (default: the
        model size S). The argmax of the logits resized to ``size`` with :func:`resize_logits`, as
        the official evaluation code resizes to the original image size; models whose official
        prediction is another rule (DMTNet's K-shot vote) override this. Every front-end takes the
        predicted mask, R = prediction and the fallback ground truth from here."""
        logits = self.logits if size is None else resize_logits(self.logits, size)
        return foreground_mask(logits, dim=1)


def foreground_mask(logits: Tensor, dim: int = 1) -> Tensor:
    """``argmax(logits, dim) == 1`` as a bool mask (the class axis ``dim`` removed). With the two
    classes of few-shot segmentation it is ``logits[1] > logits[0]`` (a tie is background, as
    argmax takes the first maximum): a comparison, where an argmax over an axis of 2 strided by
    S² costs ~16 ms at 384² on this CPU (250x)."""
    if logits.shape[dim] != 2:
        return logits.argmax(dim=dim) == 1
    background, foreground = logits.unbind(dim)
    return foreground > background


def check_finite(prediction: "Prediction | Tensor", model_name: str) -> None:
    """Raise :class:`~fssgui.errors.ModelError` naming the model when a prediction's logits (or
    the tensor given) hold NaN or infinite values: broken weights or an overflow, which the argmax
    would otherwise turn into a silent, meaningless mask (often all background). Every front-end
    calls it on each prediction it shows or writes."""
    logits = prediction.logits if isinstance(prediction, Prediction) else prediction
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise ModelError(f"model {model_name}: the prediction is not finite ({bad} of {finite.numel()} logits are "
                         "NaN or Inf): its weights or its input are broken, so no mask is given")


class FSSModel(nn.Module):
    """Base class of model adapters.

    Subclasses implement :meth:`predict`; matching models also fill ``matching_scores``,
    ``level_shapes`` and ``head`` when asked ``with_scores=True``.
    ``encode_query``/``query_features`` let metrics reuse the query's backbone features across
    many perturbed-support forwards (the query does not change).
    """

    #: filled by the registry when the model is built
    entry: "Any" = None
    #: whether ``predict(..., with_scores=True)`` returns matching scores and a head
    is_matching: bool = False
    #: whether ``predict`` accepts ``score_sink=`` (each level's scores handed over as computed
    #: and not kept; see the module docstring)
    streams_scores: bool = False
    #: ablations evaluated per ``head`` call in :meth:`feature_ablation_weights` on an accelerator
    ablation_chunk: int = 4
    #: the same on the CPU: one at a time, as batching the head's convolutions does not make them
    #: faster there (measured slower for DCAMA: 0.17 s per pass alone, 0.25 s in fours) and
    #: multiplies their working memory
    ablation_chunk_cpu: int = 1

    def predict(
        self,
        batch: EpisodeTensors,
        *,
        with_scores: bool = False,
        query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
    ) -> Prediction:  # pragma: no cover - interface
        """The forward pass. ``score_sink`` is accepted only by models with
        ``streams_scores = True`` (it implies ``with_scores``; see the module docstring)."""
        raise NotImplementedError

    def encode_query(self, query: Tensor) -> Any:
        """Backbone features of the query ``[1, 3, S, S]`` for reuse by :meth:`predict`.

        The default returns ``None`` (no reuse); models override it when they can.
        """
        return None

    def feature_ablation_weights(
        self,
        prediction: Prediction,
        region: Tensor,
        size: int,
        *,
        mode: str = "paper",
        cancelled: CancelledFn = None,
    ) -> Tensor:
        """Feature-ablation level weights ``[L]`` summing to 1 (AffEx aggregation).

        ``region`` is a ``[S', S']`` bool mask already at the explanation size ``size``.
        Default (DCAMA-style): ablate each level through ``prediction.head``, resize the logits
        to ``size`` (bilinear, align_corners=False) and weigh level j by
        ``|mean_R fg_logit - mean_R fg_logit_without_j|``, normalised to sum 1.
        Models whose reference code differs override this (``mode='reference'``).
        ``cancelled()`` is checked before each head call (:class:`fssgui.errors.Cancelled`).
        """
        if prediction.head is None:
            raise ValueError("this model exposes no head: feature ablation is not available")
        levels = prediction.num_levels
        # L ablations, each with one level zeroed; the unablated output is ``prediction.logits``
        # (``head(ones)[0]`` by the interface convention), so it costs no head pass
        keep = 1.0 - torch.eye(levels, device=prediction.logits.device, dtype=prediction.logits.dtype)
        pixels = region_pixels(region, prediction.logits.device)

        def region_mean_fg(out: Tensor) -> Tensor:  # [n, B, 2, S, S] -> [n, B]
            return region_mean_foreground(out, pixels, size)

        fg = []
        with torch.no_grad():
            unablated = region_mean_fg(prediction.logits[None])  # [1, B]
            # a few ablations per head call on a GPU (batched enough to use it, small enough that the
            # ablated logits never dominate peak memory), one at a time on the CPU
            per_call = self.ablation_chunk_cpu if prediction.logits.device.type == "cpu" else self.ablation_chunk
            for chunk in keep.split(max(1, int(per_call))):
                check_cancelled(cancelled)
                fg.append(region_mean_fg(prediction.head(chunk)))  # [n, B]
            fg = torch.cat(fg)  # [L, B]
            diff = (unablated - fg).abs().mean(-1)  # [L]
        return diff / diff.sum()


def region_pixels(region: Tensor, device: torch.device) -> Tensor:
    """R ``[E, E]`` bool -> its pixels' flat indices (row-major), for :func:`region_mean_foreground`:
    found once per explanation (a boolean index would search the mask on every ablation pass)."""
    return region.to(device).flatten().nonzero()[:, 0]


def region_mean_foreground(logits: Tensor, pixels: Tensor, size: int) -> Tensor:
    """``[n, B, 2, S, S]`` logits -> ``[n, B]``: the mean foreground logit over R (``pixels``, from
    :func:`region_pixels`) after the bilinear (align_corners=False) resize to the explanation size
    ``size``: what the feature ablation compares (the same values, gathered in the same order, as
    ``logits[:, :, 1][..., region].mean(-1)``)."""
    n, b = logits.shape[:2]
    if tuple(logits.shape[-2:]) != (size, size):
        logits = F.interpolate(logits.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False)
        logits = logits.view(n, b, 2, size, size)
    return logits[:, :, 1].flatten(-2).index_select(-1, pixels).mean(-1)


def resize_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Logits ``[..., C, H, W]`` -> ``[..., C, h, w]``: bilinear, align_corners=True (the official
    FSS evaluation's resize to the original query size); unchanged when already that size."""
    h, w = int(size[0]), int(size[1])
    if tuple(logits.shape[-2:]) == (h, w):
        return logits
    lead = logits.shape[:-2]
    flat = logits.reshape(-1, *logits.shape[-3:]) if logits.dim() >= 4 else logits[None]
    out = F.interpolate(flat.float(), size=(h, w), mode="bilinear", align_corners=True)
    return out.reshape(*lead, h, w)


#: causal-metric states per forward on an accelerator are capped at this (75 states a curve: 3 forwards)
MAX_CAUSAL_BATCH = 32
#: share of the free accelerator memory that the states of one forward may take
CAUSAL_MEMORY_SHARE = 0.5
#: states per forward on an accelerator that has no memory query (not CUDA; not measured)
OTHER_ACCELERATOR_BATCH = 8


def default_causal_batch_size(model: FSSModel, batch: EpisodeTensors, *, query_features: Any = None,
                              max_batch: int = MAX_CAUSAL_BATCH) -> int:
    """How many perturbed states of one episode (``batch``, B = 1) the causal metrics should put
    through one forward of ``model`` on the device that holds ``batch``; the one place this is
    decided (``bench/causal.py`` measures it).

    * CPU: 1. Batching does not make a state cheaper there (measured, one thread: EfficientNet
      features 0.16 s per image alone, 0.21 s per image in a batch of 8; the matching's products
      and softmaxes do not shrink either), and it multiplies the working memory.
    * CUDA: as many states as fit in :data:`CAUSAL_MEMORY_SHARE` of the free memory
      (``torch.cuda.mem_get_info``), the memory of one state being the peak of a probe forward on
      the unperturbed episode (``query_features`` reused when given, else encoded here: the probe
      costs one forward), at most ``max_batch``, at least 1.
    * Other accelerators: :data:`OTHER_ACCELERATOR_BATCH` (no memory query; not measured).
    """
    device = batch.query.device
    if device.type == "cpu":
        return 1
    if device.type != "cuda":
        return max(1, min(int(max_batch), OTHER_ACCELERATOR_BATCH))
    with torch.no_grad():
        if query_features is None:
            query_features = model.encode_query(batch.query)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
        model.predict(batch, query_features=query_features)
        torch.cuda.synchronize(device)
        state_bytes = torch.cuda.max_memory_allocated(device) - held
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return batch_size_for_memory(free_bytes, state_bytes, max_batch)


def batch_size_for_memory(free_bytes: int, state_bytes: int, max_batch: int = MAX_CAUSAL_BATCH,
                          share: float = CAUSAL_MEMORY_SHARE) -> int:
    """``share`` of ``free_bytes`` divided by the bytes of one state, within ``[1, max_batch]``."""
    fitting = int(free_bytes * share // max(1, int(state_bytes)))
    return max(1, min(int(max_batch), fitting))


def expand_query_batch(features: Any, batch_size: int) -> Any:
    """Features that ``encode_query`` computed for one query, made to fit a batch of
    ``batch_size`` episodes sharing that query (causal states evaluated together, DeepLift's
    input + baseline pair): every tensor with batch axis 1 is expanded along it (a view, no copy).
    A tensor, or a dict / list / tuple of them; anything else is returned as it is."""
    if isinstance(features, Tensor):
        if features.shape[0] == 1 and batch_size != 1:
            return features.expand(batch_size, *features.shape[1:])
        return features
    if isinstance(features, dict):
        return {key: expand_query_batch(value, batch_size) for key, value in features.items()}
    if isinstance(features, (list, tuple)):
        return type(features)(expand_query_batch(value, batch_size) for value in features)
    return features


def resize_masks(masks: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear, align_corners=True downsampling of {0,1} masks ``[..., H, W]`` (soft values)."""
    shape = masks.shape
    flat = masks.reshape(-1, 1, shape[-2], shape[-1]).float()
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=True)
    return out.reshape(*shape[:-2], *out.shape[-2:])
