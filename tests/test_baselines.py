"""Baseline explainers on the toy matcher: shapes, exact values where derivable, error paths."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fssgui.errors import ExplainError
from fssgui.explain.baselines import (
    IntegratedGradientsExplainer,
    LimeExplainer,
    SupportForward,
    reduce_support_attribution,
)
from fssgui.explain.registry import EXPLAINER_NAMES, explainer_parameters, get_explainer
from test_affex_toy import TOY_SIZE, ToyMatcher, toy_episode, toy_region


@pytest.fixture(scope="module")
def toy():
    return ToyMatcher().eval()


def test_registry_names():
    assert EXPLAINER_NAMES == (
        "affex", "affex-masked", "affex-signed", "saliency", "integrated-gradients", "deeplift",
        "gradient-shap", "lime", "lime-best", "gaussian-noise-mask", "random", "prototype-share",
    )
    with pytest.raises(ExplainError, match="unknown explainer"):
        get_explainer("gradcam")
    with pytest.raises(ExplainError, match="no parameter"):
        get_explainer("saliency", size=32)
    assert "size" in explainer_parameters("affex-signed")
    best = get_explainer("lime-best")
    assert (best.n_segments, best.model_type, best.kernel_width, best.image_weight) == (160, "ridge", 0.5, 0.2)
    default = get_explainer("lime")
    assert (default.n_segments, default.model_type, default.kernel_width, default.image_weight) == (80, "lasso", 1.0, 0.2)


@pytest.mark.parametrize(
    "name", ["saliency", "integrated-gradients", "deeplift", "gradient-shap", "lime", "gaussian-noise-mask", "random"]
)
def test_every_baseline_gives_unit_maps(toy, name):
    params = {"n_samples": 6} if name == "lime" else {}
    attribution = get_explainer(name, **params).explain(toy, toy_episode(), toy_region())
    assert attribution.maps.shape == (2, TOY_SIZE, TOY_SIZE) and attribution.maps.dtype == torch.float32
    assert torch.isfinite(attribution.maps).all()
    assert float(attribution.maps.min()) >= 0.0 and float(attribution.maps.max()) <= 1.0
    assert attribution.method == name


def test_saliency_is_the_region_mean_logit_gradient(toy):
    batch, region = toy_episode(), toy_region()
    supports = batch.supports.clone().requires_grad_(True)
    logits = toy.predict(type(batch)(batch.query, supports, batch.support_masks)).logits
    logits[0, 1][region].mean().backward()
    expected = reduce_support_attribution(supports.grad[0].abs())
    got = get_explainer("saliency").explain(toy, batch, region).maps
    assert torch.allclose(got, expected, atol=1e-5)


def test_support_forward_keeps_the_query_fixed(toy):
    batch, region = toy_episode(), toy_region()
    forward = SupportForward(toy, batch, region)
    value = forward(batch.supports.expand(3, -1, -1, -1, -1))
    with torch.no_grad():
        expected = toy.predict(batch).logits[0, 1][region].mean()
    assert torch.allclose(value, expected.expand(3), atol=1e-5)


def test_integrated_gradients_completeness_and_batching(toy):
    batch, region = toy_episode(), toy_region()
    forward = SupportForward(toy, batch, region)
    supports = batch.supports.clone().requires_grad_(True)
    raw = IntegratedGradientsExplainer(n_steps=50, internal_batch_size=50)._attribute(forward, supports)
    with torch.no_grad():
        delta = forward(batch.supports) - forward(torch.zeros_like(batch.supports))
    assert float(raw.detach().sum()) == pytest.approx(float(delta), rel=0.05, abs=1e-3)
    one = IntegratedGradientsExplainer(n_steps=6, internal_batch_size=1)._attribute(forward, supports)
    six = IntegratedGradientsExplainer(n_steps=6, internal_batch_size=6)._attribute(forward, supports)
    assert torch.allclose(one, six, atol=1e-5)


class FunctionalToy(ToyMatcher):
    """The toy with functional ReLUs: DeepLift's module hooks have nothing to act on."""

    def __init__(self):
        super().__init__()
        self.relu1 = self.relu2 = self.relu2b = self.relu3 = nn.Identity()

    def _features(self, images):
        x = torch.relu(self.conv1(images))
        a = torch.relu(self.conv2(x))
        b = torch.relu(self.conv2b(a))
        return [a, b, torch.relu(self.conv3(b))]


def test_deeplift_refuses_functional_nonlinearities():
    with pytest.raises(ExplainError, match="DeepLift"):
        get_explainer("deeplift").explain(FunctionalToy().eval(), toy_episode(), toy_region())


def test_lime_maps_are_constant_on_superpixels(toy):
    batch = toy_episode()
    explainer = LimeExplainer(n_segments=12, n_samples=8, model_type="ridge")
    maps = explainer.explain(toy, batch, toy_region()).maps
    segments = explainer.segments(batch.supports[0])
    for k in range(2):
        for label in segments[k].unique():
            values = maps[k][segments[k] == label]
            assert torch.allclose(values, values[0].expand_as(values))
    # shared ids: superpixel j of every support carries the same coefficient
    first = {int(l): float(maps[0][segments[0] == l][0]) for l in segments[0].unique()}
    for label in segments[1].unique():
        if int(label) in first:
            assert float(maps[1][segments[1] == label][0]) == pytest.approx(first[int(label)])


def test_gaussian_noise_mask_ranks_foreground_first():
    batch = toy_episode()
    maps = get_explainer("gaussian-noise-mask", seed=0).explain(None, batch, toy_region()).maps
    fg = batch.support_masks[0] > 0
    assert float(maps[fg].min()) > float(maps[~fg].max())
    assert float((maps == 1.0).float().mean()) == pytest.approx(0.01, abs=0.005)


def test_random_is_seeded():
    batch = toy_episode()
    a = get_explainer("random", seed=3).explain(None, batch, toy_region()).maps
    b = get_explainer("random", seed=3).explain(None, batch, toy_region()).maps
    assert torch.equal(a, b)


def test_empty_region_is_an_error(toy):
    with pytest.raises(ExplainError, match="empty"):
        get_explainer("saliency").explain(toy, toy_episode(), torch.zeros(TOY_SIZE, TOY_SIZE, dtype=torch.bool))


def test_deeplift_refuses_unsupported_activation_modules():
    model = ToyMatcher().eval()
    model.relu2 = nn.ReLU6()  # as in EfficientNet-Lite: captum's DeepLift has no rule for it
    with pytest.raises(ExplainError, match="ReLU6"):
        get_explainer("deeplift").explain(model, toy_episode(), toy_region())


def test_gradient_shap_is_seeded_without_touching_the_global_rng(toy):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = get_explainer("gradient-shap", seed=5).explain(toy, toy_episode(), toy_region()).maps
    assert torch.equal(torch.rand(1), expected_next)
    b = get_explainer("gradient-shap", seed=5).explain(toy, toy_episode(), toy_region()).maps
    assert torch.equal(a, b)


def test_the_built_model_says_ahead_which_explainers_it_rules_out(toy):
    """What the app greys out once a model is loaded: DeepLift for a model whose activations it has
    no rule for (the built-in matchers' ReLU6) or that has none as modules; nothing for the toy."""
    from fssgui.pipeline.explainers import built_model_unavailable

    assert built_model_unavailable(toy) == {}
    relu6 = ToyMatcher().eval()
    relu6.relu2 = nn.ReLU6()
    assert "ReLU6" in built_model_unavailable(relu6)["deeplift"]
    assert "functional calls" in built_model_unavailable(FunctionalToy().eval())["deeplift"]


def test_the_explainer_registry_agrees_with_the_classes_it_names():
    """The registry lists explainers without importing them (the window lists them before torch):
    what it declares (needs matching, bound settings) must be what the built explainers say."""
    from fssgui.explain.registry import AFFEX_NAMES, EXPLAINER_NAMES, explainer_needs_matching, get_explainer

    for name in EXPLAINER_NAMES:
        explainer = get_explainer(name)
        assert explainer.name == name
        assert explainer_needs_matching(name) == bool(explainer.needs_matching), name
    assert set(AFFEX_NAMES) == {"affex", "affex-masked", "affex-signed"}
    assert get_explainer("affex-masked").variant == "masked"
    best = get_explainer("lime-best")
    assert (best.n_segments, best.model_type, best.kernel_width) == (160, "ridge", 0.5)
    assert get_explainer("lime-best", n_segments=40).n_segments == 40  # a preset's settings can be overridden
