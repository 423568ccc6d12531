"""Episodic training of the trainable FSS models (SimPropNet, I²R); no Qt.

``train(TrainConfig(...))`` runs epochs of ``steps_per_epoch`` optimisation steps on random
episodes of the training classes, validates on a fixed list of episodes of the validation
classes after each epoch (mIoU and FB-IoU), and writes to ``out_dir``:

* ``model_last.pt`` / ``model_best.pt``: the model's ``state_dict()`` (plain tensors; loads with
  ``torch.load(weights_only=True)`` and into the registry model strictly);
* ``config.json``: the run's configuration, the epoch reached, per-epoch metrics and the best;
* ``train_state.pt``: optimiser, LR schedule and AMP scaler state, epoch and step counters
  (plain containers of tensors and numbers, ``weights_only``-loadable) for ``resume``.

Every file is written to a temporary name in the same folder and renamed over the old one, so
an interrupted run never leaves a half-written checkpoint. Episodes are drawn from seeds derived
from ``(seed, epoch)``, so a resumed run sees the same episodes it would have without the stop. The poly learning-rate
schedule (and SimPropNet's ICA decay) run over the *current* ``epochs * steps_per_epoch``: resuming
with a larger ``--epochs`` stretches the rest of the schedule.

Without ``backbone_weights`` (no ImageNet ResNet-50 file: nothing is downloaded here) the
backbone is random-init. Both papers freeze an ImageNet backbone; a random-init one in eval mode
applies BatchNorm with running mean 0 / variance 1, i.e. no normalisation, and its features are
nearly uninformative. So, unless ``calibrate_backbone`` is False, the backbone's BatchNorm
statistics are first re-estimated on ``calibration_images`` training images (the model's
``calibrate_backbone(batches)``), and the log says so; the statistics are buffers, so they are
saved in the checkpoint. Measured on the synthetic test dataset (SimPropNet, 65 px, 300 AdamW
steps, head-only on cached backbone features): val IoU 0.59 with the re-estimation against 0.30
without it. Models with
``train_backbone`` (SimPropNet's ``--train-backbone``) also fine-tune the backbone, with the
learning rate scaled by the model's ``parameter_groups(lr)``.

A model is trainable when its registry entry carries ``extra['trainer']`` (a function
``(input_size, backbone_weights, **model_options) -> model``) and the model has
``training_loss(batch, query_mask, progress, generator) -> (loss, logs)``. Its default
optimiser settings come from ``extra['optimizer']``.

Metrics (the PASCAL-5i protocol of HSNet/DCAMA, computed at the model's input size): per
class, IoU = sum of foreground intersections / sum of unions over that class's episodes; mIoU is
the mean over classes; FB-IoU is the mean of the foreground and background IoUs accumulated over
all episodes. Pixels marked 255 (ignore) in the query mask are excluded.

Progress events: ``train(config, log, on_event=callback)`` also calls ``callback(event)`` with
plain JSON-able dicts (``fssgui train --events`` prints them one per line; the app's training
dialog reads them from its child process). Every dict has ``"event"``, one of:

* ``start``: ``model, size, device, cuda_available, epochs, steps_per_epoch, total_steps,
  batch_size, out_dir, resume`` (once the device and the data are known);
* ``resumed``: ``epoch, global_step, history, best_miou, best_epoch`` (the saved run continued);
* ``phase``: ``phase`` (``calibrate`` / ``validate`` / ``train``) and ``epoch``;
* ``step``: ``epoch, step, steps, global_step, total_steps, loss`` (mean of the epoch so far),
  ``recent_loss`` (mean of the ``recent_steps`` steps since the previous step event), ``lr``; at
  most every ``event_interval`` seconds, and always for an epoch's last step;
* ``epoch``: the validation metrics (``epoch, miou, fbiou, per_class_iou, seconds``, and
  ``train_loss, train_seconds`` after a training epoch, ``None`` for the untrained epoch 0),
  ``best_miou, best_epoch`` and ``saved`` (whether checkpoints of that epoch were written);
* ``log``: ``text``, every line also given to ``log``;
* ``done``: ``best_miou, best_epoch, epochs_done, out_dir`` (the last event of a run that ended);
* ``error``: ``message, kind`` (the exception's class), just before the exception propagates.

Non-finite numbers are sent as ``None``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data.datasets import EpisodeSpec, FSSDataset, open_dataset
from .data.tensors import EpisodeTensorDataset
from .errors import CheckpointError, FssguiError, ModelError
from .io import atomic_file, write_bytes_atomic
from .models.base import EpisodeTensors, FSSModel
from .models.registry import get_entry, resolve_device

from .train_setup import CONFIG_JSON, MODEL_BEST, MODEL_LAST, RESUME_KEYS, TRAIN_STATE  # noqa: F401 (the run's files)
from .train_setup import TrainConfig  # defined without torch: the training dialog and `fssgui train` share its defaults


class TrainingError(FssguiError):
    """Training cannot start or resume (wrong output folder, incompatible checkpoint...)."""


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_miou: float = float("nan")
    best_epoch: int = 0
    out_dir: str = ""


# --------------------------------------------------------------------------------------------
def atomic_torch_save(obj, path: Path) -> None:
    with atomic_file(path) as handle:
        torch.save(obj, handle)


def load_weights_only(path: Path, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: {what} not found (cannot resume)") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be loaded safely ({exc})") from None


def _episode_batch(batch: dict, device: torch.device) -> tuple[EpisodeTensors, torch.Tensor]:
    episode = EpisodeTensors(batch["query"].to(device, non_blocking=True),
                             batch["supports"].to(device, non_blocking=True),
                             batch["support_masks"].to(device, non_blocking=True))
    return episode, batch["query_mask"].to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------
class SegmentationMeter:
    """Accumulates the PASCAL-5i metrics (see the module docstring)."""

    def __init__(self, num_classes: int):
        self.fg_inter = np.zeros(num_classes)
        self.fg_union = np.zeros(num_classes)
        self.fb_inter = np.zeros(2)
        self.fb_union = np.zeros(2)
        self.seen = np.zeros(num_classes, dtype=bool)

    def update(self, pred: torch.Tensor, target: torch.Tensor, class_index: Sequence[int]) -> None:
        """``pred [B, S, S]`` bool foreground, ``target [B, S, S]`` long (0/1/255)."""
        valid = target != 255
        gt = target == 1
        for b, c in enumerate(class_index):
            v = valid[b]
            p_fg, g_fg = pred[b] & v, gt[b] & v
            p_bg, g_bg = (~pred[b]) & v, (~gt[b]) & v
            i_fg, u_fg = float((p_fg & g_fg).sum()), float((p_fg | g_fg).sum())
            i_bg, u_bg = float((p_bg & g_bg).sum()), float((p_bg | g_bg).sum())
            self.fg_inter[c] += i_fg
            self.fg_union[c] += u_fg
            self.fb_inter += (i_bg, i_fg)
            self.fb_union += (u_bg, u_fg)
            self.seen[c] = True

    def result(self, class_names: Sequence[str]) -> dict:
        iou = np.where(self.fg_union > 0, self.fg_inter / np.maximum(self.fg_union, 1), 0.0)
        per_class = {class_names[c]: float(iou[c]) for c in range(len(iou)) if self.seen[c]}
        miou = float(np.mean([iou[c] for c in range(len(iou)) if self.seen[c]])) if self.seen.any() else float("nan")
        fb = self.fb_inter / np.maximum(self.fb_union, 1)
        return {"miou": miou, "fbiou": float(fb.mean()), "per_class_iou": per_class}


@torch.no_grad()
def evaluate_episodes(model: FSSModel, dataset: FSSDataset, episodes: Sequence[EpisodeSpec], size: int,
                      device: torch.device, *, batch_size: int = 8, num_workers: int = 0, amp: bool = False,
                      progress_bar: bool = False, description: str = "val") -> dict:
    """mIoU / FB-IoU of ``model`` on ``episodes`` of ``dataset`` (PASCAL-5i protocol)."""
    entry = model.entry
    mean = entry.mean if entry is not None else (0.485, 0.456, 0.406)
    std = entry.std if entry is not None else (0.229, 0.224, 0.225)
    data = EpisodeTensorDataset(dataset, episodes, size, mean, std, augment=False)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    meter = SegmentationMeter(len(dataset.classes))
    was_training = model.training
    model.eval()
    use_amp = amp and device.type == "cuda"
    iterator = loader
    if progress_bar:
        from tqdm import tqdm

        iterator = tqdm(loader, desc=description, leave=False, unit="batch")
    for batch in iterator:
        episode, target = _episode_batch(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            pred = model.predict(episode).mask()
        meter.update(pred, target, [int(c) for c in batch["class_index"]])
    model.train(was_training)
    return meter.result(dataset.classes)


def calibrate_on_training_images(model: FSSModel, dataset: FSSDataset, size: int, mean, std,
                                 device: torch.device, count: int, *, seed: int = 0, batch_size: int = 16) -> int:
    """``model.calibrate_backbone`` on ``count`` training images (queries and supports of
    episodes drawn from ``seed``; no augmentation) at the training size. Deterministic."""
    episodes = dataset.episodes(max(1, (count + 1) // 2), 1, seed=seed + 104729)
    data = EpisodeTensorDataset(dataset, episodes, size, mean, std, augment=False)
    images = []
    for i in range(len(data)):
        item = data[i]
        images.extend([item["query"], item["supports"][0]])
    images = torch.stack(images[:count]).to(device)
    return model.calibrate_backbone(list(images.split(batch_size)))


# --------------------------------------------------------------------------------------------
def _make_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise TrainingError(f"unknown optimizer {name!r} (use sgd or adamw)")


def _check_resume_compatible(saved: dict, current: dict, path: Path) -> None:
    for key in RESUME_KEYS:
        if saved.get(key) != current.get(key):
            raise TrainingError(f"{path}: the run was started with {key}={saved.get(key)!r}, "
                                f"cannot resume it with {key}={current.get(key)!r}")


EventCallback = Callable[[dict], None]


def _jsonable(value):
    """``value`` with non-finite floats as None and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def train(config: TrainConfig, log: Callable[[str], None] = print,
          on_event: Optional[EventCallback] = None, *, event_interval: float = 0.25) -> TrainResult:
    """Run (or resume) a training run; see the module docstring (``on_event``: the progress
    events listed there; ``step`` events at most every ``event_interval`` seconds)."""

    def emit(event_name: str, /, **fields) -> None:
        if on_event is not None:
            on_event(_jsonable({"event": event_name, **fields}))

    def say(text: str) -> None:
        log(text)
        emit("log", text=text)

    try:
        result = _train(config, say, emit, event_interval)
    except BaseException as exc:
        message = str(exc) or ("interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__)
        emit("error", message=message, kind=type(exc).__name__)
        raise
    epochs_done = max((int(h.get("epoch", 0)) for h in result.history), default=0)
    emit("done", best_miou=result.best_miou, best_epoch=result.best_epoch, epochs_done=epochs_done,
         out_dir=result.out_dir)
    return result


def _train(config: TrainConfig, log: Callable[[str], None], emit: Callable[..., None],
           event_interval: float) -> TrainResult:
    entry = get_entry(config.model)
    trainer = entry.extra.get("trainer")
    if trainer is None:
        raise ModelError(f"model {config.model!r} cannot be trained with fssgui train "
                         "(only models without published weights are: see `fssgui models`)")
    if config.shots < 1:
        raise TrainingError(f"--shots must be at least 1 (got {config.shots})")
    if config.epochs < 1 or config.steps_per_epoch < 1:
        raise TrainingError("--epochs and --steps-per-epoch must be at least 1")
    device = resolve_device(config.device, log)
    size = int(config.size or entry.input_size)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    train_set = open_dataset(config.data_root, config.layout, config.fold, "train")
    val_set = open_dataset(config.data_root, config.layout, config.fold, "val")
    val_episodes = val_set.episodes(config.val_episodes, config.shots, seed=config.seed + 7919)
    log(f"training {config.model} at {size}px on {device}: {len(train_set.classes)} training classes, "
        f"{len(val_set.classes)} validation classes, {len(val_episodes)} validation episodes")
    emit("start", model=config.model, size=size, device=str(device), cuda_available=torch.cuda.is_available(),
         epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
         total_steps=config.epochs * config.steps_per_epoch, batch_size=config.batch_size, out_dir=str(out),
         resume=bool(config.resume))

    torch.manual_seed(config.seed)  # the same seed gives the same initial weights
    try:
        model: FSSModel = trainer(size, config.backbone_weights, **config.model_options)
    except TypeError as exc:  # an option this model's builder does not take
        raise TrainingError(f"model {config.model!r} does not accept the option(s) "
                            f"{', '.join(sorted(config.model_options))} ({exc})") from None
    except ValueError as exc:  # an option value of the wrong kind ("abc" for a weight...)
        raise TrainingError(f"model {config.model!r}: bad option value in "
                            f"{', '.join(f'{k}={v!r}' for k, v in sorted(config.model_options.items()))} "
                            f"({exc})") from None
    model.entry = entry
    model.to(device)
    calibrate = config.calibrate_backbone
    if calibrate is None:
        calibrate = config.backbone_weights is None
    if calibrate and not config.resume and hasattr(model, "calibrate_backbone"):
        if config.backbone_weights is None:
            log("no --backbone-weights: the backbone is random-init, not ImageNet (the papers freeze an "
                "ImageNet ResNet-50); its BatchNorm statistics are re-estimated on training images")
        emit("phase", phase="calibrate", epoch=0)
        seen = calibrate_on_training_images(model, train_set, size, entry.mean, entry.std, device,
                                            config.calibration_images, seed=config.seed)
        log(f"backbone BatchNorm statistics re-estimated on {seen} training images")

    defaults = dict(entry.extra.get("optimizer", {}))
    opt_name = (config.optimizer or defaults.get("name", "sgd")).lower()
    lr = float(config.lr if config.lr is not None else defaults.get("lr", 1e-3))
    weight_decay = float(config.weight_decay if config.weight_decay is not None else defaults.get("weight_decay", 0.0))
    if hasattr(model, "parameter_groups"):
        params = model.parameter_groups(lr)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, opt_name, lr, weight_decay, float(defaults.get("momentum", 0.9)))
    total_steps = config.epochs * config.steps_per_epoch
    power = float(defaults.get("poly_power", 0.9))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(total_steps, 1)) ** power)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    run_config = asdict(config)
    run_config.update(size=size, optimizer=opt_name, lr=lr, weight_decay=weight_decay, device=str(device))
    result = TrainResult(out_dir=str(out))
    start_epoch, global_step = 0, 0
    if config.resume:
        saved_json = out / CONFIG_JSON
        if not saved_json.is_file():
            raise TrainingError(f"{saved_json}: not found: nothing to resume in {out}")
        saved = json.loads(saved_json.read_text())
        _check_resume_compatible(saved.get("config", {}), run_config, saved_json)
        state = load_weights_only(out / TRAIN_STATE, "training state")
        weights = load_weights_only(out / MODEL_LAST, "last model checkpoint")
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        global_step = int(state["global_step"])
        result.history = list(saved.get("history", []))
        result.best_miou = float(saved.get("best_miou", float("nan")))
        result.best_epoch = int(saved.get("best_epoch", 0))
        log(f"resumed from {out} at epoch {start_epoch} (step {global_step})")
        emit("resumed", epoch=start_epoch, global_step=global_step, history=result.history,
             best_miou=result.best_miou, best_epoch=result.best_epoch)
        if start_epoch >= config.epochs:
            log(f"the run already reached epoch {start_epoch} >= --epochs {config.epochs}: nothing to do")
            return result

    def save(epoch: int, metrics: Optional[dict], is_best: bool) -> None:
        atomic_torch_save(model.state_dict(), out / MODEL_LAST)
        if is_best:
            atomic_torch_save(model.state_dict(), out / MODEL_BEST)
        atomic_torch_save({"epoch": epoch, "global_step": global_step, "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(),
                           "scaler": scaler.state_dict() if use_amp else {}}, out / TRAIN_STATE)
        write_bytes_atomic(out / CONFIG_JSON, json.dumps({
            "format": "fssgui-train-1", "model": config.model, "input_size": size, "epoch": epoch,
            "config": run_config, "history": result.history, "best_miou": result.best_miou,
            "best_epoch": result.best_epoch, "last_metrics": metrics,
            "files": {"last": MODEL_LAST, "best": MODEL_BEST, "state": TRAIN_STATE},
        }, indent=2).encode("utf-8"))

    def validate(epoch: int) -> dict:
        emit("phase", phase="validate", epoch=epoch)
        t0 = time.time()
        metrics = evaluate_episodes(model, val_set, val_episodes, size, device, batch_size=config.val_batch_size,
                                    num_workers=config.num_workers, amp=use_amp,
                                    progress_bar=config.progress_bar, description=f"val {epoch}")
        metrics["epoch"] = epoch
        metrics["seconds"] = round(time.time() - t0, 2)
        log(f"epoch {epoch}: val mIoU {100 * metrics['miou']:.2f}  FB-IoU {100 * metrics['fbiou']:.2f}")
        return metrics

    if start_epoch == 0 and config.validate_untrained and not any(h.get("epoch") == 0 for h in result.history):
        metrics = validate(0)
        result.history.append(metrics)
        emit("epoch", **metrics, train_loss=None, train_seconds=None, best_miou=result.best_miou,
             best_epoch=result.best_epoch, saved=False)

    for epoch in range(start_epoch + 1, config.epochs + 1):
        episodes = train_set.episodes(config.steps_per_epoch * config.batch_size, config.shots,
                                      seed=config.seed * 1_000_003 + epoch)
        data = EpisodeTensorDataset(train_set, episodes, size, entry.mean, entry.std, augment=True,
                                    seed=config.seed * 1_000_003 + epoch)
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=False, drop_last=True,
                            num_workers=config.num_workers, pin_memory=device.type == "cuda")
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout etc.: a resumed run repeats the same epoch
        model.train()
        iterator = loader
        bar = None
        if config.progress_bar:
            from tqdm import tqdm

            bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False)
            iterator = bar
        running = 0.0
        recent, recent_steps = 0.0, 0  # the steps since the last step event
        t0 = time.time()
        emit("phase", phase="train", epoch=epoch)
        steps = len(loader)
        last_event = time.monotonic()
        for i, batch in enumerate(iterator):
            episode, target = _episode_batch(batch, device)
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + global_step)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss, logs = model.training_loss(episode, target, global_step / max(total_steps, 1), generator)
            if not math.isfinite(float(loss.detach())):
                raise TrainingError(f"the loss became {float(loss)} at step {global_step}: lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_step += 1
            step_loss = float(loss.detach())
            running += step_loss
            recent += step_loss
            recent_steps += 1
            if bar is not None:
                bar.set_postfix(loss=f"{running / (i + 1):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            now = time.monotonic()
            if i + 1 == steps or now - last_event >= event_interval:
                last_event = now
                emit("step", epoch=epoch, step=i + 1, steps=steps, global_step=global_step, total_steps=total_steps,
                     loss=running / (i + 1), recent_loss=recent / recent_steps, recent_steps=recent_steps,
                     lr=scheduler.get_last_lr()[0])
                recent, recent_steps = 0.0, 0
        train_loss = running / max(len(loader), 1)
        metrics = validate(epoch)
        metrics["train_loss"] = train_loss
        metrics["train_seconds"] = round(time.time() - t0, 2)
        result.history.append(metrics)
        is_best = not (metrics["miou"] <= result.best_miou)  # NaN best -> first epoch is best
        if is_best:
            result.best_miou, result.best_epoch = metrics["miou"], epoch
        save(epoch, metrics, is_best)
        emit("epoch", **metrics, best_miou=result.best_miou, best_epoch=result.best_epoch, saved=True)
    return result
