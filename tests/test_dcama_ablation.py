"""DCAMA's region-aware feature ablation (``DCAMA.feature_ablation_weights`` /
``dcama_ablation.region_ablation_means``) against the base class's L full-decoder reruns.

A random-weight DCAMA-R50 at S = 128 (decoder weights He-normal, so that the logits are O(1) and
every level's ablation moves the region-mean logit measurably). The reference values are
computed here from ``prediction.head`` (the full decoder) exactly as
``FSSModel.feature_ablation_weights`` does; the weights are also compared with that method itself.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fssgui.models.base import EpisodeTensors, FSSModel, Prediction
from fssgui.models.dcama import DCAMA, DCAMADecoderCall, DCAMAHead
from fssgui.models.dcama_ablation import ResizeMatrix, region_ablation_means, region_decode_plan

SIZE = 128  # S
LEVELS = 13


def _box(size: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[rows[0] : rows[1], cols[0] : cols[1]] = True
    return region


def _scattered(size: int) -> torch.Tensor:
    """A non-rectangular R: random pixels inside a 20 x 20 box (one pixel forced on)."""
    generator = torch.Generator().manual_seed(5)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[60:80, 20:40] = torch.rand(20, 20, generator=generator) > 0.7
    region[60, 20] = True
    return region


def _two_dots(size: int) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[2, 3] = region[size - 3, size - 2] = True
    return region


# (name, E, region at E, whether R's windows cover most of the decoder's work)
CASES = [
    ("small", SIZE, _box(SIZE, (40, 46), (70, 75)), False),
    ("one_pixel", SIZE, _box(SIZE, (77, 78), (31, 32)), False),
    ("top_left_corner", SIZE, _box(SIZE, (0, 10), (0, 7)), False),
    ("bottom_right_border", SIZE, _box(SIZE, (120, 128), (100, 128)), False),
    ("scattered", SIZE, _scattered(SIZE), False),
    ("E_smaller", 48, _box(48, (10, 20), (30, 40)), False),
    ("E_smaller_border", 48, _box(48, (40, 48), (0, 6)), False),
    ("E_larger_border", 200, _box(200, (50, 80), (185, 200)), False),
    ("large", SIZE, _box(SIZE, (4, 124), (2, 126)), True),
    ("far_apart_dots", SIZE, _two_dots(SIZE), True),
]
LARGE = [case for case in CASES if case[3]]


def _random_dcama() -> DCAMA:
    torch.manual_seed(0)
    model = DCAMA("resnet50")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if not name.startswith(("conv", "mixer")):
                continue  # attention projections keep their default init
            if param.dim() > 1:  # He-normal: keeps the activations O(1) through the ReLUs
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("weight"):  # GroupNorm scale
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def _episode(batch: int, shots: int, seed: int) -> EpisodeTensors:
    generator = torch.Generator().manual_seed(seed)
    return EpisodeTensors(
        torch.randn(batch, 3, SIZE, SIZE, generator=generator),
        torch.randn(batch, shots, 3, SIZE, SIZE, generator=generator),
        (torch.rand(batch, shots, SIZE, SIZE, generator=generator) > 0.5).float(),
    )


@pytest.fixture(scope="module")
def model() -> DCAMA:
    return _random_dcama()


@pytest.fixture(scope="module")
def prediction(model) -> Prediction:
    with torch.no_grad():
        return model.predict(_episode(1, 1, seed=1), with_scores=True)


@pytest.fixture(scope="module")
def full_outputs(prediction) -> torch.Tensor:
    """``[L, B, 2, S, S]``: the full decoder with each level ablated (base-class reruns)."""
    with torch.no_grad():
        keep = 1.0 - torch.eye(LEVELS)
        return torch.cat([prediction.head(keep[i : i + 1]) for i in range(LEVELS)])


def _reference_means(logits: torch.Tensor, region: torch.Tensor, size: int) -> torch.Tensor:
    """``[n, B, 2, S', S']`` -> ``[n, B]``: the base class's region mean, written out."""
    n, b = logits.shape[:2]
    if tuple(logits.shape[-2:]) != (size, size):
        logits = F.interpolate(logits.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False)
        logits = logits.view(n, b, 2, size, size)
    return logits[:, :, 1][..., region].mean(-1)


def _check_against_reference(model, prediction, full, region, size):
    scale = float(prediction.logits.abs().max())
    want_unablated = _reference_means(prediction.logits[None], region, size)[0]
    want = _reference_means(full, region, size)
    unablated, ablated = region_ablation_means(model, prediction, region, size)
    assert ablated.shape == want.shape
    torch.testing.assert_close(unablated, want_unablated, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(ablated, want, rtol=0, atol=1e-5 * scale)
    # the check is not vacuous: the ablations move the region mean well above the tolerance
    total_change = float((want - want_unablated).abs().mean(-1).sum())
    assert total_change > 1e-2 * scale
    weights = model.feature_ablation_weights(prediction, region, size)
    base = FSSModel.feature_ablation_weights(model, prediction, region, size)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    # normalised by the total change, a rounding difference d in the means moves a weight by
    # about 2d / total_change: compare at the float-rounding level of the means (~1e-6 of the scale)
    torch.testing.assert_close(weights, base, rtol=0, atol=max(1e-6, 2e-6 * scale / total_change))
    return weights


def _forbid_full_decoder(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the full decoder ran although the windowed path applies")

    monkeypatch.setattr(DCAMAHead, "decode", refuse)
    monkeypatch.setattr(DCAMA, "_head", refuse)


def _plan(model, prediction, region, size):
    call = prediction.head
    assert isinstance(call, DCAMADecoderCall)
    return region_decode_plan(model, tuple(call.level_coarse[0].shape[-2:]), call.skip, call.size, region, size)


@pytest.mark.parametrize("name,size,region,large", CASES, ids=[c[0] for c in CASES])
def test_weights_equal_full_decoder(model, prediction, full_outputs, name, size, region, large):
    _check_against_reference(model, prediction, full_outputs, region, size)


@pytest.mark.parametrize("name,size,region,large", CASES, ids=[c[0] for c in CASES])
def test_fast_path_is_used(model, prediction, name, size, region, large, monkeypatch):
    """On the CPU the windowed decoder is always used: the full decoder never runs, and a small R
    keeps a small share of the decoder's work."""
    plan = _plan(model, prediction, region, size)
    assert plan.windowed
    assert plan.cost_fraction > 0.75 if large else plan.cost_fraction < 0.2
    _forbid_full_decoder(monkeypatch)
    weights = model.feature_ablation_weights(prediction, region, size)
    monkeypatch.undo()
    base = FSSModel.feature_ablation_weights(model, prediction, region, size)
    torch.testing.assert_close(weights, base, rtol=0, atol=1e-4)  # exact comparison: the test above


@pytest.mark.parametrize("name,size,region,large", LARGE, ids=[c[0] for c in LARGE])
def test_fallback_to_the_full_decoder(model, prediction, full_outputs, name, size, region, large, monkeypatch):
    """Above ``windowed_decode_max_fraction`` the plain decoder runs, once per ablation (never
    through ``head``), with the same values."""
    monkeypatch.setattr(model, "windowed_decode_max_fraction_cpu", 0.75)
    assert not _plan(model, prediction, region, size).windowed
    decoded = []
    original = DCAMAHead.decode

    def counting_decode(self, mix, skip):
        decoded.append(mix.shape[0])
        return original(self, mix, skip)

    def refuse(*args, **kwargs):
        raise AssertionError("the fallback must not go through head()")

    monkeypatch.setattr(DCAMAHead, "decode", counting_decode)
    monkeypatch.setattr(DCAMA, "_head", refuse)
    scale = float(prediction.logits.abs().max())
    _, ablated = region_ablation_means(model, prediction, region, size)
    assert sum(decoded) == LEVELS
    torch.testing.assert_close(ablated, _reference_means(full_outputs, region, size), rtol=0, atol=1e-5 * scale)


def test_windowed_decoder_on_a_whole_map(model, prediction, full_outputs, monkeypatch):
    """R = the whole map: every window meets every border."""
    region = torch.ones(SIZE, SIZE, dtype=torch.bool)
    plan = _plan(model, prediction, region, SIZE)
    assert plan.windowed and plan.cost_fraction == pytest.approx(1.0)
    _forbid_full_decoder(monkeypatch)
    scale = float(prediction.logits.abs().max())
    _, ablated = region_ablation_means(model, prediction, region, SIZE)
    torch.testing.assert_close(ablated, _reference_means(full_outputs, region, SIZE), rtol=0, atol=1e-5 * scale)


def test_reference_mode_reorders_the_same_weights(model, prediction):
    region = _box(SIZE, (30, 50), (60, 90))
    paper = model.feature_ablation_weights(prediction, region, SIZE, mode="paper")
    reference = model.feature_ablation_weights(prediction, region, SIZE, mode="reference")
    assert torch.equal(reference, paper[torch.tensor(model.reference_level_order())])


def test_batch_of_two_episodes_with_two_shots(model):
    with torch.no_grad():
        prediction = model.predict(_episode(2, 2, seed=2), with_scores=True)
        keep = 1.0 - torch.eye(LEVELS)
        full = torch.cat([prediction.head(keep[i : i + 4]) for i in range(0, LEVELS, 4)])
    assert full.shape == (LEVELS, 2, 2, SIZE, SIZE)
    _check_against_reference(model, prediction, full, _box(64, (5, 15), (50, 64)), 64)


def test_decoder_output_resized_to_the_input_size(model, prediction):
    """A head whose decoder output (128) differs from its size (120): the extra resize to S
    (align_corners=True) is part of the windowed path too."""
    call = prediction.head
    head = DCAMADecoderCall(model, call.level_coarse, call.skip, (120, 120))
    with torch.no_grad():
        logits = head(torch.ones(1, LEVELS))[0]
        keep = 1.0 - torch.eye(LEVELS)
        full = torch.cat([head(keep[i : i + 1]) for i in range(LEVELS)])
    assert logits.shape == (1, 2, 120, 120)
    resized = Prediction(logits=logits, matching_scores=prediction.matching_scores,
                         level_shapes=prediction.level_shapes, head=head)
    for size, region in ((120, _box(120, (110, 120), (3, 20))), (50, _box(50, (0, 4), (20, 30)))):
        plan = _plan(model, resized, region, size)
        assert plan.windowed and plan.cost_fraction < 0.2
        assert sum(op.kind == "resize" for op in plan.ops) == 3  # the tail's resizes are in the readout
        _check_against_reference(model, resized, full, region, size)


def test_empty_region_and_foreign_head(model, prediction):
    empty = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    with pytest.raises(ValueError, match="empty"):
        region_ablation_means(model, prediction, empty, SIZE)
    # as the base class: an empty R gives NaN weights (AffEx then falls back to uniform weights)
    assert torch.isnan(model.feature_ablation_weights(prediction, empty, SIZE)).all()
    foreign = Prediction(logits=prediction.logits, matching_scores=prediction.matching_scores,
                         level_shapes=prediction.level_shapes, head=lambda keep: prediction.head(keep))
    with pytest.raises(ValueError, match="does not come from this DCAMA"):
        region_ablation_means(model, foreign, _box(SIZE, (0, 5), (0, 5)), SIZE)


@pytest.mark.parametrize("in_len,out_len,align_corners", [(12, 24, True), (48, 96, True), (64, 40, False),
                                                          (40, 100, False), (128, 120, True)])
def test_resize_matrix_crop_equals_crop_of_resize(in_len, out_len, align_corners):
    """The crop of a resized map, computed from the crop of its input (``source_window``), is the
    crop of torch's own resize, at the borders too."""
    generator = torch.Generator().manual_seed(in_len + out_len)
    x = torch.randn(2, in_len, in_len + 3, 4, generator=generator)  # [N, H, W, C]
    full = F.interpolate(x.permute(0, 3, 1, 2), size=(out_len, in_len + 3), mode="bilinear",
                         align_corners=align_corners).permute(0, 2, 3, 1)
    matrix = ResizeMatrix.of(in_len, out_len, align_corners)
    for start, stop in ((0, 3), (out_len // 3, out_len // 2), (out_len - 5, out_len), (0, out_len)):
        source = matrix.source_window(start, stop)
        crop = matrix.apply(x[:, source[0] : source[1]], 0, source, start, stop)
        torch.testing.assert_close(crop, full[:, start:stop], rtol=0, atol=1e-6)
