"""Image and mask I/O, resizing, normalisation, colormaps and overlays (numpy/OpenCV, no Qt).

Conventions: images are RGB uint8 ``[H, W, 3]``; masks are bool ``[H, W]``; maps are float32.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from .errors import FssguiError


class ImageError(FssguiError):
    """An image or mask file cannot be read or written."""


# ---------------------------------------------------------------------------------------- I/O
def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]`` (grey and RGBA are converted)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image")
    if image.dtype != np.uint8:
        image = (image / (65535.0 if image.dtype == np.uint16 else image.max() or 1) * 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel mask PNG: 0 = background, 255 (or 1) = foreground -> bool ``[H, W]``.

    Any other value is an error (the file is probably not a binary mask)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise ImageError(f"{path}: not a readable image")
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[..., :3]
        if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise ImageError(f"{path}: a mask must be single-channel (this one has colour channels)")
        mask = mask[..., 0]
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1, 255}:
        shown = ", ".join(str(v) for v in values[:6])
        raise ImageError(f"{path}: mask values must be 0 and 255 (or 1); found {shown}")
    return mask > 0


def save_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write a PNG (RGB uint8 ``[H,W,3]``, grey ``[H,W]`` or bool mask -> 0/255) atomically."""
    path = Path(path)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ImageError(f"{path}: could not encode PNG")
    write_bytes_atomic(path, encoded.tobytes())


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def publish_permissions(path: str | Path, directory: bool = False) -> None:
    """Give a file (or folder) made by ``mkstemp``/``mkdtemp`` (private: 0600 / 0700) the
    permissions of a normally created one, so saved episodes and exports are readable as usual."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
    except OSError:
        pass


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``
    (with the usual permissions, not ``mkstemp``'s private ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        publish_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------- resizing
def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize RGB uint8 to ``(h, w)`` (bilinear, as cv2.INTER_LINEAR; no-op when equal)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to ``(h, w)``."""
    h, w = int(size[0]), int(size[1])
    if mask.shape[:2] == (h, w):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def resize_map(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a float map ``[H, W]`` or ``[K, H, W]`` to ``(h, w)``."""
    h, w = int(size[0]), int(size[1])
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-2:] == (h, w):
        return values
    if values.ndim == 2:
        return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.stack([cv2.resize(v, (w, h), interpolation=cv2.INTER_LINEAR) for v in values])


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB uint8 ``[H,W,3]`` -> float32 ``[3,H,W]``: ``(x/255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- colours / overlays
_DIVERGING = np.array(  # blue - white - red, as a 5-stop table interpolated to 256
    [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]], dtype=np.float32
)

COLORMAPS = ("inferno", "viridis", "magma", "jet", "turbo", "gray", "diverging")
_CV_MAPS = {
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
}


def colormap_lut(name: str) -> np.ndarray:
    """``[256, 3]`` uint8 RGB lookup table of a named colormap."""
    if name == "gray":
        ramp = np.arange(256, dtype=np.uint8)
        return np.stack([ramp] * 3, axis=1)
    if name == "diverging":
        xs = np.linspace(0, len(_DIVERGING) - 1, 256)
        lo = np.floor(xs).astype(int).clip(0, len(_DIVERGING) - 2)
        t = (xs - lo)[:, None]
        return np.round(_DIVERGING[lo] * (1 - t) + _DIVERGING[lo + 1] * t).astype(np.uint8)
    if name not in _CV_MAPS:
        raise ValueError(f"unknown colormap {name!r} (known: {', '.join(COLORMAPS)})")
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    bgr = cv2.applyColorMap(ramp, _CV_MAPS[name])[:, 0]
    return bgr[:, ::-1].copy()


def apply_colormap(
    values: np.ndarray, name: str = "inferno", vmin: Optional[float] = None, vmax: Optional[float] = None
) -> np.ndarray:
    """Map a float ``[H, W]`` array to RGB uint8 with a named colormap over [vmin, vmax]."""
    values = np.asarray(values, dtype=np.float32)
    vmin = float(np.nanmin(values)) if vmin is None else float(vmin)
    vmax = float(np.nanmax(values)) if vmax is None else float(vmax)
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    index = np.clip((values - vmin) * scale, 0, 255)
    index = np.nan_to_num(index).astype(np.uint8)
    return colormap_lut(name)[index]


def percentile_limits(values: np.ndarray, clip: float = 0.0, signed: bool = False) -> tuple[float, float]:
    """Display limits with ``clip`` percent cut at each end; symmetric around 0 when ``signed``."""
    values = np.asarray(values, dtype=np.float32)
    if signed:
        m = float(np.percentile(np.abs(values), 100.0 - clip)) if clip > 0 else float(np.abs(values).max())
        m = m if m > 0 else 1.0
        return -m, m
    lo = float(np.percentile(values, clip)) if clip > 0 else float(values.min())
    hi = float(np.percentile(values, 100.0 - clip)) if clip > 0 else float(values.max())
    return lo, hi if hi > lo else lo + 1.0


def blend(image: np.ndarray, colour: np.ndarray, alpha: float, where: Optional[np.ndarray] = None) -> np.ndarray:
    """Alpha-blend RGB ``colour`` (an image or one RGB triple) over ``image``, optionally only ``where``."""
    image_f = image.astype(np.float32)
    colour_f = np.broadcast_to(np.asarray(colour, dtype=np.float32), image.shape)
    out = image_f * (1.0 - alpha) + colour_f * alpha
    if where is not None:
        out = np.where(where[..., None], out, image_f)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heatmap_overlay(
    image: np.ndarray,
    values: np.ndarray,
    name: str = "inferno",
    alpha: float = 0.6,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
) -> np.ndarray:
    """A heat map over an image (the map is resized to the image when needed)."""
    values = resize_map(values, image.shape[:2])
    return blend(image, apply_colormap(values, name, vmin, vmax), alpha)


def mask_overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 64, 64), alpha: float = 0.45) -> np.ndarray:
    """Tint ``mask`` pixels of ``image`` with ``colour`` and draw the mask's outline."""
    mask = resize_mask(mask, image.shape[:2])
    out = blend(image, np.array(colour, dtype=np.float32), alpha, where=mask)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness)
    return out


def foreground_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)
