"""A tiny DCAMA-style matching model for the explainer tests (also imported by test_causal.py and
test_baselines.py), and AffEx tests on it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fssgui.models.base import EpisodeTensors, FSSModel, Prediction, resize_masks

TOY_SIZE = 32


class ToyMatcher(FSSModel):
    """Three conv stages (strides 2, 4, 8); matching at strides 4 (two levels) and 8 (one level):
    scores ``tau * cos(q, s)``, softmax over all shots, the support mask as the value; a conv head
    on the upsampled coarse masks. ReLUs are distinct modules (DeepLift-friendly)."""

    is_matching = True

    def __init__(self, seed: int = 0, tau: float = 5.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv2b = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2b = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu3 = nn.ReLU()
        self.head_conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            self.head_conv.weight[1] = self.head_conv.weight[1].abs() + 0.5  # fg logit grows with the masks
            self.head_conv.bias.copy_(torch.tensor([0.6, 0.0]))
        self.tau = tau

    def _features(self, images: Tensor) -> list[Tensor]:
        x = self.relu1(self.conv1(images))
        a = self.relu2(self.conv2(x))
        b = self.relu2b(self.conv2b(a))
        c = self.relu3(self.conv3(b))
        return [a, b, c]

    def encode_query(self, query: Tensor) -> list[Tensor]:
        return self._features(query)

    def predict(self, batch: EpisodeTensors, *, with_scores: bool = False, query_features=None) -> Prediction:
        b, k = batch.supports.shape[:2]
        size = batch.query.shape[-2:]
        qfeats = self._features(batch.query) if query_features is None else query_features
        sfeats = self._features(batch.supports.flatten(0, 1))
        coarse, scores, shapes = [], [], []
        for qf, sf in zip(qfeats, sfeats):
            c, h, w = sf.shape[1:]
            if qf.shape[0] != b:
                qf = qf.expand(b, -1, -1, -1)
            q = F.normalize(qf, dim=1).flatten(2).transpose(1, 2)
            s = F.normalize(sf, dim=1).view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)
            score = self.tau * q @ s.transpose(1, 2)
            m = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w, 1)
            coarse.append((torch.softmax(score, -1) @ m).view(b, 1, h, w))
            scores.append(score)
            shapes.append((h, w))
        stacked = torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in coarse], 1)

        def head(keep: Tensor) -> Tensor:
            n = keep.shape[0]
            x = stacked[None] * keep.to(stacked)[:, None, :, None, None]  # [N, B, L, S, S]
            return self.head_conv(x.flatten(0, 1)).view(n, b, 2, *size)

        logits = head(torch.ones(1, len(coarse)))[0]
        if not with_scores:
            return Prediction(logits=logits)
        return Prediction(logits=logits, matching_scores=scores, level_shapes=shapes, head=head)


def toy_episode(shots: int = 2, size: int = TOY_SIZE, seed: int = 1) -> EpisodeTensors:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(1, 3, size, size, generator=generator)
    supports = torch.randn(1, shots, 3, size, size, generator=generator)
    masks = torch.zeros(1, shots, size, size)
    for k in range(shots):
        masks[0, k, 4 + k : size // 2 + 4 + k, 6 : size - 6 - k] = 1.0
    return EpisodeTensors(query, supports, masks)


def toy_region(size: int = TOY_SIZE) -> Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return region


# ------------------------------------------------------------------------------------- tests
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fssgui.errors import ExplainError  # noqa: E402
from fssgui.explain.affex import AffinityExplainer  # noqa: E402


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return ToyMatcher().eval()


def test_toy_head_reproduces_logits(toy):
    batch = toy_episode()
    pred = toy.predict(batch, with_scores=True)
    assert torch.allclose(pred.head(torch.ones(1, 3))[0], pred.logits)
    # query features reused in a batch of 3 give the same logits as 3 single forwards
    features = toy.encode_query(batch.query)
    many = EpisodeTensors(batch.query.expand(3, -1, -1, -1), batch.supports.expand(3, -1, -1, -1, -1),
                          batch.support_masks.expand(3, -1, -1, -1))
    out = toy.predict(many, query_features=features).logits
    assert torch.allclose(out, pred.logits.expand(3, -1, -1, -1), atol=1e-5)


@pytest.mark.parametrize("variant", ["unmasked", "masked", "signed"])
@pytest.mark.parametrize("size", [8, 32])
def test_affex_on_toy_model(toy, variant, size):
    batch = toy_episode()
    attribution = AffinityExplainer(variant=variant, size=size).explain(toy, batch, toy_region())
    assert attribution.maps.shape == (2, TOY_SIZE, TOY_SIZE)
    assert attribution.maps.dtype == torch.float32
    assert float(attribution.maps.min()) >= 0.0 and float(attribution.maps.max()) <= 1.0 + 1e-6
    if variant != "unmasked" or size == TOY_SIZE:  # min-max is the last step (else: a resize follows it)
        assert float(attribution.maps.min()) == pytest.approx(0.0, abs=1e-6)
        assert float(attribution.maps.max()) == pytest.approx(1.0, abs=1e-6)
    assert attribution.level_maps.shape == (3, 2, size, size)
    assert torch.allclose(attribution.level_maps.flatten(1).sum(1), torch.ones(3), atol=1e-4)
    assert attribution.level_weights.shape == (3,)
    assert float(attribution.level_weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert len(attribution.level_names) == 3
    if variant == "signed":
        assert 0.0 <= attribution.params["zero_level"] <= 1.0


def test_mean_aggregation_is_uniform(toy):
    attribution = AffinityExplainer(aggregation="mean", size=16).explain(toy, toy_episode(), toy_region())
    assert torch.allclose(attribution.level_weights, torch.full((3,), 1 / 3))


def test_empty_region_raises(toy):
    with pytest.raises(ExplainError, match="empty"):
        AffinityExplainer().explain(toy, toy_episode(), torch.zeros(TOY_SIZE, TOY_SIZE, dtype=torch.bool))


def test_model_without_scores_raises():
    class Plain(FSSModel):
        def predict(self, batch, *, with_scores=False, query_features=None):
            return Prediction(logits=torch.zeros(1, 2, TOY_SIZE, TOY_SIZE))

    with pytest.raises(ExplainError, match="matching"):
        AffinityExplainer().explain(Plain(), toy_episode(), toy_region())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    row=st.integers(0, TOY_SIZE - 1),
    col=st.integers(0, TOY_SIZE - 1),
    size=st.sampled_from([4, 8, 13, 32]),
    variant=st.sampled_from(["unmasked", "masked", "signed"]),
)
def test_one_pixel_region_gives_maps_in_unit_range(toy, row, col, size, variant):
    region = torch.zeros(TOY_SIZE, TOY_SIZE, dtype=torch.bool)
    region[row, col] = True
    maps = AffinityExplainer(variant=variant, size=size).explain(toy, toy_episode(), region).maps
    assert torch.isfinite(maps).all()
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0 + 1e-6


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1000), variant=st.sampled_from(["unmasked", "masked", "signed"]))
def test_permuting_supports_permutes_maps(toy, seed, variant):
    batch = toy_episode(shots=3, seed=seed)
    order = torch.tensor([2, 0, 1])
    permuted = EpisodeTensors(batch.query, batch.supports[:, order], batch.support_masks[:, order])
    explainer = AffinityExplainer(variant=variant, size=16)
    a = explainer.explain(toy, batch, toy_region()).maps
    b = explainer.explain(toy, permuted, toy_region()).maps
    assert torch.allclose(a[order], b, atol=1e-5)
