"""Writers that tests kill or run side by side, forked from one server process (fast: fssgui
is imported once). Run as a script it is the server; :class:`ForkServer` drives it.

The server reads commands on stdin, one per line:

* ``episode FOLDER START``: fork a child that saves episode versions START, START+1, ... into
  FOLDER with the real :func:`fssgui.episode.save_episode`, forever;
* ``autosave ROOT START``: fork a child that starts like the app (``Autosave.restorable()``
  takes the slot a killed window left) and writes snapshots of versions START, ... with the real
  :meth:`fssgui.settings.Autosave.write`, forever;
* ``settings HOME START``: fork a child that, with ``FSSGUI_HOME=HOME``, loads the settings, adds
  the recent episode ``/episodes/START+i`` and sets ``training = {"writer": START, "i": i}`` and
  saves, for i = 0..5 (a window using the shared settings file), then exits.

For each command it prints ``pid N``; the child prints ``done K`` after each completed write of
version K. The test SIGKILLs the child at a random moment (children are reaped automatically).
Version K is :func:`version` (a small episode whose class name says K), so the test can tell
exactly which version is on disk.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from testkit import make_episode  # noqa: E402
from fssgui.episode import save_episode  # noqa: E402
from fssgui.settings import Autosave  # noqa: E402


def version(k: int):
    episode = make_episode(shots=1 + k % 2, size=(40 + 8 * (k % 3), 56), seed=k % 5)
    episode.class_name = f"version {k}"
    episode.notes = f"notes of version {k}\n" * (k % 3)
    return episode


def _say(text: str) -> None:
    os.write(1, (text + "\n").encode())


def _child(kind: str, target: Path, start: int) -> None:
    if kind == "settings":
        os.environ["FSSGUI_HOME"] = str(target)
        from fssgui.settings import Settings

        for i in range(6):
            settings = Settings.load()
            settings.add_recent_episode(f"/episodes/{start + i}")
            settings.training = {"writer": start, "i": i}
            settings.save()
            _say(f"done {start + i}")
        os._exit(0)
    if kind == "episode":
        def write(k: int) -> None:
            save_episode(version(k), target)
    else:
        autosave = Autosave(target)
        autosave.restorable()  # as the window does at start: take the slot a killed window left

        def write(k: int) -> None:
            autosave.write(version(k), f"/episodes/source-{k}", dirty=True)
    k = start
    while True:
        write(k)
        _say(f"done {k}")
        k += 1


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the system
    _say("ready")
    for line in sys.stdin:
        kind, target, start = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                _child(kind, Path(target), int(start))
            finally:
                os._exit(1)
        _say(f"pid {pid}")


if __name__ == "__main__":
    main()


class ForkServer:
    """This file run as a server in a subprocess: forks writers on request, reports progress."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._done: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.lines.get(timeout=60) == "ready"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def start(self, kind: str, target: Path, start: int) -> int:
        """Fork a writer; its pid."""
        self.proc.stdin.write(f"{kind} {target} {start}\n")
        self.proc.stdin.flush()
        while True:  # other writers may report in between
            line = self.lines.get(timeout=30)
            if line.startswith("pid "):
                return int(line.split()[1])
            self._note(line)

    def kill(self, pid: int) -> None:
        """SIGKILL a writer and wait until it is gone (the server reaps it)."""
        os.kill(pid, signal.SIGKILL)
        self.wait(pid)

    @staticmethod
    def wait(pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.002)
        raise AssertionError(f"writer {pid} still alive")

    def _note(self, line: str) -> None:
        assert line.startswith("done "), line
        self._done.append(int(line.split()[1]))

    def reported(self) -> list[int]:
        """The versions writers reported complete since the last call."""
        while True:
            try:
                self._note(self.lines.get_nowait())
            except queue.Empty:
                break
        done, self._done = self._done, []
        return done

    def run_and_kill(self, kind: str, target: Path, start: int, delay: float) -> int:
        """Fork a writer, SIGKILL it after ``delay`` s; the last version it reported complete
        (``start - 1`` when none)."""
        self.reported()
        pid = self.start(kind, target, start)
        time.sleep(delay)
        self.kill(pid)
        return max(self.reported(), default=start - 1)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


_SHARED: list[ForkServer] = []


def shared_server() -> ForkServer:
    """One server for every test of the session (starting one imports fssgui: seconds)."""
    if not _SHARED:
        import atexit

        _SHARED.append(ForkServer())
        atexit.register(_SHARED[0].close)
    return _SHARED[0]
