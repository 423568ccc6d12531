"""HSNet's learner as DMTNet uses it (center-pivot 4-D convolutions, GroupNorm, decoder), with the
official key names, laid out in memory for speed, and its reruns with pyramid levels ablated.

Layout
------
Tensors of the 4-D correlation space keep the official *shape* ``[B, C, ha, wa, hb, wb]`` (query
dims a, support dims b), not its memory order. A center-pivot convolution is two 2-D convolutions:
``conv1`` over the query dims at every (stride-subsampled) support position and ``conv2`` over
the support dims at every query position. oneDNN convolves channels-last images 2-3x faster
than channels-first ones on the CPU, so the tensors are stored

* support-major channels-last, "SMCL" (memory ``[B, hb, wb, ha, wa, C]``): conv1's images
  ``[B·hb·wb, C, ha, wa]`` are a view. Every layer returns this layout;
* query-major channels-last, "QMCL" (memory ``[B, ha, wa, hb, wb, C]``): conv2's images
  ``[B·ha·wa, C, hb, wb]`` are a view. DMTNet builds its correlation pyramids so (the first
  layer's support maps are the largest); other inputs are converted where a layer needs it.

For support maps of at most :data:`PAIR_SUPPORT_MAX` positions (every layer after the second),
conv2 is a few small matrix products instead, one per (input, output) support position pair that
a kernel tap links, accumulated in place into conv1's output: no layout change at all. On the
2 x 2 maps of the mixing blocks those 16 products are 9 (:meth:`CenterPivotConv4d._support_conv_2x2`).

:class:`GroupNorm4d` normalises that layout itself (per-channel sums in float32 cascade
summation, group statistics in float64, the variance from the centred values): PyTorch's own
channels-last group norm accumulates in plain float32 (relative error ~1e-3 on these maps).

Reruns
------
:meth:`HPNLearner.run` keeps what the forward computed (:class:`LearnerRun`: the pyramid, the
three squeezed groups, ``encoder_layer4to3``'s output and the raw logits); :meth:`HPNLearner.rerun`
evaluates the learner with pyramid channels scaled by ``keep`` (0 ablates a level) and recomputes
only what a scaled level reaches: the squeeze of its own group (the scale applied to the first
layer's weights, that layer being linear in its input, and its subsampled input shared by all
rows: no scaled copy of the pyramid), then ``encoder_layer4to3`` only when a level of l4 or l3 is
scaled (an l2 ablation reuses it), then ``encoder_layer3to2`` and the decoder. The unablated row
is the forward's own output. ``encoder_layer3to2``'s GroupNorms span
the whole 50² query map, so nothing after it can be restricted to a region of the query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CancelledFn, check_cancelled

#: support maps up to this many positions run conv2 as per-position-pair matrix products
PAIR_SUPPORT_MAX = 16


# ------------------------------------------------------------------------------------ layouts
def to_smcl(x: Tensor) -> Tensor:
    """``x`` (shape ``[B, C, ha, wa, hb, wb]``) stored support-major channels-last (no copy if it is)."""
    return x.permute(0, 4, 5, 2, 3, 1).contiguous().permute(0, 5, 3, 4, 1, 2)


def to_qmcl(x: Tensor) -> Tensor:
    """``x`` stored query-major channels-last (no copy if it is)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous().permute(0, 5, 1, 2, 3, 4)


def _smcl_memory(x: Tensor) -> Tensor:
    """The ``[B, hb, wb, ha, wa, C]`` memory view of an SMCL tensor."""
    return x.permute(0, 4, 5, 2, 3, 1)


def _from_smcl_memory(mem: Tensor) -> Tensor:
    return mem.permute(0, 5, 3, 4, 1, 2)


def _query_images(x: Tensor) -> Tensor:
    """SMCL ``x`` -> channels-last images over the query dims ``[B·hb·wb, C, ha, wa]`` (a view)."""
    b, c, ha, wa, hb, wb = x.shape
    return _smcl_memory(x).reshape(b * hb * wb, ha, wa, c).permute(0, 3, 1, 2)


def _from_query_images(images: Tensor, b: int, hb: int, wb: int) -> Tensor:
    """Inverse of :func:`_query_images` (``images`` channels-last)."""
    images = images.contiguous(memory_format=torch.channels_last)
    n, c, ha, wa = images.shape
    return _from_smcl_memory(images.permute(0, 2, 3, 1).reshape(b, hb, wb, ha, wa, c))


def repeat_batch(x: Tensor, times: int) -> Tensor:
    """SMCL ``[B, ...]`` -> SMCL ``[times·B, ...]`` (the batch repeated; ``x`` itself for 1)."""
    if times == 1:
        return x
    mem = _smcl_memory(to_smcl(x))
    return _from_smcl_memory(mem.unsqueeze(0).expand(times, *mem.shape).reshape(-1, *mem.shape[1:]))


def _lanes(positions: int, channels: int, widest: int = 1024) -> int:
    """The largest k dividing ``positions`` with ``k·channels <= widest``: an ``[N, C]`` map is
    viewed as ``[N/k, k·C]`` so that per-channel reductions and broadcasts run along a wide
    innermost axis (PyTorch's CPU kernels are slow on a 16-wide one)."""
    best = 1
    for k in range(1, max(1, widest // channels) + 1):
        if positions % k == 0:
            best = k
    return best


# ------------------------------------------------------------------------------------- layers
class CenterPivotConv4d(nn.Module):
    """Center-pivot 4-D convolution on ``[B, C, ha, wa, hb, wb]`` (query dims a, support dims b).

    ``conv1``: 2-D conv over the query dims at the stride-subsampled support positions;
    ``conv2``: strided 2-D conv over the support dims at every query position; output = sum
    (returned SMCL; see the module docstring for the layouts).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, support_stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel, stride=1, padding=kernel // 2)
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel, stride=support_stride, padding=kernel // 2)
        self.support_stride = support_stride
        self._pairs: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}

    def forward(self, x: Tensor, channel_scale: Optional[Tensor] = None, pruned: Optional[Tensor] = None) -> Tensor:
        """``channel_scale`` ``[C]``: input channel j multiplied by ``channel_scale[j]``, applied
        to the weights (the convolution is linear: no scaled copy of ``x``); ``pruned``: this
        layer's :meth:`pruned_input` of ``x`` when the caller keeps it (it does not depend on the
        scale)."""
        b, c, ha, wa, hb, wb = x.shape
        s = self.support_stride
        w1, w2 = self.conv1.weight, self.conv2.weight
        if channel_scale is not None:
            scale = channel_scale.to(w1).view(1, c, 1, 1)
            w1, w2 = w1 * scale, w2 * scale
        if pruned is None:
            pruned = self.pruned_input(x)
        ph, pw = pruned.shape[-2:]
        out = F.conv2d(_query_images(pruned), w1, self.conv1.bias + self.conv2.bias, padding=self.conv1.padding)
        out = out.contiguous(memory_format=torch.channels_last)
        oc = out.shape[1]
        acc = out.permute(0, 2, 3, 1).view(b, ph * pw, ha * wa, oc)  # memory [B, P', Q, OC]
        if (hb, wb, s) == (2, 2, 1) and self.conv2.kernel_size == (3, 3) and self.conv2.padding == (1, 1):
            xs = _smcl_memory(to_smcl(x)).reshape(b, 4, ha * wa, c).to(acc.dtype)
            self._support_conv_2x2(xs, acc, w2)
        elif hb * wb <= PAIR_SUPPORT_MAX:
            # tiny support maps: conv2 = one small matrix product per linked position pair
            xs = _smcl_memory(to_smcl(x)).reshape(b, hb * wb, ha * wa, c).to(acc.dtype)
            weight = w2.to(acc.dtype)
            for p_in, p_out, ky, kx in self._position_pairs(hb, wb):
                tap = weight[:, :, ky, kx].t()  # [C, OC]
                if b == 1:
                    acc[0, p_out].addmm_(xs[0, p_in], tap)
                else:
                    acc[:, p_out].baddbmm_(xs[:, p_in], tap.expand(b, c, oc))
        else:
            images = to_qmcl(x).permute(0, 2, 3, 4, 5, 1).reshape(b * ha * wa, hb, wb, c).permute(0, 3, 1, 2)
            out2 = F.conv2d(images, w2, None, stride=s, padding=self.conv2.padding)
            if tuple(out2.shape[-2:]) != (ph, pw):  # pragma: no cover - kernel/stride/padding are fixed
                raise RuntimeError(f"support output {tuple(out2.shape[-2:])} != pruned grid {(ph, pw)}")
            out2 = out2.contiguous(memory_format=torch.channels_last)
            acc.add_(out2.permute(0, 2, 3, 1).reshape(b, ha * wa, ph * pw, oc).transpose(1, 2))
        return _from_smcl_memory(acc.view(b, ph, pw, ha, wa, oc))

    def pruned_input(self, x: Tensor) -> Tensor:
        """conv1's input: ``x`` at the stride-subsampled support positions, stored SMCL."""
        s = self.support_stride
        return to_smcl(x[..., ::s, ::s] if s > 1 else x)

    def _support_conv_2x2(self, xs: Tensor, acc: Tensor, weight: Tensor) -> None:
        """conv2 (3x3, stride 1, padding 1) on 2x2 support maps, added into ``acc``, with 9 matrix
        products instead of the 16 position pairs.

        Along one axis the map is ``o0 = w1 i0 + w2 i1``, ``o1 = w0 i0 + w1 i1`` (a 2x2 Toeplitz
        matrix of kernel taps), which three products give: ``A = w1 (i0 + i1)``,
        ``B = (w2 - w1) i1``, ``C = (w0 - w1) i0``, ``o0 = A + B``, ``o1 = A + C`` (Winograd's
        F(2, 2)); the 2-D map is that along both axes. ``xs`` ``[B, 4, Q, C]`` and ``acc``
        ``[B, 4, Q, OC]`` hold the support positions row-major; ``weight`` is conv2's (or a
        scaled copy)."""
        b, _, q, c = xs.shape
        w = weight.to(acc.dtype)  # [OC, C, 3, 3]

        def along(t: Tensor, dim: int) -> list[Tensor]:  # taps 0, 1, 2 on ``dim`` -> A, B, C
            w0, w1, w2 = t.unbind(dim)
            return [w1, w2 - w1, w0 - w1]

        taps = [along(row, 2) for row in along(w, 2)]  # taps[alpha][beta] [OC, C]
        rows = [xs[:, 0:2] + xs[:, 2:4], xs[:, 2:4], xs[:, 0:2]]  # along y: A, B, C -> [B, 2 (ix), Q, C]
        for alpha, row in enumerate(rows):
            inputs = [row[:, 0] + row[:, 1], row[:, 1], row[:, 0]]  # along x: A, B, C
            shared = torch.matmul(inputs[0], taps[alpha][0].t())  # the A term of both outputs
            left = torch.baddbmm(shared, inputs[1], taps[alpha][1].t().expand(b, c, -1))  # ox = 0
            right = shared.baddbmm_(inputs[2], taps[alpha][2].t().expand(b, c, -1))  # ox = 1
            for oy in (0, 1):
                if (alpha, oy) in ((1, 1), (2, 0)):  # B feeds oy = 0 only, C oy = 1 only
                    continue
                acc[:, 2 * oy].add_(left)
                acc[:, 2 * oy + 1].add_(right)

    def _position_pairs(self, hb: int, wb: int) -> list[tuple[int, int, int, int]]:
        """``(input position, output position, ky, kx)`` of every tap of conv2 on an ``hb x wb``
        support map (positions row-major; zero padding contributes nothing)."""
        key = (hb, wb)
        if key not in self._pairs:
            s = self.support_stride
            k = self.conv2.kernel_size[0]
            pad = self.conv2.padding[0]
            ho, wo = (hb + 2 * pad - k) // s + 1, (wb + 2 * pad - k) // s + 1
            pairs = []
            for oy in range(ho):
                for ox in range(wo):
                    for iy in range(hb):
                        ky = iy - oy * s + pad
                        if not 0 <= ky < k:
                            continue
                        for ix in range(wb):
                            kx = ix - ox * s + pad
                            if 0 <= kx < k:
                                pairs.append((iy * wb + ix, oy * wo + ox, ky, kx))
            self._pairs[key] = pairs
        return self._pairs[key]


class GroupNorm4d(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and keys) computed on an SMCL 6-D tensor, returned SMCL;
    other ranks go to ``nn.GroupNorm``. Statistics in float64 from float32 cascade sums, the
    variance from the centred values; the output is float32 (as ``nn.GroupNorm`` under autocast)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 6:
            return super().forward(x)
        x = to_smcl(x.float())
        b, c, ha, wa, hb, wb = x.shape
        groups = self.num_groups
        per_group = c // groups
        positions = ha * wa * hb * wb
        lanes = _lanes(positions, c)
        mem = _smcl_memory(x).reshape(b, positions // lanes, lanes * c)  # [B, N/k, k·C]

        def per_channel_sum(t: Tensor) -> Tensor:  # [B, N/k, k·C] -> [B, C] float64
            return t.sum(1).view(b, lanes, c).sum(1).double()

        def per_lane(v: Tensor) -> Tensor:  # [B, C] -> [B, 1, k·C] float32
            return v.float().repeat(1, lanes).unsqueeze(1)

        count = positions * per_group
        mean = per_channel_sum(mem).view(b, groups, per_group).sum(-1) / count  # [B, G]
        centred = mem - per_lane(mean.repeat_interleave(per_group, 1))
        var = per_channel_sum(torch.square(centred)).view(b, groups, per_group).sum(-1) / count
        scale = (var + self.eps).rsqrt().repeat_interleave(per_group, 1)  # [B, C]
        shift = torch.zeros_like(scale)
        if self.affine:
            scale = scale * self.weight.double()
            shift = shift + self.bias.double()
        out = torch.addcmul(per_lane(shift), centred, per_lane(scale))
        return _from_smcl_memory(out.view(b, hb, wb, ha, wa, c))


def building_block(in_channels: int, out_channels: Sequence[int], kernels: Sequence[int], strides: Sequence[int]):
    """The official encoder block: (center-pivot conv, GroupNorm(4), ReLU) per stage."""
    layers: list[nn.Module] = []
    for i, (oc, k, s) in enumerate(zip(out_channels, kernels, strides)):
        layers += [
            CenterPivotConv4d(in_channels if i == 0 else out_channels[i - 1], oc, k, s),
            GroupNorm4d(4, oc),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def resize_query_dims(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (align_corners=True) resize of the query dims of ``[B, C, ha, wa, hb, wb]`` (SMCL out)."""
    b, c, ha, wa, hb, wb = x.shape
    if (ha, wa) == tuple(size):  # align_corners=True at the same size is the identity
        return to_smcl(x)
    images = F.interpolate(_query_images(to_smcl(x)), tuple(size), mode="bilinear", align_corners=True)
    return _from_query_images(images, b, hb, wb)


# ------------------------------------------------------------------------------------ learner
@dataclass
class LearnerRun:
    """What one learner forward leaves for reruns (per correlation pyramid)."""

    pyramid: list[Tensor]  # [l4, l3, l2]: [B, n, ha, wa, hb, wb]
    squeezed: list[Tensor]  # the encoders' outputs, [B, 128, ha, wa, 2, 2] each
    mixed: Tensor  # encoder_layer4to3's output (l3 query size)
    raw: Tensor  # [B, 2, h, w] logits before any resize


class HPNLearner(nn.Module):
    """The official ``HPNLearner`` (HSNet): squeeze l4/l3/l2, mix, decode to 2 logits."""

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        self.encoder_layer4 = building_block(in_channels[0], (16, 64, 128), (3, 3, 3), (2, 2, 2))
        self.encoder_layer3 = building_block(in_channels[1], (16, 64, 128), (5, 3, 3), (4, 2, 2))
        self.encoder_layer2 = building_block(in_channels[2], (16, 64, 128), (5, 5, 3), (4, 4, 2))
        self.encoder_layer4to3 = building_block(128, (128, 128, 128), (3, 3, 3), (1, 1, 1))
        self.encoder_layer3to2 = building_block(128, (128, 128, 128), (3, 3, 3), (1, 1, 1))
        self.decoder1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 64, 3, padding=1), nn.ReLU()
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 2, 3, padding=1))

    def squeeze(self, group: int, corr: Tensor) -> Tensor:
        """Encoder of pyramid group ``group`` (0: l4, 1: l3, 2: l2)."""
        return self.encoder(group)(corr)

    def encoder(self, group: int) -> nn.Sequential:
        return (self.encoder_layer4, self.encoder_layer3, self.encoder_layer2)[group]

    def squeeze_scaled(self, group: int, corr: Tensor, keep: Tensor, pruned: Optional[Tensor] = None) -> Tensor:
        """:meth:`squeeze` of ``[B, n, ...]`` with its channel j scaled by ``keep[i, j]``, for each
        row i of ``keep`` ``[m, n]`` -> ``[m·B, ...]``. The scale goes into the first layer's
        weights (no scaled copy of the pyramid); ``pruned`` is that layer's
        :meth:`CenterPivotConv4d.pruned_input` of ``corr``, kept by the caller across rows."""
        first, rest = self.encoder(group)[0], self.encoder(group)[1:]
        rows = [first(corr, channel_scale=row, pruned=pruned) for row in keep]
        if len(rows) == 1:
            return rest(rows[0])
        return rest(_from_smcl_memory(torch.cat([_smcl_memory(to_smcl(r)) for r in rows], 0)))

    def mix(self, sqz4: Tensor, sqz3: Tensor) -> Tensor:
        """``encoder_layer4to3`` on l4 (resized to l3's query size) + l3."""
        return self.encoder_layer4to3(resize_query_dims(sqz4, sqz3.shape[2:4]) + to_smcl(sqz3))

    def refine_and_decode(self, mixed: Tensor, sqz2: Tensor) -> Tensor:
        """``encoder_layer3to2`` on the mix (resized to l2's query size) + l2, the support mean and
        the decoder -> logits ``[B, 2, 2·ha2, 2·wa2]`` (100² at 400 input)."""
        mix = self.encoder_layer3to2(resize_query_dims(mixed, sqz2.shape[2:4]) + to_smcl(sqz2))
        b, c, ha, wa, hb, wb = mix.shape
        mem = _smcl_memory(to_smcl(mix)).reshape(b, hb * wb, ha, wa, c)
        encoded = mem.mean(1).permute(0, 3, 1, 2)  # average over the support dims (channels-last)
        out = self.decoder1(encoded)
        out = F.interpolate(out, (out.shape[-2] * 2, out.shape[-1] * 2), mode="bilinear", align_corners=True)
        return self.decoder2(out).contiguous()

    def mix_and_decode(self, sqz4: Tensor, sqz3: Tensor, sqz2: Tensor) -> Tensor:
        """Squeezed groups -> logits ``[B, 2, 2·ha2, 2·wa2]``."""
        return self.refine_and_decode(self.mix(sqz4, sqz3), sqz2)

    def run(self, pyramid: Sequence[Tensor]) -> LearnerRun:
        """The forward, keeping its intermediate results for :meth:`rerun`."""
        squeezed = [self.squeeze(g, c) for g, c in enumerate(pyramid)]
        mixed = self.mix(squeezed[0], squeezed[1])
        return LearnerRun(list(pyramid), squeezed, mixed, self.refine_and_decode(mixed, squeezed[2]))

    def forward(self, pyramid: Sequence[Tensor]) -> Tensor:
        return self.run(pyramid).raw

    def rerun(self, run: LearnerRun, keep: Tensor, chunk: int = 1, cancelled: CancelledFn = None) -> Tensor:
        """Raw logits ``[N, B, 2, h, w]`` with pyramid level j (levels numbered through l4, l3, l2)
        scaled by ``keep[:, j]``; ``chunk`` rows that scale the same groups share a batch.

        Equal to :meth:`forward` on the scaled pyramid (up to float rounding); see the module
        docstring for what is reused."""
        sizes = [int(p.shape[1]) for p in run.pyramid]
        levels = sum(sizes)
        if keep.dim() != 2 or keep.shape[1] != levels:
            raise ValueError(f"keep must be [N, {levels}], got {tuple(keep.shape)}")
        bounds = [sum(sizes[:g]) for g in range(len(sizes) + 1)]
        keep = keep.to(device=run.raw.device, dtype=torch.float32)
        rows_by_groups: dict[tuple[int, ...], list[int]] = {}
        for row, values in enumerate(keep.detach().cpu().tolist()):
            scaled = tuple(g for g in range(len(sizes)) if any(v != 1 for v in values[bounds[g] : bounds[g + 1]]))
            rows_by_groups.setdefault(scaled, []).append(row)
        b = run.raw.shape[0]
        out = run.raw.new_empty(keep.shape[0], *run.raw.shape)
        pruned: dict[int, Tensor] = {}  # each group's first-layer input, shared by its rows
        for groups, rows in rows_by_groups.items():
            if not groups:
                out[rows] = run.raw
                continue
            for start in range(0, len(rows), max(1, int(chunk))):
                check_cancelled(cancelled)
                part = rows[start : start + max(1, int(chunk))]
                m = len(part)
                squeezed = []
                for g in range(len(sizes)):
                    if g not in groups:
                        squeezed.append(repeat_batch(run.squeezed[g], m))
                        continue
                    if g not in pruned:
                        pruned[g] = self.encoder(g)[0].pruned_input(run.pyramid[g])
                    squeezed.append(self.squeeze_scaled(g, run.pyramid[g], keep[part, bounds[g] : bounds[g + 1]],
                                                        pruned[g]))
                if 0 in groups or 1 in groups:
                    mixed = self.mix(squeezed[0], squeezed[1])
                else:
                    mixed = repeat_batch(run.mixed, m)
                raw = self.refine_and_decode(mixed, squeezed[2])
                out[part] = raw.view(m, b, *raw.shape[1:])
        return out
