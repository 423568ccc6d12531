"""Several methods on one region share one forward with the least memory (EpisodeRun.plan_methods):
one AffEx among baselines, with R known in advance, streams its forward and holds no score matrix;
R from the prediction, or two methods that need the scores, make the forward first and keep them.
The AffEx variants of one explanation share its level maps and weights (no second forward or ablation).

A loaded model remembers its latest AffEx levels: a test that compares two paths of one computation
gives each its own ``LoadedModel`` (:func:`fresh`)."""
from __future__ import annotations

import numpy as np
import pytest

from fssgui.explain.registry import get_explainer
from fssgui.models.registry import build_model
from fssgui.pipeline import GROUND_TRUTH, PREDICTION, EpisodeRun, LoadedModel
from testkit import make_episode, register_at_size


@pytest.fixture(scope="module")
def loaded():
    name = register_at_size("matcher-effnet", "plan-effnet", 96, "method plan tests")  # predicts foreground here
    return LoadedModel.wrap(build_model(name, device="cpu"))


@pytest.fixture(scope="module")
def episode():
    return make_episode(shots=2, seed=5)


def fresh(loaded):
    """The same model under a new ``LoadedModel``: nothing remembered from earlier explanations."""
    return LoadedModel(loaded.spec, loaded.model, loaded.device)


def _explainers(*names):
    return [get_explainer(name) for name in names]


def test_one_affex_with_r_known_goes_first_and_streams(loaded, episode):
    explainers = _explainers("saliency", "affex-signed", "random")
    run = EpisodeRun(fresh(loaded), episode)
    order = run.plan_methods(explainers, GROUND_TRUTH)
    assert order == [1, 0, 2] and run._prediction is None  # no forward yet: AffEx makes it
    region = run.region(GROUND_TRUTH)
    results = {i: run.explain(explainers[i], region=region) for i in order}
    assert run._prediction is not None and run._prediction.matching_scores is None  # nothing held
    # the same maps as the path that holds the scores
    held = EpisodeRun(fresh(loaded), episode)
    held.prediction(with_scores=True)
    reference = held.explain(get_explainer("affex-signed"), region=held.region(GROUND_TRUTH))
    np.testing.assert_allclose(np.stack(results[1].model_maps), np.stack(reference.model_maps), atol=1e-6)
    np.testing.assert_array_equal(results[0].prediction.mask, reference.prediction.mask)


@pytest.mark.parametrize("source, names", [(PREDICTION, ("saliency", "affex")),
                                           (GROUND_TRUTH, ("affex", "affex-signed"))])
def test_the_forward_comes_first_and_keeps_the_scores_when_it_must(loaded, episode, source, names):
    run = EpisodeRun(loaded, episode)
    order = run.plan_methods(_explainers(*names), source)
    assert order == [0, 1]
    assert run._prediction is not None and run._prediction.matching_scores is not None


def test_no_method_needs_the_scores(loaded, episode):
    run = EpisodeRun(loaded, episode)
    assert run.plan_methods(_explainers("saliency", "random"), GROUND_TRUTH) == [0, 1]
    assert run._prediction is None


def test_r_from_a_shown_prediction_needs_no_forward_of_its_own(loaded, episode):
    """The app's explain job gets the prediction it shows: R = prediction then comes from it and
    AffEx streams its forward (no score matrix held), with the maps of the path that holds them."""
    shown = EpisodeRun(loaded, episode).predicted()
    run = EpisodeRun(fresh(loaded), episode)
    assert run.adopt_prediction(shown)
    result = run.explain(get_explainer("affex-signed"), region=PREDICTION)
    assert run._prediction is not None and run._prediction.matching_scores is None
    held = EpisodeRun(fresh(loaded), episode)
    reference = held.explain(get_explainer("affex-signed"), region=PREDICTION)
    assert held._prediction.matching_scores is not None
    np.testing.assert_array_equal(result.region_info.model, reference.region_info.model)
    np.testing.assert_allclose(np.stack(result.model_maps), np.stack(reference.model_maps), atol=1e-6)


def test_a_prediction_of_other_inputs_is_not_adopted(loaded, episode):
    other = EpisodeRun(loaded, make_episode(shots=2, seed=6)).predicted()
    run = EpisodeRun(loaded, episode)
    assert not run.adopt_prediction(other) and not run.adopt_prediction(None)
    assert run.predicted().input_key == run.key(None)


def test_the_variants_of_one_explanation_share_its_levels(loaded, episode, monkeypatch):
    """After AffEx on R, the other variants of R (other blur too) take its level maps and weights: no
    forward, no ablation, in the same run or a later one on the same loaded model (the app makes a
    run per job, with the prediction it shows), with the maps of their own full computation. Another
    R, or other level settings, compute again."""
    shared = fresh(loaded)
    first = EpisodeRun(shared, episode).explain(get_explainer("affex"), region=GROUND_TRUTH)
    calls = []
    monkeypatch.setattr(loaded.model, "predict", lambda *args, **kwargs: calls.append("predict"))
    monkeypatch.setattr(loaded.model, "feature_ablation_weights", lambda *args, **kwargs: calls.append("ablation"))
    run = EpisodeRun(shared, episode)
    signed = run.explain(get_explainer("affex-signed"), region=GROUND_TRUTH)
    later = EpisodeRun(shared, episode)
    assert later.adopt_prediction(first.prediction)
    masked = later.explain(get_explainer("affex-masked", blur_sigma=20.0), region=GROUND_TRUTH)
    assert calls == [] and run._prediction is None
    assert signed.levels_from == masked.levels_from == "affex" and first.levels_from == ""
    assert signed.summary()["levels_from"] == "affex" and "levels_from" not in first.summary()
    monkeypatch.undo()
    for result, name, params in ((signed, "affex-signed", {}), (masked, "affex-masked", {"blur_sigma": 20.0})):
        reference = EpisodeRun(fresh(loaded), episode).explain(get_explainer(name, **params), region=GROUND_TRUTH)
        np.testing.assert_allclose(np.stack(result.model_maps), np.stack(reference.model_maps), atol=1e-6)
        np.testing.assert_allclose(result.level_weights, reference.level_weights, atol=1e-6)
        assert result.method == name and result.params == reference.params
        assert result.level_names == reference.level_names and result.input_key == reference.input_key
        np.testing.assert_array_equal(result.prediction.mask, reference.prediction.mask)
    # another R, or another explanation size, computes its own levels
    for region, params in ((PREDICTION, {}), (GROUND_TRUTH, {"size": 48})):
        EpisodeRun(shared, episode).explain(get_explainer("affex"), region=GROUND_TRUTH)  # remembered
        calls.clear()
        monkeypatch.setattr(loaded.model, "feature_ablation_weights", lambda *args, **kwargs: calls.append(1) or 1 / 0)
        with pytest.raises(ZeroDivisionError):
            EpisodeRun(shared, episode).explain(get_explainer("affex-signed", **params), region=region)
        assert calls == [1]
        monkeypatch.undo()
