"""Several methods on one region share one forward with the least memory (EpisodeRun.plan_methods):
one AffEx among baselines, with R known in advance, streams its forward and holds no score matrix;
R from the prediction, or two methods that need the scores, make the forward first and keep them."""
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


def _explainers(*names):
    return [get_explainer(name) for name in names]


def test_one_affex_with_r_known_goes_first_and_streams(loaded, episode):
    explainers = _explainers("saliency", "affex-signed", "random")
    run = EpisodeRun(loaded, episode)
    order = run.plan_methods(explainers, GROUND_TRUTH)
    assert order == [1, 0, 2] and run._prediction is None  # no forward yet: AffEx makes it
    region = run.region(GROUND_TRUTH)
    results = {i: run.explain(explainers[i], region=region) for i in order}
    assert run._prediction is not None and run._prediction.matching_scores is None  # nothing held
    # the same maps as the path that holds the scores
    held = EpisodeRun(loaded, episode)
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
    run = EpisodeRun(loaded, episode)
    assert run.adopt_prediction(shown)
    result = run.explain(get_explainer("affex-signed"), region=PREDICTION)
    assert run._prediction is not None and run._prediction.matching_scores is None
    held = EpisodeRun(loaded, episode)
    reference = held.explain(get_explainer("affex-signed"), region=PREDICTION)
    assert held._prediction.matching_scores is not None
    np.testing.assert_array_equal(result.region_info.model, reference.region_info.model)
    np.testing.assert_allclose(np.stack(result.model_maps), np.stack(reference.model_maps), atol=1e-6)


def test_a_prediction_of_other_inputs_is_not_adopted(loaded, episode):
    other = EpisodeRun(loaded, make_episode(shots=2, seed=6)).predicted()
    run = EpisodeRun(loaded, episode)
    assert not run.adopt_prediction(other) and not run.adopt_prediction(None)
    assert run.predicted().input_key == run.key(None)
