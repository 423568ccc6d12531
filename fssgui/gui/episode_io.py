"""Opening, saving and autosaving the episode, and restoring unsaved edits after a crash.

Every read and write runs on the window's file pool (one thread: jobs run in submission order, so a
save never races an autosave) and reports through its job handle; the window only shows the result.
A newer open request supersedes an older one still reading. An edit is autosaved
(:class:`fssgui.settings.Autosave`, with the masks' undo history) a moment after it is made, so a
crash loses nothing; a save records a snapshot of the episode as it is when the save starts (edits
made while it writes stay unsaved, the title keeps its star).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..editing import restore_histories
from ..episode import Episode, load_episode, save_episode
from ..errors import FssguiError
from ..settings import Autosave
from .workers import JobHandle, JobState, LatestJob, WorkerPool


def io_message(path: Path, error: BaseException) -> str:
    """One line naming the file and the problem."""
    if isinstance(error, FssguiError):
        return str(error)
    return f"{path}: {type(error).__name__}: {error}"


def is_demo(folder: Path) -> bool:
    """Whether ``folder`` is one of the shipped demo episodes (saved elsewhere: Save as)."""
    from ..resources import demo_dir

    try:
        return Path(folder).resolve().is_relative_to(demo_dir().resolve())
    except OSError:
        return False


class EpisodeIO(QObject):
    """The window's episode files (see the module docstring)."""

    opened = Signal(str)  # folder, once the episode is shown
    openFailed = Signal(str)  # message
    saved = Signal(str)  # folder
    saveFailed = Signal(str)  # message

    def __init__(self, window, pool: WorkerPool, autosave: Autosave) -> None:
        super().__init__(window)
        self.window = window
        self.pool = pool
        self.autosave = autosave
        self.open_job = LatestJob()
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.write_autosave)

    # ------------------------------------------------------------------ open
    def open(self, path: str | Path, wait: bool = False) -> bool:
        """Read an episode folder on the pool and show it when read.

        Returns True when the read started (``wait=False``) or when the episode is shown
        (``wait=True``); ``opened`` / ``openFailed`` say how it ended."""
        w, path = self.window, Path(path)
        w.statusBar().showMessage(f"Opening {path}…")
        handle = self.open_job.start(self.pool.submit(lambda ctx: load_episode(path), description=f"opening {path.name}"))
        handle.finished.connect(lambda episode: self._opened(path, episode))
        handle.failed.connect(lambda message, trace: self._open_failed(path, handle.error, trace))
        if not wait:
            return True
        handle.wait()
        return handle.state is JobState.FINISHED

    def _opened(self, path: Path, episode: Episode) -> None:
        folder = path if path.is_dir() else path.parent
        self.window.set_episode(episode, folder)
        self.window.settings.add_recent_episode(folder)
        self.pool.submit(lambda ctx: self.autosave.discard(), description="discard the autosave")
        self.window.statusBar().showMessage(f"Opened {folder}", 3000)
        self.opened.emit(str(folder))

    def _open_failed(self, path: Path, error: BaseException, trace: str) -> None:
        message = io_message(path, error)
        self.window.log_error(f"could not open the episode: {message}", "" if isinstance(error, FssguiError) else trace)
        self.openFailed.emit(message)

    def open_dialog(self) -> None:
        w = self.window
        if not w.confirm_discard():
            return
        start = str(w.source_folder.parent) if w.source_folder else str(Path.home())
        folder = QFileDialog.getExistingDirectory(w, "Open an episode folder", start)
        if folder:
            self.open(folder)

    def open_default_demo(self, wait: bool = False) -> bool:
        from ..resources import default_demo_episode

        try:
            path = default_demo_episode()
        except FileNotFoundError as exc:
            self.window.log_error(str(exc))
            return False
        return self.open(path, wait=wait)

    # ------------------------------------------------------------------ save
    def save(self, wait: bool = False) -> bool:
        folder = self.window.source_folder
        if folder is None or is_demo(folder):
            return self.save_as(wait=wait)
        return self.save_to(folder, wait=wait)

    def save_as(self, wait: bool = False) -> bool:
        w = self.window
        if not w.has_episode():
            return False
        start = str((w.source_folder.parent if w.source_folder else Path.home()) / "episode")
        path, _ = QFileDialog.getSaveFileName(w, "Save the episode as a folder", start, "Episode folder (*)")
        return bool(path) and self.save_to(Path(path), wait=wait)

    def save_to(self, folder: Path, wait: bool = False) -> bool:
        """Save a snapshot of the episode as edited now, on the pool.

        Returns True when the write started (``wait=False``) or succeeded (``wait=True``);
        ``saved`` / ``saveFailed`` say how it ended."""
        w, folder = self.window, Path(folder)
        try:
            episode = w.current_episode()
        except FssguiError as exc:
            w.log_error(f"not saved: {exc}")
            return False
        revision, serial = w.edits.revision, w.edits.episode_serial
        w.statusBar().showMessage(f"Saving {folder}…")
        handle = self.pool.submit(lambda ctx: save_episode(episode, folder), description=f"saving {folder.name}")
        handle.finished.connect(lambda _r: self._saved(folder, episode, revision, serial))
        handle.failed.connect(lambda message, trace: self._save_failed(folder, handle.error, trace))
        if not wait:
            return True
        handle.wait()
        return handle.state is JobState.FINISHED

    def _saved(self, folder: Path, episode: Episode, revision: int, serial: int) -> None:
        w = self.window
        w.settings.add_recent_episode(folder)
        if serial == w.edits.episode_serial:
            w.source_folder = folder
            if revision == w.edits.revision and episode.notes == w.episode_notes:
                w.edits.dirty = False
                self.pool.submit(lambda ctx: self.autosave.discard(), description="discard the autosave")
            else:
                w.log("edits made while saving are not in the saved file yet (the title keeps its *)")
            w.update_title()
        w.log(f"saved {folder}")
        w.statusBar().showMessage(f"Saved {folder}", 3000)
        self.saved.emit(str(folder))

    def _save_failed(self, folder: Path, error: BaseException, trace: str) -> None:
        w = self.window
        message = io_message(folder, error)
        w.log_error(f"not saved: {message}", "" if isinstance(error, (FssguiError, OSError)) else trace)
        self.saveFailed.emit(message)
        if not w.unattended:
            QMessageBox.warning(w, "Episode not saved", message)

    # ------------------------------------------------------------------ autosave
    def schedule_autosave(self) -> None:
        if self.window.has_episode():
            self.timer.start(int(self.window.settings.autosave_seconds * 1000))

    def _snapshot(self) -> tuple[Episode, dict, str, str]:
        w = self.window
        tools = w.edit_tools
        return (w.current_episode(), self.autosave.capture_history(tools.editable_masks()), tools.active_mask_name(),
                str(w.source_folder) if w.source_folder else "")

    def write_autosave(self) -> Optional[JobHandle]:
        """Write the edits now (on the pool), when there are unsaved ones."""
        w = self.window
        if not w.has_episode() or not w.edits.dirty:
            return None
        episode, history, active, source = self._snapshot()
        autosave = self.autosave
        handle = self.pool.submit(lambda ctx: autosave.write(episode, source, dirty=True, history=history,
                                                             active=active), description="autosave")
        handle.finished.connect(lambda _r: w.statusBar().showMessage("Edits autosaved", 1500))
        handle.failed.connect(lambda message, _trace: w.log_error(f"autosave failed ({autosave.root}): {message}"))
        return handle

    def flush_autosave(self) -> None:
        """Write pending edits now and wait (at exit, and in tests)."""
        if self.timer.isActive():
            self.timer.stop()
            self.write_autosave()
        self.pool.submit(lambda ctx: None, description="autosave flush").wait()

    def restore_if_any(self) -> bool:
        """At start: offer to restore unsaved edits from the last session."""
        w = self.window
        info = self.autosave.restorable()
        if info is None:
            return False
        if not w.unattended:
            answer = QMessageBox.question(
                w, "Restore unsaved edits?", f"fssgui found {info.describe()}.\n\nRestore them?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
            if answer != QMessageBox.StandardButton.Yes:
                self.autosave.discard()
                return False
        # read on the pool; the window keeps painting while it waits
        handle = self.pool.submit(lambda ctx: (self.autosave.read(), self.autosave.read_history()),
                                  description="reading the autosave")
        handle.wait()
        if handle.error is not None:
            error = handle.error
            w.log_error(self.autosave.set_aside(str(error)),  # moved out of the way, kept
                        "" if isinstance(error, (FssguiError, OSError, KeyError, ValueError)) else handle.trace)
            return False
        episode, history = handle.result
        w.set_episode(episode, Path(info.source) if info.source else None, dirty=True)
        self._restore_undo_history(history)
        w.log(f"restored {info.describe()}")
        return True

    def _restore_undo_history(self, history: Any) -> None:
        """Give the restored masks their saved undo/redo history (each only if its pixels match)
        and make the mask edited last the one Ctrl+Z acts on."""
        w, tools = self.window, self.window.edit_tools
        if history.error:
            w.log(f"undo history not restored: {history.error}")
        restored = restore_histories(tools.editable_masks(), history.states)
        if history.active in restored:
            tools.set_active_mask(history.active)
        skipped = sorted(set(history.states) - set(restored))
        if restored:
            w.log(f"undo history restored ({', '.join(restored)})"
                  + (f"; not for {', '.join(skipped)} (pixels differ)" if skipped else ""))

    def write_at_exit(self) -> None:
        """The last autosave, written now on this thread (the app is quitting: the pool has been shut
        down, its queued writes done or dropped), and the clean-exit mark."""
        w = self.window
        dirty = w.edits.dirty and w.has_episode()
        if dirty:
            self.timer.stop()
            try:
                episode, history, active, source = self._snapshot()
                self.autosave.write(episode, source, dirty=True, history=history, active=active)
            except Exception as exc:  # noqa: BLE001
                print(f"fssgui: autosave at exit failed: {exc}")
        self.autosave.mark_clean_exit(dirty)
