"""Settings, recent files, the checkpoint folder and the autosave of edits (no Qt here).

Everything lives under platformdirs' per-user paths (``user_config_dir("fssgui")`` for
settings, ``user_data_dir("fssgui")`` for autosaves and checkpoints). ``FSSGUI_HOME`` overrides
both (tests and portable installs): config in ``$FSSGUI_HOME/config``, data in ``$FSSGUI_HOME/data``.

The autosave is a snapshot of the episode being edited, in the episode folder format, written
atomically a moment after each edit. Unlike :func:`fssgui.episode.save_episode` it accepts work in
progress (a support whose mask is still empty), so nothing brushed is lost in a crash; a
``session.json`` beside it says where the episode came from and whether the window was closed
cleanly, so the next start can offer to restore it.

The snapshot folder also holds ``undo_history.npz``: the per-stroke undo/redo history of every mask
under edit (region R and the support masks), bounded to :attr:`Autosave.history_max_steps` records
per mask and :attr:`Autosave.history_max_bytes` bytes in all, in the versioned plain-array format of
:func:`fssgui.editing.history_bytes` (read back with ``allow_pickle=False``). It is swapped in
together with the masks, so a restored history always belongs to the restored pixels.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from . import look
from .editing import EditableMask, HistoryFileError, HistoryState, capture_histories, load_histories, save_histories
from .episode import EPISODE_FILE, Episode, load_episode, write_episode_files
from .io import replace_folder_atomic, write_bytes_atomic

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


@dataclass
class Settings:
    """User preferences, saved as JSON. Unknown keys in the file are ignored, missing ones defaulted."""

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

    @classmethod
    def path(cls) -> Path:
        return config_dir() / "settings.json"

    @classmethod
    def load(cls) -> "Settings":
        path = cls.path()
        settings = cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
            raw = {}
        if isinstance(raw, dict):
            defaults = asdict(settings)
            for f in fields(cls):
                value = raw.get(f.name)
                if value is not None and type(value) is type(defaults[f.name]):
                    setattr(settings, f.name, value)
                elif isinstance(defaults[f.name], float) and isinstance(value, int):
                    setattr(settings, f.name, float(value))
        if not settings.checkpoint_dir:
            settings.checkpoint_dir = str(default_checkpoint_dir())
        return settings

    def save(self) -> None:
        write_bytes_atomic(self.path(), (json.dumps(asdict(self), indent=2) + "\n").encode("utf-8"))

    def add_recent_episode(self, path: str | Path) -> None:
        self.recent_episodes = _push_recent(self.recent_episodes, str(Path(path).resolve()))

    def add_recent_checkpoint(self, path: str | Path) -> None:
        self.recent_checkpoints = _push_recent(self.recent_checkpoints, str(Path(path).resolve()))


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
    """Snapshot of the episode under edit in ``data_dir()/autosave`` (atomic folder swap)."""

    HISTORY_FILE = "undo_history.npz"

    def __init__(self, root: Optional[Path] = None, *, history_max_steps: int = 100,
                 history_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.root = Path(root) if root is not None else data_dir() / "autosave"
        self.folder = self.root / "episode"
        self.session_file = self.root / "session.json"
        self.history_max_steps = int(history_max_steps)
        self.history_max_bytes = int(history_max_bytes)

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

        replace_folder_atomic(self.folder, fill)
        self._write_session(source, dirty, clean_exit=False)

    def _write_session(self, source: str, dirty: bool, clean_exit: bool) -> None:
        info = {"source": source, "saved_at": time.time(), "dirty": dirty, "clean_exit": clean_exit}
        write_bytes_atomic(self.session_file, (json.dumps(info, indent=2) + "\n").encode("utf-8"))

    def mark_clean_exit(self, dirty: bool) -> None:
        """At a normal exit: forget the snapshot when nothing is unsaved, else keep it for restore."""
        if not dirty:
            self.discard()
            return
        info = self.info()
        if info is not None:
            self._write_session(info.source, True, clean_exit=True)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.session_file.unlink()
        except FileNotFoundError:
            pass

    def info(self) -> Optional[AutosaveInfo]:
        try:
            raw = json.loads(self.session_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None
        if not (self.folder / EPISODE_FILE).is_file() or not isinstance(raw, dict):
            return None
        return AutosaveInfo(
            self.folder,
            str(raw.get("source", "")),
            float(raw.get("saved_at", 0.0)),
            bool(raw.get("clean_exit", False)),
            bool(raw.get("dirty", True)),
        )

    def restorable(self) -> Optional[AutosaveInfo]:
        """The snapshot, when it holds edits worth offering to restore."""
        info = self.info()
        return info if info is not None and info.dirty else None

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


def write_episode_snapshot(episode: Episode, folder: Path) -> None:
    """The episode folder format, without validation (supports may have empty masks)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_episode_files(episode, folder)


def read_episode_snapshot(folder: Path) -> Episode:
    """Read a snapshot written by :func:`write_episode_snapshot` (empty masks allowed)."""
    episode = load_episode(folder, allow_incomplete=True)
    episode.folder = None
    return episode


def empty_mask_like(image: np.ndarray) -> np.ndarray:
    return np.zeros(image.shape[:2], dtype=bool)
