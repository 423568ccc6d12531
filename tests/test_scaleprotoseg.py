"""ScaleProtoSeg, the model: architecture, prototype/group maths on hand-computed tensors, the
restricted unpickler (official whole-module pickles, malicious pickles), checkpoint validation,
and its entries in the one model registry. The analysis on top of it (fssgui.prototypes) is
tested in test_prototypes_*.py.

Most tests use a shallow backbone (one bottleneck per layer: same strides, same key layout);
one test builds the full ResNet-101 for the official key count and shapes.
"""
from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fssgui.errors import CheckpointError, ModelError
from fssgui.models import scaleprotoseg as sps
from fssgui.models.registry import TASK_FSS, TASK_SEMSEG, build_model, get_entry, list_models
from fssgui.models.safe_pickle import Placeholder, load_pickled_module, unpickle_checkpoint
from fssgui.models.scaleprotoseg import (
    DeepLabV2Features,
    MultiScaleInputs,
    ScaleProtoSeg,
    ScaleProtoSegConfig,
    feature_grid_size,
    load_scaleprotoseg,
    projection_simplex,
    threshold_weights,
)
from fssgui.prototypes.graph import explain_class
from fssgui.prototypes.run import run_scaleprotoseg
from prototypes_testkit import OFFICIAL_TOP_PACKAGES, SMALL_BLOCKS, make_image, save_official_pickle, small_model


@pytest.fixture(scope="module")
def grouped_model() -> ScaleProtoSeg:
    return small_model(seed=1)


@pytest.fixture(scope="module")
def official_file(grouped_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("official") / "checkpoints"
    folder.mkdir()
    return save_official_pickle(grouped_model, folder / "th-0.05-nopush-group_last.pth")


def test_official_pickle_loads_without_running_or_importing_code(grouped_model, official_file):
    for name in OFFICIAL_TOP_PACKAGES:
        assert name not in sys.modules
    # it really is a whole-module pickle of the official classes: torch refuses it or needs their code
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(official_file), weights_only=True)
    with pytest.raises(ModuleNotFoundError):
        torch.load(str(official_file), weights_only=False)

    pickled = load_pickled_module(official_file)
    assert pickled.class_path == "segmentation.model.model_multiscale_group.PPNetMultiScale"
    assert pickled.module_classes["features"] == "segmentation.utils.MSC"
    assert pickled.module_classes["features.base.layer2.block1"] == "deeplab_pytorch.libs.models.resnet._Bottleneck"
    expected = grouped_model.state_dict()
    assert list(pickled.state_dict) == list(expected)
    for key, value in expected.items():
        assert torch.equal(pickled.state_dict[key], value), key
    attrs = pickled.attributes()
    assert torch.equal(attrs["prototype_class_identity"], grouped_model.prototype_class_identity)
    assert attrs["scale_num_prototypes"] == grouped_model.scale_ranges
    for name in OFFICIAL_TOP_PACKAGES:
        assert name not in sys.modules

    model = load_scaleprotoseg(official_file)
    assert model.checkpoint_kind == "pickled-module"
    assert model.grouped and model.config.dataset == "cityscapes"
    x = torch.randn(1, 3, 49, 49)
    with torch.no_grad():
        ours, theirs = model(x), grouped_model(x)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)
    assert torch.allclose(ours.group_activations, theirs.group_activations, rtol=1e-5)


def test_pickled_class_identity_is_used_when_prototypes_were_pruned(tmp_path):
    """After the push de-duplicates prototypes, P != C*M*S: the pickled identity decides."""
    identity = sps.default_class_identity(19, 3, 4)
    keep = [i for i in range(228) if i not in (1, 58)]  # class 0 lost one prototype at scales 0 and 1
    identity = identity[keep]
    ranges = {0: (0, 56), 1: (56, 112), 2: (112, 169), 3: (169, 226)}
    torch.manual_seed(3)
    model = ScaleProtoSeg(ScaleProtoSegConfig(n_blocks=SMALL_BLOCKS), identity, ranges).eval()
    assert model.class_prototypes[0] == [0, 1, 56, 57, 112, 113, 114, 169, 170, 171]
    assert tuple(model.group_projection[0].weight.shape) == (3, 10)
    path = save_official_pickle(model, tmp_path / "pruned.pth")
    loaded = load_scaleprotoseg(path)
    assert loaded.class_prototypes == model.class_prototypes
    assert loaded.scale_ranges == ranges
    # a plain state dict of it cannot say which class owns which prototype
    torch.save(model.state_dict(), tmp_path / "pruned_state.pth")
    with pytest.raises(CheckpointError, match="prototype_class_identity"):
        load_scaleprotoseg(tmp_path / "pruned_state.pth")


def test_stage1_official_pickle_loads_and_explains(tmp_path):
    model = small_model(seed=4, grouped=False, dataset="pascal", num_classes=21, msc_scales=(0.5, 0.75))
    path = save_official_pickle(model, tmp_path / "push_last.pth")
    assert load_pickled_module(path).class_path == "segmentation.model.model_multiscale.PPNetMultiScale"
    loaded = load_scaleprotoseg(path)
    assert not loaded.grouped and loaded.config.dataset == "pascal" and loaded.config.msc_scales == (0.5, 0.75)
    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, model(x).logits, atol=1e-4)
    run = run_scaleprotoseg(loaded, make_image(40, 50), size=41)
    exp = explain_class(run, sps.PASCAL_CLASSES.index("cat"), threshold=0.05)
    assert exp.groups == [] and exp.group_maps is None
    last = model.last_layer.weight.detach()
    assert {e.source: e.weight for e in exp.edges} == {
        p.node_id: pytest.approx(float(last[exp.class_index, p.index])) for p in exp.prototypes}
    assert all(e.target == "class" for e in exp.edges)


class _RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _OpensFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickles_are_refused_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    # os.system inside a torch zip checkpoint, next to real tensors
    payload = {"weights": torch.ones(3), "evil": _RunsShell(f"touch {marker}")}
    torch.save(payload, tmp_path / "shell.pth")
    with pytest.raises(CheckpointError, match="system"):
        unpickle_checkpoint(tmp_path / "shell.pth")
    with pytest.raises(CheckpointError):
        load_scaleprotoseg(tmp_path / "shell.pth")
    # builtins.open (would create the marker file)
    torch.save({"evil": _OpensFile(str(marker))}, tmp_path / "open.pth")
    with pytest.raises(CheckpointError, match="open"):
        unpickle_checkpoint(tmp_path / "open.pth")
    # a raw (non-zip) pickle: refused before unpickling anything
    (tmp_path / "raw.pth").write_bytes(pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2))
    with pytest.raises(CheckpointError):
        load_scaleprotoseg(tmp_path / "raw.pth")
    assert not marker.exists()


def test_unknown_globals_become_inert_placeholders(tmp_path):
    """A callable from a module we do not know is neither imported nor called."""
    marker = tmp_path / "called"
    module = types.ModuleType("evil_payload_module")

    def trigger(path):  # pragma: no cover - must never run
        Path(path).write_text("ran")

    trigger.__module__ = "evil_payload_module"
    trigger.__qualname__ = "trigger"
    module.trigger = trigger

    class Carrier:
        def __reduce__(self):
            return (trigger, (str(marker),))

    sys.modules["evil_payload_module"] = module
    try:
        torch.save({"t": torch.arange(4), "x": Carrier()}, tmp_path / "unknown.pth")
    finally:
        del sys.modules["evil_payload_module"]
    obj, seen = unpickle_checkpoint(tmp_path / "unknown.pth")
    assert "evil_payload_module" not in sys.modules
    assert not marker.exists()
    assert isinstance(obj["x"], Placeholder)
    assert obj["x"].global_name == "evil_payload_module.trigger"
    assert obj["x"].call_args == (str(marker),)
    assert seen["evil_payload_module.trigger"] == "placeholder"
    assert torch.equal(obj["t"], torch.arange(4))
    with pytest.raises(CheckpointError, match="not a pickled module"):
        load_pickled_module(tmp_path / "unknown.pth")


# ----------------------------------------------------------------------------- architecture


def test_full_resnet101_keys_shapes_and_grid():
    torch.manual_seed(0)
    model = get_entry("scaleprotoseg-cityscapes").builder()
    state = model.state_dict()
    assert len(state) == 654
    assert abs(sum(v.numel() for v in state.values()) / 1e6 - 47.36) < 0.01
    shapes = {
        "prototype_vectors": (228, 64, 1, 1),
        "ones": (228, 64, 1, 1),
        "features.base.layer1.conv1.conv.weight": (64, 3, 7, 7),
        "features.base.layer1.conv1.bn.running_var": (64,),
        "features.base.layer2.block1.increase.conv.weight": (256, 64, 1, 1),
        "features.base.layer4.block23.conv3x3.conv.weight": (256, 256, 3, 3),
        "features.base.layer5.block1.shortcut.conv.weight": (2048, 1024, 1, 1),
        "features.base.aspp.c3.weight": (64, 2048, 3, 3),
        "features.base.aspp.c3.bias": (64,),
        "group_projection.18.weight": (3, 12),
        "last_layer_group.weight": (19, 57),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "last_layer.weight" not in state
    assert model.features.base.layer4.block2.conv3x3.conv.dilation == (2, 2)
    assert model.features.base.layer5.block1.conv3x3.conv.dilation == (4, 4)
    assert [model.features.base.aspp.get_submodule(f"c{i}").dilation[0] for i in range(4)] == [6, 12, 18, 24]
    assert model.class_prototypes[0] == [0, 1, 2, 57, 58, 59, 114, 115, 116, 171, 172, 173]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 33))
    grid = feature_grid_size(33, 33)
    assert tuple(out.logits.shape) == (1, 19, *grid)
    assert tuple(out.distances.shape) == (1, 228, *grid)
    assert tuple(out.group_activations.shape) == (1, 57, *grid)
    stage1 = ScaleProtoSeg(ScaleProtoSegConfig(grouped=False))
    assert len(stage1.state_dict()) == 635 and tuple(stage1.last_layer.weight.shape) == (19, 228)


def test_feature_grid_rule_and_actual_sizes(grouped_model):
    assert feature_grid_size(513, 513) == (65, 65)
    assert feature_grid_size(1024, 2048) == (129, 257)
    assert feature_grid_size(321, 321) == (41, 41)
    assert feature_grid_size(500, 375) == (63, 48)
    for h, w in [(65, 91), (50, 37)]:
        with torch.no_grad():
            out = grouped_model(torch.randn(1, 3, h, w))
        assert tuple(out.logits.shape[-2:]) == feature_grid_size(h, w)


def test_dataset_class_lists_and_input_policy():
    assert len(sps.PASCAL_CLASSES) == 21 and sps.PASCAL_CLASSES[0] == "background"
    assert sps.PASCAL_CLASSES[20] == "tvmonitor"
    assert len(sps.CITYSCAPES_CLASSES) == 19 and sps.CITYSCAPES_CLASSES[:3] == ("road", "sidewalk", "building")
    assert len(sps.ADE20K_CLASSES) == 150 and sps.ADE20K_CLASSES[-1] == "flag"
    assert sps.model_input_size("pascal", (375, 500)) == (513, 513)
    assert sps.model_input_size("cityscapes", (1024, 2048)) == (1024, 2048)
    assert sps.model_input_size("ade", (400, 600)) == (512, 768)
    assert sps.model_input_size("cityscapes", (1024, 2048), size=129) == (129, 258)


# ----------------------------------------------------------- distances, activations, groups


def tiny_model(grouped: bool = True) -> ScaleProtoSeg:
    """C=2 classes, M=1 prototype per class and scale, S=4, D=2: P=8, class 0 owns 0,2,4,6."""
    config = ScaleProtoSegConfig(num_classes=2, prototypes_per_class_scale=1, feature_dim=2, n_blocks=SMALL_BLOCKS,
                                 grouped=grouped, dataset="tiny")
    return ScaleProtoSeg(config).eval()


def test_scale_restricted_distances_and_log_activation():
    model = tiny_model()
    assert model.class_prototypes == [[0, 2, 4, 6], [1, 3, 5, 7]]
    with torch.no_grad():
        model.prototype_vectors.copy_(torch.tensor(
            [[0, 0], [1, 1], [0.5, 0], [0, 0], [1, 0], [0, 1], [0.2, 0.2], [0.9, 0.1]]).view(8, 2, 1, 1))
    # one pixel: scale slices z_s = (0,0), (1,0), (0,1), (0.2,0.2)
    z = torch.tensor([0, 0, 1, 0, 0, 1, 0.2, 0.2]).view(1, 8, 1, 1)
    d = model.scale_distances(z).flatten()
    expected = torch.tensor([0.0, 2.0,  # scale 0 vs p0 (0,0), p1 (1,1)
                             0.25, 1.0,  # scale 1 (1,0) vs p2 (0.5,0), p3 (0,0)
                             2.0, 0.0,  # scale 2 (0,1) vs p4 (1,0), p5 (0,1)
                             0.0, 0.50])  # scale 3 (0.2,0.2) vs p6 (0.2,0.2), p7 (0.9,0.1): 0.49 + 0.01
    assert torch.allclose(d, expected, atol=1e-6)
    a = model.distance_to_similarity(torch.tensor([0.0, 1.0]))
    assert torch.allclose(a, torch.tensor([np.log(1e4), np.log(2 / 1.0001)], dtype=torch.float32))


def test_group_activation_and_head_hand_computed():
    model = tiny_model()
    w0 = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 1, 0], [0.25, 0.25, 0.25, 0.25]])
    w1 = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1], [0, 0.5, 0.5, 0]])
    with torch.no_grad():
        model.group_projection[0].weight.copy_(w0)
        model.group_projection[1].weight.copy_(w1)
    a = torch.arange(1, 9, dtype=torch.float32)[None]  # prototype p has activation p+1
    with torch.no_grad():
        logits, groups = model.head(a)
    # class 0 sees a = (1, 3, 5, 7), class 1 sees (2, 4, 6, 8)
    e = np.exp
    expected_groups = [e(2), e(5), e(4), e(2), e(8), e(5)]
    assert np.allclose(groups[0].numpy(), expected_groups, rtol=1e-5)
    # head initialised to +1 own groups, -0.5 the other class's
    assert torch.equal(model.last_layer_group.weight[0], torch.tensor([1, 1, 1, -0.5, -0.5, -0.5]))
    l0 = e(2) + e(5) + e(4) - 0.5 * (e(2) + e(8) + e(5))
    l1 = e(2) + e(8) + e(5) - 0.5 * (e(2) + e(5) + e(4))
    assert np.allclose(logits[0].numpy(), [l0, l1], rtol=1e-5)


def test_stage1_head_is_last_layer_over_activations():
    model = tiny_model(grouped=False)
    a = torch.arange(1, 9, dtype=torch.float32)[None]
    with torch.no_grad():
        logits, groups = model.head(a)
    assert groups is None
    own0, own1 = 1 + 3 + 5 + 7, 2 + 4 + 6 + 8
    assert torch.allclose(logits[0], torch.tensor([own0 - 0.5 * own1, own1 - 0.5 * own0]))


def test_simplex_projection_and_threshold():
    rows = torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0], [0.6, 0.3, -1.0]])
    projected = projection_simplex(rows)
    assert torch.allclose(projected, torch.tensor([[1 / 3] * 3, [1.0, 0, 0], [0.65, 0.35, 0.0]]), atol=1e-6)
    model = small_model()
    for layer in model.group_projection:
        w = layer.weight.detach()
        assert (w >= 0).all() and torch.allclose(w.sum(dim=1), torch.ones(3), atol=1e-5)
    w = torch.tensor([[0.5, 0.04, 0.46]])
    assert torch.allclose(threshold_weights(w, 0.05), torch.tensor([[0.5, 0.0, 0.46]]))  # no renormalisation


def test_msc_takes_elementwise_max_over_the_input_pyramid():
    torch.manual_seed(5)
    base = DeepLabV2Features(64, SMALL_BLOCKS).eval()
    msc = MultiScaleInputs(base, (0.5, 0.75)).eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        full = base(x)
        outs = [full]
        for s in (0.5, 0.75):
            small = base(torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
            outs.append(torch.nn.functional.interpolate(small, size=full.shape[-2:], mode="bilinear", align_corners=False))
        assert torch.allclose(msc(x), torch.stack(outs).max(0).values)
        assert torch.equal(MultiScaleInputs(base, ())(x), full)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_mismatch_is_reported_by_name(grouped_model, tmp_path):
    state = OrderedDict(grouped_model.state_dict())
    del state["features.base.aspp.c1.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["features.base.layer3.block1.reduce.conv.weight"] = torch.zeros(128, 256, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_scaleprotoseg(tmp_path / "bad.pth")
    message = str(info.value)
    assert "features.base.aspp.c1.bias" in message and "extra.weight" in message
    assert "features.base.layer3.block1.reduce.conv.weight (file [128, 256, 3, 3], model [128, 256, 1, 1])" in message
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="prototype_vectors"):
        load_scaleprotoseg(tmp_path / "other.pth")


def test_state_dict_safetensors_and_converted_files_load(grouped_model, official_file, tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        reference = grouped_model(x).logits
    torch.save({"state_dict": grouped_model.state_dict()}, tmp_path / "plain.pth")
    save_file({k: v.contiguous() for k, v in grouped_model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    converted = sps.save_converted(load_scaleprotoseg(official_file), tmp_path / "converted.pth")
    assert torch.load(str(converted), weights_only=True)["format"] == sps.CONVERTED_FORMAT
    for name, kind in [("plain.pth", "state-dict"), ("w.safetensors", "safetensors"), ("converted.pth", "converted")]:
        model = load_scaleprotoseg(tmp_path / name)
        assert model.checkpoint_kind == kind
        with torch.no_grad():
            assert torch.allclose(model(x).logits, reference, atol=1e-5), name
    with pytest.raises(CheckpointError, match="classes"):
        load_scaleprotoseg(tmp_path / "plain.pth", dataset="pascal")


# ----------------------------------------------------------------------------------- registry


def test_scaleprotoseg_models_are_in_the_one_registry_with_their_task(official_file):
    semseg = {e.name: e for e in list_models(TASK_SEMSEG)}
    assert set(semseg) == {"scaleprotoseg-pascal", "scaleprotoseg-cityscapes", "scaleprotoseg-ade"}
    assert all(e.task == TASK_SEMSEG and e.needs_checkpoint and not e.matching for e in semseg.values())
    assert all(e.task == TASK_FSS for e in list_models(TASK_FSS)) and "matcher-effnet" in {e.name for e in list_models()}
    assert set(semseg) <= {e.name for e in list_models()} and not set(semseg) & {e.name for e in list_models(TASK_FSS)}
    # the registry loads the official whole-module pickle through the restricted unpickler
    model = build_model("scaleprotoseg-cityscapes", official_file, task=TASK_SEMSEG)
    assert isinstance(model, ScaleProtoSeg) and model.checkpoint_kind == "pickled-module" and not model.training
    assert model.entry.name == "scaleprotoseg-cityscapes"
    with pytest.raises(CheckpointError, match="19 classes"):  # the entry's dataset fixes the class list
        build_model("scaleprotoseg-pascal", official_file, task=TASK_SEMSEG)
    # each task's models are refused where the other task is expected, with a one-line message
    with pytest.raises(ModelError, match="semantic segmentation model .* not a few-shot segmentation one"):
        build_model("scaleprotoseg-cityscapes", official_file)
    with pytest.raises(ModelError, match="few-shot segmentation model .* not a semantic segmentation one"):
        build_model("matcher-effnet", task=TASK_SEMSEG)
    with pytest.raises(ModelError, match="needs a checkpoint"):
        build_model("scaleprotoseg-ade", task=TASK_SEMSEG)
