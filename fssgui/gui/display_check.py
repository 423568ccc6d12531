"""Can the window open here? Checked before the QApplication exists, because Qt aborts the process
when its platform plugin cannot start, with a message that names no fix ("Reinstalling the
application may fix this problem").

On Linux, Qt's xcb platform plugin (and its wayland and offscreen ones) load system libraries
that a fresh machine often lacks. :func:`require_display` lists the plugin's dependencies with ``ldd`` (about
30 ms), and raises :class:`~fssgui.errors.DisplayError` with one line naming the missing libraries
and the command that installs them (:data:`SYSTEM_PACKAGES`, the one soname -> package table).
Other platforms (vnc, eglfs, ...) and other systems are not checked.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional

from ..errors import DisplayError

# The system libraries Qt's xcb, wayland and offscreen platform plugins load (beyond the C/C++ runtime
# and compression libraries):
# soname -> (Debian/Ubuntu package, Fedora package). The README's package lists are these.
SYSTEM_PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libXau.so.6": ("libxau6", "libXau"),
    "libXdmcp.so.6": ("libxdmcp6", "libXdmcp"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

# platform name -> its plugin files in Qt's plugins/platforms (any one of them that loads will do)
PLUGIN_FILES = {
    "xcb": ("libqxcb.so",),
    "wayland": ("libqwayland.so", "libqwayland-generic.so", "libqwayland-egl.so"),
    "offscreen": ("libqoffscreen.so",),
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$", re.MULTILINE)


def requested_platforms(environ: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt may start, in its order: ``QT_QPA_PLATFORM`` (a ``;`` list, each
    ``name[:options]``), else xcb, preceded by wayland in a Wayland session."""
    requested = environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        return [entry.split(":", 1)[0].strip() for entry in requested.split(";") if entry.strip()]
    wayland = environ.get("XDG_SESSION_TYPE", "") == "wayland" or bool(environ.get("WAYLAND_DISPLAY"))
    return ["wayland", "xcb"] if wayland else ["xcb"]


def not_found_libraries(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` reports as "not found", once each, in order."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def install_hint(missing: list[str]) -> str:
    """The commands that install the packages providing ``missing`` sonames (one line)."""
    known = [name for name in missing if name in SYSTEM_PACKAGES]
    unknown = [name for name in missing if name not in SYSTEM_PACKAGES]
    parts = []
    if known:
        debian = " ".join(dict.fromkeys(SYSTEM_PACKAGES[name][0] for name in known))
        fedora = " ".join(dict.fromkeys(SYSTEM_PACKAGES[name][1] for name in known))
        parts.append(f"install them with `sudo apt-get install {debian}` (Debian/Ubuntu) "
                     f"or `sudo dnf install {fedora}` (Fedora)")
    if unknown:
        parts.append("find the package providing " + ", ".join(unknown)
                     + " with `apt-file search NAME` or `dnf provides '*/NAME'`")
    return "; ".join(parts)


def missing_libraries_message(platform: str, missing: list[str]) -> str:
    headless = "" if platform == "offscreen" else "; for a run without a window set QT_QPA_PLATFORM=offscreen"
    return (f"the window cannot open: Qt's {platform} platform plugin needs system libraries missing "
            f"here ({', '.join(missing)}): {install_hint(missing)}{headless}")


def _dynamic_loader() -> Optional[str]:
    """The glibc dynamic loader of this process (what ``ldd`` runs)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    match = re.search(r"(/\S*/ld-linux[^/\s]*\.so[.\d]*)$", maps, re.MULTILINE)
    return match.group(1) if match else None


def list_dependencies(library: Path) -> Optional[str]:
    """``ldd library``, or without ldd what it does (the loader with ``LD_TRACE_LOADED_OBJECTS``);
    None when neither can run."""
    ldd = shutil.which("ldd")
    loader = None if ldd else _dynamic_loader()
    if not (ldd or loader):
        return None
    command, env = ([ldd, str(library)], None) if ldd else ([loader, str(library)], {"LD_TRACE_LOADED_OBJECTS": "1"})
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20,
                              env=None if env is None else {**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _qt_folders() -> tuple[Path, Path]:
    from PySide6.QtCore import QLibraryInfo

    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    return plugins, Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.LibrariesPath))


def plugin_missing_libraries(platform: str, platforms_dir: Path, qt_libraries: Path) -> Optional[list[str]]:
    """The system libraries one of ``platform``'s plugin files lacks (the file lacking fewest):
    [] when one has them all, None when no plugin file can be checked. Qt's own libraries
    (``qt_libraries``) are not system libraries: a name found there is not reported."""
    best: Optional[list[str]] = None
    for name in PLUGIN_FILES[platform]:
        plugin = platforms_dir / name
        listing = list_dependencies(plugin) if plugin.is_file() else None
        if listing is None:
            continue
        missing = [lib for lib in not_found_libraries(listing) if not (qt_libraries / lib).exists()]
        if best is None or len(missing) < len(best):
            best = missing
    return best


def checked_platforms(environ: Mapping[str, str]) -> Optional[list[str]]:
    """The platforms Qt may start here, when this module can check them all (else None)."""
    platforms = requested_platforms(environ)
    if not sys.platform.startswith("linux") or not platforms:
        return None
    return platforms if all(platform in PLUGIN_FILES for platform in platforms) else None


def display_problem(environ: Mapping[str, str], qt_folders=_qt_folders) -> Optional[str]:
    """Why Qt cannot start a platform plugin here (one line), or None when it can, as far as can be
    told without starting it. When Qt may fall back from one platform to another, one suffices."""
    platforms = checked_platforms(environ)
    if platforms is None:
        return None
    platforms_dir, qt_libraries = qt_folders()
    problems = {}
    for platform in platforms:
        missing = plugin_missing_libraries(platform, platforms_dir, qt_libraries)
        if missing:
            problems[platform] = missing_libraries_message(platform, missing)
        elif platform == "xcb" and not environ.get("DISPLAY"):
            problems[platform] = ("the window cannot open: no X display (DISPLAY is not set): start fssgui "
                                  "in a desktop session (or `ssh -X`), or headless with QT_QPA_PLATFORM=offscreen")
        else:
            return None  # this platform can start (or cannot be checked: let Qt try)
    return problems.get("xcb") or next(iter(problems.values()))


def require_display(environ: Optional[Mapping[str, str]] = None) -> str:
    """Raise :class:`DisplayError` when the window cannot open here; else say what was checked."""
    environ = os.environ if environ is None else environ
    problem = display_problem(environ)
    if problem:
        raise DisplayError(problem)
    platforms = " or ".join(requested_platforms(environ)) or "default"
    if checked_platforms(environ) is None:
        return f"Qt's {platforms} platform on {sys.platform}: nothing checked"
    return f"no problem found for Qt's {platforms} platform"
