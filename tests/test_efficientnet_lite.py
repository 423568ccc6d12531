"""The built-in matchers' EfficientNet-Lite equals timm's ``tf_efficientnet_liteN`` on the same weights."""
from __future__ import annotations

import pytest
import timm  # a test dependency (pyproject's [test] extra), not the package's
import torch

from fssgui.errors import ModelError
from fssgui.models.efficientnet_lite import EfficientNetLiteFeatures, efficientnet_block_features, efficientnet_lite


def _timm_twin(net: EfficientNetLiteFeatures, variant: int) -> torch.nn.Module:
    """timm's network with ``net``'s tensors, matched by position (both list them in one order)."""
    twin = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).eval()
    ours = [(k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [
        k for k in twin.state_dict()
        if not k.endswith("num_batches_tracked") and k.startswith(("conv_stem.", "bn1.", "blocks."))
    ]
    # the same keys: a state dict saved from either network loads into the other
    assert [name for name, _ in ours] == theirs
    for (name, value), key in zip(ours, theirs):
        assert tuple(value.shape) == tuple(twin.state_dict()[key].shape), (name, key)
    missing, _ = twin.load_state_dict({key: value for (_, value), key in zip(ours, theirs)}, strict=False)
    assert all(not k.startswith(("conv_stem.", "bn1.", "blocks.")) for k in missing)
    return twin


@pytest.mark.parametrize("variant", [0, 2])
def test_every_block_equals_timm_on_the_package_weights(variant):
    net = efficientnet_lite(variant)
    twin = _timm_twin(net, variant)
    stages = range(len(net.blocks))
    torch.manual_seed(variant)
    # odd sizes: the stride-2 "same" padding is asymmetric there; 128 is the symmetric case
    for size in [(97, 131), (128, 128)]:
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            ours = efficientnet_block_features(net, images, stages)
            theirs = efficientnet_block_features(twin, images, stages)
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        assert len(ours) == sum(len(stage) for stage in twin.blocks)
        for (stage, a), (_, b) in zip(ours, theirs):
            assert a.shape == b.shape, (stage, size)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_weights_are_the_package_imagenet_weights_not_a_fresh_init():
    net = efficientnet_lite(0)
    fresh = EfficientNetLiteFeatures(0)
    assert not torch.equal(net.conv_stem.weight, fresh.conv_stem.weight)
    assert not net.training
    # the stem's running statistics come from ImageNet training, not the default 0 / 1
    assert net.bn1.running_var.ne(1).any()


def test_an_unknown_variant_is_a_clear_error():
    with pytest.raises(ModelError, match="EfficientNet-Lite7 does not exist"):
        EfficientNetLiteFeatures(7)
