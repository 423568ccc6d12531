"""Causal metrics against the official AffinityExplainer ``FSSCausalMetric`` (DCAMA ResNet-50,
1 shot, parity weights with one foreground bias shifted so that half the query is predicted
foreground; R = the predicted foreground, the ground truth = the model's own prediction).
Reference values: tests/data/affex/dcama_r50_1shot_causal_signed.npz (IAUC/DAUC with the mIoU and
the reference's "logits" (= confidence) measures, IAUC@1 %, mIoULoss@5 % of Signed AffEx, E = 32).

Everything runs through the pipeline (:class:`fssgui.pipeline.EpisodeRun`), as every front-end
does: R = prediction, the ground-truth fallback to the prediction, the one causal runner. The
tolerances are the reference's own (its 1-thread vs 2-thread spread, times ~10)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fssgui.metrics.causal import step_boundaries
from fssgui.models.base import EpisodeTensors
from fssgui.models.registry import get_entry
from fssgui.pipeline import EpisodeRun, LoadedModel, ModelSpec

DATA = Path(__file__).parent / "data"
BIAS_KEY, BIAS_SHIFT = "model.mixer3.2.bias", 0.615

# (reference key prefix, metric, measure, settings) as in the reference's calls
CASES = {
    "IAUC_miou": ("iauc", "miou", {"steps": 10}),
    "DAUC_miou": ("dauc", "miou", {"steps": 10}),
    "IAUC_logits": ("iauc", "confidence", {"steps": 10}),
    "DAUC_logits": ("dauc", "confidence", {"steps": 10}),
    "IAUC001_logits": ("iauc@p", "confidence", {"steps": 5, "percentage": 0.01}),
    "mIoULoss005": ("miou-loss@p", "miou", {"steps": 1, "percentage": 0.05}),
}


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "affex" / "dcama_r50_1shot_causal_signed.npz")


@pytest.fixture(scope="module")
def run(reference):
    from fssgui.models import dcama
    from parity_weights import parity_state_dict

    parity = np.load(DATA / "parity" / "dcama_r50_1shot_384.npz")
    model = dcama.DCAMA("resnet50")
    state = parity_state_dict(model, parity, prefix="")
    bias = state[BIAS_KEY].clone()
    bias[1] = bias[1] + torch.tensor(BIAS_SHIFT, dtype=torch.float32)
    state[BIAS_KEY] = bias
    model.load_state_dict(state, strict=True)
    model.entry = get_entry("dcama-resnet50")
    model.eval()
    batch = EpisodeTensors(torch.from_numpy(reference["query_img"]), torch.from_numpy(reference["support_imgs"]),
                           torch.from_numpy(reference["support_masks"]))
    return EpisodeRun(LoadedModel(ModelSpec("dcama-resnet50", None, "cpu"), model, torch.device("cpu")),
                      batch=batch)


@pytest.fixture(scope="module")
def region(run, reference):
    region = run.region("prediction")
    assert np.array_equal(region.model, reference["region"])  # R = the predicted foreground
    return region


def test_forward_and_region(run, reference, region):
    logits = run.prediction().logits
    assert float((logits - torch.from_numpy(reference["logits"])).abs().max()) < 1e-4
    gt, source = run.ground_truth()
    assert source.startswith("model prediction")
    assert np.array_equal(gt.numpy().astype(bool), reference["gt"].astype(bool))


def test_signed_affex_map(run, reference, region):
    explanation = run.explain("affex-signed", {"size": 32, "mode": "reference"}, region)
    assert np.abs(explanation.model_maps - reference["map_signed_E32"]).max() < 1e-4
    assert np.allclose(explanation.level_weights, reference["ablation_w_signed_E32"], atol=1e-4)


@pytest.fixture(scope="module")
def curves(run, reference, region):
    """Each reference curve, computed once (on the reference's fp32 map) when a test first asks."""
    cache = {}

    def curve(case):
        if case not in cache:
            metric, measure, settings = CASES[case]
            cache[case] = run.causal_metric(reference["map_signed_E32"], region, metric, measure, **settings)
        return cache[case]

    return curve


@pytest.mark.parametrize("case", list(CASES))
def test_curve_and_value(curves, reference, case):
    metric, measure, settings = CASES[case]
    curve = curves(case)
    intervals = reference[f"{case}_signed_intervals"]
    loss = metric == "miou-loss@p"
    bounds = step_boundaries(384 * 384, settings["steps"], settings.get("percentage"), loss)
    assert bounds == intervals.tolist()
    expected_curve = reference[f"{case}_signed_curve"]
    assert len(curve.scores) == len(expected_curve)
    value = reference[f"{case}_signed"] if loss else reference[f"{case}_signed_auc"]
    if measure == "miou":
        atol_curve, atol_value = 2e-3, (2e-3 if loss else 2e-4)
    else:
        atol_curve, atol_value = 1e-4, 2e-5
    assert np.abs(np.asarray(curve.scores) - expected_curve).max() < atol_curve
    assert abs(curve.value - float(value)) < atol_value


def test_exact_points(curves):
    """The points the reference says hold without tolerance: the unperturbed and the blank states."""
    assert curves("IAUC_miou").scores[-1] == 1.0
    assert curves("DAUC_miou").scores[-1] == pytest.approx(73489 / 147456, abs=1e-7)
    unperturbed, blank = 0.5283018, 0.6010348
    assert curves("IAUC_logits").scores[-1] == pytest.approx(unperturbed, abs=1e-6)
    assert curves("DAUC_logits").scores[0] == pytest.approx(unperturbed, abs=1e-6)
    for case, index in (("IAUC_logits", 0), ("DAUC_logits", -1), ("IAUC001_logits", 0)):
        assert curves(case).scores[index] == pytest.approx(blank, abs=1e-6)
