"""An exclusive lock on a file, shared by processes of the same user (no Qt, no torch).

:class:`FileLock` holds an advisory lock on a small lock file (``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows). The system drops it when the process ends, however it ends (a
crash or a kill included), so a lock never outlives its holder. Two :class:`FileLock` objects on
the same file exclude each other, in one process as in two.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

if os.name == "nt":  # pragma: no cover - exercised on Windows builds
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class LockTimeout(OSError):
    """The lock stayed held by someone else for the whole wait."""


class FileLock:
    """An exclusive lock on ``path`` (created when missing, never deleted: deleting a lock file
    while another process waits on it would let two holders in)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; True when this object holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if _try_lock(fd):
            self._fd = fd
            return True
        os.close(fd)
        return False

    def acquire(self, timeout: float = 10.0, poll: float = 0.01) -> None:
        """Wait up to ``timeout`` seconds for the lock; :class:`LockTimeout` when it stays held."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{self.path}: still locked by another fssgui after {timeout:g} s")
            time.sleep(poll)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # an object dropped while holding the lock gives it back
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
