"""The playback tab's lower half: one image panel per part of a frame (query, prediction,
probability, each perturbed support and its mask) beside the probability colour bar."""
from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QSizePolicy, QVBoxLayout, QWidget

from ... import look
from ... import report as R
from ..canvas import rgb_to_pixmap
from ..heatmap_view import Colorbar


class ImagePanel(QWidget):
    """A titled image that keeps its RGB data; the picture is scaled to fit, and the right-click
    menu saves the data itself (full resolution) as PNG."""

    exportRequested = Signal(str)  # panel name

    def __init__(self, name: str, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.name = name
        self.image: Optional[np.ndarray] = None
        self._pixmap: Optional[QPixmap] = None
        self.title = QLabel(title, self)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view = QLabel(self)
        self.view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view.setMinimumSize(80, 80)
        self.view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.view.setStyleSheet("background: #202020;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)

    def set_image(self, image: Optional[np.ndarray]) -> None:
        self.image = image
        self._pixmap = None if image is None else rgb_to_pixmap(image)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None:
            self.view.clear()
            return
        size = self.view.size()
        self.view.setPixmap(self._pixmap.scaled(max(1, size.width()), max(1, size.height()),
                                                Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.FastTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._rescale()

    def _menu(self, pos) -> None:
        if self.image is None:
            return
        menu = QMenu(self)
        action = menu.addAction(f"Save PNG ({self.image.shape[1]} x {self.image.shape[0]})…")
        action.triggered.connect(lambda: self.exportRequested.emit(self.name))
        menu.exec(self.mapToGlobal(pos))


class FramePanels(QWidget):
    """The panels of one frame (built for the number of shots) and the p(foreground) colour bar."""

    exportRequested = Signal(str)  # panel name

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.panels: dict[str, ImagePanel] = {}
        # the probability colour bar, painted from the palette (follows the theme); in the layout
        # from the start, so that it never floats over another widget before the first frame
        self.colorbar = Colorbar(self)
        self.colorbar.set_scale(look.Scale(look.PROBABILITY_COLORMAP, 0.0, 1.0), "p(foreground)")
        self.layout_.addStretch(1)
        self.layout_.addWidget(self.colorbar, 0)

    def build(self, shots: int) -> None:
        """One panel per part of a ``shots``-shot frame (kept when the set is the same)."""
        names = R.panel_names(shots)
        if list(self.panels) == names:
            return
        while self.layout_.count():  # the old panels (or the stretch before the first frame)
            item = self.layout_.takeAt(0)
            if item.widget() is not None and item.widget() is not self.colorbar:
                item.widget().deleteLater()
        self.panels = {}
        for name in names:
            panel = ImagePanel(name, R.panel_title(name), self)
            panel.exportRequested.connect(self.exportRequested)
            self.panels[name] = panel
            self.layout_.addWidget(panel, 1)
        self.layout_.addWidget(self.colorbar, 0)

    def show_images(self, images: dict[str, np.ndarray]) -> None:
        for name, image in images.items():
            if name in self.panels:
                self.panels[name].set_image(image)

    def clear(self) -> None:
        for panel in self.panels.values():
            panel.set_image(None)
