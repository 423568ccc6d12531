"""fssgui.models.checkpoints: safe reading, strict loading, explained failures."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from fssgui.errors import CheckpointError
from fssgui.models.checkpoints import load_checkpoint_into, read_state_dict


class Toy(nn.Module):
    """Conv + BN + a computed buffer declared like DCAMA's PE tables."""

    computed_buffer_patterns = (r"^table$",)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.register_buffer("table", torch.arange(6.0).view(2, 3))


def _filled_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        out[k] = torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() + 3
    return out


def _assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        if k in state:
            assert torch.equal(v, state[k]), k


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return _filled_state(Toy())


def test_module_prefix_and_wrappers_accepted(tmp_path: Path, state):
    for i, payload in enumerate(
        [
            state,
            {"module." + k: v for k, v in state.items()},
            {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3},
            {"model": state},
        ]
    ):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(payload, path)
        model, log = Toy(), []
        report = load_checkpoint_into(model, path, log=log.append)
        assert report.mode == "by name" and report.loaded == len(state)
        _assert_loaded(model, state)
        assert any("'module.' prefix" in line for line in log) == (i in (1, 2))


def test_safetensors_accepted(tmp_path: Path, state):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in state.items()}, str(path))
    assert set(read_state_dict(path)) == set(state)
    model = Toy()
    load_checkpoint_into(model, path)
    _assert_loaded(model, state)


def test_wrong_key_is_named(tmp_path: Path, state):
    state = dict(state)
    state["head.wieght"] = state.pop("head.weight")
    state["extra.thing"] = torch.zeros(1)  # also breaks the positional fallback (count)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_into(Toy(), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys: head.weight" in msg
    assert "head.wieght" in msg and "extra.thing" in msg


def test_wrong_shape_is_named(tmp_path: Path, state):
    state = dict(state)
    state["head.weight"] = torch.zeros(3, 4)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"head\.weight \(file \[3, 4\], model \[2, 4\]\)"):
        load_checkpoint_into(Toy(), path)


def test_missing_learned_parameter_or_bn_statistic_is_an_error(tmp_path: Path, state):
    for key in ("conv.weight", "bn.running_mean"):
        partial = {k: v for k, v in state.items() if k != key}
        path = tmp_path / f"no_{key}.pt"
        torch.save(partial, path)
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
            load_checkpoint_into(Toy(), path)


def test_missing_computed_buffers_are_rebuilt_and_logged(tmp_path: Path, state):
    partial = {k: v for k, v in state.items() if k not in ("table", "bn.num_batches_tracked")}
    path = tmp_path / "nobuf.pt"
    torch.save(partial, path)
    model, log = Toy(), []
    report = load_checkpoint_into(model, path, log=log.append)
    assert sorted(report.rebuilt) == ["bn.num_batches_tracked", "table"]
    assert torch.equal(model.table, torch.arange(6.0).view(2, 3))
    assert any("rebuilt" in line and "table" in line for line in log)


def test_dcama_missing_pe_tables_rebuilt(tmp_path: Path):
    from fssgui.models.dcama import DCAMA, sinusoidal_table

    model = DCAMA("resnet50")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("model.pe.")}
    state["model.mixer3.2.bias"] = torch.tensor([0.5, -0.5])
    path = tmp_path / "dcama_nope.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    fresh, log = DCAMA("resnet50"), []
    report = load_checkpoint_into(fresh, path, log=log.append)
    assert report.rebuilt == ["model.pe.0.pe", "model.pe.1.pe", "model.pe.2.pe"]
    assert torch.equal(fresh.model.pe[2].pe, sinusoidal_table(2048))
    assert torch.equal(fresh.model.mixer3[2].bias, torch.tensor([0.5, -0.5]))
    assert any("model.pe.0.pe" in line and "rebuilt" in line for line in log)


def test_positional_fallback_only_when_every_shape_matches(tmp_path: Path, state):
    renamed = {f"net.{i}.p": v for i, v in enumerate(state.values())}  # same order, other names
    path = tmp_path / "renamed.pt"
    torch.save(renamed, path)
    model, log = Toy(), []
    report = load_checkpoint_into(model, path, log=log.append)
    assert report.mode == "by position"
    _assert_loaded(model, state)
    assert any("by position" in line for line in log)
    # same names but reordered so that shapes no longer line up: refused, keys named
    items = list(renamed.items())
    items[0], items[2] = items[2], items[0]
    path2 = tmp_path / "shuffled.pt"
    torch.save(dict(items), path2)
    with pytest.raises(CheckpointError, match="positional mapping impossible"):
        load_checkpoint_into(Toy(), path2)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path: Path, state):
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pt"
    torch.save({"conv.weight": state["conv.weight"], "payload": _Evil(str(marker))}, zipped)
    legacy = tmp_path / "evil_legacy.pth"
    with legacy.open("wb") as fh:
        pickle.dump({"payload": _Evil(str(marker))}, fh)
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError) as err:
            read_state_dict(path)
        assert str(path) in str(err.value)
        assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(zipped)
    assert not marker.exists()


def test_missing_truncated_and_foreign_files(tmp_path: Path, state):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(text)
    full = tmp_path / "full.pt"
    torch.save(state, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_state_dict(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(empty)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_state_dict(bad_st)
    no_tensors = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "note": "x"}, no_tensors)
    with pytest.raises(CheckpointError, match="no tensors"):
        read_state_dict(no_tensors)


def test_registry_build_model_uses_the_loader(tmp_path: Path):
    from fssgui.models import build_model
    from fssgui.errors import ModelError

    with pytest.raises(ModelError, match="needs a checkpoint"):
        build_model("dmtnet")
    path = tmp_path / "wrong.pt"
    torch.save({"module.backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        build_model("dmtnet", checkpoint=path)
