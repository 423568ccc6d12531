"""The playback tab's Export menu: each entry asks for a file or folder, then writes it on the
worker pool from a snapshot of what the tab shows (:mod:`fssgui.playback_export`), so the window
keeps responding while a ZIP of every frame or the PDF report is written."""
from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from ...metrics.causal import METRIC_TITLES
from ...pipeline.playback import METRICS


class ExportMenu(QMenu):
    """Filled each time it opens (entries greyed when there is nothing to export yet)."""

    def __init__(self, widget, parent: QWidget) -> None:
        super().__init__(parent)
        self.widget = widget  # the PlaybackWidget whose export_* methods write the files
        self.aboutToShow.connect(self.fill)

    def fill(self) -> None:
        w = self.widget
        self.clear()
        has_frame = w.current_frame() is not None
        has_curves = bool(w.frames)
        panel_menu = self.addMenu("Panel of this frame (PNG, full resolution)")
        panel_menu.setEnabled(has_frame)
        for name, panel in w.frame_panels.panels.items():
            panel_menu.addAction(panel.title.text(), lambda n=name: self.panel_dialog(n))
        self.addAction("This frame as a figure (PNG)…", self._file(
            "Frame figure", "frame.png", "PNG image (*.png)", w.export_frame_figure)).setEnabled(has_frame)
        self.addSeparator()
        self.addAction("Curves (CSV)…", self._file("Curves", "curves.csv", "CSV (*.csv)",
                                                    w.export_curves_csv)).setEnabled(has_curves)
        for metric in METRICS:
            self.addAction(f"{METRIC_TITLES[metric]} plot (PNG)…", self._file(
                f"{METRIC_TITLES[metric]} plot", f"{metric}.png", "PNG image (*.png)",
                lambda p, m=metric: w.export_curves_png(p, m))).setEnabled(has_curves)
        self.addAction("All frames (ZIP)…", self._file("Frames", "frames.zip", "ZIP archive (*.zip)",
                                                        w.export_frames)).setEnabled(has_curves)
        self.addAction("All frames (folder)…", self._folder("Frames folder", w.export_frames)).setEnabled(has_curves)
        self.addSeparator()
        self.addAction("Attribution figure (PNG)…", self._file(
            "Attribution figure", "attributions.png", "PNG image (*.png)", w.export_attribution_figure)
        ).setEnabled(bool(w.methods))
        self.addAction("Report (HTML + PDF)…", self._folder("Report folder", w.export_report)).setEnabled(
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
            self.widget.export_panel_png(name, path)
