"""ImageNet backbone files a user points SimPropNet/I²R training at: torchvision .pth, timm .safetensors."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from fssgui.errors import CheckpointError
from fssgui.models.checkpoints import PickledCodeError
from fssgui.models.resnet_features import build_resnet50, load_backbone_weights


@pytest.fixture(scope="module")
def source_state():
    torch.manual_seed(3)
    net = build_resnet50()
    for p in net.parameters():
        p.data.normal_()
    for name, buf in net.named_buffers():
        if buf.is_floating_point():
            buf.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_loaded(backbone, state):
    for key, value in backbone.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, state[key]), key


def test_torchvision_pth_with_prefix_loads(tmp_path, source_state):
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {f"module.backbone.{k}": v for k, v in source_state.items()}}, path)
    backbone = build_resnet50(keep=("layer1", "layer2", "layer3"))
    ignored = load_backbone_weights(backbone, path)
    _assert_loaded(backbone, source_state)
    assert any(k.startswith("layer4.") for k in ignored) and "fc.weight" in ignored


def test_timm_safetensors_without_batch_counters_loads(tmp_path, source_state):
    timm_like = {k: v.contiguous() for k, v in source_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "model.safetensors"
    save_file(timm_like, str(path))
    backbone = build_resnet50()
    assert load_backbone_weights(backbone, path) == []
    _assert_loaded(backbone, source_state)


def test_bad_backbone_files_are_named_errors(tmp_path, source_state):
    backbone = build_resnet50(keep=("layer1", "layer2", "layer3"))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}

    wrong = dict(source_state)
    wrong["layer2.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(wrong, path)
    with pytest.raises(CheckpointError, match=r"wrong\.pth.*layer2\.0\.conv1\.weight"):
        load_backbone_weights(backbone, path)

    partial = {k: v for k, v in source_state.items() if not k.startswith("layer3.")}
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in partial.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"partial\.safetensors.*missing key 'layer3"):
        load_backbone_weights(backbone, path)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "code.pth"
    torch.save({"conv1.weight": Payload()}, path, pickle_module=pickle)
    with pytest.raises(PickledCodeError, match="code.pth"):
        load_backbone_weights(backbone, path)

    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(backbone, tmp_path / "absent.pth")
    for key, value in backbone.state_dict().items():  # nothing was half-loaded
        assert torch.equal(value, before[key]), key


def test_the_backbone_is_torchvisions_resnet_with_one_relu_module_per_call():
    """Same keys and outputs as torchvision's resnet50, but no ReLU module runs twice in a forward
    (captum's DeepLift hooks each nonlinearity module once per forward)."""
    from torchvision.models import resnet50

    ours = build_resnet50().eval()
    theirs = resnet50(weights=None).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    calls: dict[int, int] = {}
    relus = [m for m in ours.modules() if isinstance(m, torch.nn.ReLU)]
    for m in relus:
        m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert len(relus) == 1 + 3 * 16 and sorted(calls.values()) == [1] * len(relus)
