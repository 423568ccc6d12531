"""DMTNet's HSNet learner (``fssgui/models/hsnet_learner.py``: memory layouts, the 2x2 support
product, GroupNorm on that layout, reruns that recompute only what an ablated level reaches)
against the official formulas written out naively here, and DMTNet's feature-ablation weights
against the 26 full learner reruns on zeroed pyramids.

A random-weight DMTNet at S = 257, the smallest input at which every squeezed group ends on the
2 x 2 support maps of the 400 input (l4 9² -> 5 -> 3 -> 2, l3 17² -> 5 -> 3 -> 2, l2 33² -> 9 ->
3 -> 2), so the same code paths run as at full size. The official learner (written out here) runs
once; the 28 full reruns use the learner's own forward on the zeroed pyramids, which the layer
tests compare with the official formulas. The learner's weights are He-normal (like
tests/test_dcama_ablation.py), so that its logits are O(1) and every level's ablation moves them
well above float rounding.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fssgui.models.base import EpisodeTensors
from fssgui.models.dmtnet import DMTNet
from fssgui.models.hsnet_learner import CenterPivotConv4d, GroupNorm4d, to_qmcl, to_smcl

SIZE = 257
LEVELS = 13
BOUNDS = (0, 3, 9, 13)  # levels of l4, l3, l2


# ------------------------------------------------------------------------ the official formulas
def naive_center_pivot(conv: CenterPivotConv4d, x: torch.Tensor) -> torch.Tensor:
    """The official ``CenterPivotConv4d.forward`` (contiguous tensors, plain NCHW convolutions)."""
    x = x.contiguous()
    b, c, ha, wa, hb, wb = x.shape
    s = conv.support_stride
    pruned = x[..., ::s, ::s] if s > 1 else x
    ph, pw = pruned.shape[-2:]
    out1 = F.conv2d(pruned.permute(0, 4, 5, 1, 2, 3).reshape(-1, c, ha, wa), conv.conv1.weight, conv.conv1.bias,
                    padding=conv.conv1.padding)
    out1 = out1.view(b, ph, pw, -1, ha, wa).permute(0, 3, 4, 5, 1, 2)
    out2 = F.conv2d(x.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, hb, wb), conv.conv2.weight, conv.conv2.bias,
                    stride=s, padding=conv.conv2.padding)
    out2 = out2.view(b, ha, wa, -1, *out2.shape[-2:]).permute(0, 3, 1, 2, 4, 5)
    return (out1 + out2).contiguous()


def naive_block(block, x):
    for layer in block:
        if isinstance(layer, CenterPivotConv4d):
            x = naive_center_pivot(layer, x)
        elif isinstance(layer, GroupNorm4d):
            x = F.group_norm(x.contiguous(), layer.num_groups, layer.weight, layer.bias, layer.eps)
        else:
            x = torch.relu(x)
    return x


def naive_resize(x, size):
    b, c, ha, wa, hb, wb = x.shape
    y = x.permute(0, 4, 5, 1, 2, 3).reshape(b * hb * wb, c, ha, wa)
    y = F.interpolate(y, size, mode="bilinear", align_corners=True)
    return y.view(b, hb, wb, c, *size).permute(0, 3, 4, 5, 1, 2).contiguous()


def naive_learner(learner, pyramid):
    """The official ``HPNLearner.forward``."""
    sqz4 = naive_block(learner.encoder_layer4, pyramid[0])
    sqz3 = naive_block(learner.encoder_layer3, pyramid[1])
    sqz2 = naive_block(learner.encoder_layer2, pyramid[2])
    mix = naive_block(learner.encoder_layer4to3, naive_resize(sqz4, sqz3.shape[2:4]) + sqz3)
    mix = naive_block(learner.encoder_layer3to2, naive_resize(mix, sqz2.shape[2:4]) + sqz2)
    out = learner.decoder1(mix.mean(dim=(-2, -1)))
    out = F.interpolate(out, (out.shape[-2] * 2, out.shape[-1] * 2), mode="bilinear", align_corners=True)
    return learner.decoder2(out)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core CI machines two threads under load run these
    4-D convolutions about ten times slower (every parallel region waits for a descheduled one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> DMTNet:
    torch.manual_seed(0)
    net = DMTNet()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in net.hpn_learner.named_parameters():
            if param.dim() > 1:  # He-normal: keeps the activations O(1) through the ReLUs
                param.copy_(torch.randn(param.shape, generator=generator) * (2.0 / param[0].numel()) ** 0.5)
            elif name.endswith("weight"):  # GroupNorm scale
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return net.eval()


@pytest.fixture(scope="module")
def prediction(model):
    generator = torch.Generator().manual_seed(4)
    masks = torch.zeros(1, 1, SIZE, SIZE)
    masks[..., 60:200, 90:230] = 1
    batch = EpisodeTensors(torch.randn(1, 3, SIZE, SIZE, generator=generator),
                           torch.randn(1, 1, 3, SIZE, SIZE, generator=generator), masks)
    with torch.no_grad():
        return model.predict(batch, with_scores=True)


@pytest.fixture(scope="module")
def full_reruns(model, prediction):
    """Raw outputs ``[14, 1, 2, h, w]`` (nothing ablated, then each level zeroed) of the whole
    learner on fg and bg pyramids: the 26 + 2 full reruns."""
    shot = prediction.extras["shots"][0]
    outs = {}
    with torch.no_grad():
        for name, pyramid in (("fg", shot.corr), ("bg", shot.bg_corr)):
            rows = [model.hpn_learner(pyramid)]
            for level in range(LEVELS):
                group = max(g for g in range(3) if BOUNDS[g] <= level)
                zeroed = [p.clone() for p in pyramid]
                zeroed[group][:, level - BOUNDS[group]] = 0
                rows.append(model.hpn_learner(zeroed))
            outs[name] = torch.stack(rows)
    return outs


# ------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize(
    "channels,kernel,stride,query,support",
    [(4, 5, 4, 9, 36), (16, 5, 4, 9, 9), (64, 3, 2, 9, 3), (128, 3, 1, 9, 2), (16, 3, 2, 5, 4), (8, 3, 1, 6, 1)],
    ids=["l2-first", "l2-second", "l2-third(pairs)", "mix(2x2)", "4x4-stride2(pairs)", "1x1"],
)
@pytest.mark.parametrize("layout", ["official", "qmcl", "smcl"])
@pytest.mark.parametrize("batch", [1, 2])
def test_center_pivot_conv_equals_official(channels, kernel, stride, query, support, layout, batch):
    torch.manual_seed(1)
    conv = CenterPivotConv4d(channels, 16, kernel, stride)
    x = torch.randn(batch, channels, query, query + 1, support, support)
    stored = {"official": x, "qmcl": to_qmcl(x), "smcl": to_smcl(x)}[layout]
    with torch.no_grad():
        ours = conv(stored)
    want = naive_center_pivot(conv, x)
    assert ours.shape == want.shape
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    # a channel scale goes into the weights: equal to the layer on the scaled input
    scale = torch.linspace(0.0, 2.0, channels)
    with torch.no_grad():
        scaled = conv(stored, channel_scale=scale, pruned=conv.pruned_input(stored))
    want = naive_center_pivot(conv, x * scale.view(1, -1, 1, 1, 1, 1))
    torch.testing.assert_close(scaled, want, rtol=1e-5, atol=1e-5)
    if support == 2 and stride == 1:  # the 9-product path agrees with the 16 position pairs
        pairs = torch.zeros_like(want.permute(0, 4, 5, 2, 3, 1).reshape(batch, 4, -1, 16))
        xs = to_smcl(x).permute(0, 4, 5, 2, 3, 1).reshape(batch, 4, -1, channels)
        for p_in, p_out, ky, kx in conv._position_pairs(2, 2):
            pairs[:, p_out] += xs[:, p_in] @ conv.conv2.weight[:, :, ky, kx].t()
        assert len(conv._position_pairs(2, 2)) == 16
        winograd = torch.zeros_like(pairs)
        with torch.no_grad():
            conv._support_conv_2x2(xs, winograd, conv.conv2.weight)
        torch.testing.assert_close(winograd, pairs.detach(), rtol=1e-5, atol=1e-5)


def test_group_norm_on_the_layout_equals_group_norm():
    """Large maps with a large mean (the variance is computed from centred values), both layouts
    in, SMCL out; gradients flow."""
    torch.manual_seed(2)
    norm = GroupNorm4d(4, 16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) + 0.5)
        norm.bias.copy_(torch.randn(16))
    x = torch.randn(2, 16, 20, 21, 13, 13) * 0.5 + 40.0
    want = F.group_norm(x.double(), 4, norm.weight.double(), norm.bias.double(), norm.eps).float()
    for stored in (x, to_qmcl(x), to_smcl(x)):
        out = norm(stored)
        torch.testing.assert_close(out, want, rtol=0, atol=2e-5)
        assert out.permute(0, 4, 5, 2, 3, 1).is_contiguous()
    leaf = x.clone().requires_grad_(True)
    norm(leaf).square().sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    # other ranks are nn.GroupNorm's
    flat = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(norm(flat), F.group_norm(flat, 4, norm.weight, norm.bias, norm.eps))


# ------------------------------------------------------------------------------- the learner
def test_learner_forward_equals_official(model, prediction, full_reruns):
    shot = prediction.extras["shots"][0]
    with torch.no_grad():
        want = naive_learner(model.hpn_learner, shot.bg_corr)
    scale = float(want.abs().max())
    assert scale > 0.1  # He-normal weights: the logits are O(1)
    torch.testing.assert_close(shot.bg_learner.raw, want, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(full_reruns["bg"][0], want, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(prediction.logits, model._to_size(shot.learner.raw, (SIZE, SIZE)))


def test_reruns_equal_full_reruns(model, prediction, full_reruns):
    """Every single-level ablation (and a row scaling levels of several groups by fractions) equals
    the learner on the scaled pyramid; rows batched by 4 (accelerators) equal one at a time."""
    shot = prediction.extras["shots"][0]
    keep = torch.ones(LEVELS + 2, LEVELS)
    keep[1 : LEVELS + 1] -= torch.eye(LEVELS)
    keep[LEVELS + 1, [1, 5, 11]] = torch.tensor([0.5, 0.0, 2.0])
    with torch.no_grad():
        for chunk, name, run, pyramid in ((1, "fg", shot.learner, shot.corr), (4, "bg", shot.bg_learner, shot.bg_corr)):
            out = model.hpn_learner.rerun(run, keep, chunk)
            want = full_reruns[name]
            scale = float(want.abs().max())
            assert out.shape == (LEVELS + 2, *want.shape[1:])
            torch.testing.assert_close(out[: LEVELS + 1], want, rtol=0, atol=1e-5 * scale)
            scaled = [p.clone() for p in pyramid]
            scaled[0][:, 1] *= 0.5
            scaled[1][:, 2] = 0
            scaled[2][:, 2] *= 2.0
            torch.testing.assert_close(out[LEVELS + 1], model.hpn_learner(scaled), rtol=0, atol=1e-5 * scale)
            # the check is not vacuous: every ablation moves the output well above the tolerance
            moved = (want[1:] - want[:1]).abs().flatten(1).mean(1)
            assert float(moved.min()) > 1e-3 * scale


def _box(size: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[rows[0] : rows[1], cols[0] : cols[1]] = True
    return region


@pytest.mark.parametrize(
    "size,region",
    [(SIZE, _box(SIZE, (64, 193), (64, 193))), (SIZE, _box(SIZE, (0, 9), (249, 257))),
     (SIZE, torch.ones(SIZE, SIZE, dtype=torch.bool)), (100, _box(100, (40, 47), (10, 90)))],
    ids=["quarter", "corner", "whole", "E<S"],
)
def test_ablation_weights_equal_full_reruns(model, prediction, full_reruns, size, region):
    """The weights (paper mode, K = 1) equal those computed from the 26 full reruns at 1e-6."""
    weights = model.feature_ablation_weights(prediction, region, size)

    def at_region(raw):  # [14, 1, 2, h, w] -> [14, 1, 2, |R|]
        out = F.interpolate(raw.flatten(0, 1), (size, size), mode="bilinear", align_corners=True)
        return out.view(*raw.shape[:3], size, size)[..., region]

    fg, bg = at_region(full_reruns["fg"]), at_region(full_reruns["bg"])
    d = (((fg[0] - fg[1:]).abs() + (bg[0] - bg[1:]).abs()) / 2).flatten(1).mean(1)
    want = d / d.sum()
    assert weights.shape == (LEVELS,) and float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(weights, want, rtol=0, atol=1e-6)
    assert float(want.min()) > 1e-3  # every level matters, so the comparison is not vacuous
