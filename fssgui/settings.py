"""Settings, recent files, the checkpoint folder and the autosave of edits (no Qt here).

Everything lives under platformdirs' per-user paths (``user_config_dir("fssgui")`` for
settings, ``user_data_dir("fssgui")`` for autosaves and checkpoints). ``FSSGUI_HOME`` overrides
both (tests and portable installs): config in ``$FSSGUI_HOME/config``, data in ``$FSSGUI_HOME/data``.

The autosave is a snapshot of the episode being edited, in the episode folder format, written
atomically a moment after each edit. Unlike :func:`fssgui.episode.save_episode` it accepts work in
progress (a support whose mask is still empty), so nothing brushed is lost in a crash; a
``session.json`` in it says where the episode came from and whether the window was closed
cleanly, so the next start can offer to restore it. Each window writes its own snapshot (see
:class:`Autosave`), and several windows share the settings file without undoing each other's
changes (see :class:`Settings`).

The snapshot folder also holds ``undo_history.npz``: the per-stroke undo/redo history of every mask
under edit (region R and the support masks), bounded to :attr:`Autosave.history_max_steps` records
per mask and :attr:`Autosave.history_max_bytes` bytes in all, in the versioned plain-array format of
:func:`fssgui.editing.history_bytes` (read back with ``allow_pickle=False``). It is swapped in
together with the masks, so a restored history always belongs to the restored pixels.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional


from . import look
from .editing import EditableMask, HistoryFileError, HistoryState, capture_histories, load_histories, save_histories
from .episode import EPISODE_FILE, Episode, load_episode, write_episode_files
from .io import recover_replaced_folder, replace_folder_atomic, write_bytes_atomic
from .locks import FileLock
from .look import COLORMAPS

APP_NAME = "fssgui"
MAX_RECENT = 12


def config_dir() -> Path:
    home = os.environ.get("FSSGUI_HOME")
    if home:
        return Path(home) / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    home = os.environ.get("FSSGUI_HOME")
    if home:
        return Path(home) / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_checkpoint_dir() -> Path:
    return data_dir() / "checkpoints"


#: allowed values of the settings that must stay in a range or a set (others: their default's type)
_RANGES = {
    "heat_opacity": (0.0, 1.0), "mask_opacity": (0.0, 1.0), "clip_percent": (0.0, 49.0),
    "autosave_seconds": (0.05, 3600.0), "brush_size": (1, 400), "eraser_size": (1, 400), "proto_size": (0, 2048),
}
_CHOICES = {"colormap": COLORMAPS, "signed_colormap": COLORMAPS, "theme": ("system", "light", "dark")}
_RECENT_LISTS = ("recent_episodes", "recent_checkpoints")
MAX_SETTINGS_BYTES = 4 * 1024 * 1024


@dataclass
class Settings:
    """User preferences, saved as JSON. Unknown keys in the file are ignored; missing ones, and
    values of the wrong type or out of range, get their default.

    Several windows share the file: :meth:`save` writes, under a lock, what this window changed
    since it loaded (or last saved) the file over what is in the file now, so one window's
    changes never undo another's; the recent lists get this window's additions on top of the file's.
    A file that cannot be read is set aside (renamed) and ``load_problem`` says so."""

    recent_episodes: list[str] = field(default_factory=list)
    recent_checkpoints: list[str] = field(default_factory=list)
    checkpoint_dir: str = ""
    model: str = ""
    device: str = "auto"
    explainer: str = "affex-signed"
    colormap: str = look.UNSIGNED_COLORMAP
    signed_colormap: str = look.SIGNED_COLORMAP
    heat_opacity: float = look.HEAT_OPACITY
    mask_opacity: float = look.MASK_OPACITY
    clip_percent: float = look.CLIP_PERCENT
    brush_size: int = 25
    eraser_size: int = 25
    autosave_seconds: float = 2.0
    proto_model: str = ""  # Prototypes tab: ScaleProtoSeg entry name
    proto_checkpoint: str = ""  # Prototypes tab: its checkpoint file
    proto_size: int = 0  # Prototypes tab: input size (0 = the dataset's default policy)
    proto_dataset_dir: str = ""  # Prototypes tab: dataset folder (img_with_margin_0/, all_images.json)
    theme: str = "system"  # "system" (follow the OS), "light" or "dark"
    training: dict = field(default_factory=dict)  # Train a model dialog: the last run's settings
    window_geometry: str = ""  # base64 of QMainWindow.saveGeometry()
    window_state: str = ""  # base64 of QMainWindow.saveState()

    def __post_init__(self) -> None:
        # not fields (never saved): what the file held when read, this window's recent additions
        self._baseline: Optional[dict[str, Any]] = None
        self._pushed: dict[str, list[str]] = {name: [] for name in _RECENT_LISTS}
        self.load_problem = ""

    @classmethod
    def path(cls) -> Path:
        return config_dir() / "settings.json"

    @classmethod
    def load(cls) -> "Settings":
        path = cls.path()
        values, problem = _read_settings_file(path)
        if problem:
            problem = _set_aside(path, problem)
        settings = cls(**values)
        settings.load_problem = problem
        settings._baseline = settings._values()
        if not settings.checkpoint_dir:
            settings.checkpoint_dir = str(default_checkpoint_dir())
        return settings

    def _values(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def save(self) -> None:
        """Merge this window's changes into the file (see the class docstring), atomically."""
        path = self.path()
        with FileLock(path.with_name(path.name + ".lock")):
            current, _problem = _read_settings_file(path)  # an unreadable file is simply replaced
            current = {**asdict(Settings()), **current}
            merged = {}
            for f in fields(self):
                mine = getattr(self, f.name)
                if f.name in _RECENT_LISTS and self._baseline is not None:
                    value = list(current[f.name])
                    for item in self._pushed[f.name]:
                        value = _push_recent(value, item)
                    merged[f.name] = value
                elif self._baseline is None or mine != self._baseline[f.name]:
                    merged[f.name] = mine
                else:
                    merged[f.name] = current[f.name]
            write_bytes_atomic(path, (json.dumps(merged, indent=2) + "\n").encode("utf-8"))
        for name, value in merged.items():
            setattr(self, name, value)
        self._baseline = self._values()
        self._pushed = {name: [] for name in _RECENT_LISTS}

    def add_recent_episode(self, path: str | Path) -> None:
        self._add_recent("recent_episodes", str(Path(path).resolve()))

    def add_recent_checkpoint(self, path: str | Path) -> None:
        self._add_recent("recent_checkpoints", str(Path(path).resolve()))

    def _add_recent(self, name: str, item: str) -> None:
        setattr(self, name, _push_recent(getattr(self, name), item))
        self._pushed[name].append(item)


def _read_settings_file(path: Path) -> tuple[dict[str, Any], str]:
    """The valid settings in ``path`` (see :class:`Settings`) and, when the file exists but cannot
    be read as a JSON object, why (an empty dict then)."""
    try:
        size = path.stat().st_size
        if size > MAX_SETTINGS_BYTES:
            return {}, f"{size} bytes is too large for a settings file"
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}, ""
    except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        return {}, f"not readable as JSON ({type(exc).__name__})"
    if not isinstance(raw, dict):
        return {}, f"holds a JSON {type(raw).__name__}, not an object"
    defaults = asdict(Settings())
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        value = raw.get(name)
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        if value is None or type(value) is not type(default):
            continue
        if name in _RECENT_LISTS:
            value = [item for item in value if isinstance(item, str) and item and "\x00" not in item][:MAX_RECENT]
        elif name in _RANGES:
            low, high = _RANGES[name]
            if not (math.isfinite(value) and low <= value <= high):
                continue
        elif name in _CHOICES and value not in _CHOICES[name]:
            continue
        values[name] = value
    return values, ""


def _set_aside(path: Path, problem: str) -> str:
    """Rename an unreadable settings file out of the way (kept for the user); the message."""
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        return f"{path}: {problem}; defaults used (could not set it aside: {exc.strerror or exc})"
    return f"{path}: {problem}; defaults used, the file was set aside as {aside.name}"


def _push_recent(items: list[str], item: str) -> list[str]:
    return ([item] + [i for i in items if i != item])[:MAX_RECENT]


# ------------------------------------------------------------------------------------ autosave
@dataclass
class AutosaveInfo:
    folder: Path
    source: str  # the episode folder it was opened from ("" when new)
    saved_at: float
    clean_exit: bool
    dirty: bool  # edits not saved to ``source``

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        origin = self.source or "a new episode"
        return f"unsaved edits of {origin} from {when}"


@dataclass
class AutosaveHistory:
    """The undo histories read back from a snapshot (empty when there is none or it is unusable)."""

    states: dict[str, HistoryState] = field(default_factory=dict)
    active: str = ""  # the mask edited last ("region", "support_0", ...)
    error: str = ""  # why a history file present could not be used


class Autosave:
    """Snapshots of the episodes under edit in ``data_dir()/autosave``, one slot per window.

    A window owns one *slot* while it runs, by holding the lock on the slot's ``lock`` file (see
    :class:`fssgui.locks.FileLock`: the system drops it when the process ends, killed or not). Slot 0
    is the autosave folder itself, slot n > 0 its sub-folder ``window-n``; a window takes the first
    slot that is neither locked nor holding the unsaved edits of a window that ended. So two windows
    never write over each other's snapshot, and the next start finds a crashed window's snapshot
    unlocked: :meth:`restorable` offers the newest such one and takes its slot.

    A slot's snapshot is its folder ``episode`` (the episode folder format, with ``session.json``
    saying where the episode came from and whether the window closed cleanly, and
    ``undo_history.npz``), replaced as a whole by :func:`fssgui.io.replace_folder`: a kill at
    any moment leaves the previous or the new snapshot. A snapshot that cannot be read is moved
    aside by :meth:`set_aside` (``unreadable-<time>``), never deleted."""

    HISTORY_FILE = "undo_history.npz"
    SESSION_FILE = "session.json"
    SNAPSHOT_FOLDER = "episode"
    SLOT_PREFIX = "window-"

    def __init__(self, root: Optional[Path] = None, *, history_max_steps: int = 100,
                 history_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.root = Path(root) if root is not None else data_dir() / "autosave"
        self.history_max_steps = int(history_max_steps)
        self.history_max_bytes = int(history_max_bytes)
        self._slot: Optional[Path] = None
        self._lock: Optional[FileLock] = None
        self._claiming = threading.Lock()  # writes run on the episode I/O thread

    # ------------------------------------------------------------------------------- slots
    @property
    def slot(self) -> Path:
        """This window's slot folder (taken on first use; still named after :meth:`release`)."""
        with self._claiming:
            if self._slot is None:
                self._claim_free_slot()
            return self._slot

    def _writable_slot(self) -> Path:
        """The slot to write to: this window's, its lock taken again after a :meth:`release`
        when still free, else a free one."""
        with self._claiming:
            if self._lock is None:
                lock = FileLock(self._slot / "lock") if self._slot is not None else None
                if lock is not None and lock.try_acquire():
                    self._lock = lock
                else:
                    self._claim_free_slot()
            return self._slot

    @property
    def folder(self) -> Path:
        """This window's snapshot folder."""
        return self.slot / self.SNAPSHOT_FOLDER

    def _slot_path(self, number: int) -> Path:
        return self.root if number == 0 else self.root / f"{self.SLOT_PREFIX}{number}"

    def _existing_slots(self) -> list[Path]:
        slots = [self.root] if self.root.is_dir() else []
        try:
            numbered = [p for p in self.root.iterdir()
                        if p.name.startswith(self.SLOT_PREFIX) and p.name[len(self.SLOT_PREFIX):].isdecimal()]
        except OSError:
            numbered = []
        return slots + sorted(numbered, key=lambda p: int(p.name[len(self.SLOT_PREFIX):]))

    def _claim_free_slot(self) -> None:
        number = 0
        while True:
            path = self._slot_path(number)
            lock = FileLock(path / "lock")
            if lock.try_acquire():
                info = _slot_info(path)
                if info is None or not info.dirty:  # free, and no window's unsaved edits wait in it
                    self._slot, self._lock = path, lock
                    return
                lock.release()
            number += 1

    def release(self) -> None:
        """Give the slot's lock up (what the end of the process does); the snapshot stays there
        for the next start to restore."""
        with self._claiming:
            if self._lock is not None:
                self._lock.release()
            self._lock = None

    # ---------------------------------------------------------------------------- writing
    def capture_history(self, masks: dict[str, Optional[EditableMask]]) -> dict[str, HistoryState]:
        """Bounded undo histories of ``masks`` (call it on the GUI thread, with the snapshot)."""
        return capture_histories({k: m for k, m in masks.items() if m is not None},
                                 max_steps=self.history_max_steps, max_bytes=self.history_max_bytes)

    def write(self, episode: Episode, source: str, dirty: bool,
              history: Optional[dict[str, HistoryState]] = None, active: str = "") -> None:
        """Swap in a new snapshot of ``episode`` (and the undo ``history`` of its masks, when given)."""
        def fill(tmp: Path) -> None:
            write_episode_snapshot(episode, tmp)
            if history:
                save_histories(tmp / self.HISTORY_FILE, history, active)
            _write_session(tmp, source, dirty, clean_exit=False)

        folder = self._writable_slot() / self.SNAPSHOT_FOLDER
        replace_folder_atomic(folder, fill)
        _remove_legacy_session(folder.parent)

    def mark_clean_exit(self, dirty: bool) -> None:
        """At a normal exit: forget the snapshot when nothing is unsaved, else keep it for restore;
        then give the slot up."""
        if self._slot is not None:
            if not dirty:
                self.discard()
            else:
                info = self.info()
                if info is not None:
                    _write_session(self.folder, info.source, True, clean_exit=True)
        self.release()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_legacy_session(self.slot)

    def set_aside(self, reason: str) -> str:
        """Move this slot's unreadable snapshot out of the way (kept for the user, never offered
        again); returns the message to show."""
        folder = self.folder
        aside = self.root / f"unreadable-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{self.slot.name}"
        try:
            os.replace(folder, aside)
        except OSError as exc:
            return f"the autosave in {folder} could not be read ({reason}) nor set aside ({exc.strerror or exc})"
        _remove_legacy_session(self.slot)
        return f"the autosave in {folder} could not be read ({reason}); it was set aside as {aside}"

    # ---------------------------------------------------------------------------- reading
    def info(self) -> Optional[AutosaveInfo]:
        """This window's snapshot, if any."""
        return _slot_info(self.slot)

    def restorable(self) -> Optional[AutosaveInfo]:
        """The snapshot holding edits worth offering to restore: this window's own once it has a
        slot; at start, the newest snapshot left unsaved by a window that ended (crashed, or
        closed with unsaved edits), whose slot this window then takes."""
        with self._claiming:
            if self._lock is not None:
                info = _slot_info(self._slot)
                return info if info is not None and info.dirty else None
            best: Optional[tuple[Path, AutosaveInfo, FileLock]] = None
            for path in self._existing_slots():
                lock = FileLock(path / "lock")
                if not lock.try_acquire():
                    continue  # a running window's
                info = _slot_info(path)
                if info is not None and info.dirty and (best is None or info.saved_at > best[1].saved_at):
                    if best is not None:
                        best[2].release()
                    best = (path, info, lock)
                else:
                    lock.release()
            if best is None:
                return None
            self._slot, info, self._lock = best
            return info

    def read(self) -> Episode:
        return read_episode_snapshot(self.folder)

    def read_history(self) -> AutosaveHistory:
        """The undo histories saved with the snapshot; never raises (a bad file is reported in
        ``error`` and the episode restores without history)."""
        path = self.folder / self.HISTORY_FILE
        if not path.is_file():
            return AutosaveHistory()
        try:
            states, active = load_histories(path)
        except HistoryFileError as exc:
            return AutosaveHistory(error=str(exc))
        return AutosaveHistory(states, active)


def _write_session(folder: Path, source: str, dirty: bool, clean_exit: bool) -> None:
    info = {"source": source, "saved_at": time.time(), "dirty": dirty, "clean_exit": clean_exit}
    write_bytes_atomic(folder / Autosave.SESSION_FILE, (json.dumps(info, indent=2) + "\n").encode("utf-8"))


def _remove_legacy_session(slot: Path) -> None:
    """Versions before per-window slots kept ``session.json`` beside the snapshot, not inside."""
    try:
        (slot / Autosave.SESSION_FILE).unlink()
    except FileNotFoundError:
        pass


def _slot_info(slot: Path) -> Optional[AutosaveInfo]:
    """What the snapshot of ``slot`` is, or None when it has none. A snapshot whose ``session.json``
    is missing or unreadable is still offered (from an unknown source), not silently dropped."""
    folder = slot / Autosave.SNAPSHOT_FOLDER
    recover_replaced_folder(folder)
    try:
        if not (folder / EPISODE_FILE).is_file():
            return None
        saved_at = folder.stat().st_mtime
    except OSError:
        return None
    raw: Any = None
    for session in (folder / Autosave.SESSION_FILE, slot / Autosave.SESSION_FILE):
        try:
            raw = json.loads(session.read_bytes().decode("utf-8"))
            break
        except FileNotFoundError:
            continue
        except (OSError, ValueError, RecursionError):
            break
    if not isinstance(raw, dict):
        return AutosaveInfo(folder, "", saved_at, clean_exit=False, dirty=True)
    source, stamp = raw.get("source"), raw.get("saved_at")
    return AutosaveInfo(
        folder,
        source if isinstance(source, str) and "\x00" not in source else "",
        float(stamp) if isinstance(stamp, (int, float)) and 0 <= stamp < 1e11 else saved_at,
        raw.get("clean_exit") is True,
        raw.get("dirty") is not False,
    )


def write_episode_snapshot(episode: Episode, folder: Path) -> None:
    """The episode folder format, without validation (supports may have empty masks)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_episode_files(episode, folder)


def read_episode_snapshot(folder: Path) -> Episode:
    """Read a snapshot written by :func:`write_episode_snapshot` (empty masks allowed)."""
    episode = load_episode(folder, allow_incomplete=True)
    episode.folder = None
    return episode
