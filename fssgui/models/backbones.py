"""Backbones shared by the few-shot models: ResNet bottleneck features and Swin-B (the
built-in matchers' EfficientNet-Lite is :mod:`fssgui.models.efficientnet_lite`).

Both keep the parameter names of the modules the official DCAMA/DMTNet code builds, so that
their released checkpoints load unchanged:

* ResNet-50/101 are torchvision's ``ResNet`` of a ``Bottleneck`` subclass that only gives each
  ReLU call site its own module (same keys and outputs; built with random init: nothing is
  downloaded; the FSS checkpoint carries the backbone). :func:`resnet_bottleneck_features`
  walks the bottlenecks itself because the features must be taken **after the residual add and
  before the block's final ReLU** (a forward hook on a torchvision ``Bottleneck`` would give the
  post-ReLU tensor).
* :class:`SwinTransformer` re-implements Swin-B (patch 4, window 12, 384 input) with the key
  names of the Microsoft implementation that DCAMA vendors (``patch_embed.proj``,
  ``layers.i.blocks.j.attn.relative_position_bias_table``, ``...attn_mask`` ...). The
  ``relative_position_index`` and ``attn_mask`` buffers are computed deterministically at
  construction, so a checkpoint may omit them. :meth:`SwinTransformer.block_features` returns
  the output of every block before patch merging, without the final norm (DCAMA's features).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # imported when a ResNet is built: ``torchvision.models`` takes seconds to import
    from torchvision.models import resnet as tv_resnet

from ..errors import ModelError

#: bottlenecks per stage
RESNET_LAYOUT = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


@functools.lru_cache(maxsize=None)
def _hookable_bottleneck() -> type:
    """torchvision's ``Bottleneck`` with one ReLU module per call site (``relu``, ``relu_mid``,
    ``relu_out``; no parameters, so state dicts are unchanged): captum's DeepLift hooks a
    nonlinearity module once per forward, and torchvision's own forward calls ``relu`` three
    times. Same outputs as torchvision's."""
    from torchvision.models.resnet import Bottleneck

    class HookableBottleneck(Bottleneck):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.relu_mid = nn.ReLU(inplace=True)
            self.relu_out = nn.ReLU()  # not in place: the walk below returns its input

        def forward(self, x: Tensor) -> Tensor:
            return self.relu_out(_bottleneck_sum(self, x))

    return HookableBottleneck


def _bottleneck_sum(block: nn.Module, x: Tensor) -> Tensor:
    """A bottleneck's output after the residual add, before its final ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu_mid(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out)) + identity


def build_resnet(name: str, replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> tv_resnet.ResNet:
    """torchvision ResNet-50/101 with random init (``weights=None``: never downloads), made of
    :func:`_hookable_bottleneck` blocks (torchvision's key names and outputs)."""
    from torchvision.models import resnet as tv_resnet

    if name not in RESNET_LAYOUT:
        raise ValueError(f"unknown ResNet {name!r}")
    return tv_resnet.ResNet(_hookable_bottleneck(), list(RESNET_LAYOUT[name]),
                            replace_stride_with_dilation=list(replace_stride_with_dilation))


def resnet_bottleneck_features(
    net: tv_resnet.ResNet, images: Tensor, keep: Optional[Iterable[int]] = None
) -> list[Optional[Tensor]]:
    """Outputs of every bottleneck (stage order), after the residual add, before the final ReLU
    (``net`` from :func:`build_resnet`).

    ``keep`` lists the (0-based) bottleneck indices to return; the other entries of the returned
    list are ``None`` (their tensors are released as soon as they are used). Differentiable with
    respect to ``images`` when called under grad.
    """
    keep_set = None if keep is None else set(keep)
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
    feats: list[Optional[Tensor]] = []
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            out = _bottleneck_sum(block, x)
            feats.append(out if keep_set is None or len(feats) in keep_set else None)
            x = block.relu_out(out)
    return feats


# ----------------------------------------------------------------------------------------------
# Swin Transformer (official key names)
# ----------------------------------------------------------------------------------------------


def _window_partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B * nW, window*window, C] (row-major windows)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`_window_partition`: [B * nW, window*window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> Tensor:
    """[window², window²] int64 index into the (2w-1)² relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def shifted_window_attention_mask(resolution: int, window: int, shift: int) -> Tensor:
    """[nW, window², window²] float mask (0 or -100) of the shifted-window attention."""
    region = torch.zeros(1, resolution, resolution, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[:, hs, ws, :] = label
            label += 1
    windows = _window_partition(region, window).squeeze(-1)  # [nW, window²]
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative-position bias (Swin)."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        bw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(n, n, heads).permute(2, 0, 1)  # [heads, n, n]
        if mask is not None:
            nw = mask.shape[0]
            # [1, nW, heads, n, n] broadcast over the images of the batch
            additive = bias.unsqueeze(0).unsqueeze(0) + mask.unsqueeze(1).unsqueeze(0)
            q = q.view(bw // nw, nw, heads, n, -1)
            k = k.view(bw // nw, nw, heads, n, -1)
            v = v.view(bw // nw, nw, heads, n, -1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive.to(q.dtype))
            out = out.view(bw, heads, n, -1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        if resolution <= window:  # no partition, no shift (stage 4 at 384 input)
            window, shift = resolution, 0
        self.dim = dim
        self.resolution = resolution
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, dim * 4)
        mask = shifted_window_attention_mask(resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        b, length, c = x.shape
        res, win, shift = self.resolution, self.window, self.shift
        shortcut = x
        x = self.norm1(x).view(b, res, res, c)
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = self.attn(_window_partition(x, win), self.attn_mask)
        x = _window_reverse(x, win, res, res)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + x.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, resolution: int, dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2)
            for i in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"Swin backbone needs {self.img_size}x{self.img_size} input, got {tuple(x.shape[-2:])}"
            )
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin Transformer with the official key names (defaults: Swin-B, window 12, 384 input)."""

    def __init__(
        self,
        img_size: int = 384,
        patch_size: int = 4,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 12,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.depths = tuple(depths)
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        resolution = img_size // patch_size
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.layers.append(
                BasicLayer(embed_dim * 2**i, resolution // 2**i, depth, heads, window_size, i < len(depths) - 1)
            )
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.channels = [embed_dim * 2**i for i in range(len(depths))]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # placeholder values (a checkpoint replaces them); plain normal_ is much faster than the
        # official trunc_normal_ for 88 M parameters
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def block_features(self, images: Tensor, keep: Optional[Iterable[int]] = None) -> list[Optional[Tensor]]:
        """[B, C, h, w] output of every block (stage order, before patch merging, no final norm).

        ``keep`` as in :func:`resnet_bottleneck_features`.
        """
        keep_set = None if keep is None else set(keep)
        x = self.patch_embed(images)
        feats: list[Optional[Tensor]] = []
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
                if keep_set is None or len(feats) in keep_set:
                    b, n, c = x.shape
                    r = block.resolution
                    feats.append(x.transpose(1, 2).reshape(b, c, r, r))
                else:
                    feats.append(None)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return feats

    def forward(self, images: Tensor) -> Tensor:  # classification (unused by the FSS models)
        x = self.patch_embed(images)
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return self.head(self.norm(x).mean(1))
