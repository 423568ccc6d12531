"""Light / dark theme: follow the OS by default (``QStyleHints.colorScheme()``), or force one.

The app uses the Fusion style, whose colours come from the application palette, so a theme is a
palette. The dark palette keeps text contrast high (light grey on dark grey, WCAG ratio above 7)
and keeps disabled text readable but visibly dimmer. Image canvases have their own dark
background and pyqtgraph figures keep their white plot backgrounds (they are figures, exported
as they look).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

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
    return effective


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two colours (1..21)."""

    def luminance(colour: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)
