"""ScaleProtoSeg (WACV 2025): multi-scale prototype semantic segmentation, re-implemented.

This is a *semantic segmentation* family, not a few-shot one: its entries in the one model
registry (``scaleprotoseg-pascal``, ``-cityscapes``, ``-ade``) carry ``task = "semseg"``, so
:func:`fssgui.models.registry.build_model` builds them only for the Prototypes tab and
``fssgui protos`` (the analysis itself is :mod:`fssgui.prototypes`).

Architecture: DeepLabv2 ResNet-101 (MSRA bottlenecks, output
stride 8) whose ASPP *concatenates* four 64-channel branches (dilations 6/12/18/24), optional
input pyramid (MSC, element-wise max, Pascal only), a sigmoid add-on, prototypes restricted to
their scale's 64-channel slice, log activation ``log((d+1)/(d+1e-4))``, then either

* stage 1: ``last_layer`` (P -> C), or
* stage 2: per class a group projection ``g = exp(W_c · a_c)`` (3 groups over the class's
  prototypes, simplex rows, thresholded entries set to 0 without renormalising) and
  ``last_layer_group`` (3C' -> C).

Module and parameter names reproduce the official ones (``features.base.layer2.block1.reduce.
conv.weight``, ``features.base.aspp.c0.weight``, ``prototype_vectors``, ``ones``,
``group_projection.k.weight``, ``last_layer_group.weight``...) so official weights load
unchanged. Official checkpoints are whole pickled modules: they are read by
:mod:`fssgui.models.safe_pickle` without importing or running their code.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ModelError
from .normalisation import IMAGENET_MEAN, IMAGENET_STD
from .scaleprotoseg_datasets import (
    ADE20K_CLASSES, CITYSCAPES_CLASSES, DATASETS, PASCAL_CLASSES, PROTOTYPE_FOLDER_ALIASES, SCALE_DILATIONS, DatasetInfo,
    dataset_for_num_classes, dataset_info,
)

# ------------------------------------------------------------------------------- backbone


class ConvBnReLU(nn.Sequential):
    """``conv`` (no bias) + ``bn`` (+ ``relu``): the unit of the MSRA DeepLab ResNet."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, dilation: int, relu: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch, eps=1e-5, momentum=0.001))
        if relu:
            self.add_module("relu", nn.ReLU())


class Bottleneck(nn.Module):
    """MSRA bottleneck: the stride sits in the 1x1 ``reduce`` conv; ``shortcut`` projects in block 1."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, downsample: bool):
        super().__init__()
        mid_ch = out_ch // 4
        self.reduce = ConvBnReLU(in_ch, mid_ch, 1, stride, 0, 1, True)
        self.conv3x3 = ConvBnReLU(mid_ch, mid_ch, 3, 1, dilation, dilation, True)
        self.increase = ConvBnReLU(mid_ch, out_ch, 1, 1, 0, 1, False)
        self.shortcut = ConvBnReLU(in_ch, out_ch, 1, stride, 0, 1, False) if downsample else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.increase(self.conv3x3(self.reduce(x)))
        return F.relu(h + self.shortcut(x))


class ResLayer(nn.Sequential):
    def __init__(self, n_blocks: int, in_ch: int, out_ch: int, stride: int, dilation: int):
        super().__init__()
        for i in range(n_blocks):
            self.add_module(
                f"block{i + 1}",
                Bottleneck(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, dilation, i == 0),
            )


class Stem(nn.Sequential):
    def __init__(self, out_ch: int):
        super().__init__()
        self.add_module("conv1", ConvBnReLU(3, out_ch, 7, 2, 3, 1))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


class ConcatASPP(nn.Module):
    """ASPP whose branches ``c0..c3`` are *concatenated* (ScaleProtoSeg), not summed."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int]):
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(in_ch, out_ch, 3, 1, padding=rate, dilation=rate, bias=True))
        for conv in self.children():
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.children()], dim=1)


class DeepLabV2Features(nn.Sequential):
    """Dilated ResNet (``layer1``..``layer5``, output stride 8) + concatenating ``aspp``."""

    def __init__(self, n_features: int, n_blocks: Sequence[int] = (3, 4, 23, 3), rates: Sequence[int] = SCALE_DILATIONS):
        super().__init__()
        ch = [64 * 2**p for p in range(6)]
        self.add_module("layer1", Stem(ch[0]))
        self.add_module("layer2", ResLayer(n_blocks[0], ch[0], ch[2], 1, 1))
        self.add_module("layer3", ResLayer(n_blocks[1], ch[2], ch[3], 2, 1))
        self.add_module("layer4", ResLayer(n_blocks[2], ch[3], ch[4], 1, 2))
        self.add_module("layer5", ResLayer(n_blocks[3], ch[4], ch[5], 1, 4))
        self.add_module("aspp", ConcatASPP(ch[5], n_features, rates))


class MultiScaleInputs(nn.Module):
    """Input pyramid (official ``MSC``): with ``scales`` set, also run ``base`` on the input
    resized by each scale (bilinear), resize back to the full grid and take the element-wise max
    (the eval-mode behaviour; we only do inference). ``scales == ()`` passes through."""

    def __init__(self, base: nn.Module, scales: Sequence[float] = ()):
        super().__init__()
        self.base = base
        self.scales = tuple(float(s) for s in scales)

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if not self.scales:
            return out
        size = out.shape[-2:]
        outputs = [out]
        for scale in self.scales:
            scaled = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            outputs.append(F.interpolate(self.base(scaled), size=size, mode="bilinear", align_corners=False))
        return torch.stack(outputs).max(dim=0).values


def feature_grid_size(height: int, width: int) -> tuple[int, int]:
    """Feature-grid size for an input of ``height x width``: the three stride-2 steps of the
    backbone, the stem's 7x7 convolution (n -> floor((n - 1) / 2) + 1), its max-pool in ceil
    mode (n -> ceil((n - 1) / 2) + 1) and layer 3's 1x1 reduce (n -> floor((n - 1) / 2) + 1)."""

    def one(n: int) -> int:
        h1 = (n - 1) // 2 + 1
        h2 = math.ceil((h1 - 1) / 2) + 1
        return (h2 - 1) // 2 + 1

    return one(height), one(width)


# ------------------------------------------------------------------------------ group tools


def projection_simplex(rows: Tensor, radius: float = 1.0) -> Tensor:
    """Euclidean projection of each row onto ``{w >= 0, sum(w) = radius}`` (sort-based)."""
    sorted_rows, _ = torch.sort(rows, dim=1, descending=True)
    cumulative = torch.cumsum(sorted_rows, dim=1) - radius
    ranks = torch.arange(1, rows.shape[1] + 1, dtype=rows.dtype, device=rows.device)
    support = sorted_rows - cumulative / ranks > 0
    rho = (support * ranks).argmax(dim=1, keepdim=True)  # last index where the condition holds
    theta = cumulative.gather(1, rho) / (rho + 1).to(rows.dtype)
    return torch.clamp(rows - theta, min=0.0)


def threshold_weights(weights: Tensor | np.ndarray, threshold: float) -> Tensor | np.ndarray:
    """Entries below ``threshold`` set to 0, *no renormalisation* (official ``threshold_save``)."""
    if isinstance(weights, np.ndarray):
        return np.where(weights < threshold, 0.0, weights).astype(weights.dtype)
    return torch.where(weights < threshold, torch.zeros_like(weights), weights)


# ---------------------------------------------------------------------------------- the model


@dataclass
class ScaleProtoSegConfig:
    dataset: str = "cityscapes"
    num_classes: int = 19
    prototypes_per_class_scale: int = 3  # M
    num_scales: int = 4  # S
    feature_dim: int = 64  # D (= ASPP branch width)
    num_groups: int = 3  # N_c
    grouped: bool = True  # stage 2 (groups) or stage 1 (last_layer)
    msc_scales: tuple[float, ...] = ()
    n_blocks: tuple[int, ...] = (3, 4, 23, 3)  # ResNet-101
    epsilon: float = 1e-4
    incorrect_strength: float = -0.5

    @property
    def num_prototypes(self) -> int:
        return self.num_classes * self.prototypes_per_class_scale * self.num_scales


def default_class_identity(num_classes: int, per_class_scale: int, num_scales: int) -> Tensor:
    """(P, C) one-hot; index = s*(C*M) + c*M + m (scale-major, then class, then slot)."""
    total = num_classes * per_class_scale * num_scales
    identity = torch.zeros(total, num_classes)
    for s in range(num_scales):
        for c in range(num_classes):
            start = s * num_classes * per_class_scale + c * per_class_scale
            identity[start : start + per_class_scale, c] = 1
    return identity


@dataclass
class ScaleProtoSegOutput:
    """Everything on the feature grid (h, w) = stride-8 grid of the input."""

    logits: Tensor  # [B, C, h, w]
    distances: Tensor  # [B, P, h, w] squared L2, >= 0
    prototype_activations: Tensor  # [B, P, h, w] log((d+1)/(d+eps))
    group_activations: Optional[Tensor] = None  # [B, N_c*C', h, w] exp(W a), class order


class ScaleProtoSeg(nn.Module):
    """ScaleProtoSeg stage 1 (``grouped=False``) or stage 2 (``grouped=True``).

    ``prototype_class_identity`` (P x C one-hot) and ``scale_ranges`` ({s: (start, end)}) are
    plain attributes, as in the official model, so they are not state-dict keys; they default to
    the deterministic layout and must come from the checkpoint when the push removed duplicates.
    """

    def __init__(
        self,
        config: ScaleProtoSegConfig,
        prototype_class_identity: Optional[Tensor] = None,
        scale_ranges: Optional[dict[int, tuple[int, int]]] = None,
    ):
        super().__init__()
        self.config = config
        if prototype_class_identity is None:
            prototype_class_identity = default_class_identity(
                config.num_classes, config.prototypes_per_class_scale, config.num_scales
            )
        identity = prototype_class_identity.detach().float().cpu()
        if identity.ndim != 2 or identity.shape[1] != config.num_classes:
            raise ModelError(f"prototype_class_identity must be (P, {config.num_classes}), got {tuple(identity.shape)}")
        num_prototypes = identity.shape[0]
        if scale_ranges is None:
            if num_prototypes % config.num_scales:
                raise ModelError(f"{num_prototypes} prototypes cannot be split evenly over {config.num_scales} scales")
            per_scale = num_prototypes // config.num_scales
            scale_ranges = {s: (s * per_scale, (s + 1) * per_scale) for s in range(config.num_scales)}
        self.prototype_class_identity = identity
        self.scale_ranges = {int(s): (int(a), int(b)) for s, a_b in scale_ranges.items() for a, b in [a_b]}
        self.epsilon = config.epsilon
        self.num_scales = config.num_scales
        self.num_groups = config.num_groups

        self.features = MultiScaleInputs(DeepLabV2Features(config.feature_dim, config.n_blocks), config.msc_scales)
        self.add_on_layers = nn.Sequential(nn.Sigmoid())
        shape = (num_prototypes, config.feature_dim, 1, 1)
        self.prototype_vectors = nn.Parameter(torch.rand(shape))
        self.ones = nn.Parameter(torch.ones(shape), requires_grad=False)

        #: per class: ascending global indices of its prototypes (the group projection's columns)
        self.class_prototypes: list[list[int]] = [
            torch.nonzero(identity[:, c]).flatten().tolist() for c in range(config.num_classes)
        ]
        #: classes that own prototypes (the official ``non_zero_class``), in order
        self.group_classes: list[int] = [c for c, protos in enumerate(self.class_prototypes) if protos]
        self.prototype_scale = torch.full((num_prototypes,), -1, dtype=torch.long)
        for s, (start, end) in self.scale_ranges.items():
            self.prototype_scale[start:end] = s

        if config.grouped:
            self.group_projection = nn.ModuleList(
                [nn.Linear(len(self.class_prototypes[c]), config.num_groups, bias=False) for c in self.group_classes]
            )
            with torch.no_grad():
                for layer in self.group_projection:
                    layer.weight.copy_(projection_simplex(layer.weight))
            n_groups = config.num_groups * len(self.group_classes)
            self.group_class_identity = torch.zeros(n_groups, config.num_classes)
            for k, c in enumerate(self.group_classes):
                self.group_class_identity[k * config.num_groups : (k + 1) * config.num_groups, c] = 1
            self.last_layer_group = nn.Linear(n_groups, config.num_classes, bias=False)
            head_identity = self.group_class_identity.t()
            layer = self.last_layer_group
        else:
            self.last_layer = nn.Linear(num_prototypes, config.num_classes, bias=False)
            head_identity = identity.t()
            layer = self.last_layer
        with torch.no_grad():  # +1 for the owning class, incorrect_strength elsewhere
            layer.weight.copy_(head_identity + config.incorrect_strength * (1 - head_identity))

    # ---------------------------------------------------------------- properties
    @property
    def num_prototypes(self) -> int:
        return int(self.prototype_vectors.shape[0])

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def grouped(self) -> bool:
        return self.config.grouped

    @property
    def class_names(self) -> tuple[str, ...]:
        info = DATASETS.get(self.config.dataset)
        if info is not None and len(info.classes) == self.num_classes:
            return info.classes
        return tuple(f"class {i}" for i in range(self.num_classes))

    def group_columns(self, class_index: int) -> list[int]:
        """Columns of ``last_layer_group`` (and of ``group_activations``) of a class's groups."""
        if class_index not in self.group_classes:
            return []
        k = self.group_classes.index(class_index)
        return list(range(k * self.num_groups, (k + 1) * self.num_groups))

    def group_weights(self, class_index: int) -> Tensor:
        """``(N_c, |P_c|)`` group projection of a class (columns = ``class_prototypes[c]``)."""
        if not self.grouped:
            raise ModelError("a stage-1 ScaleProtoSeg model has no groups")
        if class_index not in self.group_classes:
            return torch.zeros(self.num_groups, 0)
        return self.group_projection[self.group_classes.index(class_index)].weight.detach()

    @torch.no_grad()
    def threshold_groups_(self, threshold: float) -> "ScaleProtoSeg":
        """Zero group weights below ``threshold`` in place (the official ``threshold_save``)."""
        for layer in self.group_projection:
            layer.weight.copy_(threshold_weights(layer.weight, threshold))
        return self

    # ------------------------------------------------------------------- forward
    def conv_features(self, x: Tensor) -> Tensor:
        return self.add_on_layers(self.features(x))

    def scale_distances(self, features: Tensor) -> Tensor:
        """Squared L2 distance of each scale's 64-ch slice to that scale's prototypes: [B, P, h, w]."""
        b, channels, h, w = features.shape
        dim = channels // self.num_scales
        per_scale = features.view(b, self.num_scales, dim, h, w)
        prototypes = self.prototype_vectors.view(self.num_prototypes, dim, 1, 1)
        ones = self.ones.view(self.num_prototypes, dim, 1, 1)
        out = []
        for s in range(self.num_scales):
            start, end = self.scale_ranges[s]
            z = per_scale[:, s]
            p = prototypes[start:end]
            z2 = F.conv2d(z * z, ones[start:end])
            p2 = (p * p).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
            out.append(F.relu(z2 - 2 * F.conv2d(z, p) + p2))
        return torch.cat(out, dim=1)

    def distance_to_similarity(self, distances: Tensor) -> Tensor:
        return torch.log((distances + 1) / (distances + self.epsilon))

    def compute_groups(self, activations: Tensor) -> Tensor:
        """``[N, P]`` prototype activations -> ``[N, N_c*C']`` group activations ``exp(W_c a_c)``."""
        outs = []
        for k, c in enumerate(self.group_classes):
            columns = self.class_prototypes[c]
            outs.append(torch.exp(self.group_projection[k](activations[:, columns])))
        return torch.cat(outs, dim=1)

    def head(self, activations: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """``[N, P]`` activations -> (``[N, C]`` logits, ``[N, G]`` group activations or None)."""
        if self.grouped:
            groups = self.compute_groups(activations)
            return self.last_layer_group(groups), groups
        return self.last_layer(activations), None

    def forward(self, x: Tensor) -> ScaleProtoSegOutput:
        distances = self.scale_distances(self.conv_features(x))
        b, p, h, w = distances.shape
        activations = self.distance_to_similarity(distances)
        flat = activations.permute(0, 2, 3, 1).reshape(-1, p)
        logits, groups = self.head(flat)
        logits = logits.view(b, h, w, -1).permute(0, 3, 1, 2)
        if groups is not None:
            groups = groups.view(b, h, w, -1).permute(0, 3, 1, 2)
        return ScaleProtoSegOutput(logits, distances, activations, groups)

    # ------------------------------------------------------------ pre/post process
    def input_size(self, image_hw: tuple[int, int], size: Optional[int] = None) -> tuple[int, int]:
        return model_input_size(self.config.dataset, image_hw, size)

    def preprocess(self, image: np.ndarray, input_hw: tuple[int, int]) -> Tensor:
        """RGB uint8 ``[H, W, 3]`` -> ImageNet-normalised ``[1, 3, h, w]`` on the model's device."""
        from ..imaging import normalise, resize_image

        resized = resize_image(image, input_hw)
        device = self.prototype_vectors.device
        return normalise(resized, IMAGENET_MEAN, IMAGENET_STD)[None].to(device)

    def describe(self, threshold: Optional[float] = None) -> dict[str, Any]:
        """Summary for the GUI/CLI: dataset, C, P per scale, N_c, α, used prototypes."""
        info: dict[str, Any] = {
            "dataset": self.config.dataset,
            "stage": 2 if self.grouped else 1,
            "num_classes": self.num_classes,
            "num_prototypes": self.num_prototypes,
            "prototypes_per_scale": [end - start for _, (start, end) in sorted(self.scale_ranges.items())],
            "scale_dilations": list(SCALE_DILATIONS[: self.num_scales]),
            "msc_scales": list(self.config.msc_scales),
        }
        if self.grouped:
            info["groups_per_class"] = self.num_groups
            info["threshold"] = threshold
            used = set()
            for c in self.group_classes:
                w = self.group_weights(c)
                if threshold is not None:
                    w = threshold_weights(w, threshold)
                for j in torch.nonzero((w > 0).any(dim=0)).flatten().tolist():
                    used.add(self.class_prototypes[c][j])
            info["used_prototypes"] = len(used)
        return info


def model_input_size(dataset: str, image_hw: tuple[int, int], size: Optional[int] = None) -> tuple[int, int]:
    """Model input size for an image, as the official evaluation resizes: Pascal square (513),
    Cityscapes native, ADE shorter side 512. ``size`` overrides: the square side for Pascal, the shorter side
    otherwise (keeping the aspect ratio)."""
    info = dataset_info(dataset)
    h, w = int(image_hw[0]), int(image_hw[1])
    if info.resize == "square":
        side = size or info.default_size or 513
        return side, side
    target = size or (info.default_size if info.resize == "shorter" else None)
    if target is None:
        return h, w
    scale = target / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


# ----------------------------------------------------------------------------- checkpoints

CONVERTED_FORMAT = "fssgui-scaleprotoseg"


@dataclass
class ScaleProtoSegCheckpoint:
    """Tensors and metadata read from a checkpoint file, before building the model."""

    path: Path
    state_dict: "OrderedDict[str, Tensor]"
    kind: str  # "pickled-module", "state-dict", "converted", "safetensors"
    class_path: str = ""
    prototype_class_identity: Optional[Tensor] = None
    scale_ranges: Optional[dict[int, tuple[int, int]]] = None
    msc_scales: Optional[tuple[float, ...]] = None
    num_scales: Optional[int] = None
    epsilon: Optional[float] = None
    dataset: Optional[str] = None
    attributes: dict[str, Any] = field(default_factory=dict)


def _read_plain_state_dict(path: Path) -> tuple[Optional[dict], str]:
    """The file through the shared safe reader (:mod:`fssgui.models.checkpoints`): ``(obj, kind)``
    with kind ``"converted"`` (our own file, returned whole), ``"safetensors"`` or ``"state-dict"``
    (the state dict), or ``(None, "pickled-module")`` for a whole pickled model (the official
    format), which only the restricted unpickler may read."""
    from .checkpoints import PickledCodeError, read_checkpoint_file, state_dict_from

    try:
        obj = read_checkpoint_file(path)
    except PickledCodeError:
        return None, "pickled-module"
    if isinstance(obj, dict) and obj.get("format") == CONVERTED_FORMAT:
        return obj, "converted"
    kind = "safetensors" if path.suffix.lower() == ".safetensors" else "state-dict"
    return state_dict_from(obj, path), kind


def read_checkpoint(path: str | Path) -> ScaleProtoSegCheckpoint:
    """Read any accepted ScaleProtoSeg checkpoint (official whole pickle, plain state dict,
    our converted file, safetensors) without executing code from it. Any malformed content is a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    obj, kind = _read_plain_state_dict(path)
    try:
        ckpt = _checkpoint_from(obj, kind, path)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: malformed ScaleProtoSeg metadata ({type(exc).__name__}: {exc})") from None
    _check_metadata(ckpt)
    return ckpt


def _check_metadata(ckpt: ScaleProtoSegCheckpoint) -> None:
    """Numbers read from the file that shape the model must be sane (before anything is built)."""
    path = ckpt.path
    if ckpt.num_scales is not None and not (type(ckpt.num_scales) is int and 1 <= ckpt.num_scales <= 16):
        raise CheckpointError(f"{path}: num_scales {ckpt.num_scales!r} is not an integer in 1..16")
    if ckpt.epsilon is not None and not (isinstance(ckpt.epsilon, (int, float)) and 0 < ckpt.epsilon < 1):
        raise CheckpointError(f"{path}: epsilon {ckpt.epsilon!r} is not a number in (0, 1)")
    if ckpt.msc_scales is not None and not (len(ckpt.msc_scales) <= 8
                                            and all(0 < s <= 8 for s in ckpt.msc_scales)):
        raise CheckpointError(f"{path}: msc_scales {ckpt.msc_scales!r} are not up to 8 factors in (0, 8]")
    if ckpt.scale_ranges is not None and not all(0 <= a <= b for a, b in ckpt.scale_ranges.values()):
        raise CheckpointError(f"{path}: scale ranges {ckpt.scale_ranges!r} are not (start, end) index pairs")
    if ckpt.dataset is not None and not isinstance(ckpt.dataset, str):
        raise CheckpointError(f"{path}: dataset {ckpt.dataset!r} is not a name")


def _checkpoint_from(obj, kind: str, path: Path) -> ScaleProtoSegCheckpoint:
    """The tensors and metadata of what :func:`_read_plain_state_dict` read."""
    from .safe_pickle import load_pickled_module, plain_value

    if kind == "pickled-module":
        module = load_pickled_module(path)
        attrs = {k: plain_value(v) for k, v in module.attributes().items()}
        ckpt = ScaleProtoSegCheckpoint(path, module.state_dict, kind, class_path=module.class_path, attributes=attrs)
        identity = attrs.get("prototype_class_identity")
        if isinstance(identity, Tensor):
            ckpt.prototype_class_identity = identity.float()
        ranges = attrs.get("scale_num_prototypes")
        if isinstance(ranges, dict):
            ckpt.scale_ranges = {int(k): (int(v[0]), int(v[1])) for k, v in ranges.items()}
        scales = plain_value(module.attributes("features").get("scales"))
        if isinstance(scales, (list, tuple)):
            ckpt.msc_scales = tuple(float(s) for s in scales)
        if isinstance(attrs.get("num_scales"), int):
            ckpt.num_scales = attrs["num_scales"]
        if isinstance(attrs.get("epsilon"), float):
            ckpt.epsilon = attrs["epsilon"]
        if attrs.get("prototype_activation_function") not in (None, "log"):
            raise CheckpointError(
                f"{path}: prototype activation {attrs['prototype_activation_function']!r} is not supported (only 'log')"
            )
        if attrs.get("scale_head") is not None:
            raise CheckpointError(f"{path}: models with a scale_head are not supported")
        return ckpt
    if kind == "converted":
        state = obj.get("state_dict")
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: converted checkpoint without a state_dict of tensors")
        config = obj.get("config", {})
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: converted checkpoint whose config is not a dict")
        ckpt = ScaleProtoSegCheckpoint(path, OrderedDict(state), kind, attributes=dict(config))
        if isinstance(obj.get("prototype_class_identity"), Tensor):
            ckpt.prototype_class_identity = obj["prototype_class_identity"].float()
        if isinstance(config.get("scale_ranges"), dict):
            ckpt.scale_ranges = {int(k): (int(v[0]), int(v[1])) for k, v in config["scale_ranges"].items()}
        if "msc_scales" in config:
            ckpt.msc_scales = tuple(float(s) for s in config["msc_scales"])
        ckpt.num_scales = config.get("num_scales")
        ckpt.epsilon = config.get("epsilon")
        ckpt.dataset = config.get("dataset")
        return ckpt
    return ScaleProtoSegCheckpoint(path, OrderedDict(obj), kind)


def config_from_state_dict(state: dict[str, Tensor], path: Path, dataset: Optional[str] = None,
                           num_scales: int = 4) -> ScaleProtoSegConfig:
    """Infer the architecture from tensor names and shapes."""
    if "prototype_vectors" not in state:
        raise CheckpointError(f"{path}: no 'prototype_vectors' tensor: not a ScaleProtoSeg checkpoint")
    grouped = "last_layer_group.weight" in state
    head_key = "last_layer_group.weight" if grouped else "last_layer.weight"
    if head_key not in state:
        raise CheckpointError(f"{path}: neither 'last_layer_group.weight' (stage 2) nor 'last_layer.weight' (stage 1)")
    proto = state["prototype_vectors"]
    for key, dims in (("prototype_vectors", 2), (head_key, 2), ("group_projection.0.weight", 2)):
        tensor = state.get(key)
        if tensor is not None and (tensor.dim() < dims or min(tensor.shape) < 1):
            raise CheckpointError(f"{path}: '{key}' has shape {list(tensor.shape)}, not a ScaleProtoSeg weight")
    num_classes = int(state[head_key].shape[0])
    num_groups = int(state["group_projection.0.weight"].shape[0]) if grouped and "group_projection.0.weight" in state else 3
    n_blocks = []
    for layer in range(2, 6):
        blocks = {k.split(".")[3] for k in state if k.startswith(f"features.base.layer{layer}.block")}
        n_blocks.append(len(blocks))
    if min(n_blocks) == 0:
        raise CheckpointError(f"{path}: no 'features.base.layer2..5' backbone tensors (a DeepLabv2 ResNet is expected)")
    if dataset is None:
        dataset = dataset_for_num_classes(num_classes)
        if dataset is None:
            raise CheckpointError(f"{path}: {num_classes} classes matches no known dataset; pass the dataset")
    elif len(dataset_info(dataset).classes) != num_classes:
        raise CheckpointError(
            f"{path}: the checkpoint has {num_classes} classes but {dataset} has {len(dataset_info(dataset).classes)}"
        )
    per_class_scale = max(1, int(proto.shape[0]) // (num_classes * num_scales))
    return ScaleProtoSegConfig(
        dataset=dataset,
        num_classes=num_classes,
        prototypes_per_class_scale=per_class_scale,
        num_scales=num_scales,
        feature_dim=int(proto.shape[1]),
        num_groups=num_groups,
        grouped=grouped,
        msc_scales=dataset_info(dataset).msc_scales,
        n_blocks=tuple(n_blocks),
    )


def check_and_load_state_dict(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Strict load that reports missing / unexpected / shape-mismatched keys by name."""
    from .checkpoints import check_weight_types, mismatch_summary

    expected = model.state_dict()
    problems = mismatch_summary(state, expected)
    if problems:
        raise CheckpointError(f"{path}: does not match the ScaleProtoSeg model: {problems}")
    check_weight_types(state, expected, path)
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_scaleprotoseg(
    path: str | Path,
    dataset: Optional[str] = None,
    device: str | torch.device = "cpu",
    log: Optional[Callable[[str], None]] = None,
) -> ScaleProtoSeg:
    """Build a ScaleProtoSeg model from a checkpoint file (no code from the file runs)."""
    from .checkpoints import check_finite_weights

    ckpt = read_checkpoint(path)
    path = ckpt.path
    check_finite_weights(ckpt.state_dict, path)
    dataset = dataset or ckpt.dataset
    config = config_from_state_dict(ckpt.state_dict, path, dataset, num_scales=ckpt.num_scales or 4)
    if ckpt.msc_scales is not None:
        config.msc_scales = ckpt.msc_scales
    if ckpt.epsilon is not None:
        config.epsilon = float(ckpt.epsilon)
    identity = ckpt.prototype_class_identity
    num_prototypes = int(ckpt.state_dict["prototype_vectors"].shape[0])
    if identity is None and num_prototypes != config.num_prototypes:
        raise CheckpointError(
            f"{path}: {num_prototypes} prototypes is not {config.num_classes} classes x "
            f"{config.prototypes_per_class_scale} x {config.num_scales} scales (duplicates were pruned?) and the file "
            "carries no prototype_class_identity: convert the official pickle instead"
        )
    if identity is not None and tuple(identity.shape) != (num_prototypes, config.num_classes):
        raise CheckpointError(f"{path}: prototype_class_identity {tuple(identity.shape)} does not fit the tensors")
    try:
        model = ScaleProtoSeg(config, identity, ckpt.scale_ranges)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # a shape the file's metadata makes impossible
        raise CheckpointError(f"{path}: the ScaleProtoSeg model it describes cannot be built "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    check_and_load_state_dict(model, ckpt.state_dict, path)
    model.checkpoint_path = path
    model.checkpoint_kind = ckpt.kind
    if log is not None:
        log(
            f"{path.name}: ScaleProtoSeg stage {2 if config.grouped else 1}, {config.dataset}, "
            f"{num_prototypes} prototypes ({ckpt.kind}{', ' + ckpt.class_path if ckpt.class_path else ''})"
        )
    return model.to(device).eval()


def save_converted(model: ScaleProtoSeg, path: str | Path) -> Path:
    """Write a file that ``torch.load(weights_only=True)`` reads: state dict + the pickled-only
    attributes (class identity, scale ranges, MSC scales) so a converted official checkpoint
    needs no pickle afterwards."""
    path = Path(path)
    config = asdict(model.config)
    config["scale_ranges"] = {str(k): list(v) for k, v in model.scale_ranges.items()}
    config["msc_scales"] = list(model.config.msc_scales)
    config["n_blocks"] = list(model.config.n_blocks)
    payload = {
        "format": CONVERTED_FORMAT,
        "version": 1,
        "config": config,
        "prototype_class_identity": model.prototype_class_identity.clone(),
        "state_dict": OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, str(path))
    return path


def build_untrained(dataset: str, grouped: bool = True) -> ScaleProtoSeg:
    """A randomly initialised ScaleProtoSeg for ``dataset`` (full ResNet-101; nothing downloaded)."""
    info = dataset_info(dataset)
    return ScaleProtoSeg(ScaleProtoSegConfig(dataset=dataset, num_classes=len(info.classes), grouped=grouped,
                                             msc_scales=info.msc_scales)).eval()
