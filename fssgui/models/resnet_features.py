"""A torchvision ResNet-50 with the layer taps used by the SimPropNet and I²R adapters.

No weights are downloaded: the network is built with ``weights=None``. A user may point at a
torchvision ResNet-50 state dict (for example the ImageNet ``resnet50-0676ba61.pth``) or timm's
``resnet50`` ``.safetensors`` to start training from ImageNet features; it is read without
unpickling code (``torch.load(..., weights_only=True)`` or safetensors).
The key names are torchvision's, so a full-model checkpoint (``backbone.layer3.5.bn3.weight``)
and a bare torchvision file (``layer3.5.bn3.weight``) both map onto the same module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .backbones import build_resnet
from .checkpoints import read_state_dict


def build_resnet50(
    *,
    dilate_layer3: bool = False,
    dilate_layer4: bool = False,
    keep: Iterable[str] = ("layer1", "layer2", "layer3", "layer4", "fc"),
) -> nn.Module:
    """torchvision's ResNet-50 (:func:`~fssgui.models.backbones.build_resnet`: random init, one
    ReLU module per call site); the stages not in ``keep`` are removed.

    ``dilate_layer3``/``dilate_layer4`` replace the stride of that stage by dilation 2
    (torchvision's ``replace_stride_with_dilation``), as CANet-style models do.
    """
    net = build_resnet("resnet50", replace_stride_with_dilation=(False, dilate_layer3, dilate_layer4))
    keep = set(keep)
    for name in ("layer4", "fc"):
        if name not in keep:
            delattr(net, name)
    return net


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load a ResNet-50 state dict from ``path`` into ``backbone`` (safe loading).

    The file is read by :func:`fssgui.models.checkpoints.read_state_dict`: a ``torch.save`` file
    (weights only, never code) or a ``.safetensors`` file such as timm's ``resnet50`` weights,
    whose key names are torchvision's. A ``module.`` or ``backbone.`` prefix is stripped; keys of
    stages the backbone does not keep (``layer4``/``fc`` when removed) are ignored; BatchNorm's
    ``num_batches_tracked`` counters may be absent. Every other parameter/buffer the backbone has
    must be in the file with the right shape, otherwise a :class:`CheckpointError` names the file
    and the first missing/mismatched key. Returns the list of ignored keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: backbone weights file not found")
    state = read_state_dict(path)
    cleaned: dict[str, Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    own = backbone.state_dict()
    for key, value in own.items():
        if key not in cleaned:
            if key.endswith("num_batches_tracked"):
                continue
            raise CheckpointError(f"{path}: not a torchvision ResNet-50 state dict (missing key {key!r})")
        if tuple(cleaned[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: key {key!r} has shape {tuple(cleaned[key].shape)}, expected {tuple(value.shape)}"
            )
    backbone.load_state_dict({k: cleaned[k] for k in own if k in cleaned}, strict=False)
    return sorted(set(cleaned) - set(own))


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``'s parameters (the backbone is frozen in both papers)."""
    for p in module.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    """Gradients for ``module``'s parameters again (``--train-backbone``)."""
    for p in module.parameters():
        p.requires_grad_(True)


class _FeatureTap(nn.Module):
    """Wraps a feature function so that :func:`torch.optim.swa_utils.update_bn` can drive it."""

    def __init__(self, backbone: nn.Module, forward: Callable[[Tensor], object]):
        super().__init__()
        self.backbone = backbone
        self._forward = forward

    def forward(self, images: Tensor) -> object:
        return self._forward(images)


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, forward: Callable[[Tensor], object],
                          batches: Iterable[Tensor]) -> int:
    """Re-estimate the running mean/variance of every BatchNorm in ``backbone`` from ``batches``.

    Uses :func:`torch.optim.swa_utils.update_bn` (running statistics reset, then a cumulative
    average over all batches in train mode), driving ``forward`` (a function of the images that
    runs the backbone layers the model uses). Afterwards the backbone is back in eval mode and
    its BatchNorm layers normalise with the new statistics. Returns the number of images seen.

    Why: torchvision initialises BatchNorm with running mean 0 / variance 1, so a random-init
    ResNet in eval mode applies no normalisation at all; its activations drift to a large
    positive common component (layer3 mean about 8 against a per-position spread of the same
    order at 65 px) and the cosine between any two positions is close to 1, which makes
    masked-average prototypes nearly indistinguishable. With statistics estimated on the
    training images each channel is centred and scaled, and random convolutional features become
    informative about colour and texture.
    """
    from torch.optim.swa_utils import update_bn

    batches = list(batches)
    tap = _FeatureTap(backbone, forward)
    update_bn(batches, tap)
    backbone.eval()
    return sum(int(b.shape[0]) for b in batches)


def masked_average(features: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """Masked average pooling: ``features [N, C, h, w]``, ``mask [N, 1, h, w]`` -> ``[N, C]`` (BAM's
    and I²R's Weighted_GAP)."""
    return (features * mask).sum((2, 3)) / (mask.sum((2, 3)) + eps)

