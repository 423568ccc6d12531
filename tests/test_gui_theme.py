"""pyqtgraph plots follow the app's theme: background, axes, text, legend and curve colours are
queried from the widgets after a run-time switch (and the widgets are grabbed offscreen)."""
from __future__ import annotations

import os


from types import SimpleNamespace

import numpy as np
import pytest

import pyqtgraph as pg  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from fssgui.explain.base import Attribution  # noqa: E402
from fssgui.gui.heatmap_view import LevelView  # noqa: E402
from fssgui.gui.playback import PlaybackWidget  # noqa: E402
from fssgui.gui.theme import (  # noqa: E402
    CURVE_CONTRAST,
    GRAPHICS_CONTRAST,
    THEME_DARK,
    THEME_LIGHT,
    THEME_SYSTEM,
    apply_theme,
    contrast_ratio,
    dark_palette,
    plot_colours,
    readable_colour,
)
from fssgui.gui.workers import DeviceWorker  # noqa: E402
from testkit import TinyModel, tiny_setup  # noqa: E402

SCREENSHOTS = os.environ.get("FSSGUI_THEME_SCREENSHOTS")  # a folder: keep the grabs to look at them


@pytest.fixture
def themes(qapp):
    """Switch themes inside a test; the default palette comes back afterwards."""
    yield apply_theme
    apply_theme(THEME_LIGHT)
    apply_theme(THEME_SYSTEM)


def _light_palette() -> QPalette:
    style = QApplication.style()
    return style.standardPalette()


def test_plot_colours_are_readable_in_both_themes(qapp):
    for palette, dark in ((dark_palette(), True), (_light_palette(), False)):
        colours = plot_colours(palette)
        assert colours.dark is dark
        assert (colours.background.lightness() < 60) if dark else (colours.background == QColor(255, 255, 255))
        assert contrast_ratio(colours.text, colours.background) >= 7.0
        assert contrast_ratio(colours.axis, colours.background) >= 4.5
        for colour in (colours.guide, colours.marker):
            assert contrast_ratio(colour, colours.background) >= GRAPHICS_CONTRAST, colour.name()
        for colour in colours.series:
            assert contrast_ratio(colour, colours.background) >= CURVE_CONTRAST, colour.name()
        assert len({c.name() for c in colours.series}) == len(colours.series)  # still told apart


def test_readable_colour_keeps_the_hue_and_moves_only_as_needed():
    black, white = QColor(20, 20, 20), QColor(255, 255, 255)
    blue = QColor(0, 114, 178)
    lighter = readable_colour(blue, black, 4.5)
    assert contrast_ratio(lighter, black) >= 4.5 and lighter.lightness() > blue.lightness()
    assert abs(lighter.hslHue() - blue.hslHue()) <= 3
    assert contrast_ratio(readable_colour(blue, black, 4.6), black) < 5.0  # not pushed to white
    yellow = QColor(240, 228, 66)
    darker = readable_colour(yellow, white, 3.0)
    assert contrast_ratio(darker, white) >= 3.0 and darker.lightness() < yellow.lightness()
    assert readable_colour(QColor(0, 0, 0), white, 3.0) == QColor(0, 0, 0)  # already readable: unchanged


@pytest.fixture
def worker(qapp):
    worker = DeviceWorker(model_builder=lambda name, checkpoint=None, device="cpu", log=None: TinyModel())
    yield worker
    assert worker.shutdown(10000)


@pytest.fixture
def playback(qtbot, worker):
    model, episode, batch, region, attributions = tiny_setup()
    widget = PlaybackWidget(worker)
    qtbot.addWidget(widget)
    widget.resize(1000, 640)
    attributions = {name: Attribution(maps, name, {}) for name, maps in attributions.items()}
    widget.set_context("tiny", episode, attributions, episode.query_mask, region_source="ground truth")
    widget.set_parameters(measure="confidence", steps=5)
    with qtbot.waitSignal(widget.runFinished, timeout=20000) as blocker:
        widget.run()
    assert blocker.args == ["done"]
    widget.select("good", "iauc")
    with qtbot.waitSignal(widget.frameDrawn, timeout=10000):  # drawn on the widget's compute pool
        widget.set_frame(2)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def _grab(widget, name: str) -> QImage:
    QApplication.processEvents()
    image = widget.grab().toImage()
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        image.save(os.path.join(SCREENSHOTS, name))
    return image


def _pixel(image: QImage, x: int, y: int) -> QColor:
    return QColor(image.pixel(x, y))


def _check_plot(plot: pg.PlotWidget, dark: bool) -> None:
    """Query the plot's own brushes and pens (not the theme functions)."""
    background = plot.backgroundBrush().color()
    assert (background.lightness() < 60) if dark else (background.lightness() == 255), background.name()
    item = plot.getPlotItem()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        assert contrast_ratio(axis.pen().color(), background) >= 4.5, (side, axis.pen().color().name())
        assert contrast_ratio(axis.textPen().color(), background) >= 7.0
        assert (axis.textPen().color().lightness() > 180) if dark else (axis.textPen().color().lightness() < 60)
        assert axis.labelStyle["color"] == axis.textPen().color().name()  # the axis title is recoloured too
    title = QColor(item.titleLabel.opts["color"])
    assert contrast_ratio(title, background) >= 7.0
    if item.legend is not None:
        legend_brush = item.legend.brush().color()
        assert (legend_brush.lightness() < 60) if dark else (legend_brush.lightness() > 200)
        for _sample, label in item.legend.items:
            assert contrast_ratio(QColor(label.opts["color"]), legend_brush) >= 7.0
            assert QColor(label.opts["color"]).name() in label.item.toHtml().lower()
    for curve in [c for c in item.listDataItems() if isinstance(c, pg.PlotDataItem)]:
        colour = curve.opts["pen"].color()
        assert contrast_ratio(colour, background) >= CURVE_CONTRAST, colour.name()


def test_playback_curves_follow_a_theme_switch_at_run_time(qtbot, playback, themes):
    assert themes(THEME_LIGHT) == THEME_LIGHT
    light_lines = {key: line.opts["pen"].color().name() for key, line in playback.lines.items()}
    for plot in playback.plots.values():
        _check_plot(plot, dark=False)
    light = _grab(playback, "playback-light.png")

    assert themes(THEME_DARK) == THEME_DARK  # no rebuild: the widgets restyle themselves
    for metric, plot in playback.plots.items():
        _check_plot(plot, dark=True)
        background = plot.backgroundBrush().color()
        assert contrast_ratio(playback.markers[metric].opts["pen"].color(), background) >= GRAPHICS_CONTRAST
        assert contrast_ratio(playback.marker_lines[metric].pen.color(), background) >= GRAPHICS_CONTRAST
    assert len(playback.lines) == 4
    dark_lines = {key: line.opts["pen"].color().name() for key, line in playback.lines.items()}
    # the first palette colour (blue 0072b2, 3.2:1 on the dark base) is recoloured lighter ...
    assert light_lines[("good", "iauc")] == "#0072b2" and dark_lines[("good", "iauc")] != "#0072b2"
    assert dark_lines[("good", "iauc")] == dark_lines[("good", "dauc")]  # ... one colour per method still
    # the value labels beside the plots name the curves in the colours on screen
    assert dark_lines[("good", "iauc")] in playback.value_labels["iauc"].text()
    dark = _grab(playback, "playback-dark.png")
    # the pixels agree: the plot area and the probability colour bar are dark now
    for name, image in (("light", light), ("dark", dark)):
        plot = playback.plots["iauc"]
        corner = plot.mapTo(playback, plot.rect().topLeft())
        colour = _pixel(image, corner.x() + 4, corner.y() + 4)
        assert (colour.lightness() < 60) if name == "dark" else (colour.lightness() > 240), (name, colour.name())
        bar = playback.colorbar_label
        corner = bar.mapTo(playback, bar.rect().topLeft())
        colour = _pixel(image, corner.x() + bar.width() - 3, corner.y() + 3)
        assert (colour.lightness() < 80) if name == "dark" else (colour.lightness() > 200), (name, colour.name())

    themes(THEME_LIGHT)  # and back
    for plot in playback.plots.values():
        _check_plot(plot, dark=False)
    assert {key: line.opts["pen"].color().name() for key, line in playback.lines.items()} == light_lines


def test_level_weights_chart_follows_the_theme(qtbot, themes):
    view = LevelView()
    qtbot.addWidget(view)
    view.resize(600, 420)
    maps = [np.random.default_rng(0).random((12, 16)).astype(np.float32)]
    result = SimpleNamespace(method="affex", maps=maps, level_weights=np.array([0.5, 0.3, 0.2]),
                             level_maps=np.random.default_rng(1).random((3, 1, 6, 6)).astype(np.float32),
                             level_names=["l0", "l1", "l2"], signed=False, params={})
    themes(THEME_DARK)
    view.show_result(result)  # drawn while dark
    view.show()
    qtbot.waitExposed(view)
    _check_plot(view.plot, dark=True)
    background = view.plot.backgroundBrush().color()
    assert contrast_ratio(view.bars.opts["brush"].color(), background) >= CURVE_CONTRAST
    _grab(view, "levels-dark.png")
    themes(THEME_LIGHT)
    _check_plot(view.plot, dark=False)
    assert contrast_ratio(view.bars.opts["brush"].color(), view.plot.backgroundBrush().color()) >= CURVE_CONTRAST
    _grab(view, "levels-light.png")
