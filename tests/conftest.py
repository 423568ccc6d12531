"""The fixtures every test module shares.

Qt runs offscreen in every test (set here, once). Headless tests import nothing from Qt; the GUI
fixtures below import the window only when a test asks for them. The models, explainers and the
synthetic episodes are in testkit.py (no Qt), the mouse helpers in gui_testkit.py.
"""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from testkit import make_episode


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains models or runs several processes (minutes); "
                                       "`pytest -m 'not slow'` skips them, `make test` runs them")


@pytest.fixture(autouse=True)
def _garbage_collected_on_the_gui_thread(request):
    """In a Qt test, as in the app, Python's garbage collector runs only on the GUI thread
    (fssgui/gui/gc_policy.py: a collection on the device thread deadlocked with the GUI thread);
    what the test left is collected here at its end, and automatic collection comes back."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    from fssgui.gui.gc_policy import collect_on_gui_thread, restore_automatic_collection

    collector = collect_on_gui_thread()
    try:
        yield
    finally:
        restore_automatic_collection(collector)


@pytest.fixture
def episode():
    return make_episode()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh per-user folder (settings, autosave) for this test."""
    monkeypatch.setenv("FSSGUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def make_window(qtbot, home):
    """``make_window(**settings)``: a main window on the tiny matching model with the test
    explainers, unattended (no dialogs), 1600 x 1000, shown; shut down after the test.
    ``autosave_root`` chooses the autosave folder (default: the test's home)."""
    from fssgui.gui.main_window import MainWindow
    from fssgui.settings import Autosave, Settings
    from testkit import TEST_EXPLAINERS, TINY_MODEL, register_tiny_model

    windows = []

    def make(autosave_root=None, show=True, **settings):
        register_tiny_model()
        values = dict(model=TINY_MODEL, device="cpu", explainer="test-mask", autosave_seconds=0.05)
        values.update(settings)
        window = MainWindow(Settings(**values), explainer_factories=TEST_EXPLAINERS,
                            autosave=Autosave(autosave_root or home / "autosave"), unattended=True)
        qtbot.addWidget(window)
        window.resize(1600, 1000)
        if show:
            window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()
