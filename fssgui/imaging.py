"""Image and mask reading, resizing and normalisation (numpy/OpenCV).

Conventions: images are RGB uint8 ``[H, W, 3]``; masks are bool ``[H, W]``; maps are float32.
Writing files (atomically) is :mod:`fssgui.io`; colours, colormaps and overlays are :mod:`fssgui.look`.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
from PIL import Image

from .errors import FssguiError

if TYPE_CHECKING:  # torch is imported where it is used: the window imports this module before torch
    import torch


class ImageError(FssguiError):
    """An image or mask file cannot be read or written."""


# ---------------------------------------------------------------------------------------- I/O
#: the most pixels an image or mask may declare; larger files are refused before any decoding
#: (a decompression bomb: a few kilobytes of PNG can declare gigapixels). 80 Mpx is a 10000 x 8000
#: photo; every model works at a few hundred pixels.
MAX_IMAGE_PIXELS = 80_000_000
#: Pillow's warnings (large images, odd metadata) go unsaid: fssgui's own, lower, size limit and
#: its decoding checks turn what matters into one message naming the file
warnings.filterwarnings("ignore", module=r"PIL\.")


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _open_header(path: Path, data: bytes) -> Image.Image:
    """The file opened by Pillow, which reads only its header: the format, mode and declared size
    are checked here, before any pixel is decoded. Refuses empty, unknown, truncated (PNG) and
    oversized files with an :class:`ImageError` naming the file."""
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused before decoding: the file ({len(data)} bytes) declares more than "
                         f"{MAX_IMAGE_PIXELS} pixels ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for foreign bytes
        raise ImageError(f"{path}: not a readable image ({len(data)} bytes; {type(exc).__name__})") from None
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{path}: refused before decoding: the file ({len(data)} bytes) declares "
                         f"{width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} that fssgui reads "
                         "(a decompression bomb, or a picture to downscale first)")
    if image.format == "PNG" and not _png_complete(data):
        raise ImageError(f"{path}: truncated or corrupt PNG ({len(data)} bytes)")
    return image


def _png_complete(data: bytes) -> bool:
    """Every chunk's checksum is right and the file ends with its IEND chunk (so the decoder, whose
    complaints go to the terminal, is never handed a cut file)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:  # noqa: BLE001
        return False
    end = data.rfind(b"IEND")
    return end >= 0 and len(data) >= end + 8


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:  # 16-bit: 0..65535 -> 0..255, rounded (257 * v reads back as v)
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ImageError(f"{path}: {image.dtype} pixels are not read (fssgui reads 8- and 16-bit images)")


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]``.

    Grey, palette, CMYK and 16-bit images are converted (16-bit rounded to 8); an alpha channel is
    dropped (the colour under transparent pixels is kept as stored). The EXIF orientation is ignored:
    the pixels are used as stored, as the datasets' reference loaders do and as masks are read.
    Raises :class:`ImageError` naming the file for a missing, empty, truncated or foreign file, for
    other pixel types, and (before decoding) for an image declaring over :data:`MAX_IMAGE_PIXELS`."""
    path = Path(path)
    data = _read_file(path)
    _open_header(path, data)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a readable image (truncated or corrupt, {len(data)} bytes)")
    image = _to_uint8(image, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] != 3:
        raise ImageError(f"{path}: images with {image.shape[2]} channels are not read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask_values(path: str | Path) -> tuple[np.ndarray, bool]:
    """A mask or label-map file's values ``[H, W]`` as stored, and whether it had colour.

    Palette images give their palette indices (PASCAL's label maps), grey ones their grey levels
    (8 or 16 bits), grey+alpha the grey band; RGB(A) images give their first channel when the three
    are equal and their luminance otherwise (``colour`` is then True). Checked like :func:`load_rgb`
    (size before decoding, truncation); other modes (CMYK, float...) are refused."""
    path = Path(path)
    data = _read_file(path)
    image = _open_header(path, data)
    mode = image.mode
    try:
        if mode in ("RGB", "RGBA", "RGBX"):
            rgb = np.asarray(image.convert("RGB"))
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                return rgb[..., 0].copy(), False
            return np.asarray(image.convert("L")), True
        if mode in ("LA", "La", "PA"):
            return np.asarray(image.getchannel(0)), False
        if mode in ("1", "L", "P") or mode.startswith("I;16") or mode == "I":
            return np.asarray(image), False
    except Exception as exc:  # noqa: BLE001 - decoding errors of a damaged file
        raise ImageError(f"{path}: not a readable image (truncated or corrupt, {len(data)} bytes; "
                         f"{type(exc).__name__})") from None
    raise ImageError(f"{path}: a {mode} image is not a mask (masks are grey or palette PNGs)")


def load_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG: 0 = background, 255 (or 1; 65535 in a 16-bit file) = foreground ->
    bool ``[H, W]``.

    The values are those of :func:`read_mask_values` (palette indices for palette files). Any other
    value is an error naming the file and the values found: a file holding them is a label map
    (class indices, 255 = ignore) or an anti-aliased drawing, and no threshold would turn either
    into the mask that was meant."""
    path = Path(path)
    values, colour = read_mask_values(path)
    if colour:
        raise ImageError(f"{path}: a mask must be single-channel (this one has colour channels)")
    if values.dtype == bool:  # a 1-bit file
        return values.copy()
    found = np.unique(values)
    top = 255 if values.dtype.itemsize == 1 else 65535
    if not set(found.tolist()) <= {0, 1, top}:
        shown = ", ".join(str(v) for v in found[:6]) + (f", ... ({found.size} values)" if found.size > 6 else "")
        raise ImageError(f"{path}: mask values must be 0 and 255 (or 1); found {shown} "
                         "(a label map or an anti-aliased drawing? save a two-value mask)")
    return values > 0


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
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1).contiguous()




def foreground_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)
