"""The playback tab's plots: one per metric (IAUC, DAUC) with every computed method's curve, the
marker on the shown step, and beside each plot the curves' values and the parameters that change
them. Colours follow the app's theme; a click on a plot asks for the nearest step."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from ... import look
from ...metrics.causal import MEASURE_TITLES, METRIC_TITLES
from ..theme import PlotColours, follow_theme, plot_colours


class CurvePlots(QWidget):
    """The plots of ``metrics`` side by side (see the module docstring)."""

    pointClicked = Signal(str, float)  # metric, x (fraction) of the click
    coloursChanged = Signal()  # the theme changed the curves' colours

    def __init__(self, metrics: Sequence[str], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        self.value_labels: dict[str, QLabel] = {}
        self.markers: dict[str, pg.ScatterPlotItem] = {}
        self.marker_lines: dict[str, pg.InfiniteLine] = {}
        self.lines: dict[tuple[str, str], pg.PlotDataItem] = {}
        self._colour_index: dict[str, int] = {}
        self.plot_colours: PlotColours = plot_colours()  # set again by each plot when the theme changes
        for column, metric in enumerate(metrics):
            plot = pg.PlotWidget(self, background="w")
            plot.setMinimumHeight(160)
            item = plot.getPlotItem()
            item.showGrid(x=True, y=True, alpha=0.25)
            item.setLabel("bottom", f"fraction of support pixels {'inserted' if metric == 'iauc' else 'deleted'}")
            item.setLabel("left", "score")
            item.getAxis("left").enableAutoSIPrefix(False)
            item.setTitle(METRIC_TITLES[metric])
            # insertion curves rise (legend bottom right), deletion curves fall (top right)
            item.addLegend(offset=(-10, -10) if metric == "iauc" else (-10, 10),
                           brush=pg.mkBrush(255, 255, 255, 210), pen=pg.mkPen(200, 200, 200), labelTextColor="k")
            # both measures (confidence, IoU) and the fraction lie in [0, 1]: fixed ranges, so a new
            # point does not rescale the view and redraw the axes
            item.setXRange(0, 1, padding=0.02)
            item.setYRange(0, 1, padding=0.04)
            item.enableAutoRange(x=False, y=False)
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((90, 90, 90), width=1))
            marker = pg.ScatterPlotItem(size=13, pen=pg.mkPen((20, 20, 20), width=2), brush=pg.mkBrush(None))
            line.setVisible(False)
            marker.setVisible(False)
            item.addItem(line, ignoreBounds=True)
            item.addItem(marker)
            plot.scene().sigMouseClicked.connect(lambda event, m=metric: self._on_click(m, event))
            label = QLabel("", self)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(plot, 0, column)
            grid.addWidget(label, 1, column)
            self.plots[metric], self.value_labels[metric] = plot, label
            self.markers[metric], self.marker_lines[metric] = marker, line
            # background, axes, text and curve colours follow the app's theme, also when it changes
            follow_theme(plot, lambda colours, m=metric: self._apply_plot_colours(m, colours))

    # ------------------------------------------------------------------ colours
    def colour(self, method: str) -> tuple[int, int, int]:
        """The method's colour in exported figures (white background)."""
        return look.palette_colour(self._index(method))

    def display_colour(self, method: str) -> QColor:
        """The method's colour on screen: the same hue, with enough contrast on the plot background."""
        return self.plot_colours.series_colour(self._index(method))

    def _index(self, method: str) -> int:
        return self._colour_index.setdefault(method, len(self._colour_index))

    def _apply_plot_colours(self, metric: str, colours: PlotColours) -> None:
        """Recolour what was drawn on ``metric``'s plot (curves, marker, step line)."""
        self.plot_colours = colours
        self.markers[metric].setPen(pg.mkPen(colours.marker, width=2))
        self.marker_lines[metric].setPen(pg.mkPen(colours.guide, width=1))
        for (method, line_metric), line in self.lines.items():
            if line_metric == metric:
                colour = self.display_colour(method)
                line.setPen(pg.mkPen(colour, width=2))
                line.setSymbolBrush(pg.mkBrush(colour))
        self.coloursChanged.emit()

    # ------------------------------------------------------------------ curves and marker
    def clear(self) -> None:
        for metric, plot in self.plots.items():
            item = plot.getPlotItem()
            for line in [line for (_, m), line in self.lines.items() if m == metric]:
                item.removeItem(line)
            if item.legend is not None:
                item.legend.clear()
            self.markers[metric].setVisible(False)
            self.marker_lines[metric].setVisible(False)
        self.lines.clear()

    def set_score_label(self, text: str) -> None:
        for plot in self.plots.values():
            plot.getPlotItem().setLabel("left", text)

    def set_curve(self, method: str, metric: str, x: Sequence[float], y: Sequence[float], legend: str) -> None:
        """Draw (or redraw) one curve and its legend entry."""
        if metric not in self.plots:
            return
        key = (method, metric)
        line = self.lines.get(key)
        item = self.plots[metric].getPlotItem()
        if line is None:
            colour = self.display_colour(method)
            line = pg.PlotDataItem(pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                                   symbolBrush=pg.mkBrush(colour), symbolPen=None, name=method)
            item.addItem(line)
            self.lines[key] = line
        x, y = np.asarray(x, float), np.asarray(y, float)
        line.setData(x, y)
        line.setSymbol("o" if len(x) <= 40 else None)
        if item.legend is not None:
            for sample, label in item.legend.items:
                if sample.item is line:
                    label.setText(legend)

    def show_marker(self, metric: Optional[str], x: float = 0.0, y: float = 0.0) -> None:
        """The marker at ``(x, y)`` on ``metric``'s plot (None: no marker anywhere)."""
        for m in self.plots:
            visible = m == metric
            self.markers[m].setVisible(visible)
            self.marker_lines[m].setVisible(visible)
            if visible:
                self.markers[m].setData([x], [y])
                self.marker_lines[m].setValue(x)

    def marker_position(self, metric: str) -> Optional[tuple[float, float]]:
        if not self.markers[metric].isVisible():
            return None
        x, y = self.markers[metric].getData()
        return float(x[0]), float(y[0])

    def curve_point(self, method: str, metric: str, index: int) -> tuple[float, float]:
        x, y = self.lines[(method, metric)].getData()
        return float(x[index]), float(y[index])

    def _on_click(self, metric: str, event) -> None:
        point = self.plots[metric].getPlotItem().vb.mapSceneToView(event.scenePos())
        self.pointClicked.emit(metric, float(point.x()))

    def show_values(self, params: dict, curves: dict, frames: dict, region_source: str, computing: bool) -> None:
        """Beside each plot: the run's parameters, then each method's value (or how far it got)."""
        for metric, label in self.value_labels.items():
            if not params:
                label.setText("")
                continue
            p = params.get("percentage")
            head = (f"<b>{METRIC_TITLES[metric]}{'@p' if p else ''}</b>: {params['steps']} steps · measure "
                    f"{MEASURE_TITLES.get(params['measure'], params['measure'])} · zero substrate · "
                    f"p = {100 * (p or 1.0):g}% · ranking global over supports · R = {region_source}")
            rows = []
            for method in params.get("methods", []):
                curve = curves.get((method, metric))
                points = len(frames.get((method, metric), []))
                if curve is not None and curve.value is not None:
                    value = f"{curve.value_name()} <b>{curve.value:.4f}</b>"
                elif computing:
                    value = f"computing… ({points} points)"
                elif points:
                    value = f"incomplete ({points} points, no value)"
                else:
                    value = "not computed"
                rows.append(f'<span style="color:{self.display_colour(method).name()}">&#9632;</span> {method}: {value}')
            label.setText(head + "<br>" + " &nbsp; ".join(rows))
