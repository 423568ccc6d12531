"""DMTNet-R50 parity with the official code (vectors: tests/data/parity/, README in /work/shared/parity).

Weights from the parity rule, saved ``module.``-prefixed, loaded through the real loader; stored
float inputs; tolerances of the parity README §5. One forward for the whole file. The vector
exercises the degenerate pseudo-mask branch (all background: an exact zero row in C_q) and the
C_q row-swap quirk.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fssgui.models import build_model
from fssgui.models.base import EpisodeTensors
from fssgui.models.dmtnet import DMTNet

from parity_weights import PARITY_DIR, manifest, parity_state_dict

NPZ = PARITY_DIR / "dmtnet_r50_1shot_400.npz"
GROUPS = ("l4", "l3", "l2")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(NPZ))


@pytest.fixture(scope="module")
def run(ref, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("dmtnet") / "best_model.pt"
    torch.save(parity_state_dict(DMTNet(), ref, prefix="module."), ckpt)
    log: list[str] = []
    model = build_model("dmtnet", checkpoint=ckpt, log=log.append)
    model.keep_transformed = True
    batch = EpisodeTensors(
        torch.from_numpy(ref["query_img"]), torch.from_numpy(ref["support_imgs"]), torch.from_numpy(ref["support_masks"])
    )
    with torch.no_grad():
        qf = model.encode_query(batch.query)
        sfeats = model.extract_features(batch.supports[:, 0])
        pred = model.predict(batch, with_scores=True, query_features=qf)
    return {"model": model, "pred": pred, "qfeats": qf.features, "sfeats": sfeats, "log": log, "batch": batch}


def _sum_close(ours: torch.Tensor, want: float, abssum: float) -> None:
    assert float(ours.double().sum()) == pytest.approx(float(want), rel=1e-4, abs=1e-6 * abssum)


def test_state_dict_manifest_matches_official(ref, run):
    sd = run["model"].state_dict()
    man = manifest(ref)
    assert list(sd.keys()) == [k for k, _, _ in man]
    assert [tuple(v.shape) for v in sd.values()] == [s for _, s, _ in man]
    assert "loaded 430 entries by name" in "\n".join(run["log"])


def test_feature_sums(ref, run):
    assert list(run["model"].stack_ids) == list(ref["stack_ids"])
    for i, (q, s) in enumerate(zip(run["qfeats"], run["sfeats"])):
        assert list(q.shape) == list(ref["qfeat_shapes"][i])
        for feat, want in ((q, ref["qfeat_sums_s0"][i]), (s, ref["sfeat_sums_s0"][i])):
            _sum_close(feat, want, feat.numel() * float(feat.abs().mean()))


def test_transformed_feature_sums(ref, run):
    """Sums of P_q·F_q, P·(F_s m), P·(F_s (1-m)) (robust pinv on the zero-row C_q)."""
    tr = run["pred"].extras["shots"][0].transformed
    for name, key in (("query", "tq_sums_s0"), ("support", "ts_sums_s0"), ("bg_support", "tb_sums_s0")):
        for i, t in enumerate(tr[name]):
            _sum_close(t, ref[key][i], t.numel() * float(t.abs().mean()))


def test_pseudo_mask_similarities(ref, run):
    psim = run["pred"].extras["pseudo_similarity"][0]
    assert len(psim) == 13
    for i, p in enumerate(psim):
        torch.testing.assert_close(p, torch.from_numpy(ref[f"psim_{i:02d}"]), atol=1e-4, rtol=0)
    # the degenerate branch the vector tests: all background everywhere
    assert not any(bool(m.any()) for m in run["pred"].extras["pseudo_masks"][0])


@pytest.mark.parametrize("which", ["corr", "bgcorr"])
def test_correlation_pyramids(ref, run, which):
    shot = run["pred"].extras["shots"][0]
    pyramid = shot.corr if which == "corr" else shot.bg_corr
    for g, name in enumerate(GROUPS):
        t = pyramid[g]
        p = f"{which}_s0_{name}"
        assert list(t.shape) == list(ref[p + "_shape"])
        abssum = float(ref[p + "_abssum"])
        _sum_close(t, ref[p + "_sum"], abssum)
        assert float(t.double().abs().sum()) == pytest.approx(abssum, rel=1e-4)
        idx = torch.from_numpy(ref[p + "_idx"])
        vals = t[tuple(idx[:, d] for d in range(6))]
        torch.testing.assert_close(vals, torch.from_numpy(ref[p + "_vals"]), atol=1e-4, rtol=1e-4)
        layer_sums = t.double().sum(dim=(0, 2, 3, 4, 5))
        want = torch.from_numpy(ref[p + "_layer_sums"]).double()
        torch.testing.assert_close(layer_sums, want, rtol=1e-4, atol=1e-6 * abssum)


def test_logits(ref, run):
    pred = run["pred"]
    for ours, key in ((pred.logits, "logits_s0"), (pred.extras["bg_logits"][0], "bg_logits_s0")):
        want = torch.from_numpy(ref[key])
        assert ours.shape == want.shape == (1, 2, 400, 400)
        torch.testing.assert_close(ours, want, atol=1e-4, rtol=1e-4)
    want = torch.from_numpy(ref["logits_s0"])
    decided = (want[:, 1] - want[:, 0]).abs() > 1e-3
    official = torch.from_numpy(ref["pred"]).bool()
    assert torch.equal(pred.mask()[decided], official[decided])
    assert torch.equal(pred.extras["vote_mask"][decided], official[decided])  # K = 1: vote == argmax


def test_matching_scores_are_corr_plus_bg_corr(run):
    pred = run["pred"]
    shot = pred.extras["shots"][0]
    assert pred.num_levels == 13
    assert pred.level_shapes == [(13, 13)] * 3 + [(25, 25)] * 6 + [(50, 50)] * 4
    level = 0
    for g in range(3):
        for j in range(shot.corr[g].shape[1]):
            h, w = pred.level_shapes[level]
            s = pred.matching_scores[level]
            assert s.shape == (1, h * w, h * w)
            torch.testing.assert_close(s, (shot.corr[g][:, j] + shot.bg_corr[g][:, j]).reshape(1, h * w, h * w))
            level += 1


def test_head_and_feature_ablation(run):
    pred, model = run["pred"], run["model"]
    keep = torch.ones(2, 13)
    keep[1, 11] = 0  # third l2 channel
    with torch.no_grad():
        out = pred.head(keep)
        corr = [c.clone() for c in pred.extras["shots"][0].corr]
        corr[2][:, 2] = 0
        manual = model._to_size(model.hpn_learner(corr), (400, 400))
    assert out.shape == (2, 1, 2, 400, 400)
    torch.testing.assert_close(out[0], pred.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], manual, atol=1e-5, rtol=1e-5)
    region = torch.zeros(50, 50, dtype=torch.bool)
    region[12:38, 12:38] = True
    w_ref = model.feature_ablation_weights(pred, region, 50, mode="reference")
    assert w_ref.shape == (13,)
    assert float(w_ref.sum()) == pytest.approx(1.0, abs=1e-6)
    assert bool((w_ref >= 0).all())
    assert float(w_ref.max()) < 1.0  # more than one level matters
