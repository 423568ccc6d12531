"""Training from the app: the trainer's event hook, ``fssgui train --events``, and the training
dialog running a real child process (finish, use the checkpoint, stop, refuse a bad dataset)."""
from __future__ import annotations

import os


import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fssgui.data.datasets import DatasetError
from fssgui.errors import FssguiError
from fssgui.gui.training import TrainingDialog, TrainingState
from fssgui.train import TrainConfig, train

from synthetic_fss import make_synthetic_fss

MODEL = "simpropnet-resnet50"
TINY_OPTIONS = {"feature_channels": 32}  # like tests/test_train.py's CLI runs: a narrow, fast head
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_fss(tmp_path_factory.mktemp("train_gui_data"), n_classes=4, images_per_class=8, size=64,
                              seed=0)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread here and in the child processes (2 shared cores: OpenMP spinning is slow)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_cli_args(data_root: Path, out: Path, epochs: int = 2, steps: int = 3) -> list[str]:
    return ["train", MODEL, "--data", str(data_root), "--layout", "folders", "--fold", "-1", "--shots", "1",
            "--out", str(out), "--epochs", str(epochs), "--steps-per-epoch", str(steps), "--val-episodes", "4",
            "--batch-size", "2", "--size", "49", "--device", "cpu", "--option", "feature_channels=32"]


def _fill_dialog(dialog, data_root: Path, out: Path, epochs: int = 2, steps: int = 2) -> None:
    assert dialog.set_model(MODEL)
    dialog.form.data_edit.setText(str(data_root))
    dialog.form.layout_combo.setCurrentIndex(dialog.form.layout_combo.findData("folders"))
    dialog.form.fold_spin.setValue(-1)
    dialog.form.shots_spin.setValue(1)
    dialog.form.out_edit.setText(str(out))
    dialog.form.epochs_spin.setValue(epochs)
    dialog.form.steps_spin.setValue(steps)
    dialog.form.batch_spin.setValue(2)
    dialog.form.val_spin.setValue(4)
    dialog.form.size_spin.setValue(49)
    dialog.form.device_combo.setCurrentIndex(dialog.form.device_combo.findData("cpu"))
    dialog.form.set_model_options(dict(TINY_OPTIONS))


# ------------------------------------------------------------------------------ the trainer's hook
@pytest.mark.slow
def test_trainer_on_event_hook(data_root, tmp_path):
    """Every event is JSON-able; the log lines come as log events; step events are throttled (an
    epoch's last step always comes); one epoch event per validation; done ends the run."""
    events, lines = [], []
    config = TrainConfig(model=MODEL, data_root=str(data_root), layout="folders", fold=-1, shots=1,
                         out_dir=str(tmp_path / "run"), epochs=2, steps_per_epoch=3, val_episodes=4, batch_size=2,
                         val_batch_size=2, size=49, device="cpu", progress_bar=False, model_options=dict(TINY_OPTIONS))
    result = train(config, log=lines.append, on_event=events.append, event_interval=3600.0)
    for event in events:
        json.dumps(event, allow_nan=False)  # plain JSON, no NaN
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "error" not in kinds
    assert kinds.index("start") < kinds.index("phase")
    start = events[kinds.index("start")]
    assert start["device"] == "cpu" and start["total_steps"] == 6 and start["size"] == 49
    assert start["cuda_available"] == torch.cuda.is_available()
    assert [e["text"] for e in events if e["event"] == "log"] == lines
    # a throttle longer than the run: only each epoch's last step is reported
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["epoch"], e["step"], e["steps"], e["global_step"]) for e in steps] == [(1, 3, 3, 3), (2, 3, 3, 6)]
    assert all(e["loss"] > 0 and e["lr"] >= 0 for e in steps)
    # nothing was reported in between: the recent mean covers the whole epoch, like the running mean
    assert [e["recent_steps"] for e in steps] == [3, 3]
    assert all(e["recent_loss"] == pytest.approx(e["loss"], rel=1e-9) for e in steps)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[0]["train_loss"] is None and epochs[0]["saved"] is False
    assert all(e["saved"] and e["train_loss"] > 0 and 0 <= e["miou"] <= 1 and 0 <= e["fbiou"] <= 1 for e in epochs[1:])
    phases = [(e["phase"], e["epoch"]) for e in events if e["event"] == "phase"]
    assert phases == [("calibrate", 0), ("validate", 0), ("train", 1), ("validate", 1), ("train", 2), ("validate", 2)]
    done = events[-1]
    assert done["best_epoch"] == result.best_epoch and done["epochs_done"] == 2
    assert done["out_dir"] == str(tmp_path / "run")

    # every step reported: each recent mean is that step's loss, and they average to the running mean
    events.clear()
    config.out_dir, config.epochs = str(tmp_path / "every-step"), 1
    train(config, log=lambda _t: None, on_event=events.append, event_interval=0.0)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(e["recent_steps"] == 1 for e in steps)
    for n, event in enumerate(steps, start=1):
        assert event["loss"] == pytest.approx(sum(e["recent_loss"] for e in steps[:n]) / n, rel=1e-9)

    # a failure: an error event naming the path, then the exception
    events.clear()
    bad = TrainConfig(model=MODEL, data_root=str(tmp_path / "missing"), layout="folders", fold=-1, shots=1,
                      out_dir=str(tmp_path / "bad"), device="cpu", progress_bar=False)
    with pytest.raises(DatasetError):
        train(bad, log=lambda _t: None, on_event=events.append)
    assert events[-1]["event"] == "error" and str(tmp_path / "missing") in events[-1]["message"]
    assert events[-1]["kind"] == "DatasetError"


# ------------------------------------------------------------------------------ the CLI stream
@pytest.mark.slow
def test_cli_event_stream(data_root, tmp_path):
    """``python -m fssgui train ... --events``: stdout is JSON lines only and ends with done; a
    user error ends with an error event and exit status 2."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "fssgui", *_tiny_cli_args(data_root, out), "--events"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every line parses
    kinds = [e["event"] for e in events]
    assert kinds[0] in ("log", "start") and kinds[-1] == "done"
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1, 2]
    assert any(e["event"] == "step" and e["global_step"] == 6 for e in events)
    assert "training simpropnet-resnet50 at 49px on cpu" in " ".join(e.get("text", "") for e in events)
    assert (out / "model_best.pt").is_file() and (out / "config.json").is_file()

    proc = subprocess.run([sys.executable, "-m", "fssgui", *_tiny_cli_args(data_root, tmp_path / "x"), "--events",
                           "--option", "foreground_weight"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["event"] == "error" and "expected NAME=VALUE" in last["message"]


# ------------------------------------------------------------------------------ the dialog
@pytest.mark.slow
def test_dialog_trains_shows_epochs_and_uses_checkpoint(qtbot, window, data_root, tmp_path):
    # the toolbar button is greyed, with the reason, for a model that cannot be trained
    window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData("dcama-swin"))
    assert not window.model_bar.train_button.isEnabled() and "cannot be trained" in window.model_bar.train_button.toolTip()
    window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData(MODEL))
    assert window.model_bar.train_button.isEnabled()
    dialog = window.open_training_dialog(MODEL)
    qtbot.addWidget(dialog)
    names = [dialog.form.model_combo.itemData(i) for i in range(dialog.form.model_combo.count())]
    assert MODEL in names and "i2r-resnet50" in names and "dcama-swin" not in names
    out = tmp_path / "run"
    _fill_dialog(dialog, data_root, out)
    assert not dialog.use_button.isEnabled() and not dialog.form.resume_check.isEnabled()
    assert dialog.form.wd_edit.placeholderText() == "0.0005" and "(0.0005)" in dialog.form.wd_edit.toolTip()  # SimPropNet's
    for bad in ("-1", "lots"):
        dialog.form.wd_edit.setText(bad)
        with pytest.raises(FssguiError, match="weight decay"):
            dialog.form.current_request()
    dialog.form.wd_edit.setText("2e-4")
    arguments = dialog.form.current_request().arguments()
    assert arguments[arguments.index("--weight-decay") + 1] == "0.0002"

    summaries: list[str] = []
    dialog.summaryChanged.connect(summaries.append)
    with qtbot.waitSignal(dialog.runFinished, timeout=300000) as finished:
        assert dialog.start()
        qtbot.waitUntil(lambda: dialog.state != TrainingState.CHECKING, timeout=60000)
        # closing the dialog does not stop the run: the main window's status bar follows it
        dialog.close()
        assert dialog.is_running() and window.status.training_button.isVisible()
        assert window.status.training_button.text().startswith(f"Training {MODEL}")
        qtbot.waitUntil(lambda: any(h.get("epoch") == 1 for h in dialog.view.history)
                        or not dialog.state.busy, timeout=300000)
        window.status.training_button.click()  # shows the dialog again, the run still going
        assert dialog.isVisible()
        dialog.grab().save(str(tmp_path / "dialog_running.png"))
    assert finished.args == ["done"], dialog.view.status_label.text() + "\n" + dialog.view.log_view.toPlainText()
    dialog.grab().save(str(tmp_path / "dialog_done.png"))
    assert (tmp_path / "dialog_done.png").stat().st_size > 0
    assert not dialog.is_running()
    assert "Finished" in dialog.view.status_label.text() and "Best val mIoU" in dialog.view.status_label.text()
    assert summaries[0] == f"Training {MODEL}: checking the dataset…"
    assert any(f"Training {MODEL}: epoch 1/2 · " in text for text in summaries)
    assert any(text.startswith(f"Training {MODEL}: validating epoch") for text in summaries)
    assert summaries[-1].startswith(f"Training {MODEL} finished (best val mIoU")
    assert window.status.training_button.text() == summaries[-1]
    assert str(out) in dialog.view.detail_label.text()
    # the epochs: table rows and plot points (0 = the untrained model), the loss per trained epoch
    assert dialog.view.epoch_table.rowCount() == 3
    assert [dialog.view.epoch_table.item(r, 0).text() for r in range(3)] == ["0", "1", "2"]
    x, y = dialog.view.miou_curve.getData()
    assert list(x) == [0, 1, 2] and all(0 <= v <= 100 for v in y)
    assert list(dialog.view.loss_curve.getData()[0]) == [1, 2]
    assert dialog.view.progress.value() == dialog.view.progress.maximum() == 4
    if not torch.cuda.is_available():
        assert dialog.view.device_note.isVisible() and "CUDA is not available" in dialog.view.device_note.text()
    assert "epoch 2: val mIoU" in dialog.view.log_view.toPlainText()
    # the settings are remembered for the next time
    assert window.settings.training["out_dir"] == str(out)
    assert window.settings.training["model_options_by_model"][MODEL] == TINY_OPTIONS
    again = TrainingDialog(window.settings)  # a later session's dialog starts from them
    qtbot.addWidget(again)
    assert again.model_name == MODEL and again.form.data_edit.text() == str(data_root)
    assert again.form.out_edit.text() == str(out) and again.form.size_spin.value() == 49 and again.form.epochs_spin.value() == 2
    assert again.form.model_options() == TINY_OPTIONS and again.form.device_combo.currentData() == "cpu"
    assert again.form.wd_edit.text() == "0.0002"
    assert json.loads((out / "config.json").read_text())["config"]["weight_decay"] == pytest.approx(2e-4)

    # Use this checkpoint: the main window selects the model and model_best.pt
    assert dialog.use_button.isEnabled()
    window.model_bar.model_combo.setCurrentIndex(window.model_bar.model_combo.findData("matcher-effnet"))
    dialog.use_button.click()
    assert window.model_bar.model_combo.currentData() == MODEL
    assert window.model_bar.checkpoint_combo.currentData() == str((out / "model_best.pt").resolve())
    assert window.model_bar.model_spec().checkpoint == str((out / "model_best.pt").resolve())

    # Resume: offered for the folder, takes the saved settings and locks those a resume keeps
    assert dialog.form.resume_check.isEnabled()
    dialog.form.size_spin.setValue(0)
    dialog.form.set_model_options({})
    dialog.form.resume_check.setChecked(True)
    assert dialog.form.size_spin.value() == 49 and dialog.form.model_options() == TINY_OPTIONS
    assert not dialog.form.size_spin.isEnabled() and not dialog.form.options_table.isEnabled()
    assert not dialog.form.model_combo.isEnabled()
    assert "--resume" in dialog.form.current_request().arguments()
    dialog.form.resume_check.setChecked(False)
    assert dialog.form.size_spin.isEnabled()


@pytest.mark.slow
def test_stop_ends_the_child_and_says_what_is_kept(qtbot, window, data_root, tmp_path):
    dialog = window.open_training_dialog(MODEL)
    qtbot.addWidget(dialog)
    out = tmp_path / "long"
    _fill_dialog(dialog, data_root, out, epochs=500, steps=2)
    assert dialog.start()
    # wait for a saved epoch and the next one under way, then stop in the middle of the run
    qtbot.waitUntil(lambda: (any((h.get("epoch") or 0) >= 1 for h in dialog.view.history)
                             and dialog.view.current_epoch >= 2)
                    or not dialog.state.busy, timeout=300000)
    assert dialog.state is TrainingState.RUNNING, dialog.view.status_label.text() + "\n" + dialog.view.log_view.toPlainText()
    pid = dialog.process.pid
    assert pid > 0
    with qtbot.waitSignal(dialog.runFinished, timeout=30000) as finished:
        dialog.stop_button.click()
    assert finished.args == ["stopped"]
    dialog.grab().save(str(tmp_path / "dialog_stopped.png"))
    assert not dialog.is_running()
    with pytest.raises(ProcessLookupError):  # the child is gone (and reaped)
        os.kill(pid, 0)
    saved = json.loads((out / "config.json").read_text())
    text = dialog.view.status_label.text()
    assert text.startswith("Stopped.") and "lost" in text and "Resume" in text
    assert f"Epoch {saved['epoch']} is saved" in text
    assert not list(out.glob(".*tmp*"))  # no partial files left
    assert dialog.form.resume_check.isEnabled() and dialog.use_button.isEnabled() and dialog.start_button.isEnabled()


def test_bad_dataset_folder_is_refused_before_any_process(qtbot, window, tmp_path):
    dialog = window.open_training_dialog(MODEL)
    qtbot.addWidget(dialog)
    not_a_dataset = tmp_path / "holiday photos"
    not_a_dataset.mkdir()
    (not_a_dataset / "beach.jpg").write_bytes(b"not an image")
    out = tmp_path / "never"
    for folder in (not_a_dataset, tmp_path / "missing"):
        _fill_dialog(dialog, folder, out)
        assert dialog.start()
        qtbot.waitUntil(lambda: dialog.state != TrainingState.CHECKING, timeout=30000)
        assert dialog.state is TrainingState.IDLE and dialog.process is None
        text = dialog.view.status_label.text()
        assert text.startswith("Cannot start") and str(folder) in text
        assert dialog.start_button.isEnabled() and not dialog.stop_button.isEnabled()
    assert not out.exists()
    dialog.grab().save(str(tmp_path / "dialog_refused.png"))
