"""Setting up a training run, without Qt and without torch: what the app's training dialog asks
``fssgui train`` to do, checked before the child process starts.

* :class:`TrainConfig`, what :func:`fssgui.train.train` runs, and :class:`TrainRequest`, what the
  dialog asks for, both :class:`TrainSettings` (the fields and defaults they share, defined once);
  ``fssgui train``'s options take their defaults from TrainConfig (:func:`config_default`);
* :class:`TrainRequest`'s ``fssgui train`` arguments; :func:`training_command` (the same
  program as the app: this interpreter with ``-m fssgui``, or the frozen bundle's executable);
* :func:`check_request`: the output folder, the backbone file and the dataset (train and val splits,
  one episode of the chosen shots) are opened, so a wrong folder is refused with the reader's
  message naming the path (slow the first time on COCO: call it off the GUI thread);
* :func:`read_saved_run`: the ``config.json`` of a run in a folder (what *Resume* continues);
* the trainable registry entries, their builder options with defaults, and named option presets;
* the file names a run writes (:mod:`fssgui.train` writes them; this module needs no torch).
"""
from __future__ import annotations

import inspect
import json
import math
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .errors import FssguiError

LAYOUTS = ("folders", "pascal5i", "coco20i")
MODEL_LAST = "model_last.pt"
MODEL_BEST = "model_best.pt"
CONFIG_JSON = "config.json"
TRAIN_STATE = "train_state.pt"
#: settings that must not change between a run and its resumption (locked while Resume is ticked)
RESUME_KEYS = ("model", "layout", "fold", "shots", "size", "model_options")

#: named builder-option presets per model (besides the paper's settings, which are the defaults).
#: i2r-resnet50: the settings that learn without an ImageNet backbone, documented in fssgui/models/i2r.py;
#: simpropnet-resnet50: the narrow CPU head of fssgui/models/simpropnet.py's docstring.
OPTION_PRESETS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "i2r-resnet50": (
        ("CPU-learnable (no ImageNet backbone)",
         {"foreground_weight": 3, "feature_dropout": 0, "detach_merge_input": False}),
    ),
    "simpropnet-resnet50": (
        ("Narrow head, faster on a CPU",
         {"feature_channels": 64, "decoder_channels": 64, "adapter_dropout": 0.0, "foreground_weight": 3.0}),
    ),
}
PRESET_PAPER = "Paper settings (defaults)"
PRESET_CUSTOM = "Custom"


def trainable_entries() -> list:
    """The registry entries ``fssgui train`` accepts (those with ``extra['trainer']``)."""
    from .models.registry import list_models

    return [e for e in list_models() if e.extra.get("trainer") is not None]


def is_trainable(name: str) -> bool:
    return any(e.name == name for e in trainable_entries())


def model_option_defaults(entry) -> dict[str, Any]:
    """The builder options of a trainable entry and their defaults, read from the signature of
    the model class its trainer returns (``build_x(input_size, backbone_weights, **options) -> X``),
    or of the trainer itself when that cannot be resolved. Options without a default are left out."""
    from .models.registry import resolve_callable

    trainer = entry.extra.get("trainer")
    if trainer is None:
        return {}
    trainer = resolve_callable(trainer)
    target = trainer
    try:
        returned = typing.get_type_hints(trainer).get("return")
        if inspect.isclass(returned):
            target = returned.__init__
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the trainer's signature
        pass
    options: dict[str, Any] = {}
    for name, param in inspect.signature(target).parameters.items():
        if name in ("self", "input_size", "backbone_weights"):
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is param.empty:
            continue
        options[name] = param.default
    return options


def format_option_value(value: Any) -> str:
    """The text of an option value as ``--option NAME=VALUE`` reads it (JSON)."""
    return json.dumps(value)


def parse_option_value(text: str) -> Any:
    """``"3"`` -> 3, ``"false"`` -> False, ``"abc"`` -> "abc" (the CLI's rule)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def training_command(arguments: list[str]) -> tuple[str, list[str]]:
    """``(program, arguments)`` that run ``fssgui <arguments>`` with this very installation: the
    bundle's executable when frozen (its entry script is ``fssgui.cli.main``), otherwise this
    interpreter with ``-m fssgui``."""
    if getattr(sys, "frozen", False):
        return sys.executable, list(arguments)
    return sys.executable, ["-m", "fssgui", *arguments]


def read_saved_run(out_dir: str | Path) -> Optional[dict]:
    """The ``config.json`` of a run in ``out_dir`` (None when there is none or it is not one)."""
    path = Path(out_dir) / CONFIG_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return None
    return data


@dataclass
class TrainSettings:
    """The settings of a training run that the app's training dialog sets, with their defaults
    (``None`` = the model entry's default): the fields :class:`TrainConfig` and
    :class:`TrainRequest` share, defined once."""

    model: str
    data_root: str
    layout: str
    fold: int
    shots: int
    out_dir: str
    epochs: int = 50
    steps_per_epoch: int = 500
    val_episodes: int = 1000
    batch_size: int = 8
    lr: Optional[float] = None
    optimizer: Optional[str] = None  # "sgd" | "adamw"; default from the model entry
    weight_decay: Optional[float] = None
    size: Optional[int] = None  # input size; default the model entry's
    device: Optional[str] = None  # None/"auto", "cpu", "cuda", "cuda:1"
    backbone_weights: Optional[str] = None
    model_options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the model's builder
    resume: bool = False


@dataclass
class TrainConfig(TrainSettings):
    """A training run (:func:`fssgui.train.train`): the dialog's settings and the rest. Defined
    here, without torch, so the dialog and ``fssgui train``'s options share its defaults
    (:func:`config_default`)."""

    val_batch_size: int = 8
    seed: int = 0
    num_workers: int = 0
    amp: bool = True  # mixed precision on CUDA only
    validate_untrained: bool = True  # evaluate once before the first epoch (epoch 0)
    progress_bar: bool = True
    # re-estimate the backbone's BatchNorm statistics on training images before training;
    # None = only when no --backbone-weights are given (a random-init backbone)
    calibrate_backbone: Optional[bool] = None
    calibration_images: int = 128


def config_default(name: str) -> Any:
    """:class:`TrainConfig`'s default of field ``name`` (a new object for a factory default);
    :class:`KeyError` for a field without one."""
    for item in fields(TrainConfig):
        if item.name == name:
            if item.default_factory is not MISSING:
                return item.default_factory()
            if item.default is not MISSING:
                return item.default
            break
    raise KeyError(f"TrainConfig has no default for {name!r}")


@dataclass
class TrainRequest(TrainSettings):
    """What the dialog asks ``fssgui train`` to do (:class:`TrainSettings`); the child's other
    :class:`TrainConfig` fields are ``fssgui train``'s defaults (``val_batch_size`` = ``batch_size``)."""

    def arguments(self) -> list[str]:
        """The ``fssgui`` command-line arguments (``train ... --events --no-progress``)."""
        args = ["train", self.model, "--data", self.data_root, "--layout", self.layout, "--fold", str(self.fold),
                "--shots", str(self.shots), "--out", self.out_dir, "--epochs", str(self.epochs),
                "--steps-per-epoch", str(self.steps_per_epoch), "--val-episodes", str(self.val_episodes),
                "--batch-size", str(self.batch_size)]
        if self.lr is not None:
            args += ["--lr", repr(float(self.lr))]
        if self.optimizer:
            args += ["--optimizer", self.optimizer]
        if self.weight_decay is not None:
            args += ["--weight-decay", repr(float(self.weight_decay))]
        if self.size:
            args += ["--size", str(self.size)]
        if self.device and self.device != "auto":
            args += ["--device", self.device]
        if self.backbone_weights:
            args += ["--backbone-weights", self.backbone_weights]
        for name, value in sorted(self.model_options.items()):
            args += ["--option", f"{name}={format_option_value(value)}"]
        if self.resume:
            args.append("--resume")
        return args + ["--events", "--no-progress"]


def check_request(request: TrainRequest) -> str:
    """Raise :class:`FssguiError` (naming the path) when the run cannot start; otherwise return a
    one-line summary of the data. Opens the dataset (slow the first time on COCO: call it off the
    GUI thread)."""
    from .data.datasets import open_dataset

    if not request.model:
        raise FssguiError("choose a model to train")
    if not request.data_root.strip():
        raise FssguiError("choose the dataset folder")
    if not request.out_dir.strip():
        raise FssguiError("choose an output folder for the checkpoints")
    out = Path(request.out_dir)
    if out.exists() and not out.is_dir():
        raise FssguiError(f"{out}: the output folder is a file")
    if request.resume and read_saved_run(out) is None:
        raise FssguiError(f"{out / CONFIG_JSON}: not found or not a training run: nothing to resume")
    if request.backbone_weights and not Path(request.backbone_weights).is_file():
        raise FssguiError(f"{request.backbone_weights}: backbone weights file not found")
    parts = []
    for split in ("train", "val"):
        dataset = open_dataset(request.data_root, request.layout, request.fold, split)
        dataset.episodes(1, request.shots, seed=0)  # raises when no class has shots + 1 images
        parts.append(f"{len(dataset.classes)} {split} classes")
    return f"{request.data_root} ({request.layout}, fold {request.fold}): " + ", ".join(parts)


def optional_number(text: str, what: str) -> Optional[float]:
    """A non-negative number typed in a field (``,`` as the decimal mark too); empty = None."""
    text = text.strip().replace(",", ".")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise FssguiError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise FssguiError(f"{what} must be a non-negative number, got {text!r}")
    return value


def percent(value) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def format_percent(value) -> str:
    return "—" if value is None else f"{100.0 * float(value):.2f}"


def duration_text(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def shell_quote(part: str) -> str:
    return part if part and all(c.isalnum() or c in "-_=./:,+" for c in part) else json.dumps(part)
