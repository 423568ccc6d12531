"""The playback tab's exports: each is written on the worker pool from a snapshot of what the tab
shows (:mod:`fssgui.playback_export`), so the window keeps responding while a ZIP of every frame
or the PDF report is written; the Export menu asks for the file or folder first."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from ...metrics.causal import METRIC_TITLES
from ...pipeline.playback import METRICS
from ...playback_export import PlaybackSnapshot
from ..workers import JobHandle, WorkerPool


class PlaybackExports(QObject):
    """``widget.exports``: every export of the playback tab, each returning its job's handle (its
    result: what was written). The tab's status line says how it ended; a failure also goes to the
    tab's ``errorRaised``."""

    def __init__(self, widget, pool: WorkerPool) -> None:
        super().__init__(widget)
        self.widget, self.pool = widget, pool

    def snapshot(self) -> PlaybackSnapshot:
        """What the tab shows now, for a writer on another thread."""
        w = self.widget
        return PlaybackSnapshot(w.episode, w.spec, w.region, w.region_source, dict(w.methods), w.start,
                                {k: list(v) for k, v in w.frames.items()}, dict(w.curves), dict(w.run_params),
                                w.current_frame(), w.frame_label.text(),
                                {name: w.curve_plots.colour(name) for name in set(w.methods) | {m for m, _ in w.frames}})

    def _write(self, write, path: str | Path) -> JobHandle:
        snapshot, w = self.snapshot(), self.widget
        handle = self.pool.submit(lambda ctx: write(snapshot), description=f"export {Path(path).name}")
        w.set_status(f"writing {path}…")
        handle.finished.connect(lambda _result: (w.set_status(f"saved {path}"), w.exported.emit(str(path))))
        handle.failed.connect(lambda message, _trace: (w.set_status(f"export failed: {path}: {message}"),
                                                       w.errorRaised.emit(f"export failed: {path}: {message}")))
        return handle

    def panel_png(self, name: str, path: str | Path) -> JobHandle:
        """One panel of the shown frame at full resolution (rendered from the data)."""
        return self._write(lambda s: s.panel_png(name, path), path)

    def frame_figure(self, path: str | Path, scale: float = 2.0) -> JobHandle:
        return self._write(lambda s: s.frame_figure(path, scale), path)

    def curves_csv(self, path: str | Path) -> JobHandle:
        return self._write(lambda s: s.curves_csv(path), path)

    def curves_png(self, path: str | Path, metric: str, scale: float = 2.0) -> JobHandle:
        return self._write(lambda s: s.curves_png(path, metric, scale), path)

    def frames(self, path: str | Path) -> JobHandle:
        """Every frame: a ZIP when ``path`` ends in .zip, otherwise a folder."""
        return self._write(lambda s: s.frames_files(path), path)

    def attribution_figure(self, path: str | Path, scale: float = 2.0) -> JobHandle:
        return self._write(lambda s: s.attribution_figure(path, scale), path)

    def report(self, folder: str | Path, pdf: bool = True) -> JobHandle:
        return self._write(lambda s: s.report(folder, pdf), folder)


class ExportMenu(QMenu):
    """Filled each time it opens (entries greyed when there is nothing to export yet)."""

    def __init__(self, widget, parent: QWidget) -> None:
        super().__init__(parent)
        self.widget = widget  # the PlaybackWidget whose export_* methods write the files
        self.aboutToShow.connect(self.fill)

    def fill(self) -> None:
        w, x = self.widget, self.widget.exports
        self.clear()
        has_frame = w.current_frame() is not None
        has_curves = bool(w.frames)
        panel_menu = self.addMenu("Panel of this frame (PNG, full resolution)")
        panel_menu.setEnabled(has_frame)
        for name, panel in w.frame_panels.panels.items():
            panel_menu.addAction(panel.title.text(), lambda n=name: self.panel_dialog(n))
        self.addAction("This frame as a figure (PNG)…", self._file(
            "Frame figure", "frame.png", "PNG image (*.png)", x.frame_figure)).setEnabled(has_frame)
        self.addSeparator()
        self.addAction("Curves (CSV)…", self._file("Curves", "curves.csv", "CSV (*.csv)",
                                                    x.curves_csv)).setEnabled(has_curves)
        for metric in METRICS:
            self.addAction(f"{METRIC_TITLES[metric]} plot (PNG)…", self._file(
                f"{METRIC_TITLES[metric]} plot", f"{metric}.png", "PNG image (*.png)",
                lambda p, m=metric: x.curves_png(p, m))).setEnabled(has_curves)
        self.addAction("All frames (ZIP)…", self._file("Frames", "frames.zip", "ZIP archive (*.zip)",
                                                        x.frames)).setEnabled(has_curves)
        self.addAction("All frames (folder)…", self._folder("Frames folder", x.frames)).setEnabled(has_curves)
        self.addSeparator()
        self.addAction("Attribution figure (PNG)…", self._file(
            "Attribution figure", "attributions.png", "PNG image (*.png)", x.attribution_figure)
        ).setEnabled(bool(w.methods))
        self.addAction("Report (HTML + PDF)…", self._folder("Report folder", x.report)).setEnabled(
            w.start is not None)

    def _file(self, title: str, default: str, filters: str, write: Callable[[str], object]) -> Callable[[], None]:
        def ask() -> None:
            path, _ = QFileDialog.getSaveFileName(self.widget, f"Export {title}", default, filters)
            if path:
                write(path)

        return ask

    def _folder(self, title: str, write: Callable[[str], object]) -> Callable[[], None]:
        def ask() -> None:
            path = QFileDialog.getExistingDirectory(self.widget, title)
            if path:
                write(path)

        return ask

    def panel_dialog(self, name: str) -> None:
        frame = self.widget.current_frame()
        default = f"{name}_step{frame.index:03d}.png" if frame is not None else f"{name}.png"
        path, _ = QFileDialog.getSaveFileName(self.widget, "Export panel", default, "PNG image (*.png)")
        if path:
            self.widget.exports.panel_png(name, path)
