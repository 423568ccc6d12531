"""``run_gui(args)``: the window, called by ``fssgui`` when no subcommand is given.

* ``fssgui`` opens the window: it offers to restore unsaved edits of the last session, else opens
  the default demo episode, and loads the chosen model on the device thread while the person looks
  at the window (so the first explanation is one click away and does not wait for the weights);
* ``fssgui --episode DIR`` opens that episode; ``fssgui --demo`` the default demo episode;
* ``fssgui --dataset ROOT --layout folders|pascal5i|coco20i`` also opens the dataset panel on that
  dataset (what was already swept of it with the current model shows at once);
* ``fssgui --check-display`` checks that the window can open here and exits (0, or 2 with one line
  naming the missing system libraries and the command that installs them: the same check that
  precedes every start, see :mod:`.display_check`);
* ``fssgui --demo --screenshot FILE.png`` runs the default model and Signed AffEx on the demo
  episode, waits for the result, saves a screenshot of the whole window and exits (0 on success,
  1 when the run failed; the screenshot is saved either way so the error is visible in it).
  Works headless with ``QT_QPA_PLATFORM=offscreen``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

SCREENSHOT_SIZE = (1600, 1000)
SCREENSHOT_TIMEOUT_S = float(os.environ.get("FSSGUI_SCREENSHOT_TIMEOUT", "900"))
#: the window's background work starts after its first paint, or this long after it is shown
FIRST_PAINT_WAIT_MS = 3000


def _application():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName("fssgui")
    app.setOrganizationName("fssgui")
    app.setApplicationDisplayName("fssgui")
    app.setStyle("Fusion")
    from PySide6.QtGui import QIcon

    from ..resources import resources_dir

    icon = resources_dir() / "icons" / "fssgui.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    return app


def _resolve_episode(args) -> Optional[Path]:
    from ..errors import EpisodeError
    from ..resources import default_demo_episode

    if getattr(args, "episode", None):
        return Path(args.episode)
    if getattr(args, "demo", False) or getattr(args, "screenshot", None):
        try:
            return default_demo_episode()
        except FileNotFoundError as exc:
            raise EpisodeError(f"{exc}: the demo episodes are missing from this installation") from None
    return None


def run_gui(args) -> int:
    from .display_check import require_display

    # before Qt starts its platform plugin: when that fails, Qt aborts the process
    checked = require_display()
    if getattr(args, "check_display", False):
        print(f"fssgui: {checked}")
        return 0
    app = _application()
    from .gc_policy import collect_on_gui_thread
    from .main_window import MainWindow

    app.garbage_collector = collect_on_gui_thread()  # never on the device thread (see gc_policy)

    screenshot = getattr(args, "screenshot", None)
    episode = _resolve_episode(args)
    if screenshot:
        # A screenshot run uses the defaults (default model, Signed AffEx), not the user's
        # settings, and keeps its autosave out of the user's data folder.
        import tempfile

        from ..settings import Autosave, Settings

        scratch = Path(tempfile.mkdtemp(prefix="fssgui-screenshot-"))
        window = MainWindow(Settings(), autosave=Autosave(scratch), unattended=True, defer_background=True)
    else:
        window = MainWindow(defer_background=True)
    # The window imports no torch: it paints first. Then the background work starts, and imports
    # torch on its threads: the pickers' queries, and the model's imports and weights on the device
    # thread while the episode is read, not after the first click.
    when_first_painted(window, lambda: (window.model_bar.start_background(), window.runs.preload()))
    if screenshot:
        window.resize(*SCREENSHOT_SIZE)
    elif not window.settings.window_geometry:
        window.resize(*SCREENSHOT_SIZE)
    window.show()
    if episode is not None:
        # read on the episode I/O thread; a screenshot run waits for it (the window keeps painting)
        if not window.episode_io.open(episode, wait=bool(screenshot)):
            if screenshot:
                print(f"fssgui: error: {window.errors[-1] if window.errors else 'could not open ' + str(episode)}",
                      file=sys.stderr)
                window.shutdown()
                return 1
    elif not window.episode_io.restore_if_any():
        try:
            window.episode_io.open_default_demo()
        except Exception as exc:  # noqa: BLE001 - no demo: the window still opens, empty
            window.log_error(f"could not open the demo episode: {exc}")
    if getattr(args, "dataset", None):
        window.open_dataset_dialog(args.dataset, getattr(args, "dataset_layout", "folders"))
    if screenshot:
        return _screenshot(app, window, Path(screenshot))
    return int(app.exec())


def when_first_painted(window, callback, at_the_latest_ms: int = FIRST_PAINT_WAIT_MS) -> None:
    """Call ``callback`` once, from the event loop, after the first paint of ``window`` or of one of
    its widgets (on X11 the window is exposed some time after ``show()``), or ``at_the_latest_ms``
    after this call if no paint came (a window mapped on another workspace is not painted)."""
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication, QWidget

    class FirstPaint(QObject):
        def __init__(self) -> None:
            super().__init__(window)
            self.done = False
            QTimer.singleShot(at_the_latest_ms, self, self.fire)

        def fire(self) -> None:
            if not self.done:
                self.done = True
                QApplication.instance().removeEventFilter(self)
                callback()

        def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
            if (not self.done and event.type() == QEvent.Type.Paint and isinstance(watched, QWidget)
                    and watched.window() is window):
                QTimer.singleShot(0, self, self.fire)
            return False

    QApplication.instance().installEventFilter(FirstPaint())


def _screenshot(app, window, path: Path) -> int:
    """Run the pipeline, wait for it (the event loop keeps running), grab the window, exit."""
    from PySide6.QtCore import QEventLoop, QTimer

    outcome = {"ok": False, "message": "timed out"}
    loop = QEventLoop()

    def done(ok: bool, message: str) -> None:
        outcome.update(ok=ok, message=message)
        loop.quit()

    window.runs.pipelineFinished.connect(done)
    QTimer.singleShot(0, window.runs.run_pipeline)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(SCREENSHOT_TIMEOUT_S * 1000))
    loop.exec()
    # let layouts and pending paints settle before grabbing
    for _ in range(5):
        app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = window.grab().save(str(path), quality=80)  # light PNG compression: 2-3x faster, ~10% larger
    window.shutdown()
    if not saved:
        print(f"fssgui: error: could not write the screenshot {path}", file=sys.stderr)
        return 1
    if not outcome["ok"]:
        print(f"fssgui: error: the demo run failed: {outcome['message']} (screenshot saved to {path})",
              file=sys.stderr)
        return 1
    print(f"fssgui: screenshot saved to {path}")
    print(f"fssgui: shown: {_shown_summary(window)}")
    return 0


def _shown_summary(window) -> str:
    """What the screenshot shows, from the window's state when it was grabbed (one line)."""
    parts = []
    if window.source_folder is not None:
        parts.append(f"episode {window.source_folder.name}")
    parts.append(f"K = {window.support_panel.count()}")
    query = window.query
    if query.region is not None:
        parts.append(f"R = {query.region_source} {query.region.count()} px")
    if query.prediction is not None:
        parts.append(f"prediction {float(query.prediction.mask.mean()) * 100:.1f}% of the query")
    heatmaps = window.analysis.heatmap_view
    result = heatmaps.result
    if result is not None:
        tiles = sum(1 for tile in heatmaps.grid.tiles if tile.canvas.has_layer("heat"))
        parts.append(f"{result.method} maps on {tiles} of {len(result.maps)} supports")
    return ", ".join(parts)
