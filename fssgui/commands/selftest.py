"""`fssgui self-test`: versions, devices, a tiny forward on the CPU and on every GPU, and an
offscreen heat-map render. Exits non-zero on any failure. Works inside the frozen bundle."""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


def register(subparsers) -> None:
    parser = subparsers.add_parser("self-test", help="check the installation (versions, devices, forward, render)")
    parser.add_argument("--model", default="matcher-effnet", help="model for the forward check")
    parser.set_defaults(func=run)


def _versions() -> list[tuple[str, str]]:
    import torch

    from .. import __version__

    rows = [("fssgui", __version__), ("python", platform.python_version()), ("platform", platform.platform())]
    rows.append(("torch", torch.__version__))
    rows.append(("CUDA (torch build)", str(torch.version.cuda)))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.append(("cuDNN", str(cudnn)))
    try:
        import PySide6
        from PySide6 import QtCore

        rows.append(("PySide6 / Qt", f"{PySide6.__version__} / {QtCore.qVersion()}"))
    except ImportError as exc:
        rows.append(("PySide6 / Qt", f"MISSING ({exc})"))
    rows.append(("frozen bundle", "yes" if getattr(sys, "frozen", False) else "no"))
    return rows


def _devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def _forward(model_name: str, device: str) -> str:
    import torch

    from ..episode import Episode, Support, episode_to_tensors
    from ..models import build_model

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    episode = Episode(image, [Support(image.copy(), mask)])
    model = build_model(model_name, device=device)
    batch = episode_to_tensors(episode, model.entry).to(device)
    start = time.perf_counter()
    with torch.no_grad():
        logits = model.predict(batch).logits
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if not torch.isfinite(logits).all():
        raise RuntimeError("the forward returned non-finite logits")
    return f"{model_name} forward {seconds * 1000:.0f} ms, logits {tuple(logits.shape)}"


def _render() -> str:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication, QImage, QPainter

    from ..look import heat_overlay, map_scale

    app = QGuiApplication.instance() or QGuiApplication(["fssgui-self-test"])
    base = np.full((48, 64, 3), 128, np.uint8)
    values = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    rgb = np.ascontiguousarray(heat_overlay(base, values, map_scale(values)))
    image = QImage(rgb.data, 64, 48, 64 * 3, QImage.Format.Format_RGB888).copy()
    canvas = QImage(64, 48, QImage.Format.Format_RGB888)
    painter = QPainter(canvas)
    painter.drawImage(0, 0, image)
    painter.end()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "heatmap.png")
        if not canvas.save(path):
            raise RuntimeError("Qt could not write the rendered PNG")
        back = QImage(path)
        if back.isNull() or back.size() != canvas.size():
            raise RuntimeError("the rendered PNG does not read back")
        pixel = back.pixelColor(63, 47)
    del app
    return f"heat map rendered offscreen ({pixel.name()} at the hottest corner)"


def run(args) -> int:
    failures = 0
    for name, value in _versions():
        print(f"{name:>20}: {value}")
    devices = _devices()
    print(f"{'devices':>20}: {', '.join(devices)}")
    if len(devices) == 1:
        print(f"{'':>20}  (no CUDA device: GPU checks are not run)")
    checks = [(f"forward on {d}", lambda d=d: _forward(args.model, d)) for d in devices]
    checks.append(("offscreen render", _render))
    for label, check in checks:
        try:
            print(f"[ ok ] {label}: {check()}")
        except Exception as exc:  # report every failure, keep going
            failures += 1
            print(f"[FAIL] {label}: {type(exc).__name__}: {exc}")
            if getattr(args, "debug", False):
                traceback.print_exc()
    print("self-test passed" if failures == 0 else f"self-test FAILED ({failures} check(s))")
    return 0 if failures == 0 else 1
