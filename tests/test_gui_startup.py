"""The window paints before torch is imported (issue 18: it opens in under 3 s; torch's import alone
takes about 2 s on the CI's CPU), and its pickers still know every model and explainer rule.

A fresh interpreter (this test process has torch loaded) parses a command line and builds the window
the way ``fssgui`` does (``defer_background=True``), and reports what was imported when the window first painted; then the
background starts (``model_bar.start_background()``, as the app does after the first paint) and
fills in what needs torch: the CUDA list and the explainers' descriptions, off the GUI thread."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r'''
    import json, sys, threading
    from pathlib import Path

    importers = []  # the threads that imported torch's top module
    class Spy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                importers.append(threading.current_thread() is threading.main_thread())
            return None
    sys.meta_path.insert(0, Spy())

    from fssgui.cli import build_parser
    build_parser().parse_args(["--demo"])  # what `fssgui` imports before it opens the window
    from PySide6.QtCore import QEventLoop, QTimer
    from fssgui.gui.app import _application, when_first_painted
    from fssgui.gui.main_window import MainWindow
    from fssgui.settings import Autosave, Settings

    HEAVY = ("torch", "torchvision", "captum", "timm")
    app = _application()
    window = MainWindow(Settings(), autosave=Autosave(Path(sys.argv[1])), unattended=True, defer_background=True)
    bar = window.model_bar
    report = {}
    loop = QEventLoop()

    def first_painted():
        report["heavy at first paint"] = sorted(m for m in HEAVY if m in sys.modules)
        report["models"] = [bar.model_combo.itemData(i) for i in range(bar.model_combo.count())]
        report["explainers"] = [bar.explainer_combo.itemData(i) for i in range(bar.explainer_combo.count())]
        tip = bar.explainer_combo.model().item(bar.explainer_combo.findData("affex-signed")).toolTip()
        report["affex tooltip before"] = tip
        # the registry rules need no torch: a model without matching scores greys AffEx at once
        bar.select_model("simpropnet-resnet50")
        item = bar.explainer_combo.model().item(bar.explainer_combo.findData("affex-signed"))
        report["affex on simpropnet"] = [item.isEnabled(), item.toolTip()]
        report["heavy after the rules"] = sorted(m for m in HEAVY if m in sys.modules)
        bar.select_model("matcher-lite2")
        bar.explainer_combo.setCurrentIndex(bar.explainer_combo.findData("affex-signed"))
        bar.start_background()
        bar.device_combo.devicesListed.connect(lambda: QTimer.singleShot(0, described))

    def described():
        def check():
            tip = bar.explainer_combo.model().item(bar.explainer_combo.findData("affex-signed")).toolTip()
            if tip == report["affex tooltip before"]:
                return QTimer.singleShot(50, check)
            report["affex tooltip after"] = tip
            report["placeholder"] = bar.params_edit.placeholderText()
            report["torch imported on the GUI thread"] = any(importers)
            report["torch imported"] = "torch" in sys.modules
            loop.quit()
        check()

    when_first_painted(window, first_painted)
    window.resize(1200, 800)
    window.show()
    QTimer.singleShot(120000, loop.quit)
    loop.exec()
    window.shutdown()
    print("REPORT " + json.dumps(report))
''')


def test_the_window_paints_before_torch_is_imported(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", FSSGUI_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "autosave")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["heavy at first paint"] == [], report
    assert {"matcher-lite2", "matcher-effnet", "dcama-resnet50", "dmtnet"} <= set(report["models"])
    assert {"affex-signed", "saliency", "deeplift", "prototype-share"} <= set(report["explainers"])
    assert report["affex tooltip before"] == "affex-signed"  # described once torch is in, off the GUI thread
    enabled, tip = report["affex on simpropnet"]
    assert not enabled and "needs a matching model" in tip
    assert report["heavy after the rules"] == []
    # then the background: the explainers described (their docstrings, their parameters), torch
    # imported by the worker threads only
    assert report["affex tooltip after"].startswith("affex-signed: ") and len(report["affex tooltip after"]) > 40
    assert report["placeholder"].startswith("e.g. size=")
    assert report["torch imported"] and not report["torch imported on the GUI thread"]


def test_every_catalogue_entry_names_code_that_exists():
    """The built-in entries name their builders lazily (``module:attribute``): each must resolve."""
    from fssgui.models.catalogue import builtin_entries
    from fssgui.models.registry import LazyCallable, get_entry, resolve_callable

    for entry in builtin_entries():
        assert get_entry(entry.name) == entry
        for function in (entry.builder, entry.loader, entry.extra.get("trainer")):
            if function is not None:
                assert isinstance(function, LazyCallable) and callable(resolve_callable(function)), entry.name


def test_the_background_starts_after_the_first_paint_or_at_the_latest_after_a_while(qtbot):
    """``when_first_painted`` calls back once: after the window's first paint, or, for a window that
    is never painted (mapped on another workspace), when the wait runs out."""
    from PySide6.QtWidgets import QLabel, QMainWindow

    from fssgui.gui.app import when_first_painted

    shown, hidden = QMainWindow(), QMainWindow()
    for window in (shown, hidden):
        qtbot.addWidget(window)
        window.setCentralWidget(QLabel("fssgui"))
    calls = {"shown": 0, "hidden": 0}
    when_first_painted(shown, lambda: calls.__setitem__("shown", calls["shown"] + 1), at_the_latest_ms=60000)
    when_first_painted(hidden, lambda: calls.__setitem__("hidden", calls["hidden"] + 1), at_the_latest_ms=300)
    shown.show()
    qtbot.waitUntil(lambda: calls["shown"] == 1, timeout=5000)
    qtbot.waitUntil(lambda: calls["hidden"] == 1, timeout=5000)  # never painted: the wait ran out
    shown.update()
    qtbot.wait(400)
    assert calls == {"shown": 1, "hidden": 1}
