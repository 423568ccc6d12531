"""AffEx (Affinity Explainer): which support pixels the query region R matched, from the model's
own matching scores (the AffEx paper and its official AffinityExplainer code).

Per matching level l with scores ``A_l`` ``[h*w (query), K*h*w (support)]``:

1. ``A = softmax(A_l)`` over all K*h*w support positions (optional, ``use_softmax``);
2. every support pixel s has a query map ``A[:, s]`` (h x h); it is upsampled to the explanation
   size E (bilinear, antialiased as torchvision's ``resize``), normalised to sum 1 over the E x E
   query grid (+1e-6), and averaged over the query pixels in R -> one value per support pixel;
3. those values ``[K, h, w]`` are upsampled to E x E (bilinear, no antialias) and the level map is
   normalised to sum 1 over all K*E*E support pixels.

The maps are combined with feature-ablation level weights (``model.feature_ablation_weights``)
or a plain mean, min-max scaled over all shots jointly, resized to the model size S and, for the
masked/signed variants, multiplied by a blurred support mask and min-max scaled again.

**No E x E map per support pixel is ever built.** Step 2 only needs two linear functionals of the
upsampled query map: its sum over R and its total sum. With the (linear) upsampling operator Up,
``<Up(a), 1_R> = <a, Up^T(1_R)>``, so we push the two indicator maps back once per level
(``u_R = Up^T(1_R)``, ``u_1 = Up^T(1)``, by autograd through the very same resize call, exact
for up- and antialiased down-sampling alike) and step 2 becomes two matrix-vector products over
the (softmaxed) scores, chunked over query rows so the extra memory stays bounded.

**Streaming.** When ``explain`` runs its own forward on a model with ``streams_scores`` (DCAMA,
DMTNet, the built-in matcher), it passes a ``score_sink`` to ``predict`` and reduces the scores
inside the sink as they come, a chunk of query rows at a time (step 2 is linear in the rows:
:class:`LevelContributions`), to step 2's ``[K, h, w]`` per level. The model never holds more
than one level's score matrix (DCAMA not even that: it hands its large levels over in chunks of
rows, ``fssgui.models.base.SCORE_CHUNK_BYTES``), so AffEx's peak memory is the plain forward's
(the level maps are built after the forward). The sink rejects levels or rows out of order and a
level left incomplete (``ExplainError``). The result is the same as with all the scores returned
(tests/test_affex_streaming.py). A caller's prediction that already holds scores is used as it is.

Modes: ``"paper"`` (default) asks the adapter for weights paired with their own level;
``"reference"`` asks for the reference code's pairing (DCAMA: the 1/8 and 1/32 groups swapped;
DMTNet K>1: every shot compared with the last shot's output). Everything else is the reference
pipeline in both modes (its per-pixel and per-level normalisations and post-hoc masking).

Variants and the sign convention:

* ``unmasked``: ``minmax(sum_l w_l map_l)`` in [0, 1].
* ``masked``: ``minmax(unmasked * blur(mask))``: background affinity is damped towards 0.
* ``signed``: ``minmax(unmasked * (2 * blur(mask) - 1))``. Before the final min-max, foreground
  support pixels carry ``+affinity`` and background pixels ``-affinity``; the min-max maps that
  signed value to [0, 1], so **1 = strongest matched foreground, 0 = strongest matched background,
  and ``params["zero_level"]`` (= -min / (max - min)) is where "no affinity" lands**. Display it with
  a diverging colour map centred at ``zero_level``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ExplainError
from ..errors import CancelledFn, ProgressFn, check_cancelled
from ..models.base import SCORE_CHUNK_BYTES, score_chunk_rows
from .base import Attribution, Explainer

VARIANTS = ("unmasked", "masked", "signed")
MODES = ("paper", "reference")
AGGREGATIONS = ("feature_ablation", "mean")
_EPS = 1e-6


# --------------------------------------------------------------------------- resize operators
def query_resize(maps: Tensor, size: int) -> Tensor:
    """The reference's per-support-pixel query-map resize: torchvision ``resize`` defaults on a
    float tensor (bilinear, align_corners=False, antialias=True). ``maps`` is ``[N, C, h, w]``."""
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def support_resize(maps: Tensor, size: int) -> Tensor:
    """Bilinear, align_corners=False, no antialias (``[N, C, h, w]`` -> ``[N, C, size, size]``)."""
    if maps.shape[-2:] == (size, size):
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def nearest_resize(masks: Tensor, size: int) -> Tensor:
    """Nearest resize of ``[..., H, W]`` masks (torch/torchvision 'nearest': src = floor(dst*scale))."""
    if masks.shape[-2:] == (size, size):
        return masks
    shape = masks.shape
    flat = masks.reshape(-1, 1, shape[-2], shape[-1]).float()
    out = F.interpolate(flat, size=(size, size), mode="nearest")
    return out.reshape(*shape[:-2], size, size).to(masks.dtype)


def region_at_size(region: Tensor, size: int) -> Tensor:
    """R ``[S, S]`` bool -> ``[size, size]`` bool by nearest resize (the reference's rule).

    When nearest sampling misses a small region entirely (a brushed dot or a single pixel at
    S > size), every cell that contains a region pixel is used instead, so a one-pixel region
    always gives an explanation."""
    region = region.bool()
    if not region.any():
        raise ExplainError("the region R to explain is empty (no query pixel selected)")
    out = nearest_resize(region, size)
    if out.any():
        return out
    pooled = F.adaptive_max_pool2d(region[None, None].float(), (size, size))[0, 0]
    return pooled > 0


def _resize_matrix(length: int, size: int, device, antialias: bool = True) -> Tensor:
    """``M`` ``[size, length]``: the 1-D resize operator of :func:`query_resize` along one axis
    (``M[e, j]`` = output e for the unit input j). torch's (antialiased) bilinear resize is
    separable, so the 2-D operator is ``X -> M_h X M_w^T``."""
    eye = torch.eye(length, device=device, dtype=torch.float32)[:, None, None, :]  # [j, 1, 1, length]
    rows = F.interpolate(eye, size=(1, size), mode="bilinear", align_corners=False, antialias=antialias)
    return rows[:, 0, 0, :].T.contiguous()


def region_adjoints(level_shape: tuple[int, int], region_e: Tensor) -> tuple[Tensor, Tensor]:
    """``u_R = Up^T(1_R)`` and ``u_1 = Up^T(1)`` (each ``[h*w]``) for the query resize to E.

    ``Up(X) = M_h X M_w^T`` (separable), hence ``Up^T(G) = M_h^T G M_w``: two small matrix
    products instead of any E x E map per support pixel. (Equal to autograd through
    :func:`query_resize`; tests check it against the direct resize.)"""
    h, w = level_shape
    size = region_e.shape[-1]
    m_h = _resize_matrix(h, size, region_e.device)
    m_w = _resize_matrix(w, size, region_e.device)
    region = region_e.float()
    u_region = m_h.T @ region @ m_w
    u_all = torch.outer(m_h.sum(0), m_w.sum(0))
    return u_region.flatten(), u_all.flatten()


def min_max_scale(values: Tensor) -> Tensor:
    """Global (x - min) / (max - min); a constant map becomes all zeros (the reference gives NaN)."""
    lo, hi = values.min(), values.max()
    if not bool(hi > lo):
        return torch.zeros_like(values)
    return (values - lo) / (hi - lo)


def gaussian_blur(masks: Tensor, kernel_size: int = 31, sigma: float = 50.0) -> Tensor:
    """torchvision ``GaussianBlur(kernel_size, sigma)`` on ``[K, H, W]``: normalised Gaussian,
    reflect padding; applied as two 1-D passes (the kernel is separable)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, device=masks.device, dtype=torch.float32)
    kernel1d = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel1d = kernel1d / kernel1d.sum()
    k = masks.shape[0]
    pad = kernel_size // 2
    img = F.pad(masks.float()[None], (pad, pad, pad, pad), mode="reflect")
    img = F.conv2d(img, kernel1d.view(1, 1, 1, -1).expand(k, 1, 1, kernel_size), groups=k)
    img = F.conv2d(img, kernel1d.view(1, 1, -1, 1).expand(k, 1, kernel_size, 1), groups=k)
    return img[0]


# ------------------------------------------------------------------------------- level maps
class LevelContributions:
    """Steps 1-2 for one level, fed its scores by query rows: ``add(start, scores)`` with the
    ``[n, K*h*w]`` scores of the rows ``start .. start + n - 1``, in row order, each call starting
    where the previous one ended; :meth:`result` once all ``h*w`` rows are in. The sums are linear
    in the rows (``totals += u[rows] @ softmax(scores[rows])``), so nothing of a call is kept; a call
    is processed in chunks of about ``chunk_bytes``, so a whole level given at once costs no copy of
    it either."""

    def __init__(
        self,
        level_shape: tuple[int, int],
        shots: int,
        region_e: Tensor,
        adjoints: tuple[Tensor, Tensor],
        *,
        use_softmax: bool = True,
        chunk_bytes: int = SCORE_CHUNK_BYTES,
    ) -> None:
        self.shape = (int(level_shape[0]), int(level_shape[1]))
        self.shots = shots
        self.positions = self.shape[0] * self.shape[1]
        self.supports = shots * self.positions
        self.use_softmax = use_softmax
        self.chunk_rows = score_chunk_rows(self.supports, chunk_bytes=chunk_bytes)
        u_region, u_all = adjoints
        self.functionals = torch.stack([u_region, u_all])  # [2, P]
        self.count = region_e.sum().float().to(u_region.device)
        self.totals = torch.zeros(2, self.supports, device=u_region.device, dtype=torch.float32)
        #: query rows added so far: the next call must start here
        self.rows = 0

    @property
    def complete(self) -> bool:
        return self.rows == self.positions

    def add(self, start: int, scores: Tensor) -> None:
        h, w = self.shape
        if scores.dim() != 2 or scores.shape[1] != self.supports or start + scores.shape[0] > self.positions:
            raise ExplainError(
                f"matching scores of shape {tuple(scores.shape)} from query row {start} do not fit a {h}x{w} "
                f"level with {self.shots} shot(s)"
            )
        if start != self.rows:
            raise ExplainError(f"matching scores from query row {start} of a {h}x{w} level, expected row {self.rows}")
        for offset in range(0, scores.shape[0], self.chunk_rows):
            block = scores[offset : offset + self.chunk_rows].float()
            if self.use_softmax:
                block = torch.softmax(block, dim=-1)
            first = start + offset
            self.totals += self.functionals[:, first : first + block.shape[0]] @ block
        self.rows = start + int(scores.shape[0])

    def result(self) -> Tensor:
        """``[K, h, w]`` float32: the region-mean normalised affinity of each support pixel."""
        if not self.complete:
            raise ExplainError(f"only {self.rows} of the {self.positions} query rows of a level were given")
        values = self.totals[0] / (self.totals[1] + _EPS) / self.count
        return values.view(self.shots, *self.shape)


def level_contributions(
    scores: Tensor,
    level_shape: tuple[int, int],
    shots: int,
    region_e: Tensor,
    *,
    use_softmax: bool = True,
    chunk_bytes: int = SCORE_CHUNK_BYTES,
    adjoints: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """Steps 1-2 for one held level: the region-mean normalised affinity of each support pixel.

    ``scores`` is ``[h*w, K*h*w]`` (one episode); returns ``[K, h, w]`` float32 (before the
    support-side upsampling), by :class:`LevelContributions` (query rows in chunks of about
    ``chunk_bytes``)."""
    h, w = level_shape
    positions, supports = scores.shape
    if positions != h * w or supports != shots * h * w:
        raise ExplainError(
            f"matching scores of shape {tuple(scores.shape)} do not fit a {h}x{w} level with {shots} shot(s)"
        )
    if adjoints is None:
        adjoints = region_adjoints(level_shape, region_e.to(scores.device))
    level = LevelContributions(level_shape, shots, region_e, adjoints, use_softmax=use_softmax,
                               chunk_bytes=chunk_bytes)
    level.add(0, scores)
    return level.result()


def level_map(contributions: Tensor, size: int) -> Tensor:
    """Step 3: ``[K, h, w]`` -> ``[K, E, E]``, normalised to sum 1 over all shots (+1e-6)."""
    up = support_resize(contributions[:, None], size)[:, 0]
    return up / (up.sum() + _EPS)


def aggregate(
    level_maps: Tensor,
    weights: Tensor,
    support_masks: Tensor,
    variant: str = "unmasked",
    input_size: Optional[int] = None,
    blur_kernel_size: int = 31,
    blur_sigma: float = 50.0,
) -> tuple[Tensor, Optional[float]]:
    """Level maps ``[L, K, E, E]`` + weights ``[L]`` -> the final ``[K, S, S]`` map of a variant.

    ``support_masks`` ``[K, S, S]``; returns ``(maps, zero_level)`` where ``zero_level`` is the
    signed variant's "no affinity" value (None otherwise). Cheap: switching variants needs no new
    forward or ablation (``Attribution.level_maps``/``level_weights`` hold everything)."""
    if variant not in VARIANTS:
        raise ExplainError(f"unknown AffEx variant {variant!r} (known: {', '.join(VARIANTS)})")
    size = int(level_maps.shape[-1])
    input_size = int(support_masks.shape[-1]) if input_size is None else int(input_size)
    zero_level = None
    with torch.no_grad():
        combined = torch.einsum("l,lkhw->khw", weights.to(level_maps), level_maps)
        out = min_max_scale(combined)
        if size != input_size:
            out = support_resize(out[:, None], input_size)[:, 0]
        if variant != "unmasked":
            masks = support_masks.to(out.device).float()
            if size != input_size:  # the reference keeps the mask at E (nearest) and resizes back
                masks = nearest_resize(nearest_resize(masks, size), input_size)
            blurred = gaussian_blur(masks, blur_kernel_size, blur_sigma)
            factor = blurred if variant == "masked" else 2.0 * blurred - 1.0
            signed_values = out * factor
            out = min_max_scale(signed_values)
            lo, hi = signed_values.min(), signed_values.max()
            if variant == "signed" and bool(hi > lo):
                zero_level = float(-lo / (hi - lo))
    return out, zero_level


# ---------------------------------------------------------------------------------- explainer
@dataclass
class AffexLevels:
    """What the three variants share: the level maps ``[L, K, E, E]``, the level weights ``[L]``,
    the level names, and the forward AffEx ran itself (None when it was given a prediction)."""

    maps: Tensor
    weights: Tensor
    names: list[str]
    prediction: Optional[Any] = None


class AffinityExplainer(Explainer):
    """AffEx Unmasked / Masked / Signed; see the module docstring for the pipeline."""

    needs_matching = True
    streams = True

    def __init__(
        self,
        variant: str = "unmasked",
        size: Optional[int] = None,
        mode: str = "paper",
        use_softmax: bool = True,
        aggregation: str = "feature_ablation",
        blur_kernel_size: int = 31,
        blur_sigma: float = 50.0,
        chunk_bytes: int = SCORE_CHUNK_BYTES,
    ) -> None:
        if variant not in VARIANTS:
            raise ExplainError(f"unknown AffEx variant {variant!r} (known: {', '.join(VARIANTS)})")
        if mode not in MODES:
            raise ExplainError(f"unknown AffEx mode {mode!r} (known: {', '.join(MODES)})")
        if aggregation not in AGGREGATIONS:
            raise ExplainError(f"unknown AffEx aggregation {aggregation!r} (known: {', '.join(AGGREGATIONS)})")
        if size is not None and int(size) < 1:
            raise ExplainError(f"explanation size must be a positive number of pixels, got {size}")
        self.variant = variant
        self.size = None if size is None else int(size)
        self.mode = mode
        self.use_softmax = use_softmax
        self.aggregation = aggregation
        self.blur_kernel_size = blur_kernel_size
        self.blur_sigma = blur_sigma
        self.chunk_bytes = chunk_bytes
        self.name = {"unmasked": "affex", "masked": "affex-masked", "signed": "affex-signed"}[variant]
        self.signed = variant == "signed"

    def params(self, size: int) -> dict:
        return {
            "variant": self.variant,
            "size": size,
            "mode": self.mode,
            "use_softmax": self.use_softmax,
            "aggregation": self.aggregation,
            "blur_kernel_size": self.blur_kernel_size,
            "blur_sigma": self.blur_sigma,
        }

    def explain(
        self,
        model,
        batch,
        region: Tensor,
        *,
        prediction=None,
        progress: ProgressFn = None,
        cancelled: CancelledFn = None,
    ) -> Attribution:
        levels = self.levels(model, batch, region, prediction=prediction, progress=progress, cancelled=cancelled)
        attribution = self.from_levels(levels.maps, levels.weights, levels.names, batch)
        attribution.prediction = levels.prediction
        if progress is not None:
            progress(1.0)
        return attribution

    def levels_key(self, input_size: int) -> tuple:
        """What :meth:`levels` depends on besides the model, the episode and R: two explainers with
        the same key (the three variants with equal settings) give the same levels."""
        return ("affex-levels", self.size or int(input_size), self.mode, self.use_softmax, self.aggregation)

    def levels(
        self,
        model,
        batch,
        region: Tensor,
        *,
        prediction=None,
        progress: ProgressFn = None,
        cancelled: CancelledFn = None,
    ) -> "AffexLevels":
        """Everything before the variant (the forward or the given prediction's scores, the level
        maps, the level weights): shared by the three variants, see :meth:`from_levels`."""
        if batch.batch_size != 1:
            raise ExplainError(f"AffEx explains one episode at a time (got a batch of {batch.batch_size})")
        input_size = int(batch.query.shape[-1])
        size = self.size or input_size
        shots = batch.shots
        own_prediction = prediction is None or not prediction.has_scores
        # one (u_R, u_1) pair per distinct level shape, shared by all levels of that shape
        adjoints: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

        def adjoints_of(shape: tuple[int, int], region_e: Tensor, device) -> tuple[Tensor, Tensor]:
            if shape not in adjoints:
                adjoints[shape] = region_adjoints(shape, region_e.to(device))
            return adjoints[shape]

        def contributions_of(shape: tuple[int, int], scores: Tensor, region_e: Tensor) -> Tensor:
            """Steps 1-2 for one held level: scores ``[B=1, h*w, K*h*w]`` -> ``[K, h, w]``."""
            with torch.no_grad():
                return level_contributions(
                    scores.detach()[0], shape, shots, region_e, use_softmax=self.use_softmax,
                    chunk_bytes=self.chunk_bytes, adjoints=adjoints_of(shape, region_e, scores.device),
                )

        contributions: list[Tensor] = []  # [K, h, w] per level (steps 1-2), small
        streamed_forward = own_prediction and bool(getattr(model, "streams_scores", False))
        replayed = not own_prediction and prediction.matching_scores is None
        if streamed_forward or replayed:
            # streamed: the model hands over each level's scores as it computes them and keeps
            # none, so its forward never holds all the levels' score matrices at once. Each level
            # is reduced inside the sink, before the next level is computed, to its small
            # ``[K, h, w]`` contributions; the ``[K, E, E]`` level maps (step 3, cheap) are built
            # after the forward, so they do not add to the forward's peak either. Replayed: the
            # given prediction recomputes its scores into the same sink (see ``models.base``)
            region_e = region_at_size(region.to(batch.query.device), size)
            expected_levels = getattr(model, "num_levels", None)
            expected_levels = expected_levels if isinstance(expected_levels, int) and expected_levels > 0 else None

            pending: Optional[LevelContributions] = None  # the level being streamed, until all its rows are in

            def sink(index: int, shape: tuple[int, int], start: int, scores: Tensor) -> None:
                nonlocal pending
                check_cancelled(cancelled)
                expected_row = 0 if pending is None else pending.rows
                if index != len(contributions) or start != expected_row:
                    raise ExplainError(
                        f"model {_model_name(model)} streamed matching level {index} from query row {start} out of "
                        f"order (expected level {len(contributions)} from row {expected_row})"
                    )
                shape = (int(shape[0]), int(shape[1]))
                if pending is None:
                    pending = LevelContributions(shape, shots, region_e, adjoints_of(shape, region_e, scores.device),
                                                 use_softmax=self.use_softmax, chunk_bytes=self.chunk_bytes)
                elif shape != pending.shape:
                    raise ExplainError(
                        f"model {_model_name(model)} streamed rows of matching level {index} as {shape[0]}x{shape[1]}, "
                        f"its first rows as {pending.shape[0]}x{pending.shape[1]}"
                    )
                with torch.no_grad():
                    pending.add(start, scores.detach()[0])
                    if not pending.complete:
                        return
                    contributions.append(pending.result())
                pending = None
                if progress is not None and expected_levels is not None:
                    progress(min(index + 1, expected_levels) / (expected_levels + 1))

            with torch.no_grad():
                if replayed:
                    prediction.score_replay(sink)
                else:
                    prediction = model.predict(batch, with_scores=True, score_sink=sink)
            level_count = prediction.num_levels
            if pending is not None:
                raise ExplainError(
                    f"model {_model_name(model)} streamed only {pending.rows} of the {pending.positions} query "
                    f"rows of matching level {len(contributions)}"
                )
            if not contributions:
                raise ExplainError(
                    f"model {_model_name(model)} exposes no matching scores: AffEx needs a matching model"
                )
            if len(contributions) != level_count:
                raise ExplainError(
                    f"model {_model_name(model)} streamed {len(contributions)} matching levels but reports "
                    f"{level_count}"
                )
            if progress is not None and expected_levels is None:
                progress(level_count / (level_count + 1))
        else:
            if own_prediction:
                with torch.no_grad():
                    prediction = model.predict(batch, with_scores=True)
            if not prediction.matching_scores:
                raise ExplainError(
                    f"model {_model_name(model)} exposes no matching scores: AffEx needs a matching model"
                )
            region_e = region_at_size(region.to(prediction.logits.device), size)
            level_count = prediction.num_levels
            scores_by_level = prediction.matching_scores
            for index, shape in enumerate(prediction.level_shapes):
                check_cancelled(cancelled)
                shape = (int(shape[0]), int(shape[1]))
                scores = scores_by_level[index]
                contributions.append(contributions_of(shape, scores, region_e))
                if own_prediction:
                    # this prediction is AffEx's own (nobody else holds it): a level's scores, the
                    # largest tensors of a prediction, are dropped as soon as they are reduced, so
                    # they are not held through the feature ablation (``num_levels`` keeps its value)
                    scores_by_level[index] = scores.new_empty((0,))
                del scores
                if progress is not None:
                    progress((index + 1) / (level_count + 1))
        # step 3, after the forward (a streamed forward's peak does not see these [K, E, E] maps)
        level_maps: Optional[Tensor] = None  # [L, K, E, E], filled level by level (no stacking copy)
        with torch.no_grad():
            for index, contribution in enumerate(contributions):
                one_map = level_map(contribution, size)
                if level_maps is None:
                    level_maps = one_map.new_empty((level_count, *one_map.shape))
                level_maps[index] = one_map
                del one_map
        contributions.clear()
        assert level_maps is not None
        check_cancelled(cancelled)
        weights = self._level_weights(model, prediction, region_e, size, level_count, cancelled)
        names = prediction.extras.get("level_names") if prediction.extras else None
        if not names or len(names) != level_count:
            names = [f"level {i} ({h}x{w})" for i, (h, w) in enumerate(prediction.level_shapes)]
        return AffexLevels(level_maps.float(), weights.float(), list(names),
                           prediction if streamed_forward else None)

    def from_levels(self, level_maps: Tensor, weights: Tensor, names: Optional[list[str]], batch) -> Attribution:
        """This variant's maps from the levels (:meth:`levels`, or those of another variant with the
        same :meth:`levels_key`): the weighted sum, the min-max and the variant's masking. Cheap."""
        input_size = int(batch.query.shape[-1])
        device = batch.support_masks.device
        level_maps, weights = level_maps.to(device), weights.to(device)
        out, zero_level = aggregate(
            level_maps, weights, batch.support_masks[0], self.variant, input_size,
            self.blur_kernel_size, self.blur_sigma,
        )
        params = self.params(int(level_maps.shape[-1]))
        if zero_level is not None:
            params["zero_level"] = zero_level
        return Attribution(
            maps=out.float().contiguous(),
            method=self.name,
            params=params,
            signed=self.signed,
            level_maps=level_maps.float(),
            level_weights=weights.float(),
            level_names=None if names is None else list(names),
        )

    def _level_weights(self, model, prediction, region_e: Tensor, size: int, level_count: int,
                       cancelled: CancelledFn = None) -> Tensor:
        device = prediction.logits.device
        if self.aggregation == "mean":
            return torch.full((level_count,), 1.0 / level_count, device=device)
        try:
            weights = model.feature_ablation_weights(prediction, region_e, size, mode=self.mode, cancelled=cancelled)
        except ExplainError:
            raise
        except (ValueError, NotImplementedError) as exc:
            raise ExplainError(f"feature ablation is not available for model {_model_name(model)}: {exc}") from None
        weights = torch.as_tensor(weights, device=device, dtype=torch.float32).flatten()
        if weights.numel() != level_count:
            raise ExplainError(
                f"model {_model_name(model)} returned {weights.numel()} ablation weights for {level_count} levels"
            )
        if not torch.isfinite(weights).all():
            # the head's region-mean logit did not change for any level: fall back to uniform
            weights = torch.full((level_count,), 1.0 / level_count, device=device)
        return weights


def _model_name(model) -> str:
    entry = getattr(model, "entry", None)
    return repr(entry.name) if entry is not None else type(model).__name__
