"""Shared pieces of the ScaleProtoSeg tests (the model, fssgui.prototypes and the Prototypes tab):
a shallow random model, a test image, a model whose head predicts several classes (and the
module-scoped fixtures ``model``, ``run``, ``top_class`` on it: import them into a test module to
use them), and official whole-module pickles written with the official class paths."""
from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fssgui.models.scaleprotoseg import (
    Bottleneck,
    ConcatASPP,
    ConvBnReLU,
    DeepLabV2Features,
    MultiScaleInputs,
    ResLayer,
    ScaleProtoSeg,
    ScaleProtoSegConfig,
    Stem,
)
from fssgui.prototypes.run import largest_class, predicted_class_shares, run_scaleprotoseg

SMALL_BLOCKS = (1, 1, 1, 1)  # one bottleneck per layer: same strides, same key layout as ResNet-101
ALPHA = 0.05  # the official group threshold


def small_model(seed: int = 0, **overrides) -> ScaleProtoSeg:
    torch.manual_seed(seed)
    config = ScaleProtoSegConfig(n_blocks=SMALL_BLOCKS, **overrides)
    model = ScaleProtoSeg(config).eval()
    with torch.no_grad():  # make BN non-trivial so a wrong load would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def make_image(h: int = 90, w: int = 120) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([(xx * 2.1) % 256, (yy * 2.7) % 256, (xx + 2 * yy) % 256], -1).astype(np.uint8)
    image[20:60, 30:80] = (220, 200, 40)
    return image


# ----------------------------------------------------------------------- official pickles

OFFICIAL_CLASS_PATHS = {
    MultiScaleInputs: ("segmentation.utils", "MSC"),
    DeepLabV2Features: ("deeplab_pytorch.libs.models.deeplabv2_multiscale", "DeepLabV2"),
    ConcatASPP: ("deeplab_pytorch.libs.models.deeplabv2_multiscale", "_ASPP"),
    Stem: ("deeplab_pytorch.libs.models.resnet", "_Stem"),
    ResLayer: ("deeplab_pytorch.libs.models.resnet", "_ResLayer"),
    Bottleneck: ("deeplab_pytorch.libs.models.resnet", "_Bottleneck"),
    ConvBnReLU: ("deeplab_pytorch.libs.models.resnet", "_ConvBnReLU"),
}
OFFICIAL_TOP_PACKAGES = ("segmentation", "deeplab_pytorch")


@contextlib.contextmanager
def official_class_names(model: ScaleProtoSeg):
    """While saving only: give every module of ``model`` a class registered under the official
    module path (fake modules in sys.modules), with the official attributes; undo afterwards."""
    stage_module = "segmentation.model.model_multiscale_group" if model.grouped else "segmentation.model.model_multiscale"
    paths = dict(OFFICIAL_CLASS_PATHS)
    paths[ScaleProtoSeg] = (stage_module, "PPNetMultiScale")
    created: list[str] = []
    fakes: dict[type, type] = {}
    for ours, (module_name, class_name) in paths.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                created.append(name)
        fake = type(class_name, (ours,), {"__module__": module_name, "__qualname__": class_name})
        setattr(sys.modules[module_name], class_name, fake)
        fakes[ours] = fake
    originals = {}
    for module in model.modules():
        if type(module) in fakes:
            originals[module] = type(module)
            module.__class__ = fakes[type(module)]
    # the plain attributes the official PPNetMultiScale pickles next to its tensors
    config = model.__dict__.pop("config")
    extra = {"scale_num_prototypes": dict(model.scale_ranges), "num_scales": model.num_scales,
             "prototype_activation_function": "log", "scale_head": None, "patch_classification": True,
             "incorrect_strength": -0.5}
    extra = {k: v for k, v in extra.items() if k not in model.__dict__}
    model.__dict__.update(extra)
    try:
        yield
    finally:
        for module, cls in originals.items():
            module.__class__ = cls
        for key in extra:
            model.__dict__.pop(key, None)
        model.__dict__["config"] = config
        for name in reversed(created):
            sys.modules.pop(name, None)


def save_official_pickle(model: ScaleProtoSeg, path: Path) -> Path:
    with official_class_names(model):
        torch.save(model, str(path))
    return path


def several_class_model() -> ScaleProtoSeg:
    """A shallow Cityscapes-layout model whose head is perturbed so that several classes are
    predicted on the test image (the default +1/-0.5 head predicts one class everywhere)."""
    model = small_model(seed=4)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        model.last_layer_group.weight.add_(3 * torch.randn(model.last_layer_group.weight.shape, generator=generator))
    return model.requires_grad_(False)


def forward(model: ScaleProtoSeg, run):
    """The model's own outputs on a run's image at the run's input size."""
    with torch.no_grad():
        return model(model.preprocess(run.image, run.input_hw))


@pytest.fixture(scope="module")
def model() -> ScaleProtoSeg:
    """:func:`several_class_model`, once per test module."""
    return several_class_model()


@pytest.fixture(scope="module")
def run(model):
    # Cityscapes keeps the image size unless told: size=49 -> input 49x65, a 7x9 grid, and the
    # image (60x80) is not a multiple of the grid, so the cell mapping is not trivial
    return run_scaleprotoseg(model, make_image(60, 80), size=49)


@pytest.fixture(scope="module")
def top_class(run) -> int:
    """The class with prototypes predicted on the largest area of ``run`` at :data:`ALPHA`."""
    return largest_class(run, predicted_class_shares(run, ALPHA))
