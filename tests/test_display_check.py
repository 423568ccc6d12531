"""The check that precedes the window (fssgui/gui/display_check.py): which system libraries Qt's
platform plugin lacks, the packages that provide them, and the one line `fssgui` prints instead of
Qt's abort. The plugin listings come from a fake `ldd`, so these tests hold whether or not this
machine has the libraries."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fssgui.gui import display_check
from fssgui.gui.display_check import (
    SYSTEM_PACKAGES,
    display_problem,
    install_hint,
    list_dependencies,
    not_found_libraries,
    requested_platforms,
)

ROOT = Path(__file__).resolve().parent.parent

LDD_XCB_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd5b3f2000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f64c2a00000)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-randr.so.0 => not found
\tlibxcb-shape.so.0 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f64c2400000)
\tlibxcb-icccm.so.4 => not found
\tlibQt6Shipped.so.6 => not found
\tlibunheard-of.so.3 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f64c2c3d000)
"""
LDD_ALL_FOUND = """\
\tlinux-vdso.so.1 (0x00007ffd5b3f2000)
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f64c2400000)
"""


def test_ldd_not_found_entries_once_each_in_order():
    assert not_found_libraries(LDD_XCB_MISSING) == [
        "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxkbcommon-x11.so.0", "libxcb-randr.so.0",
        "libxcb-shape.so.0", "libQt6Shipped.so.6", "libunheard-of.so.3",
    ]
    assert not_found_libraries(LDD_ALL_FOUND) == []


def test_install_hint_names_debian_and_fedora_packages_once_each():
    hint = install_hint(["libxcb-cursor.so.0", "libxcb-randr.so.0", "libxcb-shape.so.0", "libunheard-of.so.3"])
    assert "`sudo apt-get install libxcb-cursor0 libxcb-randr0 libxcb-shape0` (Debian/Ubuntu)" in hint
    assert "`sudo dnf install xcb-util-cursor libxcb` (Fedora)" in hint  # randr and shape: one package
    assert "libunheard-of.so.3 with `apt-file search NAME` or `dnf provides '*/NAME'`" in hint
    assert "\n" not in hint
    assert "apt-get" not in install_hint(["libunheard-of.so.3"])


def test_package_table_is_well_formed():
    for soname, (debian, fedora) in SYSTEM_PACKAGES.items():
        assert re.fullmatch(r"lib[A-Za-z0-9_.+-]+\.so\.\d+", soname), soname
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", debian), debian  # Debian names are lower case
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+._-]+", fedora), fedora
    # the libraries Qt 6's xcb plugin needs beyond a minimal X client (Qt's X11 requirements)
    for soname in ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0",
                   "libxcb-render-util.so.0", "libxcb-shape.so.0", "libxkbcommon-x11.so.0"):
        assert soname in SYSTEM_PACKAGES


def _readme_command(manager: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(rf"^sudo {manager} install ([^\n#]+)", readme, re.MULTILINE)
    return line.split()


def test_readme_lists_exactly_the_packages_of_the_table():
    assert _readme_command("apt-get") == list(dict.fromkeys(debian for debian, _ in SYSTEM_PACKAGES.values()))
    assert _readme_command("dnf") == list(dict.fromkeys(fedora for _, fedora in SYSTEM_PACKAGES.values()))


@pytest.mark.parametrize("environ, platforms", [
    ({}, ["xcb"]),
    ({"XDG_SESSION_TYPE": "x11"}, ["xcb"]),
    ({"XDG_SESSION_TYPE": "wayland"}, ["wayland", "xcb"]),
    ({"WAYLAND_DISPLAY": "wayland-0"}, ["wayland", "xcb"]),
    ({"QT_QPA_PLATFORM": "offscreen", "XDG_SESSION_TYPE": "wayland"}, ["offscreen"]),
    ({"QT_QPA_PLATFORM": "xcb:nomitshm"}, ["xcb"]),
    ({"QT_QPA_PLATFORM": "wayland;xcb"}, ["wayland", "xcb"]),
])
def test_requested_platforms(environ, platforms):
    assert requested_platforms(environ) == platforms


@pytest.fixture
def fake_qt(tmp_path, monkeypatch):
    """A Qt plugins/platforms folder whose plugin files' `ldd` listings are what the test writes in
    `<plugin>.ldd`, and a Qt library folder that ships libQt6Shipped.so.6."""
    platforms, libraries, bin_dir = tmp_path / "platforms", tmp_path / "lib", tmp_path / "bin"
    for folder in (platforms, libraries, bin_dir):
        folder.mkdir()
    (libraries / "libQt6Shipped.so.6").write_bytes(b"")
    ldd = bin_dir / "ldd"
    ldd.write_text('#!/bin/sh\nexec cat "$1.ldd"\n')
    ldd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(sys, "platform", "linux")

    def plugin(name: str, listing: str) -> None:
        (platforms / name).write_bytes(b"\x7fELF")
        (platforms / f"{name}.ldd").write_text(listing)

    plugin.folders = lambda: (platforms, libraries)
    return plugin


def test_missing_xcb_libraries_make_one_line(fake_qt):
    fake_qt("libqxcb.so", LDD_XCB_MISSING)
    problem = display_problem({"DISPLAY": ":0"}, fake_qt.folders)
    assert problem.startswith("the window cannot open: Qt's xcb platform plugin needs system libraries missing "
                              "here (libxcb-cursor.so.0, libxcb-icccm.so.4, libxkbcommon-x11.so.0, "
                              "libxcb-randr.so.0, libxcb-shape.so.0, libunheard-of.so.3): ")
    assert ("`sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0`"
            in problem)
    assert "`sudo dnf install xcb-util-cursor xcb-util-wm libxkbcommon-x11 libxcb`" in problem
    assert "libQt6Shipped" not in problem  # Qt's own library, shipped with PySide6
    assert problem.endswith("; for a run without a window set QT_QPA_PLATFORM=offscreen")
    assert "\n" not in problem


def test_complete_xcb_plugin_needs_a_display(fake_qt):
    fake_qt("libqxcb.so", LDD_ALL_FOUND)
    assert display_problem({"DISPLAY": ":0"}, fake_qt.folders) is None
    assert "DISPLAY is not set" in display_problem({}, fake_qt.folders)


def test_one_startable_platform_suffices_in_a_wayland_session(fake_qt):
    fake_qt("libqxcb.so", LDD_XCB_MISSING)
    fake_qt("libqwayland-egl.so", "\tlibwayland-egl.so.1 => not found\n")
    fake_qt("libqwayland-generic.so", LDD_ALL_FOUND)
    session = {"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}
    assert display_problem(session, fake_qt.folders) is None
    fake_qt("libqwayland-generic.so", "\tlibwayland-cursor.so.0 => not found\n")
    problem = display_problem(session, fake_qt.folders)  # neither starts: the xcb fix is named
    assert "xcb platform plugin" in problem and "libxcb-cursor0" in problem
    fake_qt("libqwayland-generic.so", "\tlibwayland-cursor.so.0 => not found\n" * 2 + LDD_XCB_MISSING)
    wayland = display_problem({"QT_QPA_PLATFORM": "wayland"}, fake_qt.folders)
    assert "(libwayland-egl.so.1)" in wayland  # the plugin file lacking fewest libraries
    assert "`sudo apt-get install libwayland-egl1`" in wayland


def test_offscreen_is_checked_too_and_needs_no_display(fake_qt):
    fake_qt("libqoffscreen.so", LDD_ALL_FOUND)
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, fake_qt.folders) is None
    fake_qt("libqoffscreen.so", "\tlibGL.so.1 => not found\n\tlibEGL.so.1 => not found\n")
    problem = display_problem({"QT_QPA_PLATFORM": "offscreen"}, fake_qt.folders)
    assert "(libGL.so.1, libEGL.so.1)" in problem and "`sudo apt-get install libgl1 libegl1`" in problem
    assert "QT_QPA_PLATFORM=offscreen" not in problem  # no advice to use what fails


def test_unchecked_platforms_and_systems_pass_without_looking(fake_qt, monkeypatch):
    def no_look():
        raise AssertionError("looked for Qt's plugins")

    assert display_problem({"QT_QPA_PLATFORM": "vnc"}, no_look) is None
    assert display_problem({"QT_QPA_PLATFORM": "xcb;vnc"}, no_look) is None  # Qt may fall back to vnc
    monkeypatch.setattr(sys, "platform", "win32")
    assert display_problem({}, no_look) is None


def test_an_unlistable_plugin_is_left_to_qt(fake_qt):
    assert display_problem({"DISPLAY": ":0"}, fake_qt.folders) is None  # no plugin file at all
    fake_qt("libqxcb.so", LDD_ALL_FOUND)
    (fake_qt.folders()[0] / "libqxcb.so.ldd").unlink()  # the fake ldd fails: no judgement
    assert display_problem({"DISPLAY": ":0"}, fake_qt.folders) is None


def test_real_dependency_listing_of_qts_xcb_plugin(monkeypatch):
    """The real plugin, listed by the real ldd and by the dynamic loader (the fallback without
    ldd): Qt's own libraries resolve, whatever this machine lacks."""
    platforms, libraries = display_check._qt_folders()
    plugin = platforms / "libqxcb.so"
    with_ldd = list_dependencies(plugin)
    assert re.search(r"^\s*libQt6Gui\.so\.6 => /\S+", with_ldd, re.MULTILINE)
    monkeypatch.setattr(display_check.shutil, "which", lambda name: None)
    assert Path(display_check._dynamic_loader()).is_file()
    assert not_found_libraries(list_dependencies(plugin)) == not_found_libraries(with_ldd)
    assert not [name for name in not_found_libraries(with_ldd) if (libraries / name).exists()]


def _check_display(fake_listing: str, tmp_path) -> subprocess.CompletedProcess:
    """`fssgui --check-display` in a subprocess, its `ldd` a fake printing ``fake_listing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "listing").write_text(fake_listing)
    (bin_dir / "ldd").write_text(f'#!/bin/sh\nexec cat "{bin_dir / "listing"}"\n')
    (bin_dir / "ldd").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "XDG_SESSION_TYPE", "WAYLAND_DISPLAY")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", DISPLAY=":0")
    return subprocess.run([sys.executable, "-m", "fssgui.cli", "--check-display"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_fssgui_says_what_to_install_instead_of_qts_abort(tmp_path):
    missing = _check_display(LDD_XCB_MISSING, tmp_path)
    assert missing.returncode == 2, missing.stderr
    (line,) = missing.stderr.splitlines()
    assert line.startswith("fssgui: error: the window cannot open: Qt's xcb platform plugin needs")
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in line and "sudo dnf install" in line
    complete = _check_display(LDD_ALL_FOUND, tmp_path)
    assert complete.returncode == 0, complete.stderr
    assert complete.stdout.strip() == "fssgui: no problem found for Qt's xcb platform"
