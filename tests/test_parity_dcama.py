"""DCAMA-R50 parity with the official code (vectors: tests/data/parity/, README in /work/shared/parity).

The weights are regenerated with the parity rule, saved as a ``module.``-prefixed checkpoint and
loaded through the real registry/loader; the stored float inputs are fed to the model and the
outputs compared with the tolerances of the parity README §5. One forward for the whole file.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssgui.models import build_model
from fssgui.models.backbones import resnet_bottleneck_features
from fssgui.models.base import EpisodeTensors
from fssgui.models.dcama import DCAMA, DCAMAQueryFeatures

from parity_weights import PARITY_DIR, manifest, parity_state_dict

NPZ = PARITY_DIR / "dcama_r50_1shot_384.npz"
AFFEX = PARITY_DIR / "dcama_r50_1shot_affex_weights.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(NPZ))


@pytest.fixture(scope="module")
def run(ref, tmp_path_factory):
    torch.manual_seed(0)
    ckpt = tmp_path_factory.mktemp("dcama") / "best_model.pt"
    torch.save(parity_state_dict(DCAMA("resnet50"), ref, prefix="module."), ckpt)
    log: list[str] = []
    model = build_model("dcama-resnet50", checkpoint=ckpt, log=log.append)
    query = torch.from_numpy(ref["query_img"])
    batch = EpisodeTensors(query, torch.from_numpy(ref["support_imgs"]), torch.from_numpy(ref["support_masks"]))
    with torch.no_grad():
        qfeats = resnet_bottleneck_features(model.feature_extractor, query)  # all 16 maps
        sfeats = resnet_bottleneck_features(model.feature_extractor, batch.supports[:, 0])
        pred = model.predict(batch, with_scores=True, query_features=DCAMAQueryFeatures(qfeats, (384, 384)))
    return {"model": model, "pred": pred, "qfeats": qfeats, "sfeats": sfeats, "log": log, "batch": batch}


def _close_sum(ours: float, theirs: float, abssum: float) -> None:
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-6 * abssum)


def test_state_dict_manifest_matches_official(ref, run):
    sd = run["model"].state_dict()
    man = manifest(ref)
    assert list(sd.keys()) == [k for k, _, _ in man]
    assert [tuple(v.shape) for v in sd.values()] == [s for _, s, _ in man]
    assert len(sd) == 407 == run["model"].entry.extra["state_dict_entries"]


def test_checkpoint_loaded_through_real_loader(run):
    text = "\n".join(run["log"])
    assert "removed the 'module.' prefix from 407 keys" in text
    assert "loaded 407 entries by name" in text


def test_backbone_feature_sums(ref, run):
    assert list(run["model"].stack_ids) == list(ref["stack_ids"])
    for i, (f, g) in enumerate(zip(run["qfeats"], run["sfeats"])):
        assert list(f.shape) == list(ref["qfeat_shapes"][i])
        for feat, want_sum, want_mean in (
            (f, ref["qfeat_sums"][i], ref["qfeat_means"][i]),
            (g, ref["sfeat_sums"][0, i], ref["sfeat_means"][0, i]),
        ):
            scale = 1e-6 * feat.numel() * float(feat.abs().mean())
            assert float(feat.double().sum()) == pytest.approx(float(want_sum), rel=1e-4, abs=scale)
            assert float(feat.double().mean()) == pytest.approx(float(want_mean), rel=1e-4, abs=scale / feat.numel())


def test_logits_and_prediction(ref, run):
    logits = run["pred"].logits
    want = torch.from_numpy(ref["logits"])
    assert logits.shape == want.shape == (1, 2, 384, 384)
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
    decided = (want[:, 1] - want[:, 0]).abs() > 1e-3
    assert torch.equal(logits.argmax(1)[decided], want.argmax(1)[decided])
    official = torch.from_numpy(ref["pred_official"]).long()
    assert torch.equal(run["pred"].mask().long()[decided], official[decided])


def test_coarse_masks(ref, run):
    pred = run["pred"]
    levels = pred.extras["level_coarse"]
    assert len(levels) == int(ref["n_attention_calls"]) == 13
    for i, c in enumerate(levels):
        torch.testing.assert_close(c, torch.from_numpy(ref[f"coarse_{i:02d}"]), atol=1e-4, rtol=0)
    c1, c2, c3 = pred.extras["coarse_masks"]  # official stacks: 1/32, 1/16, 1/8
    assert c1.shape == (1, 3, 12, 12) and c2.shape == (1, 6, 24, 24) and c3.shape == (1, 4, 48, 48)
    torch.testing.assert_close(c1[:, 0:1], levels[10])
    torch.testing.assert_close(c3[:, 3:4], levels[3])


def test_per_head_scores_and_attention(ref, run):
    """Per-head pre-softmax scores and softmax rebuilt from the model's own projections."""
    model, batch = run["model"], run["batch"]
    qfeats, sfeats = run["qfeats"], run["sfeats"]
    mean_scores = run["pred"].matching_scores
    with torch.no_grad():
        for level, idx in enumerate(model.level_feature_ids):
            blk = model.model.block_of(idx)
            pe = model.model.pe[blk]
            q_tok = pe(qfeats[idx].flatten(2).transpose(1, 2))
            s_tok = pe(sfeats[idx].flatten(2).transpose(1, 2))
            block = model.model.DCAMA_blocks[blk]
            q, k = block.project_query(q_tok), block.project_support(s_tok)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [1, 8, N, N]
            p = f"scores_{level:02d}"
            assert list(scores.shape) == list(ref[p + "_shape"])
            abssum = float(ref[p + "_abssum"])
            _close_sum(float(scores.double().sum()), float(ref[p + "_sum"]), abssum)
            assert float(scores.double().abs().sum()) == pytest.approx(abssum, rel=1e-4)
            idx_ = torch.from_numpy(ref[p + "_idx"])
            vals = scores[idx_[:, 0], idx_[:, 1], idx_[:, 2], idx_[:, 3]]
            torch.testing.assert_close(vals, torch.from_numpy(ref[p + "_vals"]), atol=1e-4, rtol=1e-4)
            # the adapter's matching scores are the head mean of these
            torch.testing.assert_close(mean_scores[level], scores.mean(1), atol=1e-4, rtol=1e-4)
            attn = torch.softmax(scores, dim=-1)
            a = f"attn_{level:02d}"
            vals = attn[idx_[:, 0], idx_[:, 1], idx_[:, 2], idx_[:, 3]]
            torch.testing.assert_close(vals, torch.from_numpy(ref[a + "_vals"]), atol=1e-4, rtol=1e-4)
            assert float(attn.double().sum()) == pytest.approx(float(ref[a + "_sum"]), rel=1e-4)


def test_matching_score_layout(run):
    pred = run["pred"]
    assert pred.num_levels == 13
    assert pred.level_shapes == [(48, 48)] * 4 + [(24, 24)] * 6 + [(12, 12)] * 3
    for scores, (h, w) in zip(pred.matching_scores, pred.level_shapes):
        assert scores.shape == (1, h * w, h * w)


def test_head_reruns_decoder(run):
    pred = run["pred"]
    with torch.no_grad():
        keep = torch.ones(2, 13)
        keep[1, 5] = 0
        out = pred.head(keep)
        # ablating a level by hand: zero that coarse channel and run the official decoder order
        model = run["model"]
        c1, c2, c3 = (c.clone() for c in pred.extras["coarse_masks"])
        c2[:, 1] = 0  # level 5 = second 1/16 map
        mix = model.model.mix_maps(c1, c2, c3)
    assert out.shape == (2, 1, 2, 384, 384)
    torch.testing.assert_close(out[0], pred.logits, atol=1e-5, rtol=1e-5)
    assert (out[1] - out[0]).abs().max() > 1e-6
    with torch.no_grad():
        qf = run["qfeats"]
        manual = model.model.decode(
            mix, model.model.skip_query(qf[6], qf[2]) + model.model.skip_support(run["sfeats"][6], run["sfeats"][2])
        )
    torch.testing.assert_close(out[1], manual, atol=1e-5, rtol=1e-5)


def test_feature_ablation_weights_match_official_affex(run):
    """Reference mode reproduces the official AffEx weights (mis-paired order), E = 32 and 96."""
    affex = np.load(AFFEX)
    region384 = torch.from_numpy(affex["region"])
    model, pred = run["model"], run["pred"]
    order = model.reference_level_order()
    assert order == [10, 11, 12, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    for size, mode in ((32, "reference"), (96, "paper")):
        region = F.interpolate(region384[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
        w = model.feature_ablation_weights(pred, region, size, mode=mode)
        assert w.shape == (13,)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
        want = torch.from_numpy(affex[f"ablation_w_unmasked_E{size}"]).float()
        if mode == "paper":  # each level's own weight: reorder to the reference pairing to compare
            w = w[torch.tensor(order)]
        torch.testing.assert_close(w, want, atol=2e-4, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# K shots, batches, other backbones and gradients on small random-weight models
# ---------------------------------------------------------------------------------------------


def _episodes(size: int, b: int, k: int, seed: int) -> EpisodeTensors:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(b, k, size, size)
    for i in range(b):
        for j in range(k):
            lo = int(torch.randint(0, size // 3, (1,), generator=g))
            hi = int(torch.randint(size // 2, size, (1,), generator=g))
            masks[i, j, lo:hi, lo:hi] = 1
    return EpisodeTensors(
        torch.randn(b, 3, size, size, generator=g), torch.randn(b, k, 3, size, size, generator=g), masks
    )


@pytest.fixture(scope="module")
def small_r50():
    torch.manual_seed(3)
    model = DCAMA("resnet50").eval()
    batch = _episodes(128, 2, 2, seed=4)
    with torch.no_grad():
        pred = model.predict(batch, with_scores=True)
    return model, batch, pred


def test_kshot_batch_keeps_episodes_separate(small_r50):
    model, batch, pred = small_r50
    assert pred.logits.shape == (2, 2, 128, 128)
    assert pred.matching_scores[0].shape == (2, 16 * 16, 2 * 16 * 16)
    with torch.no_grad():
        for i in range(2):
            alone = model.predict(
                EpisodeTensors(batch.query[i : i + 1], batch.supports[i : i + 1], batch.support_masks[i : i + 1]),
                with_scores=True,
            )
            torch.testing.assert_close(alone.logits, pred.logits[i : i + 1], atol=1e-5, rtol=1e-5)
            for a, b in zip(alone.matching_scores, pred.matching_scores):
                # random weights give scores of large magnitude: round-off scales with them
                scale = float(b.abs().max())
                torch.testing.assert_close(a, b[i : i + 1], atol=2e-6 * scale, rtol=1e-5)


def test_identical_shots_equal_one_shot(small_r50):
    """Joint softmax over duplicated keys (PE restarting per shot) and the max skip = 1-shot."""
    model, batch, _ = small_r50
    one = EpisodeTensors(batch.query[:1], batch.supports[:1, :1], batch.support_masks[:1, :1])
    two = EpisodeTensors(
        batch.query[:1], batch.supports[:1, :1].repeat(1, 2, 1, 1, 1), batch.support_masks[:1, :1].repeat(1, 2, 1, 1)
    )
    with torch.no_grad():
        p1, p2 = model.predict(one, with_scores=True), model.predict(two, with_scores=True)
    torch.testing.assert_close(p2.logits, p1.logits, atol=1e-5, rtol=1e-5)
    for c1, c2 in zip(p1.extras["level_coarse"], p2.extras["level_coarse"]):
        torch.testing.assert_close(c2, c1, atol=2e-5, rtol=1e-4)
    n = p1.matching_scores[0].shape[-1]
    scale = float(p1.matching_scores[0].abs().max())
    torch.testing.assert_close(p2.matching_scores[0][..., n:], p1.matching_scores[0], atol=2e-6 * scale, rtol=1e-5)
    torch.testing.assert_close(p2.matching_scores[0][..., :n], p1.matching_scores[0], atol=2e-6 * scale, rtol=1e-5)


def test_query_features_reuse(small_r50):
    model, batch, pred = small_r50
    with torch.no_grad():
        qf = model.encode_query(batch.query[:1])
        many = EpisodeTensors(
            batch.query[:1].expand(2, -1, -1, -1), batch.supports[:1].repeat(2, 1, 1, 1, 1), batch.support_masks[:1].repeat(2, 1, 1, 1)
        )
        reused = model.predict(many, query_features=qf)
    torch.testing.assert_close(reused.logits, pred.logits[:1].expand(2, -1, -1, -1), atol=1e-5, rtol=1e-5)


def test_gradients_reach_support_images(small_r50):
    model, batch, _ = small_r50
    supports = batch.supports[:1].clone().requires_grad_(True)
    pred = model.predict(EpisodeTensors(batch.query[:1], supports, batch.support_masks[:1]))
    pred.logits[:, 1].mean().backward()
    assert supports.grad is not None and bool(supports.grad.abs().sum() > 0)
    assert all(p.grad is None for p in model.parameters())


def test_resnet101_structure_and_kshot_forward():
    torch.manual_seed(5)
    model = DCAMA("resnet101").eval()
    sd = model.state_dict()
    assert len(sd) == 713
    assert model.stack_ids == (3, 7, 30, 33)
    assert tuple(sd["model.conv2.0.weight"].shape) == (16, 23, 5, 5)
    assert tuple(sd["model.mixer1.0.weight"].shape) == (128, 1664, 3, 3)
    assert "feature_extractor.layer3.22.bn3.running_var" in sd
    with torch.no_grad():
        pred = model.predict(_episodes(96, 1, 2, seed=6), with_scores=True)
    assert pred.logits.shape == (1, 2, 96, 96) and bool(torch.isfinite(pred.logits).all())
    assert pred.num_levels == 30
    assert pred.level_shapes == [(12, 12)] * 4 + [(6, 6)] * 23 + [(3, 3)] * 3
    assert pred.matching_scores[5].shape == (1, 36, 72)


def test_swin_b_structure():
    model = DCAMA("swin")
    sd = model.state_dict()
    assert len(sd) == 451
    assert model.stack_ids == (2, 4, 22, 24)
    backbone = [k for k in sd if k.startswith("feature_extractor.")]
    assert len(backbone) == 364
    assert tuple(sd["feature_extractor.patch_embed.proj.weight"].shape) == (128, 3, 4, 4)
    assert tuple(sd["feature_extractor.layers.0.blocks.1.attn_mask"].shape) == (64, 144, 144)
    assert tuple(sd["feature_extractor.head.weight"].shape) == (1000, 1024)
    assert tuple(sd["model.conv2.0.weight"].shape) == (16, 18, 5, 5)
    assert tuple(sd["model.mixer1.0.weight"].shape) == (128, 896, 3, 3)
    assert len([k for k in sd if k.endswith("relative_position_index")]) == 24
    # stage 4 (12x12 = the window): neither shift nor mask
    assert "feature_extractor.layers.3.blocks.1.attn_mask" not in sd
    # an attention mask separates the shifted regions: row 0 of the last window sees 4 regions
    mask = sd["feature_extractor.layers.0.blocks.1.attn_mask"]
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert bool((mask[0] == 0).all())  # the first window is not cut by the shift


def test_swin_small_kshot_forward():
    torch.manual_seed(7)
    model = DCAMA("swin", swin_config={"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8)}).eval()
    with torch.no_grad():
        pred = model.predict(_episodes(384, 1, 2, seed=8), with_scores=True)
    assert pred.logits.shape == (1, 2, 384, 384) and bool(torch.isfinite(pred.logits).all())
    assert pred.level_shapes == [(48, 48)] * 2 + [(24, 24)] * 2 + [(12, 12)] * 2
    assert pred.matching_scores[0].shape == (1, 48 * 48, 2 * 48 * 48)
    with pytest.raises(Exception, match="384"):
        model.predict(_episodes(256, 1, 1, seed=9))


@pytest.mark.parametrize("rows", [None, 7], ids=["whole", "rows-of-7"])
@pytest.mark.parametrize("want_scores", [False, True])
def test_fused_attention_equals_the_explicit_per_head_product(monkeypatch, want_scores, rows):
    """On CUDA the attention is PyTorch's fused kernel and the concatenated-heads score product
    (here forced on the CPU): the same coarse masks and head-mean scores as the explicit per-head
    softmax product (the CPU's path), up to float rounding. Both hand
    the scores over by chunks of ``rows`` query rows (7: 50 = 7 x 7 + 1), in row order, after the
    attention; the chunks put together are the head mean of ``q kᵀ / √d_k``."""
    from fssgui.models import dcama

    torch.manual_seed(0)
    block = dcama.MaskAttention(64).eval()
    q = torch.randn(2, block.heads, 50, block.d_k)
    k = torch.randn(2, block.heads, 3 * 50, block.d_k)
    values = torch.rand(2, 3 * 50)

    def attend() -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        chunks: list[tuple[int, torch.Tensor]] = []
        take = (lambda start, scores: chunks.append((start, scores.clone()))) if want_scores else None
        return block.attend(q, k, values, take, rows), chunks

    monkeypatch.setattr(dcama, "FUSED_ATTENTION_DEVICES", ())
    explicit, explicit_chunks = attend()
    monkeypatch.setattr(dcama, "FUSED_ATTENTION_DEVICES", ("cpu", "cuda"))
    fused, fused_chunks = attend()
    assert fused.shape == explicit.shape == (2, 50)
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-5)
    if not want_scores:
        assert fused_chunks == explicit_chunks == []
        return
    step = 50 if rows is None else rows
    for chunks in (explicit_chunks, fused_chunks):
        assert [start for start, _ in chunks] == list(range(0, 50, step))
        assert [tuple(c.shape) for _, c in chunks] == [(2, min(step, 50 - start), 150) for start, _ in chunks]
    want = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(block.d_k)).mean(1)
    explicit_scores = torch.cat([c for _, c in explicit_chunks], 1)
    fused_scores = torch.cat([c for _, c in fused_chunks], 1)
    torch.testing.assert_close(explicit_scores, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_scores, explicit_scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [None, 7])
def test_the_cpu_attention_by_row_chunks_equals_whole_matrices(monkeypatch, rows):
    """The CPU computes the attention a few query rows at a time (``attention.ATTENTION_CHUNK_BYTES``):
    chunks of 3 rows (50 = 16 x 3 + 2), inside hand-over chunks of 7 or of all rows, give the
    coarse masks and head-mean scores of the whole matrices written out (1 MiB chunks here),
    which are the per-head formula: softmax(q_h k_hᵀ/√d_k) · values, averaged over the heads."""
    from fssgui.models import attention, dcama

    torch.manual_seed(1)
    block = dcama.MaskAttention(64).eval()
    q = torch.randn(1, block.heads, 50, block.d_k)
    k = torch.randn(1, block.heads, 2 * 50, block.d_k)
    values = torch.rand(1, 2 * 50)

    def attend():
        chunks = []
        coarse = block.attend(q, k, values, lambda start, scores: chunks.append((start, scores.clone())), rows)
        return coarse, chunks

    coarse, chunks = attend()  # the default chunk holds all 50 rows
    monkeypatch.setattr(attention, "ATTENTION_CHUNK_BYTES", 3 * 4 * 100)
    small, small_chunks = attend()
    assert [start for start, _ in small_chunks] == [start for start, _ in chunks] == list(range(0, 50, rows or 50))
    torch.testing.assert_close(small, coarse, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([c for _, c in small_chunks], 1), torch.cat([c for _, c in chunks], 1),
                               rtol=0, atol=1e-6)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(block.d_k)
    want = (torch.softmax(scores, -1) @ values[0]).mean(1)
    torch.testing.assert_close(small, want, rtol=1e-5, atol=1e-6)
    assert block.attend(q, k, values).shape == (1, 50)


def test_every_relu_module_of_the_backbone_walk_runs_once_per_forward(run):
    """captum's DeepLift hooks each nonlinearity module once per forward: the bottleneck walk must
    not call one ReLU twice (torchvision's Bottleneck.forward calls its ``relu`` three times)."""
    backbone = run["model"].feature_extractor
    calls: dict[int, int] = {}
    relus = [m for m in backbone.modules() if isinstance(m, torch.nn.ReLU)]
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1)) for m in relus]
    try:
        with torch.no_grad():
            resnet_bottleneck_features(backbone, torch.randn(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert len(relus) == 1 + 3 * 16  # the stem's, and three per bottleneck
    assert sorted(calls.values()) == [1] * len(relus)


def test_deeplift_explains_dcama(run):
    from fssgui.explain.baselines import deeplift_unavailable_reason
    from fssgui.explain.registry import get_explainer

    model, batch = run["model"], run["batch"]
    assert deeplift_unavailable_reason(model) == ""
    region = torch.zeros(384, 384, dtype=torch.bool)
    region[96:192, 96:192] = True
    maps = get_explainer("deeplift").explain(model, batch, region).maps
    assert maps.shape == (1, 384, 384) and torch.isfinite(maps).all()
    assert maps.std() > 0
