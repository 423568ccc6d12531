"""Light / dark theme: follow the OS by default (``QStyleHints.colorScheme()``), or force one.

The app uses the Fusion style, whose colours come from the application palette, so a theme is a
palette. The dark palette keeps text contrast high (light grey on dark grey, WCAG ratio above 7)
and keeps disabled text readable but visibly dimmer. Image canvases have their own dark
background.

pyqtgraph plots do not take their colours from the palette (they have their own background and
pens), so every plot shown in the app is registered with :func:`follow_theme`: it is styled
from :func:`plot_colours` of its palette at once and again whenever its palette changes (Qt sends
``PaletteChange`` to every widget when :func:`apply_theme` sets the application palette, and when
the OS scheme changes), so a theme switch at run time restyles it. Light theme: white plot
background, near-black axes and text; dark theme: the palette's base colour and light grey text.
Curve colours are the figures' palette (:data:`fssgui.look.PALETTE`) made light or dark enough
(same hue) for a contrast of at least 4.5:1 on the plot background; markers and guide lines at
least 3:1 (WCAG's ratio for graphics). Exported PNGs and reports keep their own white figure style.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

from ..look import PALETTE

THEME_SYSTEM, THEME_LIGHT, THEME_DARK = "system", "light", "dark"
THEMES = (THEME_SYSTEM, THEME_LIGHT, THEME_DARK)


def system_prefers_dark() -> bool:
    """Whether the OS asks for a dark scheme (False when Qt cannot tell)."""
    app = QGuiApplication.instance()
    if app is None:
        return False
    scheme = getattr(app.styleHints(), "colorScheme", None)
    return bool(scheme is not None and scheme() == Qt.ColorScheme.Dark)


def effective_theme(theme: str) -> str:
    """"light" or "dark" for a setting ("system" follows the OS)."""
    if theme == THEME_DARK or (theme == THEME_SYSTEM and system_prefers_dark()):
        return THEME_DARK
    return THEME_LIGHT


def dark_palette() -> QPalette:
    palette = QPalette()
    window, base, alternate = QColor(45, 47, 51), QColor(30, 31, 34), QColor(40, 42, 46)
    text, dim, highlight = QColor(225, 225, 225), QColor(130, 132, 138), QColor(42, 130, 218)
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: alternate,
        QPalette.ColorRole.ToolTipBase: QColor(55, 57, 62),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: dim,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor(53, 55, 60),
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor(255, 90, 90),
        QPalette.ColorRole.Link: QColor(100, 170, 255),
        QPalette.ColorRole.LinkVisited: QColor(170, 140, 255),
        QPalette.ColorRole.Highlight: highlight,
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Light: QColor(70, 72, 78),
        QPalette.ColorRole.Midlight: QColor(60, 62, 68),
        QPalette.ColorRole.Mid: QColor(40, 42, 46),
        QPalette.ColorRole.Dark: QColor(25, 26, 28),
        QPalette.ColorRole.Shadow: QColor(10, 10, 10),
    }
    for role, colour in roles.items():
        palette.setColor(role, colour)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, dim)
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Highlight, QColor(80, 80, 80))
    return palette


def apply_theme(theme: str) -> str:
    """Set the application palette for ``theme``; returns the effective "light" / "dark"."""
    app = QGuiApplication.instance()
    effective = effective_theme(theme)
    if app is None:
        return effective
    hints = app.styleHints()
    if hasattr(hints, "setColorScheme"):  # Qt >= 6.8: tell the style and native dialogs too
        hints.setColorScheme({THEME_LIGHT: Qt.ColorScheme.Light, THEME_DARK: Qt.ColorScheme.Dark}.get(
            theme, Qt.ColorScheme.Unknown))
    if effective == THEME_DARK:
        app.setPalette(dark_palette())
    else:
        from PySide6.QtWidgets import QApplication

        style = QApplication.style() if isinstance(app, QApplication) else None
        app.setPalette(style.standardPalette() if style is not None else QPalette())
    # Qt posts ApplicationPaletteChange to every widget; deliver them now, so that when this returns
    # every widget (the plots registered with follow_theme included) already shows the new theme.
    app.sendPostedEvents(None, int(QEvent.Type.ApplicationPaletteChange))
    return effective


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two colours (1..21)."""

    def luminance(colour: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# ===================================================================================== plots
#: the curve colours of the app's plots before contrast adjustment (those of the exported figures)
SERIES_BASE: tuple[tuple[int, int, int], ...] = PALETTE
GRAPHICS_CONTRAST = 3.0  # WCAG 2.1 non-text contrast (markers, guide lines)
CURVE_CONTRAST = 4.5  # curves (2 px lines) and the value text coloured like them: text-level contrast
TEXT_CONTRAST = 7.0  # axis labels and titles: as readable as the window's own text


@dataclass(frozen=True)
class PlotColours:
    """The colours of a pyqtgraph plot in one theme."""

    dark: bool
    background: QColor
    text: QColor  # tick labels, axis labels, titles, legend text
    axis: QColor  # axis lines and ticks (the grid uses it, faded by the plot's grid alpha)
    guide: QColor  # secondary lines (the current-step line)
    marker: QColor  # the outline of the current-point marker
    legend_background: QColor
    legend_border: QColor
    series: tuple[QColor, ...]  # curve colours, each with >= CURVE_CONTRAST on the background

    def series_colour(self, index: int) -> QColor:
        return QColor(self.series[index % len(self.series)])


def readable_colour(colour: QColor, background: QColor, min_ratio: float) -> QColor:
    """``colour`` blended towards white (dark background) or black (light background), as little
    as needed for a contrast ratio of at least ``min_ratio`` with ``background``: the hue stays.
    (Remembered per colour, background and ratio: a theme switch restyles every plot with the same few.)"""
    return QColor.fromRgba(_readable_rgba(colour.rgba(), background.rgba(), float(min_ratio)))


@functools.lru_cache(maxsize=1024)
def _readable_rgba(colour_rgba: int, background_rgba: int, min_ratio: float) -> int:
    colour, background = QColor.fromRgba(colour_rgba), QColor.fromRgba(background_rgba)
    if contrast_ratio(colour, background) >= min_ratio:
        return colour.rgba()
    target = QColor(255, 255, 255) if background.lightness() < 128 else QColor(0, 0, 0)
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if contrast_ratio(_blend(colour, target, mid), background) >= min_ratio:
            hi = mid
        else:
            lo = mid
    return _blend(colour, target, hi).rgba()


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def palette_is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def plot_colours(palette: Optional[QPalette] = None,
                 series: Sequence[tuple[int, int, int]] = SERIES_BASE) -> PlotColours:
    """Plot colours for ``palette`` (default: the application's)."""
    if palette is None:
        app = QGuiApplication.instance()
        palette = app.palette() if app is not None else QPalette()
    if palette_is_dark(palette):
        background = QColor(palette.color(QPalette.ColorRole.Base))
        text = readable_colour(QColor(palette.color(QPalette.ColorRole.Text)), background, TEXT_CONTRAST)
        axis = readable_colour(QColor(150, 153, 160), background, 4.5)
        guide = readable_colour(QColor(150, 150, 150), background, GRAPHICS_CONTRAST)
        marker = QColor(240, 240, 240)
        legend_background = QColor(background.red(), background.green(), background.blue(), 215)
        legend_border = QColor(90, 92, 98)
    else:
        background = QColor(255, 255, 255)
        text = QColor(30, 30, 30)
        axis = QColor(85, 85, 85)
        guide = QColor(90, 90, 90)
        marker = QColor(20, 20, 20)
        legend_background = QColor(255, 255, 255, 215)
        legend_border = QColor(200, 200, 200)
    colours = tuple(readable_colour(QColor(*rgb), background, CURVE_CONTRAST) for rgb in series)
    return PlotColours(palette_is_dark(palette), background, text, axis, guide, marker, legend_background,
                       legend_border, colours)


def style_plot(widget, colours: PlotColours) -> None:
    """Apply ``colours`` to a pyqtgraph view (``PlotWidget``, ``GraphicsLayoutWidget``): its
    background and every axis, title, label and legend in its scene."""
    import pyqtgraph as pg

    widget.setBackground(colours.background)
    for item in widget.scene().items():
        if isinstance(item, pg.AxisItem):
            item.setPen(pg.mkPen(colours.axis))
            item.setTextPen(pg.mkPen(colours.text))
        elif isinstance(item, pg.LegendItem):
            item.setBrush(pg.mkBrush(colours.legend_background))
            item.setPen(pg.mkPen(colours.legend_border))
            item.setLabelTextColor(colours.text)
            for _sample, label in item.items:
                label.setText(label.text)  # re-render with the new colour
        elif isinstance(item, pg.LabelItem) and not isinstance(item.parentItem(), pg.LegendItem):
            item.setAttr("color", colours.text)
            item.setText(item.text)


class _PaletteWatcher(QObject):
    """Restyles its plot when the plot's palette changes (theme switch, OS scheme change)."""

    def __init__(self, widget, on_change: Optional[Callable[[PlotColours], None]]) -> None:
        super().__init__(widget)
        self._on_change = on_change
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.PaletteChange:
            restyle(watched, self._on_change)
        return False


def restyle(widget, on_change: Optional[Callable[[PlotColours], None]] = None) -> PlotColours:
    colours = plot_colours(widget.palette())
    style_plot(widget, colours)
    if on_change is not None:
        on_change(colours)
    return colours


def follow_theme(widget, on_change: Optional[Callable[[PlotColours], None]] = None) -> PlotColours:
    """Style the pyqtgraph view ``widget`` for the theme in use now and whenever its palette
    changes; ``on_change(colours)`` recolours what the plot's owner drew itself (curves,
    markers, bars). Returns the colours in use now."""
    widget._fssgui_palette_watcher = _PaletteWatcher(widget, on_change)
    return restyle(widget, on_change)
