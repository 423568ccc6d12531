"""What the GUI tests share: synthesized mouse input on a canvas (the fixtures that build the main
window live in conftest.py; the models, explainers and episodes in the Qt-free testkit.py)."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication


def view_pos(view, x: float, y: float) -> QPointF:
    """The view position of image point (x, y)."""
    return QPointF(view.mapFromScene(QPointF(x, y)))


def mouse(view, kind, pos: QPointF, button, buttons, modifiers=Qt.KeyboardModifier.NoModifier):
    event = QMouseEvent(kind, pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), button, buttons, modifiers)
    QApplication.sendEvent(view.viewport(), event)


def drag(view, points, button=Qt.MouseButton.LeftButton):
    """Press at the first image point, move through the others, release at the last."""
    positions = [view_pos(view, x, y) for x, y in points]
    mouse(view, QEvent.Type.MouseButtonPress, positions[0], button, button)
    for pos in positions[1:]:
        mouse(view, QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, button)
    mouse(view, QEvent.Type.MouseButtonRelease, positions[-1], button, Qt.MouseButton.NoButton)
