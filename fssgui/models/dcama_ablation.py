"""DCAMA's region-aware feature ablation for AffEx: the region means behind
:meth:`DCAMA.feature_ablation_weights <fssgui.models.dcama.DCAMA.feature_ablation_weights>`.

AffEx weighs each matching level by how much zeroing its coarse mask moves the mean foreground
logit over a region R; the base class gets that from L full decoder reruns.
:func:`region_ablation_means` gets the same values with less work. The scale branches an
ablation leaves unchanged are computed once. After conv5 the decoder has no normalisation, so
R's logits depend only on a window of each map: :func:`region_decode_plan` finds the windows by
walking back from R's bounding box through each convolution's kernel and padding and each
bilinear resize's actual weights (:class:`ResizeMatrix`, :class:`DecoderOp`), and folds the
linear tail after the last ReLU into one float64 readout (:class:`RegionDecodePlan`). The
windows are exact, borders and align_corners included: nothing outside them reaches R. The
results equal the full reruns up to float rounding (tests/test_dcama_ablation.py).

Dependencies go one way: this module imports :mod:`fssgui.models.dcama`; the model imports
:func:`region_ablation_means` lazily inside ``DCAMA.feature_ablation_weights``, so there is no
import cycle and loading the model does not load the ablation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CancelledFn, check_cancelled
from .base import Prediction, region_mean_foreground, region_pixels
from .dcama import DCAMA, DCAMADecoderCall


@dataclass(frozen=True)
class ResizeMatrix:
    """One axis of a bilinear resize as its matrix ``[out_len, in_len]`` (``out = M · x``).

    The matrix is ``F.interpolate`` applied to the identity, so its entries are the interpolation
    weights torch itself computes for this (input length, output length, align_corners). Restricted
    to an output window, the resize reads only the input window :meth:`source_window` (the
    columns with a non-zero weight), so the crop of a resized map is computed exactly from a crop
    of its input, borders and align_corners included. It is applied as its two taps per output
    (``taps``: the columns of a row's non-zero weights and the weights, read from the matrix):
    two gathers and a fused multiply-add, written in place. That costs O(output) where the dense
    block product costs O(output x input) per line: 3-10x faster on the windows of a large R,
    and as fast on small ones (CPU, one thread; results bitwise equal)."""

    matrix: Tensor  # [out_len, in_len] float32, CPU
    taps: tuple[Tensor, Tensor, Tensor, Tensor]  # per output: first column, second column, their weights

    @staticmethod
    def of(in_len: int, out_len: int, align_corners: bool) -> "ResizeMatrix":
        eye = torch.eye(in_len, dtype=torch.float32)[:, None, None, :]  # input j = unit impulse
        matrix = F.interpolate(eye, size=(1, out_len), mode="bilinear", align_corners=align_corners)
        matrix = matrix[:, 0, 0, :].T.contiguous()
        nonzero = matrix.ne(0)
        if int(nonzero.sum(1).max()) > 2:  # pragma: no cover - bilinear without antialias
            raise ValueError("a bilinear resize row has more than two taps")
        columns = torch.arange(in_len).expand(out_len, in_len)
        first = torch.where(nonzero, columns, in_len).min(1).values
        second = torch.where(nonzero, columns, -1).max(1).values
        rows = torch.arange(out_len)
        first_weight = matrix[rows, first]
        second_weight = torch.where(second == first, 0.0, matrix[rows, second])
        return ResizeMatrix(matrix, (first, second, first_weight, second_weight))

    @property
    def out_len(self) -> int:
        return int(self.matrix.shape[0])

    def source_window(self, start: int, stop: int) -> tuple[int, int]:
        """Half-open input window read by the outputs ``[start, stop)``."""
        used = torch.nonzero(self.matrix[start:stop].ne(0).any(0)).flatten()
        return int(used[0]), int(used[-1]) + 1

    def apply(self, x: Tensor, axis: int, source: tuple[int, int], start: int, stop: int) -> Tensor:
        """Outputs ``[start, stop)`` along ``axis`` (0 = rows, 1 = cols) of ``x [N, H, W, C]``,
        which holds the inputs ``source`` along that axis."""
        first, second, first_weight, second_weight = (t[start:stop] for t in self.taps)
        dim = 1 + axis
        shape = [1, 1, 1, 1]
        shape[dim] = stop - start
        out = x.index_select(dim, (first - source[0]).to(x.device))
        out.mul_(first_weight.to(x).view(shape))
        return out.addcmul_(x.index_select(dim, (second - source[0]).to(x.device)), second_weight.to(x).view(shape))


@dataclass
class DecoderOp:
    """One step of DCAMA's decoder after the 1/8 mix, in a form whose output can be computed on a
    window. Maps are channels-last ``[N, H, W, C]`` (faster convolutions on the CPU, and each
    resize is one matrix product). Kinds: ``resize`` (bilinear, a :class:`ResizeMatrix` per
    axis), ``conv`` (stride 1, undilated; ``weight`` in channels-last memory format), ``relu``,
    ``add`` (a full-size map ``[B, H, W, C]``, cropped to the window, broadcast over ablations)."""

    kind: str
    resize: Optional[tuple[ResizeMatrix, ResizeMatrix]] = None
    weight: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    padding: tuple[int, int] = (0, 0)
    addend: Optional[Tensor] = None

    def input_window(self, axis: int, out_window: tuple[int, int], in_len: int) -> tuple[int, int]:
        """The half-open input window (along ``axis`` 0 = rows, 1 = cols) that the outputs
        ``out_window`` depend on, clipped to the map (what lies outside is zero padding)."""
        start, stop = out_window
        if self.kind == "resize":
            assert self.resize is not None
            return self.resize[axis].source_window(start, stop)
        if self.kind == "conv":
            assert self.weight is not None
            k, p = int(self.weight.shape[2 + axis]), self.padding[axis]
            return max(0, start - p), min(in_len, stop - 1 - p + k)
        return start, stop

    def out_length(self, axis: int, in_len: int) -> int:
        if self.kind == "resize":
            assert self.resize is not None
            return self.resize[axis].out_len
        if self.kind == "conv":
            assert self.weight is not None
            return in_len + 2 * self.padding[axis] - int(self.weight.shape[2 + axis]) + 1
        return in_len

    def run(self, x: Tensor, in_window: Sequence[tuple[int, int]], out_window: Sequence[tuple[int, int]]) -> Tensor:
        """Apply the step to ``x [N, h, w, C]`` (the input on ``in_window``) and return the output on
        ``out_window``."""
        (ih, iw), (oh, ow) = in_window, out_window
        if self.kind == "resize":
            assert self.resize is not None
            x = self.resize[0].apply(x, 0, ih, *oh)
            return self.resize[1].apply(x, 1, iw, *ow)
        if self.kind == "conv":
            assert self.weight is not None
            kh, kw = int(self.weight.shape[2]), int(self.weight.shape[3])
            ph, pw = self.padding
            # zero rows/cols only where the window meets the map's border (the conv's own padding)
            top, left = ih[0] - (oh[0] - ph), iw[0] - (ow[0] - pw)
            bottom, right = (oh[1] - 1 - ph + kh) - ih[1], (ow[1] - 1 - pw + kw) - iw[1]
            padding: tuple[int, int] = (0, 0)
            if (top, bottom, left, right) == (ph, ph, pw, pw):  # the whole map: the conv pads itself
                padding = (ph, pw)
            elif top or bottom or left or right:
                n, h, w, c = x.shape
                padded = x.new_zeros(n, h + top + bottom, w + left + right, c)
                padded[:, top : top + h, left : left + w] = x
                x = padded
            out = F.conv2d(x.permute(0, 3, 1, 2), self.weight, self.bias, padding=padding)
            return out.permute(0, 2, 3, 1).contiguous()  # a no-op for a channels-last result
        if self.kind == "relu":
            return x.relu_()
        if self.kind == "add":
            assert self.addend is not None
            crop = self.addend[:, oh[0] : oh[1], ow[0] : ow[1]]
            return (x.view(-1, *crop.shape) + crop).flatten(0, 1)
        raise ValueError(f"unknown decoder step {self.kind!r}")


@dataclass
class RegionDecodePlan:
    """How the region-aware ablation evaluates the decoder for one region R.

    ``ops`` run from the 1/8 mix to the last ReLU (before the last convolution);
    ``windows[i]`` is the window (rows, cols; half-open) of the input of ``ops[i]`` and
    ``windows[-1]`` that of the last ReLU's output. What follows that ReLU is linear (the last
    convolution's foreground channel, the resizes to S and to E, the mean over R), so the
    region-mean foreground logit is ``<x, readout> + readout_bias`` with ``x`` the last ReLU's
    output on its window and ``readout`` ``[h, w, C]`` the adjoint of those steps applied to
    ``1_R/|R|``. ``cost_fraction``: the share of the decoder's convolution work the windows keep;
    ``windowed`` is False when it is too large to be worth it (the plain decoder then runs)."""

    ops: list[DecoderOp]
    windows: list[tuple[tuple[int, int], tuple[int, int]]]
    readout: Tensor  # [h, w, C] float64 on windows[-1]
    readout_bias: Tensor  # [] float64: foreground bias times the sum of the adjoint region weights
    cost_fraction: float
    windowed: bool


def region_ablation_means(model: DCAMA, prediction: Prediction, region: Tensor, size: int,
                          cancelled: CancelledFn = None) -> tuple[Tensor, Tensor]:
    """What the feature-ablation weights are made of: the region-mean foreground logit
    (logits bilinearly resized to ``size``, align_corners=False, mean over R ``[size, size]``)
    of the prediction, ``[B]``, and with each level's coarse mask zeroed, ``[L, B]`` (level
    order). Level j's weight is ``|unablated − ablated[j]|`` averaged over B, normalised.

    Computed with less work than L reruns of the whole decoder (the base class's way):

    * **Stage reuse.** The coarse masks enter by scale: conv1 (1/32), conv2 (1/16), conv3
      (1/8), then ``conv4(up(conv1) + conv2)`` and ``conv5(up(conv4) + conv3)``. Zeroing a
      level changes only its own scale's branch, so the other branches (and, for a 1/8 level,
      the whole conv4 stage) are computed once and reused. (These blocks contain GroupNorm,
      whose statistics span the whole map, so they are always computed in full.)
    * **Region windows.** Everything after conv5 (upsampling, mixer1-3, the resizes to S and
      to E) is convolutions without normalisation, ReLUs and bilinear resizes, so the
      foreground logit on R's bounding box at E depends only on a window of each
      intermediate map, found by walking back through the layers (each conv's kernel and
      padding, each resize's actual interpolation weights; zero padding only where a window
      meets the map's border). Only those windows are computed; the linear tail after
      mixer3's last ReLU (last convolution, resizes, mean over R) is one dot product with its
      adjoint applied to ``1_R/|R|`` (:class:`RegionDecodePlan`). When the windows would keep more than
      :attr:`DCAMA.windowed_decode_max_fraction` (``_cpu`` on the CPU) of the convolution work (a
      large or scattered R), the plain decoder runs instead.

    The unablated value is the region mean of ``prediction.logits``, as in the base class.
    The values equal those of the base class's full decoder reruns up to float rounding
    (tests/test_dcama_ablation.py). ``prediction`` must come from this model's
    :meth:`DCAMA.predict` (its ``head`` is a :class:`DCAMADecoderCall`).
    """
    call = prediction.head
    if not (isinstance(call, DCAMADecoderCall) and call.model is model):
        raise ValueError("the prediction does not come from this DCAMA model's predict()")
    if not bool(region.any()):
        raise ValueError("the region R is empty")
    logits = prediction.logits
    device = logits.device
    region = region.to(device).bool()
    pixels = region_pixels(region, device)
    head = model.model
    s0, s1, s2, _ = model.stack_ids
    levels = len(call.level_coarse)
    b = int(logits.shape[0])
    with torch.no_grad():
        unablated = region_mean_foreground(logits[None], pixels, size)[0]  # [B]
        c1, c2, c3 = model.group_levels(call.level_coarse)
        a1, a2, a3 = head.conv1(c1), head.conv2(c2), head.conv3(c3)
        up_a1 = F.interpolate(a1, a2.shape[-2:], mode="bilinear", align_corners=True)
        up_m4 = F.interpolate(head.conv4(up_a1 + a2), a3.shape[-2:], mode="bilinear", align_corners=True)
        plan = region_decode_plan(model, tuple(a3.shape[-2:]), call.skip, call.size, region, size)

        def broadcast_add(x: Tensor, fixed: Tensor) -> Tensor:  # [m·B, ...] + [B, ...]
            return (x.view(-1, b, *x.shape[1:]) + fixed.unsqueeze(0)).flatten(0, 1)

        def ablated(stack: Tensor, channels: list[int]) -> Tensor:  # one copy per zeroed channel
            out = stack.unsqueeze(0).repeat(len(channels), *([1] * stack.dim()))
            for i, channel in enumerate(channels):
                out[i, :, channel] = 0
            return out.flatten(0, 1)

        per_call = model.ablation_chunk_cpu if device.type == "cpu" else model.ablation_chunk
        per_call = max(1, int(per_call))
        fg = torch.empty(levels, b, dtype=logits.dtype, device=device)
        # (first feature index, last + 1) of the 1/8, 1/16 and 1/32 levels
        for lo, hi in ((s0, s1), (s1, s2), (s2, model.num_features)):
            channels = list(range(hi - lo))
            for start in range(0, len(channels), per_call):
                check_cancelled(cancelled)
                chunk = channels[start : start + per_call]
                if lo == s0:  # a 1/8 level: conv4's output is unchanged
                    m5 = head.conv5(broadcast_add(head.conv3(ablated(c3, chunk)), up_m4))
                else:
                    if lo == s1:  # a 1/16 level
                        m4 = head.conv4(broadcast_add(head.conv2(ablated(c2, chunk)), up_a1))
                    else:  # a 1/32 level
                        up = F.interpolate(head.conv1(ablated(c1, chunk)), a2.shape[-2:], mode="bilinear",
                                           align_corners=True)
                        m4 = head.conv4(broadcast_add(up, a2))
                    up = F.interpolate(m4, a3.shape[-2:], mode="bilinear", align_corners=True)
                    m5 = head.conv5(broadcast_add(up, a3))
                first = lo - s0 + start
                fg[first : first + len(chunk)] = _region_mean_from_mix(model, m5, call, plan, pixels, size)
    return unablated, fg


def _region_mean_from_mix(
    model: DCAMA, mix: Tensor, call: DCAMADecoderCall, plan: RegionDecodePlan, pixels: Tensor, size: int
) -> Tensor:
    """``mix [m·B, 128, h8, w8]`` (conv5's output) -> region-mean foreground logit ``[m, B]``."""
    b = call.skip.shape[0]
    if not plan.windowed:
        out = model.model.decode(mix, call.skip)
        if tuple(out.shape[-2:]) != call.size:
            out = F.interpolate(out, call.size, mode="bilinear", align_corners=True)
        return region_mean_foreground(out.view(-1, b, *out.shape[1:]), pixels, size)
    (h0, h1), (w0, w1) = plan.windows[0]
    x = mix[..., h0:h1, w0:w1].permute(0, 2, 3, 1).contiguous()  # channels-last window
    for i, op in enumerate(plan.ops):
        x = op.run(x, plan.windows[i], plan.windows[i + 1])
    # the readout in float64: a sum over the whole window, kept free of accumulation error
    fg = torch.matmul(x.reshape(x.shape[0], -1).double(), plan.readout.reshape(-1)) + plan.readout_bias
    return fg.to(mix.dtype).view(-1, b)  # [m, B]


def region_decode_plan(
    model: DCAMA,
    mix_shape: tuple[int, int],
    skip: Tensor,
    input_size: Sequence[int],
    region: Tensor,
    size: int,
) -> RegionDecodePlan:
    """The decoder after the 1/8 mix as :class:`DecoderOp` steps, with the windows that the
    foreground logit on R (``[size, size]`` bool, at the explanation size) depends on.

    The decoder is :meth:`DCAMAHead.decode` then :meth:`DCAMA._head`'s resize to S (when the
    decoder's output differs from S) and the resize to E (when E != S): up ×2 → mixer1[0]
    (mix part) + skip term → ReLU → mixer1[2] → ReLU → up ×2 → mixer2 → up ×2 → mixer3[0] →
    ReLU | mixer3[2] → [resize to S, align_corners=True] → [resize to E, align_corners=False]
    → mean over R. Everything after "|" is linear and becomes the readout (see
    :class:`RegionDecodePlan`). Windows are found by walking back from R's bounding box
    through each step's actual dependence (resize matrices, conv kernels and paddings)."""
    head = model.model
    h8, w8 = mix_shape
    h4, w4 = h8 * 2, w8 * 2
    if tuple(skip.shape[-2:]) != (h4, w4):
        raise ValueError(f"skip term {tuple(skip.shape[-2:])} does not match the 1/8 mix {mix_shape}")
    if tuple(region.shape) != (size, size):
        raise ValueError(f"region {tuple(region.shape)} does not match the explanation size {size}")

    def resize(in_hw: tuple[int, int], out_hw: tuple[int, int], align_corners: bool) -> DecoderOp:
        rows = ResizeMatrix.of(in_hw[0], out_hw[0], align_corners)
        cols = ResizeMatrix.of(in_hw[1], out_hw[1], align_corners)
        return DecoderOp("resize", resize=(rows, cols))

    def conv(layer: nn.Module, in_channels: Optional[slice] = None, with_bias: bool = True) -> DecoderOp:
        assert isinstance(layer, nn.Conv2d)
        if tuple(layer.stride) != (1, 1) or tuple(layer.dilation) != (1, 1) or layer.groups != 1:
            raise ValueError("the windowed decoder handles stride-1, undilated, ungrouped convolutions")
        if layer.padding_mode != "zeros" or not isinstance(layer.padding, tuple):
            raise ValueError("the windowed decoder handles explicit zero padding only")
        weight = layer.weight if in_channels is None else layer.weight[:, in_channels]
        return DecoderOp(
            "conv",
            weight=weight.contiguous(memory_format=torch.channels_last),
            bias=layer.bias if with_bias else None,
            padding=(int(layer.padding[0]), int(layer.padding[1])),
        )

    relu = DecoderOp("relu")
    ops = [
        resize((h8, w8), (h4, w4), True),
        conv(head.mixer1[0], in_channels=slice(0, head.mix_channels), with_bias=False),
        DecoderOp("add", addend=skip.permute(0, 2, 3, 1).contiguous()),  # skip part of mixer1[0], bias incl.
        relu,
        conv(head.mixer1[2]),
        relu,
        resize((h4, w4), (h4 * 2, w4 * 2), True),
        conv(head.mixer2[0]),
        relu,
        conv(head.mixer2[2]),
        relu,
        resize((h4 * 2, w4 * 2), (h4 * 4, w4 * 4), True),
        conv(head.mixer3[0]),
        relu,
    ]
    # the linear tail: last conv (foreground channel) and the resizes, applied adjointly to 1_R/|R|
    last = conv(head.mixer3[2])
    tail: list[DecoderOp] = [last]
    s_hw = (int(input_size[0]), int(input_size[1]))
    if (h4 * 4, w4 * 4) != s_hw:
        tail.append(resize((h4 * 4, w4 * 4), s_hw, True))
    if s_hw != (size, size):
        tail.append(resize(s_hw, (size, size), False))

    lengths = [(h8, w8)]
    for op in ops + tail:
        lengths.append((op.out_length(0, lengths[-1][0]), op.out_length(1, lengths[-1][1])))
    assert lengths[-1] == (size, size)
    rows = torch.nonzero(region.any(1)).flatten().cpu()
    cols = torch.nonzero(region.any(0)).flatten().cpu()
    windows = [((int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1))]
    for i in range(len(ops) + len(tail) - 1, -1, -1):
        op = (ops + tail)[i]
        windows.insert(0, tuple(op.input_window(a, windows[0][a], lengths[i][a]) for a in (0, 1)))
    # adjoint of the tail on 1_R/|R| (float64, on the windows only): resize M -> M^T,
    # convolution -> its transpose (what would land on the zero padding is dropped)
    n_ops = len(ops)
    (r0, r1), (q0, q1) = windows[-1]
    weights = region[r0:r1, q0:q1].detach().to("cpu", torch.float64)
    weights = weights / weights.sum()
    for j in range(len(tail) - 1, 0, -1):
        op = tail[j]
        assert op.resize is not None
        (o_rows, o_cols), (i_rows, i_cols) = windows[n_ops + 1 + j], windows[n_ops + j]
        m_rows = op.resize[0].matrix[o_rows[0] : o_rows[1], i_rows[0] : i_rows[1]].double()
        m_cols = op.resize[1].matrix[o_cols[0] : o_cols[1], i_cols[0] : i_cols[1]].double()
        weights = m_rows.T @ weights @ m_cols
    assert last.weight is not None and last.bias is not None
    kernel = last.weight[1].detach().to("cpu", torch.float64)  # foreground channel [C, kh, kw]
    (o_rows, o_cols), (i_rows, i_cols) = windows[n_ops + 1], windows[n_ops]
    (ph, pw), (kh, kw) = last.padding, kernel.shape[1:]
    oh, ow = weights.shape
    # output o reads input o - p + k: index t = (o - o_start) + k  <->  input o_start - p + t
    spread = torch.zeros(kernel.shape[0], oh + kh - 1, ow + kw - 1, dtype=torch.float64)
    for ky in range(kh):
        for kx in range(kw):
            spread[:, ky : ky + oh, kx : kx + ow] += kernel[:, ky, kx, None, None] * weights
    top, left = i_rows[0] - (o_rows[0] - ph), i_cols[0] - (o_cols[0] - pw)
    readout = spread[:, top : top + i_rows[1] - i_rows[0], left : left + i_cols[1] - i_cols[0]]
    readout = readout.permute(1, 2, 0).contiguous()  # [h, w, C] on the last ReLU's window
    readout_bias = last.bias.detach()[1].to("cpu", torch.float64) * weights.sum()
    windows = windows[: n_ops + 1]  # up to the last ReLU's output
    device = skip.device

    def area(window) -> int:
        return (window[0][1] - window[0][0]) * (window[1][1] - window[1][0])

    kept = total = 0.0
    for i, op in enumerate(ops):
        if op.kind == "conv":
            assert op.weight is not None
            kept += area(windows[i + 1]) * op.weight.numel()
            total += lengths[i + 1][0] * lengths[i + 1][1] * op.weight.numel()
    fraction = kept / total
    on_cpu = device.type == "cpu"
    limit = model.windowed_decode_max_fraction_cpu if on_cpu else model.windowed_decode_max_fraction
    return RegionDecodePlan(
        ops=ops,
        windows=windows,  # type: ignore[arg-type]
        readout=readout.to(device),
        readout_bias=readout_bias.to(device),
        cost_fraction=fraction,
        windowed=fraction <= limit,
    )
