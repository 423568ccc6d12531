"""Running out of memory, on the GPU (``torch.cuda.OutOfMemoryError``) or the host (``MemoryError``),
from inside a model's forward or from inside AffEx: every command ends with one line saying what
ran out and what to try, exit status 2, and writes nothing. (The app's side is in the GUI tests;
a real GPU exhausts its memory in ``bench/device_check.sh``.)"""
from __future__ import annotations

import pytest
import torch

from testkit import make_episode
from fssgui.cli import main
from fssgui.episode import save_episode
from fssgui.explain.affex import AffinityExplainer
from fssgui.pipeline.models import is_out_of_memory, out_of_memory_message
from test_affex_cli import TOY_NAME, toy_registered  # noqa: F401 - registers the toy matcher

FAULTS = {"gpu": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
          "host": lambda: MemoryError()}


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oom") / "episode"
    save_episode(make_episode(shots=2), folder)
    return folder


def _inject(monkeypatch, where: str, fault: str) -> None:
    from fssgui.models.registry import get_entry

    def fail(*args, **kwargs):
        raise FAULTS[fault]()

    if where == "forward":
        model_class = type(get_entry(TOY_NAME).builder())
        monkeypatch.setattr(model_class, "predict", fail)
    else:
        monkeypatch.setattr(AffinityExplainer, "explain", fail)


#: (command, where the memory runs out); predict runs no explainer
CASES = [(c, w) for c in ("explain", "causal", "report") for w in ("forward", "affex")] + [("predict", "forward")]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("command,where", CASES)
def test_commands_say_what_ran_out_and_write_nothing(command, where, fault, episode_dir, tmp_path, monkeypatch,
                                                     capsys):
    _inject(monkeypatch, where, fault)
    out = tmp_path / "out"
    options = {"explain": ["--method", "affex"], "causal": ["--method", "affex", "--steps", "2"],
               "report": ["--methods", "affex", "--steps", "2", "--no-pdf"], "predict": []}[command]
    code = main([command, str(episode_dir), "--model", TOY_NAME, "--device", "cpu", *options, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) >= 1 and err[-1].startswith("fssgui: error: ")
    assert ("GPU memory ran out" if fault == "gpu" else "memory (RAM) ran out") in err[-1]
    assert "fewer shots" in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_other_errors_are_not_taken_for_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x")) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert "GPU memory ran out" in out_of_memory_message(torch.cuda.OutOfMemoryError("x"))
