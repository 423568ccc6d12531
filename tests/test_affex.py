"""AffEx on synthetic score tensors: hand-derived values, and the adjoint (non-materialising)
implementation against a direct implementation that builds every E x E query map."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import GaussianBlur

from fssgui.errors import ExplainError
from fssgui.explain.affex import (
    AffinityExplainer,
    gaussian_blur,
    level_contributions,
    level_map,
    region_at_size,
)
from fssgui.models.base import EpisodeTensors, FSSModel, Prediction


def direct_level_map(scores: torch.Tensor, h: int, shots: int, region_e: torch.Tensor, size: int, softmax: bool):
    """The reference pipeline literally (its step 2): one E x E query map per support pixel."""
    a = torch.softmax(scores, -1) if softmax else scores
    maps = a.T.reshape(shots * h * h, h, h)  # support pixel (shot, row, col) -> query map
    maps = TF.resize(maps, [size, size])  # torchvision defaults: bilinear, antialias=True
    maps = maps / (maps.sum((-2, -1), keepdim=True) + 1e-6)
    values = maps[:, region_e].mean(-1).view(shots, h, h)
    up = TF.resize(values, [size, size], antialias=False)
    return up / (up.sum() + 1e-6)


@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("size", [3, 5, 8, 12, 24])
@pytest.mark.parametrize("shots", [1, 3])
def test_adjoint_equals_direct(softmax, size, shots):
    h = 8
    generator = torch.Generator().manual_seed(size * 10 + shots)
    scores = torch.randn(h * h, shots * h * h, generator=generator) * 3
    if not softmax:
        scores = scores.abs()  # the unsoftmaxed ablation on non-negative (cosine-like) scores
    region = torch.rand(size, size, generator=generator) > 0.6
    region[0, 0] = True
    expected = direct_level_map(scores, h, shots, region, size, softmax)
    got = level_map(level_contributions(scores, (h, h), shots, region, use_softmax=softmax), size)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)
    # tiny chunks (one query row at a time) give the same result
    chunked = level_map(
        level_contributions(scores, (h, h), shots, region, use_softmax=softmax, chunk_bytes=1), size
    )
    assert torch.allclose(chunked, got, rtol=1e-5, atol=1e-8)


class FakeModel(FSSModel):
    """Returns a fixed prediction and fixed ablation weights; records the mode it was asked for."""

    is_matching = True

    def __init__(self, scores, shapes, weights, size):
        super().__init__()
        self.scores, self.shapes, self.weights, self.size = scores, shapes, torch.tensor(weights), size
        self.modes = []

    def predict(self, batch, *, with_scores=False, query_features=None):
        return Prediction(
            logits=torch.zeros(1, 2, self.size, self.size),
            matching_scores=[s[None] for s in self.scores],
            level_shapes=self.shapes,
        )

    def feature_ablation_weights(self, prediction, region, size, *, mode="paper", cancelled=None):
        self.modes.append(mode)
        return self.weights


def _two_by_two_episode(size=2):
    return EpisodeTensors(torch.zeros(1, 3, size, size), torch.zeros(1, 1, 3, size, size), torch.ones(1, 1, size, size))


def test_hand_derived_two_levels():
    """h = E = S = 2 (no resize). Level 0: query q attends only to support pixel q; level 1: every
    query pixel attends only to support pixel 3. R = {query pixel 0}. Without softmax:
    level 0 -> [1, 0, 0, 0], level 1 -> [0, 0, 0, 1]; weights (0.25, 0.75) -> [0.25, 0, 0, 0.75]
    -> min-max [1/3, 0, 0, 1]."""
    identity = torch.eye(4)
    to_three = torch.zeros(4, 4)
    to_three[:, 3] = 1.0
    model = FakeModel([identity, to_three], [(2, 2), (2, 2)], [0.25, 0.75], 2)
    region = torch.tensor([[True, False], [False, False]])
    attribution = AffinityExplainer(use_softmax=False, mode="reference").explain(model, _two_by_two_episode(), region)
    expected_levels = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]).view(2, 1, 2, 2)
    assert torch.allclose(attribution.level_maps, expected_levels, atol=1e-5)
    assert torch.allclose(attribution.maps, torch.tensor([[[1 / 3, 0.0], [0.0, 1.0]]]), atol=1e-5)
    assert torch.equal(attribution.level_weights, torch.tensor([0.25, 0.75]))
    assert model.modes == ["reference"]


def test_hand_derived_softmax_uniform():
    """Equal scores -> softmax 1/4 everywhere -> every support pixel gets the same value: the
    level map is uniform (1/4 each) and a constant map min-max scales to 0 (not NaN)."""
    model = FakeModel([torch.zeros(4, 4)], [(2, 2)], [1.0], 2)
    attribution = AffinityExplainer().explain(model, _two_by_two_episode(), torch.ones(2, 2, dtype=torch.bool))
    assert torch.allclose(attribution.level_maps, torch.full((1, 1, 2, 2), 0.25), atol=1e-6)
    assert torch.equal(attribution.maps, torch.zeros(1, 2, 2))
    assert model.modes == ["paper"]


def test_hand_derived_region_mean_with_softmax():
    """One level, h = 2, K = 1, scores = log of a row-stochastic matrix M, so softmax(scores) = M.
    Per support pixel s the query map is column M[:, s], normalised by its sum; the region
    R = {0, 1} mean is (M[0,s] + M[1,s]) / (2 * sum_q M[q,s])."""
    m = torch.tensor(
        [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 0.5, 0.0]]
    )
    scores = torch.log(m.clamp(min=1e-30))
    model = FakeModel([scores], [(2, 2)], [1.0], 2)
    region = torch.tensor([[True, True], [False, False]])
    attribution = AffinityExplainer().explain(model, _two_by_two_episode(), region)
    col = m.sum(0)
    values = (m[0] + m[1]) / (2 * col)  # [0.5, 0.5, 0.125/0.75, 0.25/1.25]
    expected = values / values.sum()
    assert torch.allclose(attribution.level_maps.flatten(), expected, atol=1e-5)


def test_blur_matches_torchvision():
    masks = (torch.rand(2, 40, 37, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert torch.allclose(gaussian_blur(masks), GaussianBlur(31, 50)(masks), atol=1e-6)


def test_region_at_size_nearest_and_single_pixel_fallback():
    region = torch.zeros(384, 384, dtype=torch.bool)
    region[96:288, 96:288] = True
    small = region_at_size(region, 32)
    assert small.sum() == 16 * 16 and small[8:24, 8:24].all()
    dot = torch.zeros(384, 384, dtype=torch.bool)
    dot[100, 201] = True  # nearest sampling at 32 reads rows/cols 0, 12, 24, ...: misses it
    cell = region_at_size(dot, 32)
    assert cell.sum() == 1 and cell[100 // 12, 201 // 12]
    with pytest.raises(ExplainError):
        region_at_size(torch.zeros(8, 8, dtype=torch.bool), 4)


def test_invalid_parameters_raise():
    with pytest.raises(ExplainError):
        AffinityExplainer(variant="bogus")
    with pytest.raises(ExplainError):
        AffinityExplainer(mode="bogus")
    with pytest.raises(ExplainError):
        AffinityExplainer(size=0)


@pytest.mark.parametrize("shape,size", [((8, 8), 24), ((12, 12), 5), ((6, 10), 7), ((5, 7), 40)])
def test_separable_adjoint_equals_autograd(shape, size):
    """u_R from the separable 1-D operators equals the autograd adjoint of the 2-D resize."""
    from fssgui.explain.affex import query_resize, region_adjoints

    region = torch.rand(size, size, generator=torch.Generator().manual_seed(size)) > 0.5
    x = torch.zeros(2, 1, *shape, requires_grad=True)
    weights = torch.stack([region.float(), torch.ones(size, size)])[:, None]
    (query_resize(x, size) * weights).sum().backward()
    u_region, u_all = region_adjoints(shape, region)
    assert torch.allclose(u_region, x.grad[0].flatten(), atol=1e-5)
    assert torch.allclose(u_all, x.grad[1].flatten(), atol=1e-5)
