"""File helpers: atomic writes, atomic folder replacement, file hashes (no Qt, no torch).

Every file the app, the commands, training and the reports write goes through here, so a crash
or a full disk leaves the previous file or folder untouched and no temporary files behind:

* :func:`atomic_file`: a binary handle on a temporary file beside the target, fsynced and renamed
  over it when the ``with`` block ends (removed on error). :func:`write_bytes_atomic`,
  :func:`save_npy_atomic` and :func:`save_png_atomic` are the usual cases; code that streams
  (``torch.save``, a ZIP archive) writes into the handle itself.
* :func:`replace_folder_atomic`: a folder built beside its target and renamed into place.
* :func:`publish_permissions`: ``mkstemp``/``mkdtemp`` make private files (0600/0700); what is
  renamed into place gets the permissions of a normally created file or folder instead.
* :func:`sha256_file`: the SHA-256 of a file (checkpoints in reports and evaluation results).

Image decoding and resizing live in :mod:`fssgui.imaging`.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np


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


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_file(path) as handle: ...`` writes a temporary file in ``path``'s folder;
    when the block ends it is fsynced, given the usual permissions and renamed over ``path``.
    On any error the temporary file is removed and an existing ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_bytes_atomic(path, buffer.getvalue())


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of RGB uint8 ``[H, W, 3]``, grey uint8 ``[H, W]`` (a grey PNG) or a bool mask
    (a grey PNG, 0 / 255)."""
    import cv2

    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"a PNG needs RGB uint8 [H, W, 3], grey uint8 or a bool mask; got {image.dtype} "
                         f"{tuple(image.shape)}")
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {tuple(image.shape)} image as PNG")
    return data.tobytes()


def save_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Write an image as PNG (see :func:`encode_png`) atomically; returns ``path``."""
    return write_bytes_atomic(path, encode_png(image))


def replace_folder_atomic(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with ``fill(tmp)`` beside ``folder`` and rename it into place (with the
    permissions of a normally created folder); on any error the temporary folder is removed and
    an existing ``folder`` is left as it was. Returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=str(folder.parent)))
    try:
        fill(tmp)
        publish_permissions(tmp, directory=True)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=str(folder.parent)))
            os.rmdir(old)
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
