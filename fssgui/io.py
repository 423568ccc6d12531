"""File helpers: atomic writes, atomic folder replacement, file hashes (no Qt, no torch).

Every file the app, the commands, training and the reports write goes through here, so a crash
or a full disk leaves the previous file or folder untouched and no temporary files behind:

* :func:`atomic_file`: a binary handle on a temporary file beside the target, fsynced and renamed
  over it when the ``with`` block ends (removed on error). :func:`write_bytes_atomic`,
  :func:`save_npy_atomic` and :func:`save_png_atomic` are the usual cases; code that streams
  (``torch.save``, a ZIP archive) writes into the handle itself.
* :func:`replace_folder_atomic`: a folder built beside its target and swapped into place in one
  atomic step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, which
  :func:`recover_replaced_folder` completes after a crash between them); folders left beside the
  target by a killed writer are removed.
* :func:`publish_permissions`: ``mkstemp``/``mkdtemp`` make private files (0600/0700); what is
  renamed into place gets the permissions of a normally created file or folder instead.
* :func:`sha256_file`: the SHA-256 of a file (checkpoints in reports and evaluation results).

Image decoding and resizing live in :mod:`fssgui.imaging`.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import re
import shutil
import sys
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


def replace_folder_atomic(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with ``fill(tmp)`` beside ``folder`` (:func:`temporary_folder_beside`) and put
    it in place with :func:`replace_folder` (with the permissions of a normally created folder): a
    crash or an error at any moment leaves ``folder`` as it was or complete. Returns ``folder``."""
    folder = Path(folder)
    tmp = temporary_folder_beside(folder)
    try:
        fill(tmp)
        publish_permissions(tmp, directory=True)
        replace_folder(tmp, folder)
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
