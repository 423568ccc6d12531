"""Where the shipped resources (demo episodes, icons) live: the repository's ``resources/``
folder (source checkout or editable install) or, in a PyInstaller bundle, ``_MEIPASS/resources``."""
from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def demo_dir() -> Path:
    return resources_dir() / "demo"


def demo_episodes() -> list[Path]:
    """Demo episode folders, sorted by name."""
    root = demo_dir()
    return sorted(p for p in root.iterdir() if (p / "episode.json").is_file()) if root.is_dir() else []


def default_demo_episode() -> Path:
    """The default demo episode: named in ``resources/demo/default.txt``, else the first one."""
    episodes = demo_episodes()
    named = demo_dir() / "default.txt"
    if named.is_file():
        path = demo_dir() / named.read_text(encoding="utf-8").strip()
        if (path / "episode.json").is_file():
            return path
    if not episodes:
        raise FileNotFoundError(f"no demo episodes in {demo_dir()}")
    return episodes[0]
