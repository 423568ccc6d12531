"""The shipped resources (demo episodes in ``demo/``, icons in ``icons/``): data files of this
package, found next to this module in every install. A source checkout, an editable install, a
wheel or sdist install (declared as package data in ``pyproject.toml``) and the PyInstaller bundle
(whose spec copies them to ``fssgui/resources/``, where the bootloader points ``__file__``) all
hold them here."""
from __future__ import annotations

from pathlib import Path


def resources_dir() -> Path:
    return Path(__file__).resolve().parent


def demo_dir() -> Path:
    return resources_dir() / "demo"


def demo_episodes() -> list[Path]:
    """Demo episode folders, sorted by name."""
    root = demo_dir()
    return sorted(p for p in root.iterdir() if (p / "episode.json").is_file()) if root.is_dir() else []


def default_demo_episode() -> Path:
    """The default demo episode: named in ``demo/default.txt``, else the first one."""
    episodes = demo_episodes()
    named = demo_dir() / "default.txt"
    if named.is_file():
        path = demo_dir() / named.read_text(encoding="utf-8").strip()
        if (path / "episode.json").is_file():
            return path
    if not episodes:
        raise FileNotFoundError(f"no demo episodes in {demo_dir()}")
    return episodes[0]
