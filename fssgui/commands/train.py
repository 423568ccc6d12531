"""`fssgui train MODEL --data ROOT --layout L --fold F --shots K --out DIR`: episodic training."""
from __future__ import annotations

import argparse

from ..train_setup import TrainConfig, config_default


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model without published weights (simpropnet-resnet50, i2r-resnet50)",
        description="Episodic training with the paper's losses; validation mIoU/FB-IoU per epoch; "
                    "checkpoints (model_last.pt, model_best.pt, config.json, train_state.pt) in --out.",
    )
    p.add_argument("model", help="registered model name (see `fssgui models`)")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset folder")
    p.add_argument("--layout", required=True, choices=("pascal5i", "coco20i", "folders"), help="dataset layout")
    p.add_argument("--fold", type=int, default=0, help="held-out class fold (0..3); -1 = all classes (default 0)")
    p.add_argument("--shots", type=int, default=1, help="support images per episode (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for checkpoints")
    # the defaults are TrainConfig's (also the app's training dialog's)
    p.add_argument("--epochs", type=int, default=config_default("epochs"),
                   help="number of epochs (default %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=config_default("steps_per_epoch"),
                   help="optimisation steps per epoch (default %(default)s)")
    p.add_argument("--val-episodes", type=int, default=config_default("val_episodes"),
                   help="validation episodes per epoch (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=config_default("batch_size"),
                   help="episodes per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=config_default("lr"), help="base learning rate (default: the paper's)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=config_default("optimizer"),
                   help="default: the paper's (SGD)")
    p.add_argument("--weight-decay", type=float, default=config_default("weight_decay"))
    p.add_argument("--size", type=int, default=config_default("size"),
                   help="input size in pixels (default: the model's)")
    p.add_argument("--device", default=config_default("device"), help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--backbone-weights", default=config_default("backbone_weights"), metavar="FILE",
                   help="ImageNet ResNet-50 weights (torchvision .pth or timm .safetensors) to initialise the frozen backbone; without it "
                        "the backbone is random-init and its BatchNorm statistics are re-estimated on training "
                        "images before training (a deviation from the papers, said in the log)")
    p.add_argument("--train-backbone", action="store_true",
                   help="also fine-tune the backbone at 0.1 x the learning rate (SimPropNet only; BatchNorm "
                        "statistics stay frozen). Meant for GPUs: on a CPU it makes steps many times slower")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument of the model's builder, repeatable (values are read as JSON: 3.0, "
                        "false, 64; names as in the model's docstring, e.g. for i2r-resnet50 "
                        "foreground_weight=3 feature_dropout=0 detach_merge_input=false, the settings that "
                        "learn without ImageNet weights; for simpropnet-resnet50 feature_channels=64)")
    p.add_argument("--workers", type=int, default=config_default("num_workers"),
                   help="data loading worker processes (default %(default)s)")
    p.add_argument("--seed", type=int, default=config_default("seed"))
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--events", action="store_true",
                   help="machine-readable progress: print one JSON object per line on stdout (events start, "
                        "resumed, phase, step, epoch, log, done, error; see fssgui.train) instead of the log "
                        "and the progress bar. The desktop app's training dialog reads these")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict:
    """``["foreground_weight=3", "detach-merge-input=false"]`` -> ``{"foreground_weight": 3,
    "detach_merge_input": False}`` (JSON values; anything that is not JSON stays a string)."""
    from ..train import TrainingError
    from ..train_setup import parse_option_value

    options: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name.isidentifier():
            raise TrainingError(f"--option {item!r}: expected NAME=VALUE, e.g. foreground_weight=3")
        options[name] = parse_option_value(text)
    return options


class EventWriter:
    """Writes each training event as one JSON line on ``stream`` (flushed at once: a reader
    sees an event as soon as it happens)."""

    def __init__(self, stream=None) -> None:
        import sys

        self.stream = stream if stream is not None else sys.stdout
        self.error_sent = False

    def __call__(self, event: dict) -> None:
        import json

        if event.get("event") == "error":
            self.error_sent = True
        self.stream.write(json.dumps(event, allow_nan=False) + "\n")
        self.stream.flush()


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run ``fssgui train`` is asked for (:class:`TrainingError` for a malformed ``--option``)."""
    options = parse_options(args.option)
    if args.train_backbone:
        options["train_backbone"] = True
    return TrainConfig(
        model=args.model, data_root=args.data, layout=args.layout, fold=args.fold, shots=args.shots,
        out_dir=args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        val_episodes=args.val_episodes, batch_size=args.batch_size, val_batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay, size=args.size,
        device=args.device, backbone_weights=args.backbone_weights, resume=args.resume, seed=args.seed,
        num_workers=args.workers, amp=not args.no_amp, progress_bar=not (args.no_progress or args.events),
        model_options=options,
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import FssguiError
    from ..train import train

    events = EventWriter() if args.events else None
    try:
        config = config_from_args(args)
    except FssguiError as exc:
        if events is not None:
            events({"event": "error", "message": str(exc), "kind": type(exc).__name__})
        raise
    if events is not None:  # stdout carries only the JSON lines; the log text is in the "log" events
        train(config, log=lambda _text: None, on_event=events)
        return 0
    result = train(config)
    if result.history:
        print(f"best val mIoU {100 * result.best_miou:.2f} at epoch {result.best_epoch}; checkpoints in {result.out_dir}")
    return 0
