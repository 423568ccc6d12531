"""I²R adapter: matching scores and head for AffEx, CAM under no_grad, DICM, losses."""
from __future__ import annotations

import pytest
import torch

from fssgui.models.base import EpisodeTensors
from fssgui.models.i2r import I2R, CrossAttention, dicm_mask, region_minmax
from fssgui.models.registry import get_entry, list_models

SIZE = 97  # layer3 grid 7x7


def _episode(shots: int, seed: int = 0) -> EpisodeTensors:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, shots, SIZE, SIZE)
    for k in range(shots):
        masks[0, k, 20:70, 15 + 5 * k:60] = 1
    return EpisodeTensors(torch.randn(1, 3, SIZE, SIZE, generator=g),
                          torch.randn(1, shots, 3, SIZE, SIZE, generator=g), masks)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return I2R(SIZE).eval()


@pytest.fixture(scope="module")
def two_shot(model):
    batch = _episode(2)
    with torch.no_grad():  # the CAM needs gradients: the adapter must enable them itself
        return batch, model.predict(batch, with_scores=True)


def test_registered():
    assert "i2r-resnet50" in [e.name for e in list_models()]
    entry = get_entry("i2r-resnet50")
    assert entry.needs_checkpoint and entry.matching and entry.input_size == 473
    assert callable(entry.extra["trainer"])


def test_matching_scores_layout(model, two_shot):
    batch, pred = two_shot
    assert pred.logits.shape == (1, 2, SIZE, SIZE)
    assert pred.num_levels == 5 and pred.level_shapes == [(7, 7)] * 5
    for scores in pred.matching_scores:
        assert scores.shape == (1, 49, 2 * 49)
    # shot k's block of the support axis equals that shot's own cross-attention scores
    with torch.no_grad():
        inputs, _ = model.decoder_inputs(batch)
        states, _ = model.support_decoder(inputs.supports)
        q_sa = model.query_sa[0](inputs.query)
        direct = model.cross_attn[0].scores(q_sa.repeat_interleave(2, 0), states[0])  # [2, 49, 49]
    torch.testing.assert_close(pred.matching_scores[0][0, :, :49], direct[0])
    torch.testing.assert_close(pred.matching_scores[0][0, :, 49:], direct[1])


def test_head_identity_and_ablation(model, two_shot):
    batch, pred = two_shot
    keep = torch.ones(3, 5)
    keep[1, 0] = 0
    keep[2, 4] = 0
    with torch.no_grad():
        out = pred.head(keep)
    assert out.shape == (3, 1, 2, SIZE, SIZE)
    torch.testing.assert_close(out[0], pred.logits)
    assert float((out[1] - pred.logits).abs().max()) > 1e-4
    assert float((out[2] - pred.logits).abs().max()) > 1e-4
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[20:60, 20:60] = True
    weights = model.feature_ablation_weights(pred, region, SIZE)
    assert weights.shape == (5,) and float(weights.sum()) == pytest.approx(1.0, abs=1e-5)


def test_cam_and_prior(model, two_shot):
    batch, pred = two_shot
    cam = pred.extras["query_cam"]
    assert cam.shape == (1, 2, SIZE, SIZE) and set(torch.unique(cam).tolist()) <= {0.0, 1.0}
    assert float(cam.sum()) > 0  # the CAM maximum is always >= threshold after min-max
    prior = pred.extras["prior"]
    assert prior.shape == (1, 7, 7) and float(prior.min()) >= 0 and float(prior.max()) <= 1


def test_predict_keeps_input_gradients(model):
    """captum baselines differentiate w.r.t. the support images: the local CAM must not break that."""
    batch = _episode(1, seed=2)
    supports = batch.supports.clone().requires_grad_(True)
    pred = model.predict(EpisodeTensors(batch.query, supports, batch.support_masks))
    pred.logits[:, 1].mean().backward()
    assert supports.grad is not None and float(supports.grad.abs().sum()) > 0


def test_dicm_mask_semantics():
    scores = torch.tensor([[[0.0, 5.0, 1.0],
                            [3.0, 0.0, 4.0]]])  # [1, Nq=2, Ns=3]; argmax over queries per key: 1, 0, 1
    query_labels = torch.tensor([[0, 1]])
    support_labels = torch.tensor([[1, 0, 1]])
    mask = dicm_mask(scores, query_labels, support_labels)
    # key 0 -> query 1 (label 1 == 1): kept; key 1 -> query 0 (0 == 0): kept; key 2 -> query 1 (1 == 1): kept
    assert float(mask.abs().sum()) == 0
    support_labels = torch.tensor([[0, 1, 1]])
    mask = dicm_mask(scores, query_labels, support_labels)
    expected = torch.zeros(1, 2, 3)
    expected[0, 1, 0] = -1e4  # key 0 (label 0) best matches query 1 (label 1)
    expected[0, 0, 1] = -1e4  # key 1 (label 1) best matches query 0 (label 0)
    torch.testing.assert_close(mask, expected)


def test_cross_attention_dicm_only_with_labels():
    torch.manual_seed(0)
    attn = CrossAttention(16).eval()
    q, s = torch.randn(2, 16, 3, 3), torch.randn(2, 16, 3, 3)
    plain, scores, frac = attn(q, s)
    assert float(frac.sum()) == 0
    ql = torch.randint(0, 2, (2, 9))
    sl = 1 - ql  # every label differs somewhere -> masking happens
    masked, scores2, frac2 = attn(q, s, query_labels=ql, support_labels=sl)
    torch.testing.assert_close(scores, scores2)  # scores reported before the mask
    assert float(frac2.min()) > 0 and not torch.allclose(plain, masked)


def test_region_minmax():
    values = torch.tensor([[[1.0, 2.0], [3.0, 9.0]]])
    region = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    out = region_minmax(values, region)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.5], [1.0, 0.0]]]), atol=1e-5, rtol=0)
    assert float(region_minmax(values, torch.zeros_like(region)).abs().sum()) == 0


def test_training_loss_and_frozen_parts():
    torch.manual_seed(0)
    m = I2R(65).train()
    assert not m.backbone.training and m.query_sa[0].training
    batch = EpisodeTensors(torch.randn(2, 3, 65, 65), torch.randn(2, 1, 3, 65, 65),
                           (torch.rand(2, 1, 65, 65) > 0.5).float())
    target = (torch.rand(2, 65, 65) > 0.5).long()
    loss, logs = m.training_loss(batch, target, 0.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert logs["loss"] == pytest.approx(logs["aux1"] + logs["aux2"], rel=1e-5)
    assert m.cross_attn[0].to_q.weight.grad is not None
    assert m.query_aux_heads[0][2].weight.grad is not None and m.support_aux_heads[0][2].weight.grad is not None
    assert all(p.grad is None for p in m.backbone.parameters())
    # the code detaches the init_merge input: the down-projections get no gradient
    assert m.down_query[0].weight.grad is None


def test_base_learner_ensemble_optional():
    torch.manual_seed(0)
    plain = I2R(65)
    assert not any(k.startswith(("base_", "gram_merge", "cls_merge")) for k in plain.state_dict())
    ens = I2R(65, use_base_learner=True, base_classes=15).eval()
    assert ens.base_cls[-1].out_channels == 16
    batch = _episode(1)
    batch = EpisodeTensors(batch.query[..., :65, :65], batch.supports[..., :65, :65], batch.support_masks[..., :65, :65])
    with torch.no_grad():
        pred = ens.predict(batch, with_scores=True)
        assert pred.logits.shape == (1, 2, 65, 65)
        torch.testing.assert_close(pred.head(torch.ones(1, 5))[0], pred.logits)
