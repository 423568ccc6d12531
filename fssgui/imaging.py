"""Image and mask I/O, resizing, normalisation, colormaps and overlays (numpy/OpenCV, no Qt).

Conventions: images are RGB uint8 ``[H, W, 3]``; masks are bool ``[H, W]``; maps are float32.
"""
from __future__ import annotations

import ctypes
import errno
import io
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import FssguiError


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


def temporary_folder_beside(target: Path) -> Path:
    """A new private folder next to ``target`` (same file system, so :func:`replace_folder` can
    rename it into place), named ``.<name>.<pid>-<random>.tmp``. Folders of that name left by a
    process that no longer runs (killed while writing) are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_folders(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=str(target.parent)))


def _process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs (POSIX only: elsewhere nothing is known to be gone)."""
    if os.name != "posix" or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's)
        return False
    return False


_LEFT_BY = re.compile(r"(?:(\d+)-[a-z0-9_]+\.tmp|old-(\d+))")  # after ".<name>."


def _remove_stale_folders(target: Path) -> None:
    prefix = f".{target.name}."
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = _LEFT_BY.fullmatch(entry.name[len(prefix):])
        if match and _process_gone(int(match.group(1) or match.group(2))) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange_function():
    """glibc's ``renameat2`` (Linux >= 3.15), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_EXCHANGE = _exchange_function()


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False  # this file system cannot exchange: rename in two steps
    raise OSError(code, os.strerror(code), str(second))


def replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` (from :func:`temporary_folder_beside`) where ``target`` is.

    On Linux the two are exchanged in one atomic step (``renameat2(RENAME_EXCHANGE)``), so a crash
    at any moment leaves ``target`` either as it was or as ``new``. Elsewhere ``target`` is first
    renamed to ``.<name>.old-<pid>`` and ``new`` renamed in its place; a crash between the two leaves
    that old folder, which :func:`recover_replaced_folder` renames back."""
    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now holds the old folder
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if os.path.lexists(old):
        shutil.rmtree(old)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_replaced_folder(target: Path) -> bool:
    """When ``target`` is missing but :func:`replace_folder`'s two-step rename left its old folder
    (a crash between the renames), rename that folder back. True when it did."""
    target = Path(target)
    if os.path.lexists(target):
        return False
    try:
        olds = [Path(e.path) for e in os.scandir(target.parent)
                if e.name.startswith(f".{target.name}.old-") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return False
    for old in sorted(olds, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            os.replace(old, target)
            return True
        except OSError:
            continue
    return False


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
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


def logits_to_size(logits: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """``[2, S, S]`` logits -> float32 ``[2, h, w]`` (bilinear, align_corners=True; no-op when equal)."""
    h, w = int(size[0]), int(size[1])
    logits = logits.detach().float()
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=True)[0]
    return logits.cpu().numpy().astype(np.float32)


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
