"""DCAMA (Shi et al., ECCV 2022), re-implemented to load the official checkpoints.

Structure and state-dict keys follow the official ``DCAMA`` module (``feature_extractor.*`` =
the backbone with its classifier, ``model.*`` = ``DCAMA_model``: ``DCAMA_blocks``, ``pe``,
``conv1``..``conv5``, ``mixer1``..``mixer3``), so a released ``best_model.pt`` loads strictly
(see :mod:`fssgui.models.checkpoints`). Behaviour follows the official inference path
(``model.eval()``):

* Backbone features of every ResNet bottleneck (after the residual add, before the final
  ReLU) or every Swin block; the 1/4 maps are only skip connections.
* Per 1/8, 1/16 and 1/32 feature map: sinusoidal PE (positions restart for every shot) →
  ``W_q``/``W_k`` (no value/output projection) → 8-head scaled dot product → softmax over the
  support tokens of **all shots jointly** → value = the bilinearly (align_corners=True)
  downsampled support mask → mean over heads = the level's *coarse mask*.
* Coarse masks stacked per scale → conv1 (1/32), conv2 (1/16), conv3 (1/8) → cascade → skip
  concatenation with the last 1/8 and 1/4 query/support features (support: element-wise max
  over shots) → mixers → logits ``[B, 2, S, S]``.

Differences from the official code, all deliberate:

* Episodes in a batch are kept apart at K > 1 (the official shot-major reshape mixes the
  episodes of a batch; it is right only at batch size 1, which is how it was evaluated).
* The first mixer convolution is evaluated as ``conv(mix) + conv(skip features)`` (the same
  linear map split by input channels) so that :attr:`Prediction.head` can rerun the decoder
  for many level ablations without recomputing the 1536-channel skip part.
* Attention is evaluated head by head and a few query rows at a time on the CPU (less memory,
  the scores stay in the cache; same result) and with PyTorch's fused
  ``scaled_dot_product_attention`` on CUDA (:meth:`MaskAttention.attend`).
* AffEx's feature-ablation weights (:meth:`DCAMA.feature_ablation_weights`) are the base
  class's (L decoder reruns, region mean of the foreground logit), computed with the unchanged
  scale branches reused and, for a region R smaller than most of the query, only the windows of
  the decoder's maps that R's logits depend on
  (:func:`fssgui.models.dcama_ablation.region_ablation_means`); equal to the L full reruns up to
  float rounding.
* Dropout (training only) is not modelled; these modules are for inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CancelledFn, ModelError
from .backbones import SwinTransformer, build_resnet, resnet_bottleneck_features
from .attention import RowHandover, mask_attention
from .base import (
    EpisodeTensors, FSSModel, Prediction, ScoreSink, expand_query_batch, resize_masks, score_chunk_rows,
)

HEADS = 8
#: devices whose attention runs PyTorch's fused kernel (:meth:`MaskAttention.attend`); the CPU runs
#: the explicit product by row chunks, faster there at every K (bench/RESULTS.md)
FUSED_ATTENTION_DEVICES = ("cuda",)
PE_MAX_LEN = 10000

_BACKBONES = {
    # name: (channels per stage, blocks per stage)
    "resnet50": ((256, 512, 1024, 2048), (3, 4, 6, 3)),
    "resnet101": ((256, 512, 1024, 2048), (3, 4, 23, 3)),
    "swin": ((128, 256, 512, 1024), (2, 2, 18, 2)),
}


def sinusoidal_table(dim: int, max_len: int = PE_MAX_LEN) -> Tensor:
    """[1, max_len, dim] float32 sin/cos table, computed exactly as the official PE module."""
    table = torch.zeros(max_len, dim)
    position = torch.arange(0, max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * -(math.log(10000.0) / dim))
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table.unsqueeze(0)


class PositionalEncoding(nn.Module):
    """Fixed 1-D sinusoidal encoding over the flattened (row-major) token index."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(dim))

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens [..., N, C]`` + PE of positions 0..N-1."""
        return tokens + self.pe[0, : tokens.shape[-2]]


class MaskAttention(nn.Module):
    """DCAMA's attention block: ``W_q``, ``W_k`` (official ``linears.0``/``linears.1``), 8 heads,
    value = the support mask. No value or output projection."""

    def __init__(self, dim: int, heads: int = HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.d_k = dim // heads
        self.linears = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim)])

    def project_query(self, query_tokens: Tensor) -> Tensor:
        """``[B, Nq, C]`` -> per-head queries ``[B, H, Nq, d_k]`` (``W_q``)."""
        return self._heads(self.linears[0](query_tokens))

    def project_support(self, support_tokens: Tensor) -> Tensor:
        """``[B, Ns, C]`` -> per-head keys ``[B, H, Ns, d_k]`` (``W_k``)."""
        return self._heads(self.linears[1](support_tokens))

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.d_k).transpose(1, 2)

    @staticmethod
    def concatenated_heads(x: Tensor) -> Tensor:
        """Per-head ``[B, H, N, d_k]`` -> ``[B, N, H·d_k]`` (a view of the projection's output)."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)

    def head_mean_scores(self, q_all: Tensor, k_all: Tensor, start: int, rows: int) -> Tensor:
        """Query rows ``start .. start + rows - 1`` of the head-mean pre-softmax scores
        ``[B, n, Ns]`` from the concatenated heads (``Σ_h q_h k_hᵀ = q kᵀ``): one product, only
        this chunk written out."""
        scale = 1.0 / math.sqrt(self.d_k)
        return torch.matmul(q_all[:, start : start + rows], k_all.transpose(1, 2)).mul_(scale / self.heads)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        values: Tensor,
        take_scores: Optional[Callable[[int, Tensor], None]] = None,
        rows: Optional[int] = None,
    ) -> Tensor:
        """Head-mean of ``softmax(q kᵀ/√d_k) · values``: ``[B, Nq]``. With ``take_scores``, the
        head-mean pre-softmax scores are handed to ``take_scores(start, scores)`` as ``[B, n, Ns]``
        chunks of ``rows`` query rows (all ``Nq`` rows at once when ``rows`` is None), in row order.

        ``values`` is ``[B, Ns]`` (the soft support mask of all shots). On the devices of
        :data:`FUSED_ATTENTION_DEVICES` (CUDA) the attention is PyTorch's fused
        ``scaled_dot_product_attention`` (no ``[Nq, Ns]`` matrix written out), with the mask
        repeated over ``d_k`` value channels, the shape its flash kernel takes, and the head mean of
        the scores, when asked, is one product over the concatenated heads (``Σ_h q_h k_hᵀ = q kᵀ``)
        per chunk of rows. Elsewhere the explicit per-head product by chunks of query rows that fit
        in the cache (:func:`~fssgui.models.attention.mask_attention`); its head-mean scores are the
        sum of the per-head scores it computes anyway, handed over ``rows`` rows at a time
        (:class:`~fssgui.models.attention.RowHandover`: never more than that block is held)."""
        scale = 1.0 / math.sqrt(self.d_k)
        b, heads, nq, _ = q.shape
        ns = k.shape[2]
        rows = nq if rows is None else rows
        if q.device.type in FUSED_ATTENTION_DEVICES:
            v = values[:, None, :, None].to(q.dtype).expand(b, heads, ns, self.d_k).contiguous()
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # [B, H, Nq, d_k], equal channels
            coarse = out[..., 0].mean(1)
            del v, out
            if take_scores is not None:
                q_all, k_all = self.concatenated_heads(q), self.concatenated_heads(k)
                for start in range(0, nq, rows):
                    take_scores(start, self.head_mean_scores(q_all, k_all, start, rows))
            return coarse
        take_sums = None
        if take_scores is not None:
            handover = RowHandover(take_scores, rows, nq)

            def take_sums(start: int, score_sum: Tensor) -> None:
                handover.add(start, score_sum.div_(heads))

        queries = [q[:, h] for h in range(heads)]
        keys_t = [k[:, h].transpose(1, 2) for h in range(heads)]
        coarse = mask_attention(queries, keys_t, values.unsqueeze(-1).to(q.dtype), scale, take_sums)
        return (coarse / heads)[..., 0]


def _conv_block(in_channels: int, out_channels: Sequence[int], kernels: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (out_ch, k) in enumerate(zip(out_channels, kernels)):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels[i - 1], out_ch, k, padding=k // 2),
            nn.GroupNorm(4, out_ch),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class DCAMAHead(nn.Module):
    """The official ``DCAMA_model`` (everything after the backbone), same submodule names."""

    def __init__(self, channels: Sequence[int], stack_ids: Sequence[int]) -> None:
        super().__init__()
        self.stack_ids = tuple(int(s) for s in stack_ids)
        self.DCAMA_blocks = nn.ModuleList(MaskAttention(c) for c in channels[1:])
        self.pe = nn.ModuleList(PositionalEncoding(c) for c in channels[1:])
        s = self.stack_ids
        self.conv1 = _conv_block(s[3] - s[2], (16, 64, 128), (3, 3, 3))  # 1/32
        self.conv2 = _conv_block(s[2] - s[1], (16, 64, 128), (5, 3, 3))  # 1/16
        self.conv3 = _conv_block(s[1] - s[0], (16, 64, 128), (5, 5, 3))  # 1/8
        self.conv4 = _conv_block(128, (128, 128, 128), (3, 3, 3))
        self.conv5 = _conv_block(128, (128, 128, 128), (3, 3, 3))
        self.mix_channels = 128
        self.mixer1 = nn.Sequential(
            nn.Conv2d(128 + 2 * channels[1] + 2 * channels[0], 128, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.mixer2 = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 16, 3, padding=1), nn.ReLU()
        )
        self.mixer3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, padding=1))

    def block_of(self, feature_index: int) -> int:
        """Which attention block / PE serves a feature map (0: 1/8, 1: 1/16, 2: 1/32)."""
        s = self.stack_ids
        return 0 if feature_index < s[1] else (1 if feature_index < s[2] else 2)

    def mix_maps(self, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
        """Coarse masks (1/32, 1/16, 1/8 stacks) -> the 128-channel 1/8 mix."""
        c1 = self.conv1(c1)
        c2 = self.conv2(c2)
        c3 = self.conv3(c3)
        mix = self.conv4(F.interpolate(c1, c2.shape[-2:], mode="bilinear", align_corners=True) + c2)
        return self.conv5(F.interpolate(mix, c3.shape[-2:], mode="bilinear", align_corners=True) + c3)

    def skip_query(self, q8: Tensor, q4: Tensor) -> Tensor:
        """The query's part of the skip term (bias included): ``mixer1[0]``, a convolution, is
        linear in its input channels ``[up(q8), up(s8), q4, s4]`` (the bilinear upsampling acts on
        each channel alone), so the skip term is this plus :meth:`skip_support`. The query's part
        is computed once per query (:class:`DCAMAQueryFeatures`)."""
        c8, c4 = q8.shape[1], q4.shape[1]
        weight = self.mixer1[0].weight[:, self.mix_channels :]
        weight = torch.cat([weight[:, :c8], weight[:, 2 * c8 : 2 * c8 + c4]], 1)
        return F.conv2d(torch.cat([self._up2(q8), q4], 1), weight, self.mixer1[0].bias, padding=1)

    def skip_support(self, s8: Tensor, s4: Tensor) -> Tensor:
        """The supports' part of the skip term (no bias; see :meth:`skip_query`)."""
        c8, c4 = s8.shape[1], s4.shape[1]
        weight = self.mixer1[0].weight[:, self.mix_channels :]
        weight = torch.cat([weight[:, c8 : 2 * c8], weight[:, 2 * c8 + c4 :]], 1)
        return F.conv2d(torch.cat([self._up2(s8), s4], 1), weight, None, padding=1)

    @staticmethod
    def _up2(x: Tensor) -> Tensor:
        return F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)

    def decode(self, mix: Tensor, skip: Tensor) -> Tensor:
        """``mix [M·B, 128, h8, w8]`` + ``skip [B, 128, h4, w4]`` (:meth:`skip_query` + :meth:`skip_support`) ->
        logits ``[M·B, 2, 4·h4, 4·w4]``."""
        up = self._up2(mix)
        out = F.conv2d(up, self.mixer1[0].weight[:, : self.mix_channels], None, padding=1)
        b = skip.shape[0]
        out = (out.view(-1, b, *out.shape[1:]) + skip.unsqueeze(0)).flatten(0, 1)
        out = self.mixer1[3](self.mixer1[2](self.mixer1[1](out)))
        out = self._up2(out)
        out = self.mixer2(out)
        out = self._up2(out)
        return self.mixer3(out)


@dataclass
class DCAMAQueryFeatures:
    """What :meth:`DCAMA.encode_query` returns: what the forward computes from the query alone
    (filled from the backbone ``features`` by :meth:`DCAMA.query_terms` when missing; ``encode_query``
    then lets the features go), so that the many forwards of a causal curve or a gradient baseline
    on one query compute only the supports' part."""

    features: Optional[list[Optional[Tensor]]]  # per backbone block, None where unused; None once the terms are in
    image_size: tuple[int, int]
    #: per matching level, the query's per-head projections ``W_q (f + PE)`` ``[B, H, N, d_k]``
    projected: Optional[list[Tensor]] = None
    #: the query's part of the decoder's skip term ``[B, 128, h4, w4]`` (:meth:`DCAMAHead.skip_query`)
    skip: Optional[Tensor] = None


class DCAMADecoderCall:
    """DCAMA's :attr:`Prediction.head`: reruns the decoder on the coarse masks and skip term of one
    forward (``head(keep [N, L]) -> [N, B, 2, S, S]``). It also carries those inputs, so that
    :meth:`DCAMA.feature_ablation_weights` can take its region-aware path for predictions of the
    same model."""

    def __init__(self, model: "DCAMA", level_coarse: list[Tensor], skip: Tensor, size: tuple[int, int]) -> None:
        self.model = model
        self.level_coarse = level_coarse
        self.skip = skip
        self.size = tuple(int(v) for v in size)

    def __call__(self, keep: Tensor) -> Tensor:
        return self.model._head(self.level_coarse, self.skip, self.size, keep)


@dataclass
class KeptLevel:
    """What a :class:`DCAMAScoreReplay` keeps of one level: its scores ``[B, Nq, Ns]``, or the
    projected queries ``[B, Nq, C]`` and keys ``[B, Ns, C]`` that ``block`` computes them from."""

    shape: tuple[int, int]
    scores: Optional[Tensor] = None
    block: Optional[MaskAttention] = None
    q: Optional[Tensor] = None
    k: Optional[Tensor] = None

    @property
    def columns(self) -> int:
        return int(self.scores.shape[2] if self.scores is not None else self.k.shape[1])

    def rows(self, start: int, count: int) -> Tensor:
        """Query rows ``start .. start + count - 1`` of the level's scores."""
        if self.scores is not None:
            return self.scores[:, start : start + count]
        return self.block.head_mean_scores(self.q, self.k, start, count)


class DCAMAScoreReplay:
    """A forward's :attr:`Prediction.score_replay`: every level's head-mean scores handed to a score
    sink (see ``base``) in chunks of query rows (:func:`score_chunk_rows`), as often as asked. Per
    level it keeps the smaller of what gives them: the projected queries and keys, ``(Nq + K·Ns)·C``
    values, from which each chunk is recomputed (the 1/8 levels of DCAMA-R50 at 384: 2.4 M values
    against 5.3 M scores at K = 1, and 7 M against 27 M at K = 5), or the scores themselves (the
    1/16 and 1/32 levels, whose channels outnumber their positions)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.levels: list[KeptLevel] = []

    @staticmethod
    def projections_are_smaller(q: Tensor, k: Tensor) -> bool:
        """Whether a level's projections ``[B, H, N, d_k]`` hold fewer values than its scores."""
        nq, ns, channels = q.shape[2], k.shape[2], q.shape[1] * q.shape[3]
        return (nq + ns) * channels < nq * ns

    def keep_projections(self, block: MaskAttention, q: Tensor, k: Tensor, shape: tuple[int, int]) -> None:
        self.levels.append(KeptLevel(shape, block=block, q=block.concatenated_heads(q), k=block.concatenated_heads(k)))

    def keep_scores(self, scores: Tensor, shape: tuple[int, int]) -> None:
        self.levels.append(KeptLevel(shape, scores=scores))

    def __call__(self, sink: ScoreSink) -> None:
        with torch.no_grad():
            for level, kept in enumerate(self.levels):
                rows = score_chunk_rows(kept.columns, self.batch)
                for start in range(0, kept.shape[0] * kept.shape[1], rows):
                    sink(level, kept.shape, start, kept.rows(start, rows))


class DCAMA(FSSModel):
    """DCAMA adapter; its state dict is the official ``DCAMA`` module's."""

    is_matching = True
    #: ``predict(..., score_sink=...)`` hands each level's scores over as soon as they are computed
    #: and keeps none (AffEx's own forward then never holds the 13 score matrices at once)
    streams_scores = True
    #: ``predict(..., with_scores=True, replay_scores=True)`` keeps per level the smaller of its
    #: projected queries and keys and its scores, and replays the scores on demand (:class:`DCAMAScoreReplay`)
    replays_scores = True
    #: buffers computed at construction that a checkpoint may omit (see checkpoints.py)
    computed_buffer_patterns = (
        r"^model\.pe\.\d+\.pe$",
        r"\.relative_position_index$",
        r"\.attn_mask$",
    )
    #: feature ablation on an accelerator: the windowed decoder (see
    #: :func:`fssgui.models.dcama_ablation.region_ablation_means`)
    #: is used when its windows keep at most this fraction of the decoder's convolution work;
    #: above it the plain full-size decoder runs (same values; its fused resizes and convolutions
    #: may beat small windows there; not measured, no GPU was available)
    windowed_decode_max_fraction: float = 0.75
    #: the same on the CPU: always windowed, as it was measured faster even when the windows cover
    #: the whole map (channels-last convolutions, foreground channel only: 2.4 s against 2.6 s for
    #: the 13 ablations of DCAMA-R50 at 384, one thread)
    windowed_decode_max_fraction_cpu: float = 1.0

    def __init__(self, backbone: str = "resnet50", swin_config: Optional[dict] = None) -> None:
        """``backbone``: resnet50, resnet101 or swin (Swin-B 384). ``swin_config`` overrides the
        Swin hyper-parameters (``embed_dim``, ``depths``, ``num_heads``): only for small test
        models, official checkpoints need the defaults."""
        super().__init__()
        if backbone not in _BACKBONES:
            raise ModelError(f"unknown DCAMA backbone {backbone!r} (known: {', '.join(_BACKBONES)})")
        channels, layout = _BACKBONES[backbone]
        self.backbone = backbone
        if backbone == "swin":
            self.feature_extractor = SwinTransformer(**(swin_config or {}))
            channels = tuple(self.feature_extractor.channels)
            layout = self.feature_extractor.depths
        else:
            self.feature_extractor = build_resnet(backbone)
        self.channels = channels
        stack_ids = [sum(layout[: i + 1]) for i in range(4)]
        self.model = DCAMAHead(channels, stack_ids)
        self.stack_ids = tuple(stack_ids)
        self.num_features = stack_ids[3]
        self.requires_grad_(False)  # inference only; gradients still flow to the inputs
        self.eval()

    # --- structure -----------------------------------------------------------------------
    @property
    def level_feature_ids(self) -> list[int]:
        """Backbone feature index of each matching level (level order = feature order)."""
        return list(range(self.stack_ids[0], self.num_features))

    @property
    def num_levels(self) -> int:
        return self.num_features - self.stack_ids[0]

    def reference_level_order(self) -> list[int]:
        """Level indices in the official wrapper order (coarse_masks1, 2, 3 = 1/32, 1/16, 1/8)."""
        s0, s1, s2, s3 = self.stack_ids
        to_level = lambda lo, hi: [i - s0 for i in range(lo, hi)]  # noqa: E731
        return to_level(s2, s3) + to_level(s1, s2) + to_level(s0, s1)

    # --- backbone ------------------------------------------------------------------------
    def extract_features(self, images: Tensor) -> list[Optional[Tensor]]:
        """Backbone features used by DCAMA (the last 1/4 map and every deeper map)."""
        keep = range(self.stack_ids[0] - 1, self.num_features)
        if self.backbone == "swin":
            return self.feature_extractor.block_features(images, keep)
        return resnet_bottleneck_features(self.feature_extractor, images, keep)

    def encode_query(self, query: Tensor) -> DCAMAQueryFeatures:
        self._check_size(query)
        qf = self.query_terms(DCAMAQueryFeatures(self.extract_features(query), tuple(query.shape[-2:])))
        qf.features = None  # a forward reads only the terms: the 16 backbone maps (65 MB at 384) are let go
        return qf

    def query_terms(self, qf: DCAMAQueryFeatures) -> DCAMAQueryFeatures:
        """``qf`` with its query-only terms (per-level projections, skip part) filled in if missing."""
        if qf.projected is None:
            qf.projected = []
            for idx in self.level_feature_ids:
                feat = qf.features[idx]
                assert feat is not None
                blk = self.model.block_of(idx)
                tokens = self.model.pe[blk](feat.flatten(2).transpose(1, 2))  # [B, N, C]
                qf.projected.append(self.model.DCAMA_blocks[blk].project_query(tokens))
        if qf.skip is None:
            s0, s1 = self.stack_ids[0], self.stack_ids[1]
            qf.skip = self.model.skip_query(qf.features[s1 - 1], qf.features[s0 - 1])
        return qf

    def _check_size(self, images: Tensor) -> None:
        h, w = images.shape[-2:]
        if h != w:
            raise ModelError(f"DCAMA needs square inputs, got {h}x{w}")
        if self.backbone == "swin" and h != 384:
            raise ModelError(f"DCAMA with the Swin backbone needs 384x384 inputs, got {h}x{w}")

    # --- forward -------------------------------------------------------------------------
    def predict(
        self,
        batch: EpisodeTensors,
        *,
        with_scores: bool = False,
        query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
        replay_scores: bool = False,
    ) -> Prediction:
        """Logits ``[B, 2, S, S]``; with ``with_scores`` the head-averaged pre-softmax scores of
        every matching level ``[B, h·w, K·h·w]`` (levels ordered like the backbone features);
        with ``replay_scores`` too, a :class:`DCAMAScoreReplay` instead (see ``base``).

        ``score_sink`` (implies ``with_scores``): each level's scores are passed to
        ``score_sink(level, (h, w), start, scores)`` right after its attention, in chunks of query
        rows of at most :data:`~fssgui.models.base.SCORE_CHUNK_BYTES`, each dropped before the next
        is computed (see ``base``); ``matching_scores`` is then ``None`` (``level_shapes`` and
        ``head`` are filled). The logits and everything else are the same either way.

        ``extras``: ``coarse_masks`` (official order: 1/32, 1/16, 1/8 stacks), ``level_coarse``
        (``[B, 1, h, w]`` per level, level order), ``reference_level_order``.
        """
        supports, masks = batch.supports, batch.support_masks
        b, k = supports.shape[:2]
        size = tuple(supports.shape[-2:])
        self._check_size(supports)
        if query_features is None:
            qf = self.encode_query(batch.query)
        else:
            qf = query_features
            if tuple(qf.image_size) != size:
                raise ModelError(f"query features were computed at {qf.image_size}, supports are {size}")
            self.query_terms(qf)
        sfeats = self.extract_features(supports.flatten(0, 1))

        level_coarse: list[Tensor] = []
        scores: list[Tensor] = []
        shapes: list[tuple[int, int]] = []
        replay = DCAMAScoreReplay(b) if with_scores and replay_scores and score_sink is None else None

        def keep(start: int, chunk: Tensor) -> None:  # one call per level: all its rows at once
            scores.append(chunk)

        # Each support map is let go as soon as it is read (a replay keeps the level's keys, as
        # large, instead), and the two the skip term reads are reduced to it at once: the max over
        # the shots, K times smaller (the 1/4 map of 5 shots at 384 px is 47 MB)
        s0, s1 = self.stack_ids[0], self.stack_ids[1]
        s4 = self._support_skip(sfeats[s0 - 1], b, k)
        s8: Optional[Tensor] = None
        sfeats[s0 - 1] = None
        for level, idx in enumerate(self.level_feature_ids):
            s_feat = sfeats[idx]
            assert s_feat is not None
            sfeats[idx] = None
            if idx == s1 - 1:
                s8 = self._support_skip(s_feat, b, k)
            c, h, w = s_feat.shape[1:]
            blk = self.model.block_of(idx)
            q = expand_query_batch(qf.projected[level], b)  # one query for the B supports
            s_tokens = self.model.pe[blk](s_feat.view(b, k, c, h * w).transpose(2, 3))  # [B, K, N, C], PE per shot
            del s_feat
            kk = self.model.DCAMA_blocks[blk].project_support(s_tokens.reshape(b, k * h * w, c))
            del s_tokens
            values = resize_masks(masks, (h, w)).reshape(b, k * h * w)
            shapes.append((h, w))
            block = self.model.DCAMA_blocks[blk]
            if score_sink is not None:  # streamed by chunks of query rows (see ``attend``)
                coarse = block.attend(q, kk, values, partial(score_sink, level, (h, w)), score_chunk_rows(k * h * w, b))
            elif replay is not None and replay.projections_are_smaller(q, kk):  # scores recomputed when asked
                coarse = block.attend(q, kk, values)
                replay.keep_projections(block, q, kk, (h, w))
            elif replay is not None:  # the level's scores are the smaller: kept
                kept: list[Tensor] = []
                coarse = block.attend(q, kk, values, lambda start, chunk: kept.append(chunk))
                replay.keep_scores(kept[0], (h, w))
            else:
                coarse = block.attend(q, kk, values, keep if with_scores else None)
            level_coarse.append(coarse.view(b, 1, h, w))

        assert s8 is not None
        skip = self.model.skip_support(s8, s4) + qf.skip  # the query's part broadcast over B
        del sfeats

        ones = torch.ones(1, len(level_coarse), dtype=level_coarse[0].dtype, device=level_coarse[0].device)
        logits = self._head(level_coarse, skip, size, ones)[0]
        head = DCAMADecoderCall(self, level_coarse, skip, size)

        extras = {
            "coarse_masks": list(self.group_levels(level_coarse)),
            "level_coarse": level_coarse,
            "reference_level_order": self.reference_level_order(),
        }
        return Prediction(
            logits=logits,
            matching_scores=scores if with_scores and score_sink is None and replay is None else None,
            level_shapes=shapes,
            head=head,
            extras=extras,
            score_replay=replay,
        )

    @staticmethod
    def _support_skip(feat: Optional[Tensor], b: int, k: int) -> Tensor:
        assert feat is not None
        feat = feat.view(b, k, *feat.shape[1:])
        return feat[:, 0] if k == 1 else feat.max(dim=1).values

    def group_levels(self, level_coarse: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-level coarse masks -> (1/32, 1/16, 1/8) channel stacks, official order."""
        s0, s1, s2, s3 = self.stack_ids
        pick = lambda lo, hi: torch.cat(list(level_coarse[lo - s0 : hi - s0]), 1)  # noqa: E731
        return pick(s2, s3), pick(s1, s2), pick(s0, s1)

    def _head(self, level_coarse: Sequence[Tensor], skip: Tensor, size: tuple[int, int], keep: Tensor) -> Tensor:
        """Rerun the decoder with each level's coarse mask scaled by ``keep [N, L]`` -> ``[N, B, 2, S, S]``."""
        levels = len(level_coarse)
        if keep.dim() != 2 or keep.shape[1] != levels:
            raise ValueError(f"keep must be [N, {levels}], got {tuple(keep.shape)}")
        n = keep.shape[0]
        b = level_coarse[0].shape[0]
        chunk = max(1, 8 // b)
        outs = []
        for start in range(0, n, chunk):
            kp = keep[start : start + chunk].to(level_coarse[0])  # [n', L]
            m = kp.shape[0]
            scaled = [
                (c.unsqueeze(0) * kp[:, i].view(m, 1, 1, 1, 1)).flatten(0, 1) for i, c in enumerate(level_coarse)
            ]
            out = self.model.decode(self.model.mix_maps(*self.group_levels(scaled)), skip)
            if tuple(out.shape[-2:]) != tuple(size):
                out = F.interpolate(out, size, mode="bilinear", align_corners=True)
            outs.append(out.view(m, b, *out.shape[1:]))
        return torch.cat(outs, 0)

    # --- AffEx ---------------------------------------------------------------------------
    def feature_ablation_weights(
        self,
        prediction: Prediction,
        region: Tensor,
        size: int,
        *,
        mode: str = "paper",
        cancelled: CancelledFn = None,
    ) -> Tensor:
        """AffEx feature-ablation weights ``[L]`` (sum 1).

        Level j's weight is ``|mean_R fg_logit − mean_R fg_logit with coarse mask j zeroed|``
        (logits bilinearly resized to ``size``, align_corners=False), normalised to sum 1.

        * ``mode="paper"``: entry j is level j's own weight (level order).
        * ``mode="reference"``: the official AffEx code computes the weights in the wrapper order
          (1/32 levels, then 1/16, then 1/8) and multiplies them position by position with the
          maps in level order; this returns that mis-paired vector, so ``weight[i]`` multiplies
          ``level_map[i]`` exactly as the reference does.

        The values are the base class's (:meth:`FSSModel.feature_ablation_weights`: L reruns of
        the full decoder), computed faster by
        :func:`fssgui.models.dcama_ablation.region_ablation_means` for predictions of this model
        (the base class's code runs for a foreign ``head`` or an empty R).
        """
        if mode not in ("paper", "reference"):
            raise ValueError(f"unknown mode {mode!r} (paper or reference)")
        call = prediction.head
        if isinstance(call, DCAMADecoderCall) and call.model is self and bool(region.any()):
            from .dcama_ablation import region_ablation_means  # lazy: that module imports this one

            unablated, ablated = region_ablation_means(self, prediction, region, size, cancelled)
            diff = (unablated - ablated).abs().mean(-1)  # [L]
            weights = diff / diff.sum()
        else:  # a head from elsewhere, or an empty R (NaN weights, as the base class gives)
            weights = super().feature_ablation_weights(prediction, region, size, mode="paper", cancelled=cancelled)
        if mode == "reference":
            order = torch.as_tensor(self.reference_level_order(), device=weights.device)
            weights = weights[order]
        return weights
