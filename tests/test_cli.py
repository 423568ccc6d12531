import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import make_episode
from fssgui import __version__
from fssgui.cli import main
from fssgui.episode import episode_to_tensors, load_episode, save_episode
from fssgui.imaging import load_mask
from fssgui.models import build_model
from fssgui.models.registry import DEFAULT_MODEL
from fssgui.resources import demo_episodes


def run_cli(*argv):
    """The real console entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "fssgui.cli", *map(str, argv)], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"fssgui {__version__}"


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "matcher-effnet" in out and "384x384" in out and "none" in out


@pytest.mark.parametrize("folder", demo_episodes(), ids=lambda p: p.name)
def test_predict_on_every_demo_episode(folder, tmp_path, capsys):
    assert main(["predict", str(folder), "--device", "cpu", "--out", str(tmp_path)]) == 0
    episode = load_episode(folder)
    logits = np.load(tmp_path / "logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (2, *episode.query_size)
    prediction = load_mask(tmp_path / "prediction.png")
    np.testing.assert_array_equal(prediction, logits[1] > logits[0])
    print(capsys.readouterr().out)


def test_demo_episodes_exist():
    assert len(demo_episodes()) >= 3


def test_predict_at_input_size_does_not_resample(tmp_path):
    episode = make_episode(size=(384, 384))
    save_episode(episode, tmp_path / "ep")
    assert main(["predict", str(tmp_path / "ep"), "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    model = build_model(DEFAULT_MODEL)  # what `fssgui predict` runs without --model
    with torch.no_grad():
        expected = model.predict(episode_to_tensors(episode, model.entry)).logits[0].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "logits.npy"), expected)


def test_errors_are_one_line_and_non_zero(tmp_path):
    save_episode(make_episode(), tmp_path / "ep")
    (tmp_path / "ep" / "support_0.png").write_bytes(b"broken")
    code, out, err = run_cli("predict", tmp_path / "ep", "--out", tmp_path / "out")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "support_0.png" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out" / "logits.npy").exists()


def test_unknown_model_and_missing_checkpoint(tmp_path, capsys):
    save_episode(make_episode(), tmp_path / "ep")
    assert main(["predict", str(tmp_path / "ep"), "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    code = main(["predict", str(tmp_path / "ep"), "--device", "cuda", "--out", str(tmp_path)])
    if torch.cuda.is_available():
        assert code == 0
    else:
        assert code == 2 and "CUDA was requested but is not available" in capsys.readouterr().err
