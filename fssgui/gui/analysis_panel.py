"""The right-hand side of the window: the heat-map display controls above the analysis tabs
(Heat maps, Levels, Compare, Insertion / deletion, Prototypes, and any tab a panel adds)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from PySide6.QtWidgets import QFrame, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ..pipeline import ExplanationResult
from .heatmap_view import CompareView, DisplayControls, DisplaySettings, HeatmapViewer, LevelView


class LazyTab:
    """A tab's widget, built once when first needed (:meth:`AnalysisPanel.add_lazy_tab`);
    ``widget`` is None until then."""

    def __init__(self, area: QScrollArea, build: Callable[[], QWidget]) -> None:
        self.area, self._build = area, build
        self.widget: Optional[QWidget] = None

    def realise(self) -> QWidget:
        """The widget, built now if it was not."""
        if self.widget is None:
            self.widget = self._build()
            self.area.setWidget(self.widget)
        return self.widget


class AnalysisPanel(QWidget):
    """The display settings and the tabs; :meth:`show_result` puts an explanation in every view."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.display = DisplaySettings()
        self.display_controls = DisplayControls(self.display, self)
        layout.addWidget(self.display_controls)
        self.tabs = QTabWidget(self)
        layout.addWidget(self.tabs, 1)
        self.heatmap_view = HeatmapViewer(self.display, self)
        self.level_view = LevelView(self)
        self.compare_view = CompareView(self.display, self)
        self.tabs.addTab(self.heatmap_view, "Heat maps")
        self.tabs.addTab(self.level_view, "Levels")
        self.tabs.addTab(self.compare_view, "Compare")

    def add_tab(self, widget: QWidget, title: str, scroll: bool = True) -> QWidget:
        """Another tab; in a scroll area by default, so that its minimum size cannot force the window wider."""
        if scroll:
            area = QScrollArea(self)
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(widget)
            self.tabs.addTab(area, title)
        else:
            self.tabs.addTab(widget, title)
        return widget

    def add_lazy_tab(self, title: str, build: Callable[[], QWidget]) -> "LazyTab":
        """A tab whose widget ``build()`` makes the first time the tab is shown or
        :meth:`LazyTab.realise` is called: for a tab most sessions never open, whose imports and
        construction would otherwise delay the window's first paint."""
        area = QScrollArea(self)
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidget(QWidget())
        index = self.tabs.addTab(area, title)
        tab = LazyTab(area, build)
        self.tabs.currentChanged.connect(lambda current: tab.realise() if current == index else None)
        return tab

    def show_result(self, result: ExplanationResult, images: list[np.ndarray], masks: list[np.ndarray],
                    stale: str = "") -> None:
        """``result`` in the heat maps, the levels and (once) the comparison; ``stale``: why it is out of date."""
        self.heatmap_view.show_result(result, images, masks)
        if stale:
            self.heatmap_view.set_stale(stale)
        self.level_view.show_result(result)
        if not any(r is result for r, _, _ in self.compare_view.history):
            self.compare_view.add_result(result, images, masks)

    def heat_canvases(self) -> list:
        return [tile.canvas for tile in self.heatmap_view.grid.tiles + self.compare_view.tiles]

    def apply_settings(self, s) -> None:
        self.display.update(colormap=s.colormap, signed_colormap=s.signed_colormap, opacity=s.heat_opacity,
                            clip_percent=s.clip_percent)
        dc = self.display_controls
        dc.colormap.setCurrentText(s.colormap)
        dc.signed_colormap.setCurrentText(s.signed_colormap)
        dc.opacity.setValue(round(s.heat_opacity * 100))
        dc.clip.setValue(s.clip_percent)

    def store_settings(self, s) -> None:
        s.colormap = self.display.colormap
        s.signed_colormap = self.display.signed_colormap
        s.heat_opacity = float(self.display.opacity)
        s.clip_percent = float(self.display.clip_percent)
