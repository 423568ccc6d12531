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


# ---------------------------------------------------------------------------------------------
# K shots, batches and gradients on a small random-weight model (136² input: fast)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(1)
    model = DMTNet().eval()
    g = torch.Generator().manual_seed(2)
    size = 136
    query = torch.randn(2, 3, size, size, generator=g)
    supports = torch.randn(2, 2, 3, size, size, generator=g)
    masks = torch.zeros(2, 2, size, size)
    masks[0, 0, 27:100, 34:110] = 1
    masks[0, 1, 14:60, 14:80] = 1
    masks[1, 0, 68:130, 7:68] = 1
    masks[1, 1, 40:95, 40:95] = 1
    batch = EpisodeTensors(query, supports, masks)
    with torch.no_grad():
        pred = model.predict(batch, with_scores=True)
    return model, batch, pred


def test_vote_rule():
    fg, bg = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    # K = 3 shots, 1 episode, 1x4 image: per-pixel fg votes 0, 1, 2, 3 -> max 3 -> >= 1.5 is fg
    shots = torch.stack(
        [torch.stack([torch.stack([bg, fg, fg, fg], -1), torch.stack([bg, bg, fg, fg], -1), torch.stack([bg, bg, bg, fg], -1)])]
    )  # [1, 3, 2, 4]
    shots = shots.permute(1, 0, 2, 3).unsqueeze(-2)  # [K=3, B=1, 2, 1, 4]
    assert DMTNet.vote(shots).tolist() == [[[False, False, True, True]]]
    # no foreground anywhere: max(max vote, 1) avoids 0/0
    assert not DMTNet.vote(torch.stack([torch.stack([bg] * 4, -1)[None, :, None]] * 2)).any()


def test_kshot_batch_keeps_episodes_separate(small):
    model, batch, pred = small
    assert pred.logits.shape == (2, 2, 136, 136)
    assert pred.extras["shot_logits"].shape == (2, 2, 2, 136, 136)
    torch.testing.assert_close(pred.logits, pred.extras["shot_logits"].mean(0))
    assert torch.equal(pred.mask(), pred.extras["vote_mask"])
    assert pred.matching_scores[0].shape == (2, 5 * 5, 2 * 5 * 5)
    with torch.no_grad():
        for i in range(2):
            alone = model.predict(EpisodeTensors(batch.query[i : i + 1], batch.supports[i : i + 1], batch.support_masks[i : i + 1]), with_scores=True)
            torch.testing.assert_close(alone.logits, pred.logits[i : i + 1], atol=1e-5, rtol=1e-5)
            assert torch.equal(alone.extras["vote_mask"], pred.extras["vote_mask"][i : i + 1])
            for a, b in zip(alone.matching_scores, pred.matching_scores):
                torch.testing.assert_close(a, b[i : i + 1], atol=1e-5, rtol=1e-5)


def test_shots_concatenated_on_support_axis(small):
    _, _, pred = small
    shots = pred.extras["shots"]
    level = 12  # last l2 channel
    hw = 17 * 17
    for k in range(2):
        part = pred.matching_scores[level][:, :, k * hw : (k + 1) * hw]
        want = (shots[k].corr[2][:, 3] + shots[k].bg_corr[2][:, 3]).reshape(2, hw, hw)
        torch.testing.assert_close(part, want)


def test_identical_shots_equal_one_shot(small):
    model, batch, _ = small
    one = EpisodeTensors(batch.query[:1], batch.supports[:1, :1], batch.support_masks[:1, :1])
    two = EpisodeTensors(batch.query[:1], batch.supports[:1, :1].repeat(1, 2, 1, 1, 1), batch.support_masks[:1, :1].repeat(1, 2, 1, 1))
    with torch.no_grad():
        p1, p2 = model.predict(one), model.predict(two)
    torch.testing.assert_close(p2.logits, p1.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(p2.mask(), p1.mask())


def test_query_features_reuse(small):
    model, batch, pred = small
    with torch.no_grad():
        qf = model.encode_query(batch.query[:1])
        many = EpisodeTensors(batch.query[:1].expand(2, -1, -1, -1), batch.supports[:1].repeat(2, 1, 1, 1, 1), batch.support_masks[:1].repeat(2, 1, 1, 1))
        reused = model.predict(many, query_features=qf)
    torch.testing.assert_close(reused.logits, pred.logits[:1].expand(2, -1, -1, -1), atol=1e-5, rtol=1e-5)


def test_head_and_ablation_weights_kshot(small):
    model, batch, pred = small
    with torch.no_grad():
        out = pred.head(torch.ones(1, 13))
    torch.testing.assert_close(out[0], pred.logits, atol=1e-5, rtol=1e-5)
    region = torch.zeros(20, 20, dtype=torch.bool)
    region[5:15, 5:15] = True
    one = EpisodeTensors(batch.query[:1], batch.supports[:1], batch.support_masks[:1])
    with torch.no_grad():
        p = model.predict(one)
    w_paper = model.feature_ablation_weights(p, region, 20, mode="paper")
    w_ref = model.feature_ablation_weights(p, region, 20, mode="reference")
    for w in (w_paper, w_ref):
        assert w.shape == (13,) and float(w.sum()) == pytest.approx(1.0, abs=1e-6) and bool((w >= 0).all())
    assert not torch.allclose(w_paper, w_ref)  # reference compares shot 0 with the last shot's output
    # the memoised ablation outputs are the learner on the zeroed pyramids (checked for 2 levels)
    shot = p.extras["shots"][1]
    fg_raw, bg_raw = model.ablation_outputs(shot)
    assert fg_raw.shape == (14, 1, 2, 34, 34)
    with torch.no_grad():
        for level, g, j in ((1, 0, 1), (12, 2, 3)):
            corr = [c.clone() for c in shot.bg_corr]
            corr[g][:, j] = 0
            torch.testing.assert_close(bg_raw[level + 1], model.hpn_learner(corr), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fg_raw[0], model.hpn_learner(shot.corr), atol=1e-5, rtol=1e-5)
    # the reference mode is exactly "every shot against the last shot's unablated output"
    outs = []
    for s in p.extras["shots"]:
        f, b = model.ablation_outputs(s)
        resize = lambda t: model._to_size(t.flatten(0, 1), (20, 20)).view(14, 1, 2, 20, 20)[..., region]  # noqa: E731
        outs.append((resize(f), resize(b)))
    last_fg, last_bg = outs[-1][0][0], outs[-1][1][0]
    d = torch.stack([(((last_fg - fg[1:]).abs() + (last_bg - bg[1:]).abs()) / 2).flatten(1).mean(1) for fg, bg in outs]).mean(0)
    torch.testing.assert_close(w_ref, d / d.sum())
    d = torch.stack([(((fg[0] - fg[1:]).abs() + (bg[0] - bg[1:]).abs()) / 2).flatten(1).mean(1) for fg, bg in outs]).mean(0)
    torch.testing.assert_close(w_paper, d / d.sum())


def test_gradients_reach_support_images(small):
    model, batch, _ = small
    supports = batch.supports[:1, :1].clone().requires_grad_(True)
    pred = model.predict(EpisodeTensors(batch.query[:1], supports, batch.support_masks[:1, :1]))
    pred.logits[:, 1].mean().backward()
    assert supports.grad is not None and bool(supports.grad.abs().sum() > 0)
    assert all(p.grad is None for p in model.parameters())
