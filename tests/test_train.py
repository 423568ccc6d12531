"""Training: a short CPU run improves validation IoU; the CLI writes safe checkpoints and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fssgui.cli import main
from fssgui.models.registry import get_entry
from fssgui.train import SegmentationMeter, TrainConfig, train

from synthetic_fss import make_synthetic_fss

pytestmark = pytest.mark.slow  # trains small models (minutes on a CPU)


@pytest.fixture(autouse=True)
def one_thread():
    """On a shared 2-core machine OpenMP spin-waiting makes 2 threads ~10x slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_fss(tmp_path_factory.mktemp("synthetic"), n_classes=6, images_per_class=16, size=96, seed=0)


@pytest.fixture(scope="module")
def same_class_root(tmp_path_factory):
    """Four classes; ``train/`` and ``val/`` hold different images of the same classes.

    Validation is on held-out *images* of the training classes: a learnability sanity test of
    the training code, not few-shot generalisation to unseen classes (with only four synthetic
    training classes, a few hundred CPU steps fit the training classes but do not transfer to
    held-out classes: measured val mIoU 0.12 on held-out classes against 0.78 on the training
    classes). Every image holds two objects of different classes, so a model must use the
    support to pick the right one.
    """
    return make_synthetic_fss(tmp_path_factory.mktemp("synthetic_tv"), n_classes=4, images_per_class=16, size=96,
                              seed=0, splits=("train", "val"))


# CPU-test settings (see SimPropNet's docstring): a narrow head, no adapter dropout (it slows a
# 300-step run down markedly), foreground weight 3 (leaves the all-background plateau at once)
SMALL_SIMPROPNET = {"feature_channels": 64, "decoder_channels": 64, "adapter_dropout": 0.0, "foreground_weight": 3.0}
SMALL_SIZE = 65


# I²R CPU-test settings (see i2r.py): foreground weight 3 (leaves the all-background plateau),
# no feature dropout and the merge input not detached (so down_query/down_supp train: with a
# random-init backbone their random projection is all the decoder would get otherwise)
SMALL_I2R = {"foreground_weight": 3.0, "feature_dropout": 0.0, "detach_merge_input": False}


@pytest.fixture(scope="module")
def trained_i2r(same_class_root, tmp_path_factory):
    """300 AdamW steps (3 epochs x 100, batch 4, lr 3e-4) at 65 px on one CPU thread, the full
    6-block / 5-cross-attention decoder; random-init backbone with re-estimated BatchNorm."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(
            model="i2r-resnet50", data_root=str(same_class_root), layout="folders", fold=-1, shots=1,
            out_dir=str(tmp_path_factory.mktemp("i2r_run")), epochs=3, steps_per_epoch=100, val_episodes=32,
            batch_size=4, val_batch_size=8, size=SMALL_SIZE, optimizer="adamw", lr=3e-4, progress_bar=False,
            model_options=dict(SMALL_I2R),
        )
        result = train(config, log=print)
    finally:
        torch.set_num_threads(before)
    return config, result


def _all_foreground_miou(root: Path, config: TrainConfig) -> float:
    """mIoU of the trivial "everything is foreground" prediction on the run's validation episodes
    (at the images' own size)."""
    from fssgui.data.datasets import open_dataset

    val = open_dataset(root, "folders", -1, "val")
    meter = SegmentationMeter(len(val.classes))
    for spec in val.episodes(config.val_episodes, config.shots, seed=config.seed + 7919):
        data = val.load_episode(spec)
        target = torch.as_tensor(np.asarray(data.query_mask, dtype=np.int64))[None]
        meter.update(torch.ones_like(target, dtype=torch.bool), target, [spec.class_index])
    return meter.result(val.classes)["miou"]


@pytest.fixture(scope="module")
def trained_simpropnet(same_class_root, tmp_path_factory):
    """300 AdamW steps (3 epochs x 100, batch 4) at 65 px on one CPU thread; random-init backbone
    with BatchNorm statistics re-estimated on training images (no --backbone-weights)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(
            model="simpropnet-resnet50", data_root=str(same_class_root), layout="folders", fold=-1, shots=1,
            out_dir=str(tmp_path_factory.mktemp("simpropnet_run")), epochs=3, steps_per_epoch=100, val_episodes=32,
            batch_size=4, val_batch_size=8, size=SMALL_SIZE, optimizer="adamw", lr=3e-3, progress_bar=False,
            model_options=dict(SMALL_SIMPROPNET),
        )
        result = train(config, log=print)
    finally:
        torch.set_num_threads(before)
    return config, result


def test_segmentation_meter():
    meter = SegmentationMeter(2)
    pred = torch.tensor([[[True, True], [False, False]]])
    target = torch.tensor([[[1, 0], [1, 255]]])
    meter.update(pred, target, [1])
    res = meter.result(["a", "b"])
    # fg: inter 1, union 3; bg: inter 0 ((1,0) is predicted fg... bg pred {(1,0)}, bg gt {(0,1)}), union 2
    assert res["per_class_iou"] == {"b": pytest.approx(1 / 3)}
    assert res["miou"] == pytest.approx(1 / 3)
    assert res["fbiou"] == pytest.approx((0 / 2 + 1 / 3) / 2)


def test_simpropnet_training_raises_validation_iou(trained_simpropnet):
    config, result = trained_simpropnet
    untrained = result.history[0]
    best = result.history[result.best_epoch]
    assert untrained["epoch"] == 0 and result.best_epoch >= 1
    print(f"\nSimPropNet untrained val mIoU {untrained['miou']:.3f} FB-IoU {untrained['fbiou']:.3f}; "
          f"trained best mIoU {result.best_miou:.3f} (epoch {result.best_epoch}), FB-IoU {best['fbiou']:.3f}")
    assert result.best_miou > untrained["miou"] + 0.20
    assert best["fbiou"] > untrained["fbiou"] + 0.15
    saved = json.loads((Path(config.out_dir) / "config.json").read_text())
    assert saved["epoch"] == config.epochs and saved["best_epoch"] == result.best_epoch


def test_i2r_training_raises_validation_iou(trained_i2r, same_class_root):
    config, result = trained_i2r
    untrained = result.history[0]
    best = result.history[result.best_epoch]
    trivial = _all_foreground_miou(same_class_root, config)
    assert untrained["epoch"] == 0 and result.best_epoch >= 1
    print(f"\nI²R untrained val mIoU {untrained['miou']:.3f} FB-IoU {untrained['fbiou']:.3f}; all-foreground "
          f"mIoU {trivial:.3f}; trained best mIoU {result.best_miou:.3f} (epoch {result.best_epoch}), "
          f"FB-IoU {best['fbiou']:.3f}; per epoch {[round(h['miou'], 3) for h in result.history]}")
    assert result.best_miou > max(untrained["miou"], trivial) + 0.12
    assert best["fbiou"] > untrained["fbiou"] + 0.30
    losses = [h["train_loss"] for h in result.history[1:]]
    assert losses[-1] < losses[0]


def _cli(root, out, *extra):
    return main(["train", "simpropnet-resnet50", "--data", str(root), "--layout", "folders", "--fold", "-1",
                 "--shots", "1", "--out", str(out), "--steps-per-epoch", "3", "--val-episodes", "4",
                 "--batch-size", "2", "--size", "49", "--device", "cpu", "--no-progress", *extra])


def test_cli_checkpoints_and_resume(synthetic_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _cli(synthetic_root, straight, "--epochs", "2") == 0
    assert _cli(synthetic_root, resumed, "--epochs", "1") == 0  # "killed" after one epoch
    first = json.loads((resumed / "config.json").read_text())
    assert first["epoch"] == 1 and [h["epoch"] for h in first["history"]] == [0, 1]
    state = torch.load(resumed / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 3
    after_first = torch.load(resumed / "model_last.pt", weights_only=True)
    assert _cli(synthetic_root, resumed, "--epochs", "2", "--resume") == 0
    second = json.loads((resumed / "config.json").read_text())
    assert second["epoch"] == 2 and [h["epoch"] for h in second["history"]] == [0, 1, 2]
    state = torch.load(resumed / "train_state.pt", weights_only=True)
    assert state["global_step"] == 6 and state["scheduler"]["last_epoch"] == 6
    assert all("momentum_buffer" in v for v in state["optimizer"]["state"].values())
    b = torch.load(resumed / "model_last.pt", weights_only=True)
    # training went on from the saved weights: the frozen backbone is unchanged, the head moved
    torch.testing.assert_close(b["backbone.conv1.weight"], after_first["backbone.conv1.weight"], rtol=0, atol=0)
    assert not torch.equal(b["adapter.0.weight"], after_first["adapter.0.weight"])
    # same seed, same planned run: the uninterrupted run starts from identical weights
    a = torch.load(straight / "model_last.pt", weights_only=True)
    assert a.keys() == b.keys()
    torch.testing.assert_close(a["backbone.conv1.weight"], b["backbone.conv1.weight"], rtol=0, atol=0)
    # the checkpoint loads strictly into the registry model (what the app does)
    model = get_entry("simpropnet-resnet50").builder()
    model.load_state_dict(b, strict=True)
    assert not list(resumed.glob(".*tmp*"))  # no temporary files left behind
    # nothing left to do / incompatible resume / wrong layout: clear one-line errors (exit 2)
    assert _cli(synthetic_root, resumed, "--epochs", "2", "--resume") == 0
    assert _cli(synthetic_root, resumed, "--epochs", "3", "--resume", "--shots", "2") == 2
    assert _cli(synthetic_root, tmp_path / "fresh", "--epochs", "1", "--resume") == 2


def test_cli_model_options(synthetic_root, tmp_path, capsys):
    """--option NAME=VALUE reaches the model's builder (JSON values), is saved in config.json,
    and the checkpoint is rebuilt with it; bad names or values are one-line errors (exit 2)."""
    from fssgui.models import build_model

    out = tmp_path / "narrow"
    assert _cli(synthetic_root, out, "--epochs", "1", "--option", "feature_channels=32",
                "--option", "adapter-dropout=0", "--option", "foreground_weight=2.5") == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["model_options"] == {"feature_channels": 32, "adapter_dropout": 0,
                                                "foreground_weight": 2.5}
    model = build_model("simpropnet-resnet50", out / "model_last.pt")
    assert model.foreground_weight == 2.5
    capsys.readouterr()
    assert _cli(synthetic_root, tmp_path / "a", "--epochs", "1", "--option", "no_such_option=1") == 2
    assert "does not accept the option(s) no_such_option" in capsys.readouterr().err
    assert _cli(synthetic_root, tmp_path / "b", "--epochs", "1", "--option", "foreground_weight=heavy") == 2
    err = capsys.readouterr().err
    assert "bad option value" in err and "'heavy'" in err
    assert _cli(synthetic_root, tmp_path / "c", "--epochs", "1", "--option", "foreground_weight") == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_cli_wrong_layout_names_the_path(synthetic_root, tmp_path, capsys):
    code = main(["train", "simpropnet-resnet50", "--data", str(synthetic_root), "--layout", "pascal5i",
                 "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "JPEGImages" in err and str(synthetic_root) in err


def test_untrainable_model_is_refused(synthetic_root, tmp_path):
    with pytest.raises(Exception, match="cannot be trained|unknown model"):
        train(TrainConfig(model="dcama-swin", data_root=str(synthetic_root), layout="folders", fold=-1, shots=1,
                          out_dir=str(tmp_path / "x")))


# ------------------------------------------------------------------ explaining trained checkpoints via the CLI
def _val_episode_dir(root: Path, tmp_path: Path) -> Path:
    """A saved 1-shot episode from the validation images (query and support of class 0)."""
    from fssgui.data.datasets import open_dataset
    from fssgui.episode import Episode, Support, save_episode

    val = open_dataset(root, "folders", -1, "val")
    data = val.load_episode(val.episodes(1, 1, seed=5)[0])
    episode = Episode(data.query_image, [Support(data.support_images[0], data.support_masks[0] == 1)],
                      data.class_name, query_mask=data.query_mask == 1)
    save_episode(episode, tmp_path / "episode")
    return tmp_path / "episode"


def _check_explanation(out: Path, episode_dir: Path, method: str) -> np.ndarray:
    from fssgui.episode import load_episode

    episode = load_episode(episode_dir)
    maps = np.load(out / "attribution.npy")
    assert maps.shape == (1, *episode.supports[0].mask.shape) and np.isfinite(maps).all()
    assert (out / "overlay_0.png").is_file()
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["method"] == method and summary["region"] == "ground-truth"
    return maps


def test_trained_checkpoint_is_rebuilt_as_trained(trained_simpropnet):
    """`fssgui train` writes config.json beside its checkpoints; loading a checkpoint builds the
    model at the trained input size with the trained builder options (else the weights of a
    narrowed model would not fit and the model would run at the registry's 321 px)."""
    from fssgui.models import build_model

    config, _ = trained_simpropnet
    messages = []
    model = build_model("simpropnet-resnet50", Path(config.out_dir) / "model_best.pt", log=messages.append)
    assert model.entry.input_size == SMALL_SIZE != get_entry("simpropnet-resnet50").input_size
    assert any("as it was trained" in m and f"input size {SMALL_SIZE}" in m for m in messages)


def test_explain_cli_prototype_share_on_trained_simpropnet(trained_simpropnet, same_class_root, tmp_path):
    config, _ = trained_simpropnet
    episode_dir = _val_episode_dir(same_class_root, tmp_path)
    out = tmp_path / "explained"
    code = main(["explain", str(episode_dir), "--model", "simpropnet-resnet50", "--checkpoint",
                 str(Path(config.out_dir) / "model_best.pt"), "--device", "cpu", "--method", "prototype-share",
                 "--region", "ground-truth", "--out", str(out)])
    assert code == 0
    maps = _check_explanation(out, episode_dir, "prototype-share")
    summary = json.loads((out / "explanation.json").read_text())
    # the shares are the region's mean foreground cosine split over support pixels: all of the
    # mass lies on the support mask (up to the bilinear resize to the support size at its edge)
    total = summary["params"]["total"]
    assert 0 < total <= 1 and np.asarray(summary["params"]["cell_shares"]).sum() == pytest.approx(total, rel=1e-4)
    import cv2

    from fssgui.episode import load_episode

    mask = load_episode(episode_dir).supports[0].mask.astype(np.uint8)
    near_mask = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
    assert maps.min() >= 0 and maps[0][near_mask].sum() >= 0.999 * maps.sum() > 0


def test_explain_cli_affex_on_trained_i2r_checkpoint(trained_i2r, same_class_root, tmp_path):
    """Save -> load -> predict -> AffEx through `fssgui explain` on the checkpoint the trainer wrote."""
    config, _ = trained_i2r
    episode_dir = _val_episode_dir(same_class_root, tmp_path)
    out = tmp_path / "explained"
    code = main(["explain", str(episode_dir), "--model", "i2r-resnet50", "--checkpoint",
                 str(Path(config.out_dir) / "model_best.pt"), "--device", "cpu", "--method", "affex",
                 "--region", "ground-truth", "--out", str(out)])
    assert code == 0
    maps = _check_explanation(out, episode_dir, "affex")
    summary = json.loads((out / "explanation.json").read_text())
    assert len(summary["level_weights"]) == 5 and len(summary["level_names"]) == 5  # 5 cross-attention blocks
    assert float(np.abs(maps).sum()) > 0
    # the trained model attends to the support's object: per pixel, the unmasked AffEx map of the
    # query's object holds markedly more attribution on the support mask than off it
    from fssgui.episode import load_episode

    mask = load_episode(episode_dir).supports[0].mask
    inside, outside = float(maps[0][mask].mean()), float(maps[0][~mask].mean())
    print(f"\nI²R AffEx mean attribution on the support object {inside:.3f}, on its background {outside:.3f}")
    assert inside > 1.5 * outside > 0


# ------------------------------------------------------------------ explaining trained checkpoints in the app
def test_app_explains_trained_simpropnet_and_i2r(qtbot, trained_simpropnet, trained_i2r, same_class_root,
                                                 tmp_path, make_window):
    """The desktop app loads each trained checkpoint (rebuilt at the trained size and options),
    predicts, and shows one attribution map per support: prototype-share for SimPropNet, signed
    AffEx with per-block weights for I²R."""
    from fssgui.episode import load_episode

    episode = load_episode(_val_episode_dir(same_class_root, tmp_path))
    window = make_window()
    for (config, _), explainer, levels in ((trained_simpropnet, "prototype-share", None),
                                           (trained_i2r, "affex-signed", 5)):
        window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData(config.model))
        window.model_bar.set_checkpoint(Path(config.out_dir) / "model_best.pt")
        window.set_episode(episode)
        window.model_bar.explainer_combo.setCurrentIndex(window.model_bar.explainer_combo.findData(explainer))
        assert window.model_bar.explainer_combo.currentData() == explainer
        with qtbot.waitSignal(window.runs.resultShown, timeout=300000) as shown:
            assert window.runs.explain() is not None
        result = shown.args[0]
        assert len(result.maps) == 1 and np.isfinite(result.maps[0]).all() and np.abs(result.maps[0]).sum() > 0
        assert window.query.prediction is not None and window.query.canvas.has_layer("prediction")
        tiles = window.analysis.heatmap_view.grid.tiles
        assert len(tiles) == 1 and tiles[0].canvas.has_layer("heat")
        if levels is None:
            assert result.level_weights is None
        else:
            assert len(result.level_weights) == levels
        assert not window.errors, window.errors
