"""Image and mask reading, resizing and normalisation (numpy/OpenCV).

Conventions: images are RGB uint8 ``[H, W, 3]``; masks are bool ``[H, W]``; maps are float32.
Writing files (atomically) is :mod:`fssgui.io`; colours, colormaps and overlays are :mod:`fssgui.look`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

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




def foreground_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)
