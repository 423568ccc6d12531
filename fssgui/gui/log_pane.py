"""The log pane (a dock at the bottom): messages, and errors a person must see (red, also in the
status bar; the pane opens if it was closed). Every error is kept in :attr:`LogPane.errors`."""
from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDockWidget, QMainWindow, QPlainTextEdit


class LogPane(QDockWidget):
    """The "Log" dock of ``window``."""

    errorReported = Signal(str)

    def __init__(self, window: QMainWindow) -> None:
        super().__init__("Log", window)
        self.window_ = window
        self.setObjectName("log")
        self.view = QPlainTextEdit(self)
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(5000)
        self.view.setPlaceholderText("Messages and errors appear here.")
        self.setWidget(self.view)
        self.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self)
        window.resizeDocks([self], [120], Qt.Orientation.Vertical)
        self.errors: list[str] = []

    def log(self, text: str) -> None:
        self.view.appendHtml(f"<span style='color:#888'>{time.strftime('%H:%M:%S')}</span> {html.escape(text)}")

    def log_error(self, text: str, details: str = "") -> None:
        """An error the user must see: the pane (red), the status bar; the window keeps running."""
        self.errors.append(text)
        self.view.appendHtml(f"<span style='color:#888'>{time.strftime('%H:%M:%S')}</span> "
                             f"<span style='color:#e0464e'><b>error:</b> {html.escape(text)}</span>")
        if details:
            self.view.appendHtml(f"<pre style='color:#999'>{html.escape(details.rstrip())}</pre>")
        self.window_.statusBar().showMessage(f"Error: {text}", 15000)
        if not self.isVisible():
            self.show()
        self.errorReported.emit(text)

    def text(self) -> str:
        return self.view.toPlainText()
