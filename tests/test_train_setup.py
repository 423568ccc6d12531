"""Setting up a training run without Qt or torch (fssgui.train_setup): the child command, the
builder options and presets, the ``fssgui train`` arguments, the dialog's number fields."""
from __future__ import annotations

import sys

import pytest

from fssgui import train_setup as ts
from fssgui.errors import FssguiError

MODEL = "simpropnet-resnet50"


def test_child_command_runs_this_installation(monkeypatch):
    assert ts.training_command(["train", "x"]) == (sys.executable, ["-m", "fssgui", "train", "x"])
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert ts.training_command(["train", "x"]) == (sys.executable, ["train", "x"])


def test_model_options_and_presets():
    from fssgui.models.registry import get_entry

    i2r = ts.model_option_defaults(get_entry("i2r-resnet50"))
    assert i2r["foreground_weight"] == 1.0 and i2r["feature_dropout"] == 0.5 and i2r["detach_merge_input"] is True
    spn = ts.model_option_defaults(get_entry(MODEL))
    assert spn["feature_channels"] == 256 and "backbone_weights" not in spn and "input_size" not in spn
    preset = dict(ts.OPTION_PRESETS["i2r-resnet50"])["CPU-learnable (no ImageNet backbone)"]
    assert preset == {"foreground_weight": 3, "feature_dropout": 0, "detach_merge_input": False}
    assert set(preset) <= set(i2r)
    request = ts.TrainRequest(model="i2r-resnet50", data_root="/d", layout="folders", fold=0, shots=1, out_dir="/o",
                              model_options=preset, resume=True)
    args = request.arguments()
    assert args[:2] == ["train", "i2r-resnet50"] and args[-2:] == ["--events", "--no-progress"]
    assert "--resume" in args and "detach_merge_input=false" in args and "foreground_weight=3" in args
    assert {e.name for e in ts.trainable_entries()} >= {"i2r-resnet50", MODEL}


def test_number_fields_and_texts():
    assert ts.optional_number("", "learning rate") is None
    assert ts.optional_number(" 2,5e-3 ", "learning rate") == pytest.approx(2.5e-3)
    for bad in ("-1", "lots", "nan"):
        with pytest.raises(FssguiError, match="weight decay"):
            ts.optional_number(bad, "weight decay")
    assert ts.duration_text(59) == "59 s" and ts.duration_text(61) == "1 min 01 s"
    assert ts.duration_text(3700) == "1 h 01 min"
    assert ts.shell_quote("--lr") == "--lr" and ts.shell_quote("a b") == '"a b"'
    assert ts.parse_option_value("3") == 3 and ts.parse_option_value("false") is False
    assert ts.parse_option_value("abc") == "abc"
    assert ts.format_percent(None) == "—" and ts.format_percent(0.5) == "50.00"



def test_dialog_defaults_are_train_config_defaults_and_its_arguments_give_that_config():
    """The dialog's request has TrainConfig's fields and defaults, and ``fssgui train`` parses its
    arguments back into the same TrainConfig (the options the dialog does not set: TrainConfig's
    defaults, except the validation batch = the batch and no progress bar with --events)."""
    from dataclasses import asdict, fields

    from fssgui.cli import build_parser
    from fssgui.commands.train import config_from_args

    request_types = {f.name: f.type for f in fields(ts.TrainRequest)}
    config_types = {f.name: f.type for f in fields(ts.TrainConfig)}
    assert request_types == {name: config_types[name] for name in request_types}  # same names and types
    required = dict(model=MODEL, data_root="/data", layout="folders", fold=-1, shots=1, out_dir="/out")
    default = ts.TrainRequest(**required)
    config = ts.TrainConfig(**required)
    assert asdict(default) == {name: getattr(config, name) for name in request_types}
    assert default.epochs == ts.config_default("epochs") == 50 and ts.config_default("model_options") == {}
    assert ts.TrainRequest(**required).model_options is not default.model_options  # a new dict each

    changed = ts.TrainRequest(model="i2r-resnet50", data_root="/d a/t", layout="pascal5i", fold=2, shots=5,
                              out_dir="/o u/t", epochs=3, steps_per_epoch=7, val_episodes=11, batch_size=2,
                              lr=2.5e-3, optimizer="adamw", weight_decay=1e-4, size=129, device="cpu",
                              backbone_weights="/w/resnet50.pth", resume=True,
                              model_options={"foreground_weight": 3.0, "feature_channels": 64,
                                             "detach_merge_input": False, "name": "x y", "none": None})
    # every field differs from its default, so each one must travel through the arguments
    assert [n for n in request_types if getattr(changed, n) == getattr(default, n)] == []
    parser = build_parser()
    for request in (default, changed):
        args = parser.parse_args(request.arguments())
        assert args.command == "train" and args.events and args.no_progress
        parsed = config_from_args(args)
        assert parsed == ts.TrainConfig(**asdict(request), val_batch_size=request.batch_size, progress_bar=False)
