"""Hostile checkpoints (truncated, empty, damaged, wrong container, wrong tensors, hostile
metadata, NaN/Inf weights) for every reader: :mod:`fssgui.models.checkpoints` (all registry
models), :mod:`fssgui.models.safe_pickle` and :mod:`fssgui.models.scaleprotoseg`; and predictions
that come out non-finite (:func:`fssgui.models.base.check_finite`). Every case ends in a loaded
model or one :class:`CheckpointError`/:class:`ModelError` whose one-line message names the file
(or the model)."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from testkit import make_episode
from fssgui.errors import CheckpointError, ModelError
from fssgui.models import scaleprotoseg as sps
from fssgui.models.base import FSSModel, Prediction, check_finite
from fssgui.models.checkpoints import load_checkpoint_into, read_state_dict
from fssgui.models.safe_pickle import load_pickled_module
from fssgui.models.scaleprotoseg import load_scaleprotoseg, read_checkpoint
from hostile_testkit import SOME, assert_one_line_naming, cli, damaged, damaged_file, fresh_folder


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


STATE = {k: (torch.randn(v.shape) if v.is_floating_point() else v.clone())
         for k, v in Small().state_dict().items()}


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_ckpt")


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("weights.pt")
        data = _saved(STATE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.numpy() for k, v in STATE.items()})
    return buffer.getvalue()


SEEDS = {
    "state.pt": _saved(STATE),
    "wrapped.pt": _saved({"state_dict": {"module." + k: v for k, v in STATE.items()}, "epoch": 3}),
    "module.pt": _saved(Small()),  # a whole pickled module
    "legacy.pt": pickle.dumps({k: v.numpy() for k, v in STATE.items()}, protocol=2),
    "tar.pt": _tar_bytes(),
    "other.zip.pt": _zip_bytes({"archive/data.pkl": b"\x80\x02}q\x00.", "notes.txt": b"hello"}),
    "npz.pt": _npz_bytes(),
    "json.pt": json.dumps({"conv.weight": [[1.0]]}).encode(),
    "text.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2, 3]}" + b"\x00" * 16,
    "scalars.pt": _saved({"conv.weight": 3, "conv.bias": "x", "bn.weight": None}),
}


@SOME
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_damaged_and_foreign_checkpoints_fail_with_one_line(scratch, name, data):
    path = damaged_file(scratch, name, SEEDS[name], data)
    for read in (read_state_dict, lambda p: load_checkpoint_into(Small(), p), read_checkpoint):
        try:
            read(path)
        except CheckpointError as exc:
            assert_one_line_naming(exc, path)


tensors = st.sampled_from([
    torch.zeros(4, 3, 3, 3), torch.zeros(4, 3, 3), torch.zeros(()), torch.zeros(0), torch.zeros(4, dtype=torch.int64),
    torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.complex64), torch.zeros(4, dtype=torch.float16),
    torch.full((4,), float("nan")), torch.full((4,), float("inf")), torch.zeros(2, 4), torch.zeros(4, 4),
    torch.zeros(4, dtype=torch.uint8), torch.zeros(4).expand(4),
])


@SOME
@given(st.dictionaries(st.sampled_from(sorted(STATE) + ["extra.weight", "module.conv.weight"]), tensors,
                       max_size=len(STATE) + 1), st.booleans())
def test_wrong_tensors_load_exactly_or_fail_with_one_line(scratch, replaced, keep_rest):
    state = dict(STATE) if keep_rest else {}
    state.update(replaced)
    path = fresh_folder(scratch) / "ckpt.pt"
    torch.save(state, path)
    model = Small()
    try:
        load_checkpoint_into(model, path)
    except CheckpointError as exc:
        assert_one_line_naming(exc, path)
        return
    loaded = model.state_dict()
    for key, value in state.items():  # what loads is the file's values, finite, as floating point
        assert key in loaded and torch.equal(loaded[key].to(value.dtype), value)
        assert bool(torch.isfinite(loaded[key].float()).all())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_named_by_every_reader(scratch, value):
    state = dict(STATE)
    state["bn.running_var"] = state["bn.running_var"].clone()
    state["bn.running_var"][2] = value
    folder = fresh_folder(scratch)
    torch.save(state, folder / "nan.pt")
    from safetensors.torch import save_file

    save_file(state, str(folder / "nan.safetensors"))
    for path in (folder / "nan.pt", folder / "nan.safetensors"):
        for read in (read_state_dict, lambda p: load_checkpoint_into(Small(), p)):
            with pytest.raises(CheckpointError, match="non-finite weights") as err:
                read(path)
            assert "bn.running_var" in assert_one_line_naming(err.value, path)


# ------------------------------------------------------------------------------ ScaleProtoSeg
@pytest.fixture(scope="module")
def protoseg(tmp_path_factory):
    """A small ScaleProtoSeg (from test_scaleprotoseg) and its files in the accepted formats."""
    from safetensors.torch import save_file

    from test_scaleprotoseg import save_official_pickle, small_model

    model = small_model(seed=2)
    folder = tmp_path_factory.mktemp("protoseg")
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    state["prototype_vectors"][3, 1] = float("nan")
    torch.save(state, folder / "nan_plain.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "nan.safetensors"))
    with torch.no_grad():
        model.last_layer_group.weight[0, 0] = float("inf")
    save_official_pickle(model, folder / "inf_official.pth")
    sps.save_converted(model, folder / "inf_converted.pth")
    return folder


@pytest.mark.parametrize("name, tensor", [("nan_plain.pth", "prototype_vectors"), ("nan.safetensors",
                                          "prototype_vectors"), ("inf_official.pth", "last_layer_group.weight"),
                                          ("inf_converted.pth", "last_layer_group.weight")])
def test_scaleprotoseg_non_finite_weights_are_named(protoseg, name, tensor):
    with pytest.raises(CheckpointError, match="non-finite weights") as err:
        load_scaleprotoseg(protoseg / name)
    assert tensor in assert_one_line_naming(err.value, protoseg / name)


metadata_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**9), st.floats(allow_nan=True),
                            st.text(max_size=4), st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=2),
                                                                    st.floats(allow_nan=True)), max_size=3),
                            st.dictionaries(st.text(max_size=3), st.lists(st.integers(-2, 5), max_size=3), max_size=2))
FAKE_STATE = {"prototype_vectors": torch.rand(8, 2, 1, 1), "last_layer.weight": torch.rand(2, 8)}


@SOME
@given(st.dictionaries(st.sampled_from(["num_scales", "epsilon", "msc_scales", "scale_ranges", "dataset",
                                        "num_classes"]), metadata_values, max_size=4),
       st.sampled_from(["converted", "pickled"]))
def test_scaleprotoseg_hostile_metadata_fails_with_one_line(scratch, config, kind):
    path = fresh_folder(scratch) / "protoseg.pth"
    if kind == "converted":
        torch.save({"format": sps.CONVERTED_FORMAT, "version": 1, "config": config, "state_dict": FAKE_STATE}, path)
    else:  # a whole pickled module whose attributes carry the values
        module = nn.Module()
        module.prototype_vectors = nn.Parameter(FAKE_STATE["prototype_vectors"].clone())
        module.last_layer = nn.Linear(8, 2, bias=False)
        for key, value in {"num_scales": config.get("num_scales"), "epsilon": config.get("epsilon"),
                           "scale_num_prototypes": config.get("scale_ranges"),
                           "prototype_class_identity": config.get("dataset")}.items():
            setattr(module, key, value)
        torch.save(module, path)
    with pytest.raises(CheckpointError) as err:  # the fake tensors never make a model
        load_scaleprotoseg(path)
    assert_one_line_naming(err.value, path)


@pytest.mark.parametrize("state", [
    {"prototype_vectors": torch.rand(8), "last_layer.weight": torch.rand(2, 8)},
    {"prototype_vectors": torch.rand(8, 2, 1, 1), "last_layer.weight": torch.rand(())},
    {"prototype_vectors": torch.rand(0, 2), "last_layer_group.weight": torch.rand(2, 6)},
    {"prototype_vectors": torch.rand(8, 2), "last_layer_group.weight": torch.rand(2, 6),
     "group_projection.0.weight": torch.rand(())},
    {"prototype_vectors": torch.rand(8, 2, 1, 1)},
])
def test_scaleprotoseg_wrong_tensors_fail_with_one_line(scratch, state):
    path = fresh_folder(scratch) / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_scaleprotoseg(path)
    assert_one_line_naming(err.value, path)


@SOME
@given(st.data())
def test_damaged_pickles_inside_a_good_zip_run_nothing_and_fail_with_one_line(scratch, data):
    """The restricted unpickler gets hostile bytes (the zip around them stays valid)."""
    with zipfile.ZipFile(io.BytesIO(SEEDS["module.pt"])) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    name = next(n for n in entries if n.endswith("/data.pkl"))
    entries[name] = damaged(entries[name], data, ("cut", "flip", "junk"))
    path = fresh_folder(scratch) / "module.pt"
    path.write_bytes(_zip_bytes(entries))
    for read in (load_pickled_module, read_checkpoint):
        try:
            read(path)
        except CheckpointError as exc:
            assert_one_line_naming(exc, path)


@pytest.mark.parametrize("opcodes, words", [
    (b"\x80\x05\x96" + (6 * 10**18).to_bytes(8, "little") + b"abc.", "damaged pickle"),  # BYTEARRAY8 of 6 EB
    (b"\x80\x02]r" + (2**32 - 1).to_bytes(4, "little") + b".", "memo index 4294967295"),  # LONG_BINPUT
    (b"\x80\x02\x8e" + (2**40).to_bytes(8, "little") + b".", "damaged pickle"),  # BINBYTES8 of 1 TB
])
def test_pickles_asking_for_huge_allocations_are_refused_before_unpickling(scratch, opcodes, words):
    """A flipped byte can turn into a length or a memo index the C unpickler would allocate first
    (gigabytes, touched or leaked): the opcodes are walked and refused before it runs."""
    with zipfile.ZipFile(io.BytesIO(SEEDS["module.pt"])) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    name = next(n for n in entries if n.endswith("/data.pkl"))
    entries[name] = opcodes
    path = fresh_folder(scratch) / "module.pt"
    path.write_bytes(_zip_bytes(entries))
    with pytest.raises(CheckpointError, match=words) as err:
        load_pickled_module(path)
    assert_one_line_naming(err.value, path)
    with pytest.raises(CheckpointError) as err:  # torch's own (Python) unpickler tries first there
        read_checkpoint(path)
    assert_one_line_naming(err.value, path)


# -------------------------------------------------------------------------- non-finite outputs
class NaNModel(FSSModel):
    """Predicts logits with a NaN (broken weights, or an overflow inside the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def predict(self, batch, **_kwargs) -> Prediction:
        logits = torch.zeros(batch.query.shape[0], 2, *batch.query.shape[-2:])
        logits[:, :, 3, 4] = float("nan")
        return Prediction(logits)


@pytest.fixture(scope="module")
def nan_model() -> str:
    from fssgui.models.registry import ModelEntry, get_entry, register

    try:
        get_entry("nan-model")
    except ModelError:
        register(ModelEntry(name="nan-model", builder=NaNModel, input_size=32, needs_checkpoint=False,
                            description="hostile-input test model"))
    return "nan-model"


def test_check_finite_names_the_model():
    check_finite(Prediction(torch.zeros(1, 2, 4, 4)), "fine")
    for value in (float("nan"), float("inf")):
        logits = torch.zeros(1, 2, 4, 4)
        logits[0, 1, 2, 2] = value
        with pytest.raises(ModelError, match=r"model broken: the prediction is not finite \(1 of 32 logits"):
            check_finite(Prediction(logits), "broken")
        with pytest.raises(ModelError, match="model broken"):
            check_finite(logits, "broken")


def test_cli_and_gui_predictions_refuse_non_finite_logits(nan_model, scratch, capsys):
    """The ``predict`` command and the app's predict job: an error naming the model (exit status
    2 and no output folder from the command), not an all-background mask."""
    from fssgui.cli import main
    from fssgui.episode import save_episode
    from fssgui.pipeline import jobs

    episode = make_episode()
    folder = fresh_folder(scratch)
    save_episode(episode, folder / "ep")
    code = main(["predict", str(folder / "ep"), "--model", nan_model, "--device", "cpu", "--out", str(folder / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fssgui: error: ")]
    assert code == 2 and len(errors) == 1 and "nan-model: the prediction is not finite" in errors[0]
    assert not (folder / "out").exists()
    with pytest.raises(ModelError, match="nan-model: the prediction is not finite"):
        jobs.predict(jobs.JobContext(), jobs.ModelCache(), jobs.ModelSpec(nan_model, device="cpu"), episode)


@pytest.fixture(scope="module")
def matcher_state():
    from fssgui.models.registry import build_model

    return build_model("matcher-effnet").state_dict()


def test_cli_checkpoints_with_nan_or_overflowing_weights_exit_2(matcher_state, scratch, capsys):
    """A NaN checkpoint is named at load; finite weights that overflow in the forward give a
    non-finite prediction, named by the model (the real entry point, in a subprocess); exit
    status 2, one error line, no output folder."""
    from fssgui.cli import main
    from fssgui.episode import save_episode

    folder = fresh_folder(scratch)
    save_episode(make_episode(), folder / "ep")
    nan_state = dict(matcher_state)
    nan_state["blocks.3.0.conv_pw.weight"] = nan_state["blocks.3.0.conv_pw.weight"].clone().fill_(float("nan"))
    torch.save(nan_state, folder / "nan.pth")
    huge_state = dict(matcher_state)
    huge_state["bn1.weight"] = torch.full_like(huge_state["bn1.weight"], 3e38)
    torch.save(huge_state, folder / "huge.pth")
    for name, words in (("nan.pth", f"{folder / 'nan.pth'}: non-finite weights (NaN or Inf) in 1 tensors: "
                                    "blocks.3.0.conv_pw.weight"),
                        ("huge.pth", "matcher-effnet: the prediction is not finite")):
        out = folder / f"out_{name}"
        args = ["predict", str(folder / "ep"), "--model", "matcher-effnet", "--checkpoint", str(folder / name),
                "--device", "cpu", "--out", str(out)]
        if name == "huge.pth":
            code, _, stderr = cli(*args)
        else:
            code, stderr = main(args), capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("fssgui: error: ")]
        assert code == 2 and len(errors) == 1 and words in errors[0] and "Traceback" not in stderr, stderr
        assert not out.exists()
