"""AffEx reference-mode parity with the official AffinityExplainer code (DCAMA ResNet-50, 1 shot,
parity weights; the official outputs are in tests/data/affex).

The maps are float16 in the reference file (quantisation ~5e-4): atol 1e-3. Weights: atol 1e-5.
One DCAMA-R50 forward (module fixture) and one AffEx call per E; the masked and signed maps are
derived from the same level maps with :func:`fssgui.explain.affex.aggregate`, which is exactly the
last step of ``explain``. Paper vs reference weight pairing is the adapter's job (its tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fssgui.explain.affex import AffinityExplainer, aggregate
from fssgui.models.base import EpisodeTensors

DATA = Path(__file__).parent / "data"
from fssgui.models import dcama


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "affex" / "dcama_r50_1shot_affex_maps.npz")


@pytest.fixture(scope="module")
def dcama_run():
    from parity_weights import parity_state_dict

    parity = np.load(DATA / "parity" / "dcama_r50_1shot_384.npz")
    model = dcama.DCAMA("resnet50")
    model.load_state_dict(parity_state_dict(model, parity, prefix=""), strict=True)
    model.eval()
    batch = EpisodeTensors(
        torch.from_numpy(parity["query_img"]),
        torch.from_numpy(parity["support_imgs"]),
        torch.from_numpy(parity["support_masks"]),
    )
    with torch.no_grad():
        prediction = model.predict(batch, with_scores=True)
    assert np.abs(prediction.logits.numpy() - parity["logits"]).max() < 1e-4
    return model, batch, prediction


@pytest.fixture(scope="module")
def unmasked(dcama_run, reference):
    model, batch, prediction = dcama_run
    region = torch.from_numpy(reference["region"])
    return {
        size: AffinityExplainer(size=size, mode="reference").explain(model, batch, region, prediction=prediction)
        for size in (32, 96)
    }


@pytest.mark.parametrize("size", [32, 96])
def test_reference_ablation_weights(unmasked, reference, size):
    weights = unmasked[size].level_weights.double().numpy()
    assert np.allclose(weights, reference[f"ablation_w_unmasked_E{size}"], atol=1e-5)


@pytest.mark.parametrize("variant", ["unmasked", "masked", "signed"])
@pytest.mark.parametrize("size", [32, 96])
def test_reference_maps(unmasked, dcama_run, reference, size, variant):
    _, batch, _ = dcama_run
    attribution = unmasked[size]
    maps, zero_level = aggregate(
        attribution.level_maps, attribution.level_weights, batch.support_masks[0], variant, 384
    )
    if variant == "unmasked":  # explain() ends with this very call
        assert torch.equal(maps, attribution.maps)
    assert (zero_level is not None) == (variant == "signed")
    expected = reference[f"map_{variant}_E{size}"].astype(np.float32)
    assert np.abs(maps.numpy() - expected).max() < 1e-3
    assert float(maps.double().sum()) == pytest.approx(float(reference[f"map_{variant}_E{size}_sum_f64"]), rel=1e-5)
