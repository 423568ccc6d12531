"""``fssgui train ... --events`` in a child process (a ``QProcess``).

A run of hours never occupies the app's device worker, and Stop simply ends the process: the
trainer writes every checkpoint atomically (temporary name, then rename), so a stopped run leaves
the files of its last finished epoch intact and *Resume* continues from there. Progress comes back
as the trainer's JSON event lines on the child's stdout (see the :mod:`fssgui.train` docstring);
anything else the child prints (warnings, a traceback) comes back as text.

The child command is the same program as the app (:func:`fssgui.train_setup.training_command`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from ...train_setup import training_command

STOP_GRACE_MS = 5000  # after terminate(), kill the child if it is still there


class TrainingProcess(QObject):
    """``fssgui train ... --events`` in a child process; its JSON lines come back as ``event``."""

    event = Signal(dict)
    output = Signal(str)  # a line of the child's that is not an event (stderr, stray stdout)
    finished = Signal(int, bool)  # exit code, stopped by the user

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self._stdout = b""
        self._stderr = b""
        self.stop_requested = False
        self.pid = 0
        self.command: list[str] = []
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self._finished_sent = False

    def start(self, arguments: list[str]) -> None:
        program, args = training_command(arguments)
        self.command = [program, *args]
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        if not getattr(sys, "frozen", False):
            # the child imports this very fssgui, also when it is run from a source folder
            source_root = str(Path(__file__).resolve().parents[3])
            old = env.value("PYTHONPATH", "")
            env.insert("PYTHONPATH", source_root + (os.pathsep + old if old else ""))
        self.process.setProcessEnvironment(env)
        self.stop_requested = False
        self._finished_sent = False
        self.process.start(program, args)
        self.pid = int(self.process.processId() or 0)

    def is_running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def stop(self) -> None:
        """End the child: terminate (SIGTERM) and kill it if it is still there after a grace period
        (on Windows, where terminate() does not end a console program, kill at once)."""
        if not self.is_running():
            return
        self.stop_requested = True
        if sys.platform == "win32":
            self.process.kill()
        else:
            self.process.terminate()
            self._kill_timer.start(STOP_GRACE_MS)

    def _kill(self) -> None:
        if self.is_running():
            self.process.kill()

    def wait(self, msecs: int = 10000) -> bool:
        return self.process.waitForFinished(msecs)

    def _read_stdout(self) -> None:
        self._stdout += bytes(self.process.readAllStandardOutput().data())
        *lines, self._stdout = self._stdout.split(b"\n")
        for raw in lines:
            self._stdout_line(raw)

    def _stdout_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip():
            return
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "event" in event:
                self.event.emit(event)
                return
        self.output.emit(text)

    def _read_stderr(self) -> None:
        self._stderr += bytes(self.process.readAllStandardError().data())
        *lines, self._stderr = self._stderr.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            if text.strip():
                self.output.emit(text)

    def _flush(self) -> None:
        self._read_stdout()
        self._read_stderr()
        if self._stdout.strip():
            self._stdout_line(self._stdout)
        if self._stderr.strip():
            self.output.emit(self._stderr.decode("utf-8", errors="replace").rstrip())
        self._stdout = self._stderr = b""

    def _on_finished(self, exit_code: int, _status) -> None:
        self._kill_timer.stop()
        self._flush()
        if not self._finished_sent:
            self._finished_sent = True
            self.finished.emit(int(exit_code), self.stop_requested)

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and not self._finished_sent:
            self._finished_sent = True
            self.output.emit(f"could not start {' '.join(self.command[:3])}…: {self.process.errorString()}")
            self.finished.emit(-1, False)
