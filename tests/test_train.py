"""Training: a short CPU run improves validation IoU; the CLI writes safe checkpoints and resumes."""
from __future__ import annotations

import json

import pytest
import torch

from fssgui.cli import main
from fssgui.models.registry import get_entry
from fssgui.train import SegmentationMeter, TrainConfig, train

from synthetic_fss import make_synthetic_fss


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


def test_simpropnet_training_raises_validation_iou(synthetic_root, tmp_path):
    config = TrainConfig(
        model="simpropnet-resnet50", data_root=str(synthetic_root), layout="folders", fold=0, shots=1,
        out_dir=str(tmp_path / "run"), epochs=2, steps_per_epoch=100, val_episodes=32, batch_size=2,
        val_batch_size=8, size=65, optimizer="adamw", lr=1e-3, progress_bar=False,
        model_options={"feature_channels": 64, "decoder_channels": 64},
    )
    result = train(config, log=print)
    untrained = result.history[0]
    assert untrained["epoch"] == 0
    print(f"untrained val mIoU {untrained['miou']:.3f} FB-IoU {untrained['fbiou']:.3f}; "
          f"trained best mIoU {result.best_miou:.3f} (epoch {result.best_epoch}), "
          f"FB-IoU {result.history[result.best_epoch]['fbiou']:.3f}")
    assert result.best_miou > untrained["miou"] + 0.15
    assert result.history[result.best_epoch]["fbiou"] > untrained["fbiou"] + 0.10
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epoch"] == 2 and saved["best_epoch"] == result.best_epoch


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
