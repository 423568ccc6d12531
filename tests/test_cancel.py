"""Cancelling a job stops it within one step, and the next job runs normally.

A *step* is one call into the model: a forward (``predict``), a query encoding, or one call of a
prediction's ``head`` (AffEx's feature ablation). :class:`Steps` counts them and turns
``cancelled()`` true when step ``at`` starts (the user's click lands while that step runs); the
job must then raise :class:`~fssgui.errors.Cancelled` and start no further step. This is checked
at the first, a middle and the last step of every explainer on the built-in model (``matcher-lite2``
at a small input), of AffEx on DCAMA and DMTNet (their own ablation loops), of a causal run and of
a triage sweep; afterwards the same job, uncancelled, gives the result it gave before any cancel.
How many seconds a cancel takes at the real input size is measured by ``bench/cancel.py``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fssgui.errors import Cancelled
from fssgui.models.registry import build_model, get_entry
from fssgui.pipeline import GROUND_TRUTH, EpisodeRun, LoadedModel
from testkit import make_episode, register_at_size

BUILTIN = "matcher-lite2"
SMALL = {BUILTIN: ("cancel-lite2", 96), "dcama-resnet50": ("cancel-dcama", 64), "dmtnet": ("cancel-dmtnet", 128)}
#: every explainer that runs the model, with settings that keep them short; the trivial ones too
BUILTIN_METHODS = {
    "affex": {}, "affex-masked": {}, "affex-signed": {}, "saliency": {},
    "integrated-gradients": {"n_steps": 8, "internal_batch_size": 2},
    "gradient-shap": {"n_samples": 2, "n_baselines": 3}, "lime": {"n_samples": 6, "perturbations_per_eval": 1},
    "random": {"seed": 1}, "gaussian-noise-mask": {"seed": 1},
}


class Steps:
    """Counts the steps of ``model`` and turns :meth:`cancelled` true when step ``at`` starts."""

    def __init__(self, model, at: int = 0) -> None:
        self.at, self.started, self.after = at, 0, 0
        self.flag = False
        self._depth = 0
        self._model = model
        self._real = {name: getattr(model, name) for name in ("predict", "encode_query")}
        model.predict = self._counted(self._predict)
        model.encode_query = self._counted(self._real["encode_query"])

    def _step(self) -> None:
        self.started += 1
        if self.flag:
            self.after += 1
        if self.started == self.at:
            self.flag = True

    def _counted(self, call):
        def counted(*args, **kwargs):
            if self._depth:  # a call inside a step (predict encodes its query) is part of that step
                return call(*args, **kwargs)
            self._step()
            self._depth += 1
            try:
                return call(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def _predict(self, *args, **kwargs):
        prediction = self._real["predict"](*args, **kwargs)
        if prediction.head is not None:
            prediction.head = self._counted(prediction.head)
        return prediction

    def cancelled(self) -> bool:
        return self.flag

    def restore(self) -> None:
        for name in self._real:
            delattr(self._model, name)  # the instance attributes go: the class's methods again


def small_model(base: str):
    name = register_at_size(base, *SMALL[base], "cancel tests")
    torch.manual_seed(0)
    entry = get_entry(name)
    if entry.needs_checkpoint:  # random weights: the architecture is what is tested
        model = entry.builder()
        model.entry = entry
        return model.eval()
    return build_model(name, device="cpu")


@pytest.fixture(scope="module")
def builtin():
    return LoadedModel.wrap(small_model(BUILTIN))


@pytest.fixture(scope="module")
def episode():
    return make_episode(shots=2, seed=4)


def explain(loaded, episode, method: str, params: dict, at: int = 0):
    """``(steps, result or None)``: the job on a fresh run, cancelled when step ``at`` starts (the
    model under a new ``LoadedModel``: an explanation it remembers would be taken without a step)."""
    steps = Steps(loaded.model, at)
    try:
        run = EpisodeRun(LoadedModel(loaded.spec, loaded.model, loaded.device), episode)
        try:
            return steps, run.explain(method, params, GROUND_TRUTH, cancelled=steps.cancelled)
        except Cancelled:
            return steps, None
    finally:
        steps.restore()


def check_cancels(loaded, episode, method: str, params: dict) -> None:
    steps, before = explain(loaded, episode, method, params)
    total = steps.started
    assert before is not None and not steps.flag
    for at in sorted({1, (total + 1) // 2, total} - {0}):
        cancelled, result = explain(loaded, episode, method, params, at)
        assert result is None, f"{method}: cancelled at step {at} of {total}, it finished"
        assert cancelled.after == 0, f"{method}: {cancelled.after} steps started after the cancel at step {at}"
    steps, again = explain(loaded, episode, method, params)
    assert steps.started == total
    np.testing.assert_allclose(np.stack(again.maps), np.stack(before.maps), atol=1e-6, err_msg=method)


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_every_explainer_on_the_builtin_model_stops_within_one_step(builtin, episode, method):
    check_cancels(builtin, episode, method, BUILTIN_METHODS[method])
    if method in ("random", "gaussian-noise-mask"):  # no model step: a cancel before the job stops it
        run = EpisodeRun(builtin, episode)
        with pytest.raises(Cancelled):
            run.explain(method, BUILTIN_METHODS[method], GROUND_TRUTH, cancelled=lambda: True)


@pytest.mark.parametrize("base", ["dcama-resnet50", "dmtnet"])
def test_affex_on_dcama_and_dmtnet_stops_within_one_step(episode, base):
    """DCAMA's region ablation and DMTNet's learner reruns are loops inside the model (no
    ``head`` call to count): each of their passes checks ``cancelled()`` first, so a cancel in the
    middle of the loop runs no further pass."""
    loaded = LoadedModel.wrap(small_model(base))
    check_cancels(loaded, episode, "affex-signed", {})
    model = loaded.model
    model.ablation_chunk_cpu = 1
    run = EpisodeRun(loaded, episode)
    region = run.region(GROUND_TRUTH).tensor(run.device)

    def weights(cancelled):
        with torch.no_grad():  # a fresh forward: DMTNet memoises its reruns on the prediction
            prediction = model.predict(run.batch, with_scores=True)
        return model.feature_ablation_weights(prediction, region, run.size, cancelled=cancelled)

    checks: list[int] = []
    full = weights(lambda: checks.append(1) or False)
    passes = len(checks)
    assert passes >= model.num_levels, (passes, model.num_levels)  # one check per pass, one level per pass
    for stop in (1, passes // 2, passes):
        seen: list[int] = []
        with pytest.raises(Cancelled):
            weights(lambda: seen.append(1) or len(seen) >= stop)
        assert len(seen) == stop  # the check that said "cancelled" was the last thing asked
    assert torch.equal(weights(None), full)


def test_a_causal_run_stops_within_one_step(builtin, episode):
    def curve(at: int = 0):
        run = EpisodeRun(builtin, episode)
        attribution = run.explain("random", {"seed": 2}, GROUND_TRUTH)
        run.prediction()
        steps = Steps(builtin.model, at)
        try:
            return steps, run.causal(attribution, run.region(GROUND_TRUTH), "iauc", "confidence", steps=6,
                                     batch_size=1, cancelled=steps.cancelled).run()
        except Cancelled:
            return steps, None
        finally:
            steps.restore()

    steps, before = curve()
    total = steps.started
    assert total >= 6 and before.complete
    for at in (1, total // 2, total):
        cancelled, result = curve(at)
        assert cancelled.after == 0, (at, total)
        assert result is None or at == total, (at, total)  # a cancel in the last step may let the curve end
    _, again = curve()
    assert again.scores == pytest.approx(before.scores, abs=1e-6) and again.value == pytest.approx(before.value)


def test_a_sweep_stops_within_one_step_and_resumes(tmp_path):
    """A sweep with explanations and metrics, cancelled in the middle of an episode's work: no
    further step; resumed, it finishes with every episode."""
    from evaluate_testkit import make_dataset
    from fssgui.pipeline import ModelSpec
    from fssgui.triage.results import open_results
    from fssgui.triage.sweep import DatasetChoice, SweepRequest, causal_pair, run_sweep

    model = small_model(BUILTIN)
    loaded = LoadedModel(ModelSpec(SMALL[BUILTIN][0], None, "cpu"), model, torch.device("cpu"))
    data = make_dataset(tmp_path / "data")
    request = SweepRequest(DatasetChoice(str(data), "folders", episodes="3", seed=5), loaded.spec,
                           str(tmp_path / "sweep"), method="affex-signed", metrics=causal_pair("miou", 3),
                           region="ground-truth")
    counting = Steps(model)
    try:
        run_sweep(request, load_model=lambda spec: loaded, cancelled=counting.cancelled)
    finally:
        counting.restore()
    total = counting.started
    for at in (2, total // 2):
        steps = Steps(model, at)
        fresh = tmp_path / f"sweep-{at}"
        try:
            with pytest.raises(Cancelled):
                run_sweep(dataclasses.replace(request, out=str(fresh)), load_model=lambda spec: loaded,
                          cancelled=steps.cancelled)
        finally:
            steps.restore()
        assert steps.after == 0, (at, total)
        resumed = run_sweep(dataclasses.replace(request, out=str(fresh)), load_model=lambda spec: loaded)
        assert resumed.predicted_count == 3
    assert open_results(tmp_path / "sweep").predicted_count == 3
