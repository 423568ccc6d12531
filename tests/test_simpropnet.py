"""SimPropNet adapter and its exact prototype-share attribution."""
from __future__ import annotations

import pytest
import torch

from fssgui.errors import ExplainError
from fssgui.explain.simpropnet_share import PrototypeShareExplainer, prototype_shares
from fssgui.models.base import EpisodeTensors, resize_masks
from fssgui.models.registry import build_model, get_entry, list_models
from fssgui.models.simpropnet import SimPropNet, channel_average, cosine_map

SIZE = 97


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SimPropNet(SIZE).eval()


def _episode(shots: int, seed: int = 0) -> EpisodeTensors:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, shots, SIZE, SIZE)
    for k in range(shots):
        masks[0, k, 10 + 5 * k:60 + 3 * k, 20:70 - 4 * k] = 1
    return EpisodeTensors(torch.randn(1, 3, SIZE, SIZE, generator=g),
                          torch.randn(1, shots, 3, SIZE, SIZE, generator=g), masks)


@pytest.fixture(scope="module")
def two_shot(model):
    batch = _episode(2)
    with torch.no_grad():
        return batch, model.predict(batch)


def test_registered():
    names = [e.name for e in list_models()]
    assert "simpropnet-resnet50" in names
    entry = get_entry("simpropnet-resnet50")
    assert entry.needs_checkpoint and not entry.matching and entry.input_size == 321
    assert callable(entry.extra["trainer"])
    with pytest.raises(Exception, match="checkpoint"):
        build_model("simpropnet-resnet50")


def test_predict_shapes_and_extras(model, two_shot):
    batch, pred = two_shot
    assert pred.logits.shape == (1, 2, SIZE, SIZE)
    assert pred.matching_scores is None and pred.head is None
    h = pred.extras["cos_fg"].shape[-1]
    assert h == 13  # 1/8 resolution of 97 (stride 8, layer3 dilated)
    a_f = pred.extras["fg_affinity"]
    assert a_f.shape == (1, h, h) and float(a_f.min()) >= 0 and float(a_f.max()) <= 1


def test_kshot_averages_prototypes(model):
    batch = _episode(2, seed=1)
    with torch.no_grad():
        terms = model.prototype_terms(batch)
        z_each = []
        for k in range(2):
            single = EpisodeTensors(batch.query, batch.supports[:, k:k + 1], batch.support_masks[:, k:k + 1])
            z_each.append(model.prototype_terms(single).prototype_fg)
    torch.testing.assert_close(terms.prototype_fg, (z_each[0] + z_each[1]) / 2, rtol=1e-5, atol=1e-6)


def test_query_feature_reuse(model, two_shot):
    batch, pred = two_shot
    with torch.no_grad():
        qf = model.encode_query(batch.query)
        again = model.predict(batch, query_features=qf)
    torch.testing.assert_close(again.logits, pred.logits)


def test_backbone_is_frozen_and_bn_stays_eval():
    m = SimPropNet(65, feature_channels=32, decoder_channels=32).train()
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert not m.backbone.training and m.adapter.training
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("backbone.") for n in trainable)


def test_training_loss_backpropagates():
    torch.manual_seed(0)
    m = SimPropNet(65, feature_channels=32, decoder_channels=32).train()
    batch = EpisodeTensors(torch.randn(2, 3, 65, 65), torch.randn(2, 1, 3, 65, 65), (torch.rand(2, 1, 65, 65) > 0.5).float())
    target = (torch.rand(2, 65, 65) > 0.5).long()
    target[:, 0] = 255
    loss, logs = m.training_loss(batch, target, progress=0.0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(logs["query_ce"] + logs["support_ce"], rel=1e-5)
    assert logs["ica_p"] == pytest.approx(0.25)
    assert m.fusion0.weight.grad is not None and m.adapter[0].weight.grad is not None
    _, logs_end = m.training_loss(batch, target, progress=1.0)
    assert logs_end["ica_p"] == 0.0


def test_channel_average():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgb = torch.rand(2, 3, 8, 8)
    x = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = channel_average(x, torch.tensor([True, False]))
    back = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    torch.testing.assert_close(back[0], rgb[0].mean(0, keepdim=True).expand(3, 8, 8))
    torch.testing.assert_close(out[1], x[1])


# ------------------------------------------------------------------ attribution identity
def test_prototype_share_sums_to_region_mean_cosine(model, two_shot):
    batch, pred = two_shot
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[30:80, 15:60] = True
    att = PrototypeShareExplainer().explain(model, batch, region, prediction=pred)
    assert att.maps.shape == (2, SIZE, SIZE) and att.method == "prototype-share"
    # the total is the model's own region-mean cosine (cos_fg computed in the forward)
    cos = pred.extras["cos_fg"][0]
    r = resize_masks(region.float()[None], cos.shape)[0]
    model_total = float((cos * r).sum() / r.sum())
    assert att.params["total"] == pytest.approx(model_total, rel=1e-5, abs=1e-6)
    # per-pixel shares and per-cell shares both sum exactly to it
    assert float(att.maps.double().sum()) == pytest.approx(model_total, rel=1e-5, abs=1e-6)
    assert float(torch.tensor(att.params["cell_shares"], dtype=torch.float64).sum()) == pytest.approx(
        model_total, rel=1e-5, abs=1e-6)
    # only support-mask pixels carry a share
    outside = batch.support_masks[0] == 0
    assert float(att.maps[outside].abs().max()) == 0.0
    assert float(att.maps[~outside].abs().sum()) > 0


def test_prototype_share_without_prediction_and_per_shot_split(model):
    batch = _episode(2, seed=3)
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[5:40, 50:90] = True
    att = PrototypeShareExplainer().explain(model, batch, region)
    per_shot = att.maps.double().sum((1, 2))
    assert per_shot.shape == (2,) and float(per_shot.sum()) == pytest.approx(att.params["total"], rel=1e-5)


def test_prototype_shares_random_features_identity():
    """The identity on arbitrary (signed) features, soft region edges and uneven masks."""
    g = torch.Generator().manual_seed(7)
    k, c, h, w, s = 3, 16, 9, 9, 70
    fq = torch.randn(c, h, w, generator=g)
    fs = torch.randn(k, c, h, w, generator=g)
    masks = (torch.rand(k, s, s, generator=g) > 0.6).float()
    region = torch.rand(s, s, generator=g) > 0.7
    maps, cells, total = prototype_shares(fq, fs, masks, region)
    small = resize_masks(masks, (h, w))
    z = ((fs * small[:, None]).sum((2, 3)) / (small.sum((1, 2))[:, None] + 1e-5)).mean(0)
    cos = cosine_map(fq[None], z[None])[0]
    r = resize_masks(region.float()[None], (h, w))[0]
    expected = float((cos * r).sum() / r.sum())
    assert float(total) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert float(maps.double().sum()) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert float(cells.double().sum()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_empty_region_is_an_error(model, two_shot):
    batch, pred = two_shot
    with pytest.raises(ExplainError, match="empty"):
        PrototypeShareExplainer().explain(model, batch, torch.zeros(SIZE, SIZE, dtype=torch.bool), prediction=pred)


def test_state_dict_roundtrip(tmp_path, model, two_shot):
    batch, pred = two_shot
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    other = SimPropNet(SIZE)
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(other.eval().predict(batch).logits, pred.logits)


def test_train_backbone_option_and_parameter_groups():
    frozen = SimPropNet(65, feature_channels=32, decoder_channels=32)
    groups = frozen.parameter_groups(1e-3)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    m = SimPropNet(65, feature_channels=32, decoder_channels=32, train_backbone=True).train()
    assert all(p.requires_grad for p in m.backbone.parameters())
    assert not m.backbone.training  # BatchNorm statistics stay frozen even when fine-tuning
    head, backbone = m.parameter_groups(1e-3)
    assert backbone["lr"] == pytest.approx(1e-4) and len(backbone["params"]) == len(list(m.backbone.parameters()))
    batch = EpisodeTensors(torch.randn(2, 3, 49, 49), torch.randn(2, 1, 3, 49, 49),
                           (torch.rand(2, 1, 49, 49) > 0.5).float())
    loss, _ = m.training_loss(batch, (torch.rand(2, 49, 49) > 0.5).long(), progress=1.0)
    loss.backward()
    assert m.backbone.layer3[0].conv1.weight.grad is not None


def test_calibrate_backbone_reestimates_batchnorm():
    torch.manual_seed(0)
    m = SimPropNet(49, feature_channels=16, decoder_channels=16).eval()
    images = torch.randn(8, 3, 49, 49) * 0.5 + 1.0
    assert float(m.backbone.bn1.running_var.sub(1).abs().max()) == 0  # torchvision's init: no normalisation
    assert m.calibrate_backbone(list(images.split(4))) == 8
    assert not m.backbone.training
    bn = m.backbone.layer3[-1].bn3
    assert float(bn.running_var.sub(1).abs().max()) > 1e-3 and float(bn.running_mean.abs().max()) > 1e-3
    # eval-mode BatchNorm now standardises: the conv1 output is roughly centred per channel
    with torch.no_grad():
        stem = m.backbone.bn1(m.backbone.conv1(images))
    assert float(stem.mean((0, 2, 3)).abs().max()) < 1e-3 + 0.05
