"""Causal metrics: hand-checked pieces and the step generator on the toy matcher."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fssgui.errors import ExplainError
from fssgui.metrics.causal import (
    causal_steps,
    foreground_iou,
    CausalRun,
    perturbed_supports,
    rank_pixels,
    step_boundaries,
    trapezoid_auc,
)
from fssgui.models.base import EpisodeTensors
from test_affex_toy import TOY_SIZE, ToyMatcher, toy_episode, toy_region


def test_step_boundaries():
    assert step_boundaries(10, 3) == [0, 3, 6, 10]
    assert step_boundaries(10, 3, percentage=0.5) == [0, 1, 3, 5]
    assert step_boundaries(10, 1, percentage=0.5, loss=True) == [0, 5, 10]
    assert step_boundaries(10, 2, loss=True) == [0, 5, 10]
    with pytest.raises(ExplainError):
        step_boundaries(10, 0)


def test_trapezoid_auc():
    assert trapezoid_auc([0.0, 1.0]) == pytest.approx(0.5)
    assert trapezoid_auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert trapezoid_auc([0.0, 0.5, 1.0, 0.0]) == pytest.approx((1.5 - 0.0 - 0.0) / 3)


def test_foreground_iou_conventions():
    logits = torch.zeros(3, 2, 2, 2)
    logits[0, 1, 0, :] = 1.0  # predicts the top row
    logits[2, 1, :, :] = 1.0  # predicts everything
    gt = torch.tensor([[1, 0], [-100, 0]])
    iou = foreground_iou(logits, gt)
    assert iou[0] == pytest.approx(0.5)  # inter 1, union 2
    assert iou[1] == 0.0  # empty prediction
    assert iou[2] == pytest.approx(1 / 3)  # ignore pixel excluded: inter 1, union 3
    assert foreground_iou(torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, dtype=torch.long))[0] == 0.0


def test_ranking_and_zero_substrate():
    attribution = torch.tensor([[[0.1, 0.9], [0.5, 0.2]], [[0.8, 0.0], [0.3, 0.7]]])  # K=2, S=2
    rank = rank_pixels(attribution)
    assert rank.flatten().tolist() == [6, 0, 3, 5, 1, 7, 4, 2]  # global across both supports
    supports = torch.ones(2, 3, 2, 2)
    masks = torch.ones(2, 2, 2)
    images, state_masks, kept = perturbed_supports(supports, masks, rank, torch.tensor([0, 3, 8]), insertion=True)
    assert images[0].sum() == 0 and state_masks[0].sum() == 0
    assert state_masks[1].flatten().tolist() == [0, 1, 0, 0, 1, 0, 0, 1]
    assert torch.equal(images[1], state_masks[1][:, None].expand(-1, 3, -1, -1))
    assert images[2].sum() == 24
    assert torch.equal(kept[1], state_masks[1].bool()) and kept[2].all()  # all-ones masks: kept = mask
    _, deleted, _ = perturbed_supports(supports, masks, rank, torch.tensor([3]), insertion=False)
    assert deleted[0].flatten().tolist() == [1, 0, 1, 1, 0, 1, 1, 0]


@pytest.fixture(scope="module")
def toy():
    return ToyMatcher().eval()


@pytest.fixture(scope="module")
def attribution():
    return torch.rand(2, TOY_SIZE, TOY_SIZE, generator=torch.Generator().manual_seed(3))


def _score(toy, batch, region):
    with torch.no_grad():
        logits = toy.predict(batch).logits
    return float(torch.softmax(logits, 1)[0, :, region].mean(-1).max())


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_steps_are_in_sync_with_their_frames(toy, attribution, mode):
    batch = toy_episode()
    steps = list(causal_steps(toy, batch, attribution, toy_region(), mode=mode, steps=6, batch_size=4))
    assert [s.state for s in steps] == list(range(7))
    assert [s.pixels for s in steps] == step_boundaries(2 * TOY_SIZE**2, 6)
    for step in steps:
        single = EpisodeTensors(batch.query, step.supports[None], step.support_masks[None])
        with torch.no_grad():
            logits = toy.predict(single).logits[0]
        assert torch.allclose(logits, step.logits, atol=1e-5)
        assert torch.allclose(step.foreground_probability, torch.softmax(logits, 0)[1], atol=1e-5)
        start = torch.zeros_like(step.supports) if mode == "insertion" else batch.supports[0]
        moved = (step.supports != start).any(dim=1).sum()
        assert moved == step.pixels  # random normal images: no moved pixel equals its substrate
    unperturbed = _score(toy, batch, toy_region())
    full = steps[-1] if mode == "insertion" else steps[0]
    assert full.score == pytest.approx(unperturbed, abs=1e-5)
    empty = steps[0] if mode == "insertion" else steps[-1]
    assert empty.supports.abs().sum() == 0 and empty.support_masks.sum() == 0


def test_batch_size_does_not_change_the_curve(toy, attribution):
    batch = toy_episode()
    one = [s.score for s in causal_steps(toy, batch, attribution, toy_region(), steps=5, batch_size=1)]
    many = [s.score for s in causal_steps(toy, batch, attribution, toy_region(), steps=5, batch_size=6)]
    assert one == pytest.approx(many, abs=1e-5)


def test_named_metrics(toy, attribution):
    batch = toy_episode()
    with torch.no_grad():
        gt = toy.predict(batch).logits[0].argmax(0)
    iauc = CausalRun(toy, batch, attribution, toy_region(), "iauc", "miou", steps=4, gt=gt).run()
    assert len(iauc.scores) == 4  # skip_empty for miou
    assert iauc.scores[-1] == pytest.approx(1.0)  # full supports reproduce the gt (= the prediction)
    assert iauc.value == pytest.approx(trapezoid_auc(iauc.scores))
    assert iauc.fractions == pytest.approx([0.25, 0.5, 0.75, 1.0])
    dauc = CausalRun(toy, batch, attribution, toy_region(), "dauc", "confidence", steps=4).run()
    assert len(dauc.scores) == 5 and dauc.fractions[0] == 0.0
    at_p = CausalRun(toy, batch, attribution, toy_region(), "iauc@p", "confidence", percentage=0.1).run()
    assert len(at_p.scores) == 6 and at_p.fractions[-1] == pytest.approx(int(0.1 * 2 * TOY_SIZE**2) / (2 * TOY_SIZE**2))
    loss = CausalRun(toy, batch, attribution, toy_region(), "miou-loss@p", "miou", percentage=0.05, gt=gt).run()
    assert loss.fractions == pytest.approx([int(0.05 * 2 * TOY_SIZE**2) / (2 * TOY_SIZE**2), 1.0])
    assert loss.value == pytest.approx(loss.scores[1] - loss.scores[0])
    assert loss.scores[1] == pytest.approx(1.0)


def test_metric_errors(toy, attribution):
    batch = toy_episode()
    with pytest.raises(ExplainError, match="ground truth"):
        CausalRun(toy, batch, attribution, toy_region(), "iauc", "miou").run()
    with pytest.raises(ExplainError):
        CausalRun(toy, batch, attribution[:1], toy_region(), "iauc", "confidence").run()
    with pytest.raises(ExplainError):
        CausalRun(toy, batch, attribution, toy_region(), "bogus", "confidence").run()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 7))
def test_full_insertion_equals_unperturbed_score(toy, seed, steps):
    batch = toy_episode(seed=seed % 7)
    attribution = torch.rand(2, TOY_SIZE, TOY_SIZE, generator=torch.Generator().manual_seed(seed))
    result = CausalRun(toy, batch, attribution, toy_region(), "iauc", "confidence", steps=steps).run()
    assert result.scores[-1] == pytest.approx(_score(toy, batch, toy_region()), abs=1e-5)
    assert len(result.scores) == steps + 1


def test_reused_query_features_and_reference_logits(toy, attribution, monkeypatch):
    """Given the episode's query features and unperturbed logits, a metric encodes no query and
    runs no unperturbed forward, and its curve is unchanged."""
    batch = toy_episode()
    fresh = CausalRun(toy, batch, attribution, toy_region(), "dauc", "confidence", steps=4).run()
    with torch.no_grad():
        features = toy.encode_query(batch.query)
        reference_logits = toy.predict(batch).logits
    encoded, supports_seen = [], []
    real_encode, real_predict = toy.encode_query, toy.predict
    monkeypatch.setattr(toy, "encode_query", lambda query: encoded.append(1) or real_encode(query))

    def counting_predict(episode, **kwargs):
        supports_seen.append(int(episode.supports.shape[0]))
        return real_predict(episode, **kwargs)

    monkeypatch.setattr(toy, "predict", counting_predict)
    reused = CausalRun(toy, batch, attribution, toy_region(), "dauc", "confidence", steps=4,
                               query_features=features, reference_logits=reference_logits, batch_size=8).run()
    assert encoded == []
    assert supports_seen == [5]  # one batched forward of the 5 states, no unperturbed forward
    assert reused.params["target_class"] == fresh.params["target_class"]
    assert reused.scores == pytest.approx(fresh.scores, abs=1e-6)
