"""AffEx with streamed matching scores (``FSSModel.streams_scores`` / ``predict(score_sink=...)``).

DCAMA hands each level's head-mean scores to a sink as soon as they are computed and keeps none;
AffEx, when it runs its own forward on such a model, builds each level map inside the sink. The
results must equal the non-streamed path (the model's scores all returned, then the level maps):
every variant, both modes, K = 1 and K = 2, and an explanation size E != S.

A random-weight DCAMA-R50 at S = 96 (the ResNet variants take any square size; the 1/32 levels
are 3 x 3), one module-scoped model. The decoder weights are He-normal (as in
test_dcama_ablation.py), so every level's ablation moves the region-mean logit and the
feature-ablation weights are non-trivial.
"""
from __future__ import annotations

import weakref

import pytest
import torch

from fssgui.explain.affex import AffinityExplainer, region_at_size
from fssgui.errors import Cancelled
from fssgui.models.base import EpisodeTensors, Prediction
from fssgui.models.dcama import DCAMA
from test_dcama_ablation import _random_dcama

SIZE = 96  # S
LEVELS = 13


def _episode(shots: int, seed: int, size: int = SIZE) -> EpisodeTensors:
    generator = torch.Generator().manual_seed(seed)
    return EpisodeTensors(
        torch.randn(1, 3, size, size, generator=generator),
        torch.randn(1, shots, 3, size, size, generator=generator),
        (torch.rand(1, shots, size, size, generator=generator) > 0.5).float(),
    )


def _region(size: int = SIZE) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    region[20:50, 30:70] = True
    return region


class PredictRecorder:
    """Wraps a model's ``predict``: records whether a ``score_sink`` was passed and the returned
    prediction."""

    def __init__(self, model) -> None:
        self.inner = model.predict
        self.calls: list[tuple[bool, Prediction]] = []

    def __call__(self, batch, **kwargs):
        prediction = self.inner(batch, **kwargs)
        self.calls.append((kwargs.get("score_sink") is not None, prediction))
        return prediction


@pytest.fixture(scope="module")
def model() -> DCAMA:
    return _random_dcama().eval()


@pytest.fixture(scope="module")
def episodes() -> dict[int, EpisodeTensors]:
    return {1: _episode(1, seed=1), 2: _episode(2, seed=2)}


def _explain_both_ways(model, batch, explainer, monkeypatch):
    """(streamed, non-streamed) attributions of AffEx's own forward, plus the predictions used."""
    region = _region()
    recorder = PredictRecorder(model)
    monkeypatch.setattr(model, "predict", recorder)
    streamed = explainer.explain(model, batch, region)
    monkeypatch.setattr(model, "streams_scores", False)  # the old path: all scores returned
    plain = explainer.explain(model, batch, region)
    monkeypatch.setattr(model, "streams_scores", True)
    assert [used_sink for used_sink, _ in recorder.calls] == [True, False]
    return streamed, plain, [prediction for _, prediction in recorder.calls]


def _assert_same(streamed, plain):
    assert streamed.method == plain.method
    # the signed variant's zero level is a value of the maps, equal up to their float rounding
    # (the streamed reduction may sum a level's rows in other chunks)
    want_params = dict(plain.params)
    if "zero_level" in want_params:
        want_params["zero_level"] = pytest.approx(want_params["zero_level"], abs=1e-6)
    assert streamed.params == want_params
    assert streamed.level_names == plain.level_names
    for got, want in ((streamed.maps, plain.maps), (streamed.level_maps, plain.level_maps),
                      (streamed.level_weights, plain.level_weights)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shots", [1, 2])
@pytest.mark.parametrize("mode", ["paper", "reference"])
@pytest.mark.parametrize("variant", ["unmasked", "masked", "signed"])
def test_streamed_equals_non_streamed(model, episodes, variant, mode, shots, monkeypatch):
    batch = episodes[shots]
    streamed, plain, (streamed_prediction, plain_prediction) = _explain_both_ways(
        model, batch, AffinityExplainer(variant=variant, mode=mode), monkeypatch
    )
    _assert_same(streamed, plain)
    assert streamed.maps.shape == (shots, SIZE, SIZE)
    assert streamed.level_maps.shape == (LEVELS, shots, SIZE, SIZE)
    # the weights are not degenerate (not the uniform fallback), so they were really compared
    assert float(streamed.level_weights.max() - streamed.level_weights.min()) > 1e-3
    # the prediction AffEx got from the streamed forward holds no scores, yet knows its levels
    assert streamed_prediction.matching_scores is None
    assert streamed_prediction.num_levels == LEVELS
    assert streamed_prediction.level_shapes == plain_prediction.level_shapes
    torch.testing.assert_close(streamed_prediction.logits, plain_prediction.logits, rtol=0, atol=0)


def test_streamed_equals_given_prediction_at_other_size(model, episodes, monkeypatch):
    """E != S, and the path a caller with its own scored prediction takes (GUI, CLI, evaluate,
    report) gives the same result as the streamed one."""
    batch = episodes[2]
    explainer = AffinityExplainer(variant="signed", size=40)
    streamed, plain, _ = _explain_both_ways(model, batch, explainer, monkeypatch)
    _assert_same(streamed, plain)
    with torch.no_grad():
        prediction = model.predict(batch, with_scores=True)
    given = explainer.explain(model, batch, _region(), prediction=prediction)
    _assert_same(streamed, given)
    assert streamed.level_maps.shape == (LEVELS, 2, 40, 40)
    # a caller's prediction keeps its scores (only AffEx's own prediction is released)
    assert len(prediction.matching_scores) == LEVELS
    assert all(s.numel() > 0 for s in prediction.matching_scores)


def test_streaming_forward_keeps_no_scores(model, episodes, monkeypatch):
    """The sink gets every level once, in order, with the scores ``with_scores`` returns; the
    model keeps no reference to a level's scores once the sink has returned: each is gone when
    the next level's attention starts and when the decoder part starts."""
    batch = episodes[2]
    with torch.no_grad():
        scored = model.predict(batch, with_scores=True)
    received: list[tuple[int, tuple[int, int]]] = []
    previous: list[weakref.ref] = []
    alive: list[tuple[str, bool]] = []  # (where, whether any streamed level's scores still lived)

    def any_alive() -> bool:
        return any(ref() is not None for ref in previous)

    def watch(name: str, function):
        def watched(*args, **kwargs):
            alive.append((name, any_alive()))
            return function(*args, **kwargs)
        return watched

    for block in model.model.DCAMA_blocks:
        monkeypatch.setattr(block, "attend", watch("attend", block.attend))
    monkeypatch.setattr(model.model, "skip_support", watch("decoder", model.model.skip_support))

    def sink(level: int, shape: tuple[int, int], start: int, scores: torch.Tensor) -> None:
        received.append((level, shape))
        assert start == 0  # at S = 96 every level fits in one chunk (see test_streamed_by_rows)
        torch.testing.assert_close(scores, scored.matching_scores[level], rtol=0, atol=0)
        previous.append(weakref.ref(scores))

    with torch.no_grad():
        streamed = model.predict(batch, with_scores=True, score_sink=sink)
    assert received == list(enumerate(scored.level_shapes))
    assert len(received) == LEVELS
    assert alive == [("attend", False)] * LEVELS + [("decoder", False)]
    assert not any_alive()  # nothing the prediction holds keeps them
    assert streamed.matching_scores is None
    assert streamed.num_levels == LEVELS and streamed.level_shapes == scored.level_shapes
    torch.testing.assert_close(streamed.logits, scored.logits, rtol=0, atol=0)
    torch.testing.assert_close(streamed.head(torch.ones(1, LEVELS))[0], scored.logits, rtol=0, atol=0)
    # the feature-ablation weights work from the streamed prediction (head/extras only)
    region_e = region_at_size(_region(), SIZE)
    for mode in ("paper", "reference"):
        torch.testing.assert_close(
            model.feature_ablation_weights(streamed, region_e, SIZE, mode=mode),
            model.feature_ablation_weights(scored, region_e, SIZE, mode=mode),
            rtol=0, atol=0,
        )
    # without a sink nothing changes: with_scores=False holds no scores either
    with torch.no_grad():
        plain = model.predict(batch)
    assert plain.matching_scores is None
    torch.testing.assert_close(plain.logits, scored.logits, rtol=0, atol=0)


# ------------------------------------------------------------------- levels streamed by rows
#: a chunk budget that splits DCAMA's levels at S = 96, K = 2 (support axis 2 x h x w) into rows:
#: 1/8 (12 x 12, 288 columns) in 7-row chunks (20 of 7 and one of 4), 1/16 (6 x 6, 72 columns)
#: in 28 + 8 rows, 1/32 (3 x 3, 18 columns) whole
ROWS_OF_SEVEN = 4 * 288 * 7


def _chunks(model, batch) -> list[tuple[int, tuple[int, int], int, torch.Tensor]]:
    """Every ``(level, shape, start, scores)`` a streamed forward hands to its sink, in order."""
    calls: list[tuple[int, tuple[int, int], int, torch.Tensor]] = []

    def sink(level: int, shape: tuple[int, int], start: int, scores: torch.Tensor) -> None:
        calls.append((level, shape, start, scores.clone()))

    with torch.no_grad():
        model.predict(batch, with_scores=True, score_sink=sink)
    return calls


@pytest.mark.parametrize("fused", [False, True], ids=["per-head", "fused"])
def test_streamed_by_rows(model, episodes, fused, monkeypatch):
    """With a chunk budget smaller than a level (K = 2), DCAMA hands the levels over by chunks of
    query rows, in level and row order, each within the budget, and put together they are the
    scores ``with_scores`` returns. AffEx from these chunks equals AffEx from the returned scores,
    every level map included, so a chunk dropped, doubled, put at other rows or out of order
    would show. Both attention paths: the per-head product (the CPU's) and the fused one with the
    concatenated-heads score product (CUDA's, forced here)."""
    from fssgui.models import base, dcama

    batch = episodes[2]
    monkeypatch.setattr(base, "SCORE_CHUNK_BYTES", ROWS_OF_SEVEN)
    if fused:
        monkeypatch.setattr(dcama, "FUSED_ATTENTION_DEVICES", ("cpu", "cuda"))
    with torch.no_grad():
        scored = model.predict(batch, with_scores=True)
    calls = _chunks(model, batch)
    starts = {0: list(range(0, 144, 7)), 1: [0, 28], 2: [0]}  # by block: 1/8, 1/16, 1/32
    want = [(level, tuple(shape), start) for level, shape in enumerate(scored.level_shapes)
            for start in starts[{12: 0, 6: 1, 3: 2}[shape[0]]]]
    assert [(level, tuple(shape), start) for level, shape, start, _ in calls] == want
    assert all(4 * scores.numel() <= ROWS_OF_SEVEN for _, _, _, scores in calls)
    for level, kept in enumerate(scored.matching_scores):
        rows = torch.cat([scores for index, _, _, scores in calls if index == level], 1)
        if fused:  # the returned level is one product, the streamed one a product per chunk
            torch.testing.assert_close(rows, kept, rtol=1e-6, atol=1e-5)
        else:  # the same per-head sums (computed by the same chunks of rows, however handed over)
            torch.testing.assert_close(rows, kept, rtol=0, atol=0)

    streamed, plain, (streamed_prediction, plain_prediction) = _explain_both_ways(
        model, batch, AffinityExplainer(variant="signed"), monkeypatch
    )
    _assert_same(streamed, plain)
    assert streamed_prediction.matching_scores is None
    torch.testing.assert_close(streamed_prediction.logits, plain_prediction.logits, rtol=0, atol=0)


def _drop_middle(calls):
    return calls[:3] + calls[4:]


def _double(calls):
    return calls[:3] + [calls[3]] + calls[3:]


def _swap(calls):
    return calls[:3] + [calls[4], calls[3]] + calls[5:]


def _skip_level(calls):
    return [call for call in calls if call[0] != 5]


def _cut_last(calls):
    return calls[:-1]


@pytest.mark.parametrize("tamper, message", [
    (_drop_middle, r"streamed matching level 0 from query row 4 out of order \(expected level 0 from row 3\)"),
    (_double, r"streamed matching level 0 from query row 3 out of order \(expected level 0 from row 4\)"),
    (_swap, r"streamed matching level 0 from query row 4 out of order \(expected level 0 from row 3\)"),
    (_skip_level, r"streamed matching level 6 from query row 0 out of order \(expected level 5 from row 0\)"),
    (_cut_last, r"streamed only 8 of the 9 query rows of matching level 12"),
], ids=["chunk-dropped", "chunk-doubled", "chunks-swapped", "level-skipped", "last-level-incomplete"])
def test_streaming_out_of_order_or_incomplete_is_an_error(model, episodes, tamper, message, monkeypatch):
    """A model that streams a level's rows or its levels out of order, twice, or not at all gets a
    clear ``ExplainError`` naming the model, instead of a wrong explanation. The model's real
    chunks (1 row per chunk at 1/8 and 1/16, 4 + 4 + 1 rows at 1/32), tampered with."""
    from fssgui.errors import ExplainError
    from fssgui.models import base

    batch = episodes[2]
    monkeypatch.setattr(base, "SCORE_CHUNK_BYTES", 4 * 18 * 4)
    calls = _chunks(model, batch)
    assert [start for level, _, start, _ in calls if level == LEVELS - 1] == [0, 4, 8]
    inner = model.predict

    def tampered_predict(batch, *, score_sink, **kwargs):
        prediction = inner(batch, score_sink=lambda *call: None, **kwargs)
        for call in tamper(calls):
            score_sink(*call)
        return prediction

    monkeypatch.setattr(model, "predict", tampered_predict)
    with pytest.raises(ExplainError, match=message) as error:
        AffinityExplainer(variant="signed").explain(model, batch, _region())
    assert str(error.value).startswith("model ")


def test_replayed_chunks_explain_as_streamed(model, episodes, monkeypatch):
    """The control of the test above: the same chunks replayed untouched explain as the model's
    own streaming does."""
    from fssgui.models import base

    batch = episodes[2]
    monkeypatch.setattr(base, "SCORE_CHUNK_BYTES", 4 * 18 * 4)
    explainer = AffinityExplainer(variant="signed")
    streamed = explainer.explain(model, batch, _region())
    calls = _chunks(model, batch)
    inner = model.predict

    def replaying_predict(batch, *, score_sink, **kwargs):
        prediction = inner(batch, score_sink=lambda *call: None, **kwargs)
        for call in calls:
            score_sink(*call)
        return prediction

    monkeypatch.setattr(model, "predict", replaying_predict)
    _assert_same(explainer.explain(model, batch, _region()), streamed)


def test_streamed_progress_and_cancellation(model, episodes, monkeypatch):
    batch = episodes[1]
    explainer = AffinityExplainer(variant="signed")
    streamed_progress: list[float] = []
    explainer.explain(model, batch, _region(), progress=streamed_progress.append)
    monkeypatch.setattr(model, "streams_scores", False)
    plain_progress: list[float] = []
    explainer.explain(model, batch, _region(), progress=plain_progress.append)
    monkeypatch.setattr(model, "streams_scores", True)
    assert streamed_progress == plain_progress
    assert len(streamed_progress) == LEVELS + 1 and streamed_progress[-1] == 1.0
    assert streamed_progress == sorted(streamed_progress)

    # cancelled after two levels: the forward stops inside the sink, no further level is computed
    levels_seen: list[float] = []
    polls = {"n": 0}

    def cancelled() -> bool:
        polls["n"] += 1
        return polls["n"] > 2

    with pytest.raises(Cancelled):
        explainer.explain(model, batch, _region(), progress=levels_seen.append, cancelled=cancelled)
    assert len(levels_seen) == 2


def test_non_streaming_model_still_explains(monkeypatch):
    """A model that does not stream (here the matcher with streaming switched off): AffEx takes
    the old path (no ``score_sink`` is passed) and its own forward gives what a given prediction
    gives."""
    from fssgui.models.matcher import EffNetMatcher

    matcher = EffNetMatcher().eval()
    monkeypatch.setattr(matcher, "streams_scores", False)
    size = 64
    batch = _episode(2, seed=4, size=size)
    with torch.no_grad():
        prediction = matcher.predict(batch, with_scores=True)
    sinks, own = _own_forward_equals_given(matcher, batch, _region(size), AffinityExplainer(variant="masked"),
                                           prediction, monkeypatch)
    assert sinks == [False]
    assert own.level_maps.shape[0] == prediction.num_levels == len(prediction.level_shapes) > 0


def _own_forward_equals_given(model, batch, region, explainer, prediction, monkeypatch):
    """AffEx running its own forward gives what AffEx given ``prediction`` (with scores) gives;
    returns whether each of AffEx's own forwards got a score sink, and its attribution."""
    recorder = PredictRecorder(model)
    monkeypatch.setattr(model, "predict", recorder)
    own = explainer.explain(model, batch, region)
    sinks = [used_sink for used_sink, _ in recorder.calls]
    _assert_same(own, explainer.explain(model, batch, region, prediction=prediction))
    return sinks, own


def _small_dmtnet():
    from fssgui.models.dmtnet import DMTNet

    torch.manual_seed(0)
    return DMTNet().eval(), 136


def _small_matcher():
    from fssgui.models.matcher import EffNetMatcher

    return EffNetMatcher().eval(), 64


@pytest.mark.parametrize("build", [_small_matcher, _small_dmtnet], ids=["matcher-effnet", "dmtnet"])
def test_other_streaming_models(build, monkeypatch):
    """The built-in matcher and DMTNet stream too: the sink gets every level, in order, by chunks of
    query rows within the budget, with the scores
    ``with_scores`` returns, and no reference to them outlives the sink's call; AffEx from the
    streamed forward equals AffEx from the returned scores (K = 2). DMTNet also replays its scores
    (from the correlation pyramids it holds anyway) to AffEx given its prediction."""
    from fssgui.models import base

    model, size = build()
    assert model.streams_scores
    batch = _episode(2, seed=5, size=size)
    with torch.no_grad():
        scored = model.predict(batch, with_scores=True)
    budget = 4 * 2 * 17 * 17 * 50  # DMTNet at 136 px, K = 2: 50 query rows of its 17 x 17 levels
    monkeypatch.setattr(base, "SCORE_CHUNK_BYTES", budget)
    replays = bool(getattr(model, "replays_scores", False))
    assert replays == (build is _small_dmtnet)

    def collect(run):
        received: dict[int, list[torch.Tensor]] = {}
        order: list[tuple[int, tuple[int, int], int]] = []
        refs: list[weakref.ref] = []
        alive: list[bool] = []

        def sink(level: int, shape: tuple[int, int], start: int, scores: torch.Tensor) -> None:
            alive.append(any(ref() is not None for ref in refs))
            assert start == sum(chunk.shape[1] for chunk in received.get(level, []))
            assert start == 0 or 4 * scores.numel() <= budget
            order.append((level, shape, start))
            received.setdefault(level, []).append(scores.clone())
            refs.append(weakref.ref(scores))

        with torch.no_grad():
            prediction = run(sink)
        assert [level for level, _, _ in order] == sorted(level for level, _, _ in order)
        assert [(level, shape) for level, shape, start in order if start == 0] == list(enumerate(scored.level_shapes))
        assert not any(alive) and not any(ref() is not None for ref in refs)
        for level, want in enumerate(scored.matching_scores):
            torch.testing.assert_close(torch.cat(received[level], 1), want, rtol=0, atol=0)
        return prediction, order

    streamed, order = collect(lambda sink: model.predict(batch, with_scores=True, score_sink=sink))
    assert len({level for level, _, _ in order}) == scored.num_levels > 0
    assert (len(order) > scored.num_levels) == replays  # DMTNet's largest levels came in several chunks
    assert streamed.matching_scores is None and streamed.num_levels == scored.num_levels
    torch.testing.assert_close(streamed.logits, scored.logits, rtol=0, atol=0)

    sinks, _ = _own_forward_equals_given(model, batch, _region(size), AffinityExplainer(variant="signed"), scored,
                                         monkeypatch)
    assert sinks == [True]
    if replays:
        with torch.no_grad():
            replayable = model.predict(batch, with_scores=True, replay_scores=True)
        assert replayable.matching_scores is None and replayable.has_scores
        collect(lambda sink: (replayable.score_replay(sink), replayable)[1])
        collect(lambda sink: (replayable.score_replay(sink), replayable)[1])  # as often as asked
        explainer = AffinityExplainer(variant="signed")
        _assert_same(explainer.explain(model, batch, _region(size), prediction=replayable),
                     explainer.explain(model, batch, _region(size), prediction=scored))


def test_num_levels_without_scores():
    logits = torch.zeros(1, 2, 4, 4)
    assert Prediction(logits=logits).num_levels == 0
    assert Prediction(logits=logits, level_shapes=[(2, 2), (1, 1)]).num_levels == 2
    scores = [torch.zeros(1, 4, 4)]
    assert Prediction(logits=logits, matching_scores=scores, level_shapes=[(2, 2)]).num_levels == 1


# ------------------------------------------------------------------------ the app's explain job
def test_app_job_streams_when_r_is_known_before_the_forward(model, monkeypatch):
    """The GUI's explain job: with a brushed (or ground-truth) R, AffEx runs the forward itself and
    streams (no scores held); with R = the prediction it must predict first. Both give the same
    maps and the same prediction as the explicit predict-then-explain path."""
    import types

    import numpy as np

    from fssgui.episode import Episode, Support
    from fssgui.pipeline import jobs
    from fssgui.models.registry import get_entry
    from fssgui.pipeline import BRUSHED, GROUND_TRUTH, PREDICTION, LoadedModel, ModelSpec

    dcama_entry = get_entry("dcama-resnet50")
    monkeypatch.setattr(model, "entry", types.SimpleNamespace(name="dcama-test", input_size=SIZE,
                                                              mean=dcama_entry.mean, std=dcama_entry.std))
    rng = np.random.default_rng(4)
    image = lambda: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # noqa: E731
    support_mask = np.zeros((SIZE, SIZE), bool)
    support_mask[10:60, 20:80] = True
    episode = Episode(query_image=image(), supports=[Support(image(), support_mask)],
                      query_mask=_region().numpy())
    spec = ModelSpec("dcama-test", None, "cpu")
    cache = types.SimpleNamespace(get=lambda spec, log: LoadedModel(spec, model, torch.device("cpu")))
    recorder = PredictRecorder(model)
    monkeypatch.setattr(model, "predict", recorder)

    def run(region, source):
        recorder.calls.clear()
        result = jobs.explain(jobs.JobContext(), cache, spec, episode, region, source, "affex-signed", {})
        return result, [sink for sink, _ in recorder.calls], [p.matching_scores for _, p in recorder.calls]

    brushed, sinks, scores = run(_region().numpy(), BRUSHED)
    assert sinks == [True] and scores == [None]  # one forward, streamed, nothing held
    ground_truth, sinks, _ = run(None, GROUND_TRUTH)
    assert sinks == [True]

    # the explicit path: predict with scores, then explain that prediction
    monkeypatch.setattr(model, "streams_scores", False)
    plain, sinks, _ = run(_region().numpy(), BRUSHED)
    assert sinks == [False]
    by_prediction, sinks, _ = run(None, PREDICTION)
    assert sinks == [False] and by_prediction.region is not None
    monkeypatch.setattr(model, "streams_scores", True)
    assert run(None, PREDICTION)[1] == [False]  # R needs the prediction first: not streamed

    for result in (brushed, ground_truth):
        assert np.array_equal(result.region, plain.region)
        np.testing.assert_allclose(np.stack(result.maps), np.stack(plain.maps), rtol=0, atol=1e-6)
        np.testing.assert_allclose(result.level_weights, plain.level_weights, rtol=0, atol=1e-6)
        assert np.array_equal(result.prediction.mask, plain.prediction.mask)
        np.testing.assert_allclose(result.prediction.probability, plain.prediction.probability, rtol=0, atol=1e-6)
        assert result.level_names == plain.level_names


@pytest.mark.parametrize("shots", [1, 2])
def test_replayed_scores_explain_as_held_ones(model, episodes, shots, monkeypatch):
    """``predict(with_scores=True, replay_scores=True)`` keeps each level's projected queries and
    keys, not its scores (far smaller), and replays the scores into a sink: in level and row order,
    in the streaming chunks, the held scores' values, as often as asked. AffEx given such a
    prediction runs no forward and equals AffEx given the held scores (R = the prediction: the
    forward must come before R, and no score matrix is held through it)."""
    from fssgui.models import base

    batch = episodes[shots]
    monkeypatch.setattr(base, "SCORE_CHUNK_BYTES", ROWS_OF_SEVEN)
    with torch.no_grad():
        held = model.predict(batch, with_scores=True)
        replayable = model.predict(batch, with_scores=True, replay_scores=True)
    assert replayable.matching_scores is None and replayable.has_scores and held.has_scores
    assert replayable.num_levels == LEVELS and replayable.level_shapes == held.level_shapes
    torch.testing.assert_close(replayable.logits, held.logits, rtol=0, atol=0)
    # at S = 96 every level has more channels than positions: each keeps its scores (the
    # projections are kept where they are smaller: test_score_replay_from_projections)
    assert all(level.scores is not None for level in replayable.score_replay.levels)

    for _ in range(2):  # replayable again and again
        calls = []
        replayable.score_replay(lambda *call: calls.append((call[0], call[1], call[2], call[3].clone())))
        assert [(level, start) for level, _, start, _ in calls] == sorted((level, start) for level, _, start, _ in calls)
        assert all(4 * scores.numel() <= max(ROWS_OF_SEVEN, 4 * scores.shape[-1]) for *_, scores in calls)
        for level, want in enumerate(held.matching_scores):
            got = torch.cat([scores for index, _, _, scores in calls if index == level], 1)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)

    recorder = PredictRecorder(model)
    monkeypatch.setattr(model, "predict", recorder)
    explainer = AffinityExplainer(variant="signed")
    replayed = explainer.explain(model, batch, _region(), prediction=replayable)
    assert recorder.calls == []  # no forward: the given prediction's scores were replayed
    _assert_same(replayed, explainer.explain(model, batch, _region(), prediction=held))
    assert replayable.score_replay is not None  # a caller's prediction stays replayable


def test_episode_run_keeps_replayable_scores_for_r_from_the_prediction(model, monkeypatch):
    """The pipeline's R = the prediction on DCAMA: the forward keeps no score matrix
    (``replay_scores``), and the explanation equals the one from held scores."""
    import types

    import numpy as np

    from fssgui.episode import Episode, Support
    from fssgui.models.registry import get_entry
    from fssgui.pipeline import PREDICTION, EpisodeRun, LoadedModel, ModelSpec

    entry = get_entry("dcama-resnet50")
    monkeypatch.setattr(model, "entry", types.SimpleNamespace(name="dcama-test", input_size=SIZE,
                                                              mean=entry.mean, std=entry.std))
    rng = np.random.default_rng(7)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:60, 20:80] = True
    episode = Episode(query_image=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                      supports=[Support(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), mask)])
    loaded = LoadedModel(ModelSpec("dcama-test", None, "cpu"), model, torch.device("cpu"))
    explainer = AffinityExplainer(variant="signed")

    def explain():
        run = EpisodeRun(loaded, episode)
        run.prediction(with_scores=True)
        return run, run.explain(explainer, region=PREDICTION)

    run, replayed = explain()
    assert run.prediction().matching_scores is None and run.prediction().score_replay is not None
    monkeypatch.setattr(model, "replays_scores", False)
    run, held = explain()
    assert len(run.prediction().matching_scores) == LEVELS
    assert replayed.region is not None and np.array_equal(replayed.region, held.region)
    np.testing.assert_allclose(np.stack(replayed.maps), np.stack(held.maps), rtol=0, atol=1e-6)
    np.testing.assert_allclose(replayed.level_weights, held.level_weights, rtol=0, atol=1e-6)


def test_score_replay_from_projections():
    """Where a level's projected queries and keys are smaller than its scores (the 1/8 levels at
    DCAMA's 384 px), the replay keeps them and recomputes the scores chunk by chunk: the attention's
    own head-mean scores, chunks in row order within the budget."""
    from fssgui.models.base import score_chunk_rows
    from fssgui.models.dcama import DCAMAScoreReplay, MaskAttention

    torch.manual_seed(0)
    block = MaskAttention(16, heads=8)  # C = 16 channels, 400 positions: projections 12800 < scores 160000
    q = block.project_query(torch.randn(1, 400, 16))
    k = block.project_support(torch.randn(1, 400, 16))
    values = (torch.rand(1, 400) > 0.5).float()
    held: list[torch.Tensor] = []
    with torch.no_grad():
        coarse = block.attend(q, k, values, lambda start, chunk: held.append(chunk.clone()))
        replay = DCAMAScoreReplay(1)
        assert replay.projections_are_smaller(q, k)
        replay.keep_projections(block, q, k, (20, 20))
        torch.testing.assert_close(block.attend(q, k, values), coarse, rtol=0, atol=0)
    calls = []
    replay(lambda *call: calls.append(call))
    rows = score_chunk_rows(400, 1)
    assert [start for _, _, start, _ in calls] == list(range(0, 400, rows))
    assert all(level == 0 and shape == (20, 20) for level, shape, _, _ in calls)
    torch.testing.assert_close(torch.cat([chunk for *_, chunk in calls], 1), held[0], rtol=1e-6, atol=1e-6)
