"""The app's model jobs without Qt: they return numpy results at image resolution, refuse an
empty region with a clear message, and stop when cancelled."""
import numpy as np
import pytest

from fssgui.errors import Cancelled, ExplainError
from fssgui.pipeline import BRUSHED, ModelCache, ModelSpec, jobs
from fssgui.pipeline.explainers import parse_params
from testkit import TEST_EXPLAINERS, TINY_MODEL, make_episode, register_tiny_model


@pytest.fixture(scope="module")
def cache():
    register_tiny_model()
    return ModelCache()


SPEC = ModelSpec(TINY_MODEL, None, "cpu")


def test_model_jobs_return_numpy_results_at_image_resolution(cache):
    episode = make_episode(shots=2, size=(40, 56))
    progress = []
    prediction = jobs.predict(jobs.JobContext(progress=lambda f, m: progress.append(f)), cache, SPEC, episode)
    assert prediction.probability.shape == (40, 56) and prediction.probability.dtype == np.float32
    assert prediction.mask.dtype == bool and prediction.device == "cpu"
    assert progress[-1] == 1.0
    # the tiny matcher finds the bright disc
    assert prediction.mask[episode.query_mask].mean() > 0.8
    region = episode.query_mask.copy()
    result = jobs.explain(jobs.JobContext(), cache, SPEC, episode, region, BRUSHED, "test-mask", {}, TEST_EXPLAINERS)
    assert [m.shape for m in result.maps] == [s.image.shape[:2] for s in episode.supports]
    assert all(isinstance(m, np.ndarray) for m in result.maps)
    assert np.array_equal(result.region, region)
    # test-mask attributes shot i with (i+1) * its mask, brought back to the support's resolution
    assert result.maps[1].max() == pytest.approx(2.0)


def test_explain_job_with_empty_region_fails_with_a_clear_message(cache):
    episode = make_episode(shots=1, size=(48, 64))
    empty = np.zeros(episode.query_size, bool)
    with pytest.raises(ExplainError, match="region R.*empty"):
        jobs.explain(jobs.JobContext(), cache, SPEC, episode, empty, BRUSHED, "test-mask", {}, TEST_EXPLAINERS)


def test_a_cancelled_job_stops(cache):
    ctx = jobs.JobContext(cancelled=lambda: True)
    with pytest.raises(Cancelled):
        ctx.check()
    with pytest.raises(Cancelled):
        jobs.predict(ctx, cache, SPEC, make_episode(shots=1, size=(48, 64)))


def test_published_values_reach_the_hook():
    seen = []
    jobs.JobContext(publish=seen.append).publish("frame")
    jobs.JobContext().publish("nowhere")  # no hook: nothing happens
    assert seen == ["frame"]


def test_parse_params():
    assert parse_params("size=96, mode='reference', use_softmax=False") == {
        "size": 96, "mode": "reference", "use_softmax": False}
    assert parse_params("mode=reference") == {"mode": "reference"}
    with pytest.raises(ValueError):
        parse_params("96")
