"""The image canvas: one widget for the query (region R) and for support masks.

* zoom at the cursor (wheel), pan (middle drag, Space + drag, or the pan tool), fit (F, double
  click); the first fit follows the widget's size until the user zooms;
* rectangle (drag) and polygon (click the vertices; double click, Enter or a click on the first
  vertex closes it; Backspace drops the last vertex, Esc cancels) tools: the left button adds the
  shape to the mask, the right button removes it; each shape is one undoable edit;
* brush and eraser with their own sizes (``[``/``]``, Ctrl+wheel), a circular cursor whose
  colour says which tool is active (not the mask colour), right drag erases;
* strokes go to an :class:`~fssgui.editing.EditableMask`; only the stroke's dirty
  rectangle is recoloured (numpy, on a buffer the layer's QImage wraps) and repainted, so
  painting stays smooth on 2048 x 2048 masks;
* raster overlay layers (prediction, ground truth, heat map) with their own opacity, all hidden
  or shown at once with :meth:`set_overlays_visible` (the H key in the window);
* a title drawn in the corner of the view says what is shown ("R = prediction, 1234 px").
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QImage,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QPolygonF,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QFrame,
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from ..editing import EditableMask, Rect
from ..look import MASK_OPACITY, REGION_COLOUR

TOOL_PAN = "pan"
TOOL_BRUSH = "brush"
TOOL_ERASER = "eraser"
TOOL_RECTANGLE = "rectangle"
TOOL_POLYGON = "polygon"
SHAPE_TOOLS = (TOOL_RECTANGLE, TOOL_POLYGON)
TOOLS = (TOOL_PAN, TOOL_BRUSH, TOOL_ERASER, TOOL_RECTANGLE, TOOL_POLYGON)
CLOSE_POLYGON_PX = 8  # a click this close (screen px) to the first vertex closes the polygon
MIN_BRUSH, MAX_BRUSH = 1, 400
MIN_ZOOM, MAX_ZOOM = 0.02, 64.0


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """RGB uint8 ``[H, W, 3]`` -> a QImage that owns its pixels (safe to keep after ``rgb`` dies)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    return QPixmap.fromImage(rgb_to_qimage(rgb))


def premultiplied_bgra(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 (straight alpha) -> BGRA premultiplied, the memory order of ARGB32 on little-endian."""
    rgba = np.asarray(rgba, dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = np.empty(rgba.shape, dtype=np.uint8)
    out[..., 0:3] = ((rgba[..., 2::-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    out[..., 3] = rgba[..., 3]
    return out


class RasterLayer(QGraphicsItem):
    """A ``[H, W]`` ARGB32-premultiplied raster whose pixels live in a numpy buffer.

    Only the exposed part is drawn, and :meth:`update_rect` repaints just a rectangle."""

    def __init__(self, width: int, height: int, z: float = 1.0) -> None:
        super().__init__()
        self.buffer = np.zeros((height, width, 4), dtype=np.uint8)
        self._image = QImage(self.buffer.data, width, height, 4 * width, QImage.Format.Format_ARGB32_Premultiplied)
        self._bounds = QRectF(0, 0, width, height)
        self.setZValue(z)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    @property
    def size(self) -> tuple[int, int]:
        return self.buffer.shape[0], self.buffer.shape[1]

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return self._bounds

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        exposed = option.exposedRect.intersected(self._bounds).toAlignedRect()
        if exposed.isEmpty():
            return
        painter.drawImage(exposed, self._image, exposed)

    def set_rgba(self, rgba: np.ndarray) -> None:
        """Replace all pixels from straight-alpha RGBA uint8 ``[H, W, 4]``."""
        if rgba.shape[:2] != self.buffer.shape[:2]:
            raise ValueError(f"layer is {self.buffer.shape[1]}x{self.buffer.shape[0]}, got {rgba.shape[1]}x{rgba.shape[0]}")
        self.buffer[...] = premultiplied_bgra(rgba)
        self.update()

    def clear(self) -> None:
        self.buffer[...] = 0
        self.update()

    def update_rect(self, rect: Rect) -> None:
        x0, y0, x1, y1 = rect
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))


class MaskLayer(RasterLayer):
    """Shows an :class:`EditableMask` tinted with one colour; follows its changes rect by rect."""

    def __init__(self, mask: EditableMask, colour: tuple[int, int, int], z: float = 5.0) -> None:
        h, w = mask.shape
        super().__init__(w, h, z)
        self.mask = mask
        self._lut = np.zeros((2, 4), dtype=np.uint8)
        self.set_colour(colour)
        mask.subscribe(self._on_mask_changed)

    def set_colour(self, colour: tuple[int, int, int]) -> None:
        self._lut[1] = premultiplied_bgra(np.array([[*colour, 255]], dtype=np.uint8))[0]
        self._on_mask_changed((0, 0, self.buffer.shape[1], self.buffer.shape[0]))

    def detach(self) -> None:
        self.mask.unsubscribe(self._on_mask_changed)

    def _on_mask_changed(self, rect: Rect) -> None:
        if self.mask.shape != self.buffer.shape[:2]:
            return  # the owner replaces this layer after a reset to another size
        x0, y0, x1, y1 = rect
        self.buffer[y0:y1, x0:x1] = self._lut[self.mask.data[y0:y1, x0:x1]]
        self.update_rect(rect)


class ImageCanvas(QGraphicsView):
    """Zoomable, pannable image view with optional mask editing and overlay layers."""

    strokeFinished = Signal(str)  # "brush" / "erase"
    brushSizeChanged = Signal(str, int)  # tool, size
    toolChanged = Signal(str)
    viewChanged = Signal()
    hovered = Signal(int, int)  # image pixel under the cursor (-1, -1 when outside)

    def __init__(self, parent: QWidget | None = None, editable: bool = True) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setBackgroundBrush(QBrush(QColor(38, 40, 44)))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(120, 100)
        self.editable = editable
        self._image_item: Optional[QGraphicsPixmapItem] = None
        self._image_size = (0, 0)  # h, w
        self._layers: dict[str, RasterLayer] = {}
        self._layer_opacity: dict[str, float] = {}
        self._mask_layer: Optional[MaskLayer] = None
        self._mask: Optional[EditableMask] = None
        self._overlays_visible = True
        self._tool = TOOL_BRUSH if editable else TOOL_PAN
        self._sizes = {TOOL_BRUSH: 25, TOOL_ERASER: 25}
        self._stroke_button: Optional[Qt.MouseButton] = None
        self._pan_anchor: Optional[QPointF] = None
        self._space_down = False
        self._auto_fit = True
        self._title = ""
        self._subtitle = ""
        self._placeholder = "no image"
        self._cursor_item = QGraphicsEllipseItem()
        self._cursor_item.setZValue(1000)
        self._cursor_item.setVisible(False)
        self._cursor_item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.scene().addItem(self._cursor_item)
        # rectangle / polygon in progress: vertices (image coordinates), add or remove, preview
        self._shape_points: list[QPointF] = []
        self._shape_value = True
        self._shape_button: Optional[Qt.MouseButton] = None
        self._shape_item = QGraphicsPathItem()
        self._shape_item.setZValue(999)
        self._shape_item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.scene().addItem(self._shape_item)

    # ------------------------------------------------------------------------------ content
    def set_image(self, rgb: Optional[np.ndarray], fit: bool = True) -> None:
        """Show an RGB image (``None`` clears); layers of another size are removed."""
        if self._image_item is not None:
            self.scene().removeItem(self._image_item)
            self._image_item = None
        if rgb is None:
            self._image_size = (0, 0)
            for name in list(self._layers):
                self.remove_layer(name)
            self.set_mask(None)
            self.viewport().update()
            return
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        if size != self._image_size:
            for name in list(self._layers):
                self.remove_layer(name)
        self._image_size = size
        self._image_item = QGraphicsPixmapItem(rgb_to_pixmap(rgb))
        self._image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._image_item.setZValue(0)
        self.scene().addItem(self._image_item)
        # Room around the image so that zoom-at-cursor and panning work even when the image is
        # smaller than the view (the scroll bars are hidden; fit() uses the image rectangle).
        margin = float(max(size))
        self.scene().setSceneRect(QRectF(-margin, -margin, size[1] + 2 * margin, size[0] + 2 * margin))
        if fit:
            self._auto_fit = True
            self.fit()

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def has_image(self) -> bool:
        return self._image_item is not None

    def set_layer(self, name: str, rgba: Optional[np.ndarray], z: float = 2.0, opacity: Optional[float] = None) -> None:
        """Create or replace a raster overlay from straight-alpha RGBA (``None`` removes it)."""
        if rgba is None:
            self.remove_layer(name)
            return
        h, w = rgba.shape[:2]
        layer = self._layers.get(name)
        if layer is None or layer.size != (h, w):
            self.remove_layer(name)
            layer = RasterLayer(w, h, z)
            self._layers[name] = layer
            self.scene().addItem(layer)
        layer.setZValue(z)
        layer.set_rgba(rgba)
        if opacity is not None:
            self._layer_opacity[name] = opacity
        layer.setOpacity(self._layer_opacity.get(name, 1.0))
        layer.setVisible(self._overlays_visible)

    def remove_layer(self, name: str) -> None:
        layer = self._layers.pop(name, None)
        if layer is not None:
            self.scene().removeItem(layer)

    def has_layer(self, name: str) -> bool:
        return name in self._layers

    def layer(self, name: str) -> Optional[RasterLayer]:
        return self._layers.get(name)

    def set_layer_opacity(self, name: str, opacity: float) -> None:
        self._layer_opacity[name] = float(opacity)
        if name in self._layers:
            self._layers[name].setOpacity(float(opacity))
        if name == "mask" and self._mask_layer is not None:
            self._mask_layer.setOpacity(float(opacity))

    def set_overlays_visible(self, visible: bool) -> None:
        """Hide or show every overlay (mask included) at once: look at the raw image."""
        self._overlays_visible = bool(visible)
        for layer in self._layers.values():
            layer.setVisible(self._overlays_visible)
        if self._mask_layer is not None:
            self._mask_layer.setVisible(self._overlays_visible)
        self.viewport().update()

    def set_mask(self, mask: Optional[EditableMask], colour: tuple[int, int, int] = REGION_COLOUR) -> None:
        """The mask this canvas edits (and shows tinted); ``None`` removes it."""
        if self._mask_layer is not None:
            self._mask_layer.detach()
            self.scene().removeItem(self._mask_layer)
            self._mask_layer = None
        self._mask = mask
        if mask is None:
            return
        self._mask_layer = MaskLayer(mask, colour)
        self._mask_layer.setOpacity(self._layer_opacity.get("mask", MASK_OPACITY))
        self._mask_layer.setVisible(self._overlays_visible)
        self.scene().addItem(self._mask_layer)

    def _mask_colour(self) -> tuple[int, int, int]:
        if self._mask_layer is None:
            return REGION_COLOUR
        b, g, r, a = (int(v) for v in self._mask_layer._lut[1])
        return (r, g, b)

    @property
    def mask(self) -> Optional[EditableMask]:
        return self._mask

    def set_title(self, title: str, subtitle: str = "") -> None:
        self._title, self._subtitle = title, subtitle
        self.viewport().update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.viewport().update()

    # ------------------------------------------------------------------------------ tools
    @property
    def tool(self) -> str:
        return self._tool

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(tool)
        if not self.editable:
            tool = TOOL_PAN
        self.cancel_shape()
        self._tool = tool
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self._update_cursor_item()
        self.toolChanged.emit(tool)

    def brush_size(self, tool: Optional[str] = None) -> int:
        tool = tool or (self._tool if self._tool in (TOOL_BRUSH, TOOL_ERASER) else TOOL_BRUSH)
        return self._sizes[tool]

    def set_brush_size(self, size: int, tool: Optional[str] = None) -> None:
        tool = tool or (self._tool if self._tool in (TOOL_BRUSH, TOOL_ERASER) else TOOL_BRUSH)
        size = int(max(MIN_BRUSH, min(MAX_BRUSH, size)))
        if self._sizes[tool] != size:
            self._sizes[tool] = size
            self.brushSizeChanged.emit(tool, size)
        self._update_cursor_item()

    def step_brush_size(self, direction: int) -> None:
        """``]``/``[``: grow/shrink the active tool's size by ~15% (at least 1 px)."""
        size = self.brush_size()
        step = max(1, round(size * 0.15))
        self.set_brush_size(size + step if direction > 0 else size - step)

    # ------------------------------------------------------------------------------ shapes
    @property
    def shape_in_progress(self) -> bool:
        return bool(self._shape_points)

    def shape_points(self) -> list[tuple[float, float]]:
        return [(p.x(), p.y()) for p in self._shape_points]

    def cancel_shape(self) -> None:
        self._shape_points = []
        self._shape_button = None
        self._shape_item.setPath(QPainterPath())

    def add_polygon_vertex(self, point: QPointF, value: bool = True) -> None:
        """Polygon tool: one more vertex (the first one decides add / remove)."""
        if not self._shape_points:
            self._shape_value = value
        self._shape_points.append(QPointF(point))
        self._update_shape_preview(point)

    def close_polygon(self) -> bool:
        """Fill (or remove) the polygon drawn so far; False when it has fewer than 3 vertices."""
        points = self.shape_points()
        value = self._shape_value
        self.cancel_shape()
        if self._mask is None or len(points) < 3:
            return False
        # vertices are continuous image coordinates; pixel (i, j) covers [i, i+1): shift by -0.5
        # so that a polygon drawn around pixels fills exactly the pixels inside it
        shifted = [(x - 0.5, y - 0.5) for x, y in points]
        if self._mask.fill_polygon(shifted, value, "polygon" if value else "erase polygon") is not None:
            self.strokeFinished.emit("polygon" if value else "erase")
        return True

    def _finish_rectangle(self, end: QPointF) -> None:
        start = self._shape_points[0] if self._shape_points else end
        value = self._shape_value
        self.cancel_shape()
        if self._mask is None:
            return
        x0, x1 = sorted((start.x(), end.x()))
        y0, y1 = sorted((start.y(), end.y()))
        # the pixels whose centres lie inside the dragged rectangle
        left, top = int(np.ceil(x0 - 0.5)), int(np.ceil(y0 - 0.5))
        right, bottom = int(np.floor(x1 - 0.5)), int(np.floor(y1 - 0.5))
        if right < left or bottom < top:
            return
        if self._mask.fill_rectangle(left, top, right, bottom, value) is not None:
            self.strokeFinished.emit("rectangle" if value else "erase")

    def _update_shape_preview(self, cursor: Optional[QPointF] = None) -> None:
        path = QPainterPath()
        points = list(self._shape_points)
        if self._tool == TOOL_RECTANGLE and points and cursor is not None:
            path.addRect(QRectF(points[0], cursor).normalized())
        elif points:
            polygon = QPolygonF(points + ([cursor] if cursor is not None else []))
            path.addPolygon(polygon)
            for p in points:
                path.addEllipse(p, 2.0 / max(self.zoom(), 1e-6), 2.0 / max(self.zoom(), 1e-6))
        pen = QPen(QColor(255, 255, 255) if self._shape_value else QColor(255, 220, 0), 1.5)
        pen.setCosmetic(True)
        if not self._shape_value:
            pen.setStyle(Qt.PenStyle.DashLine)
        self._shape_item.setPen(pen)
        self._shape_item.setPath(path)

    def _near_first_vertex(self, view_pos: QPointF) -> bool:
        if len(self._shape_points) < 3:
            return False
        first = self.mapFromScene(self._shape_points[0])
        return (abs(first.x() - view_pos.x()) + abs(first.y() - view_pos.y())) <= CLOSE_POLYGON_PX

    # ------------------------------------------------------------------------------ view
    def zoom(self) -> float:
        return float(self.transform().m11())

    def fit_to_view(self) -> None:
        """Fit the image to the view, and keep it fitted when the view is resized (until a zoom)."""
        self._auto_fit = True
        self.fit()

    def fit(self) -> None:
        if self._image_size == (0, 0):
            return
        h, w = self._image_size
        self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
        self._update_smoothing()
        self.viewChanged.emit()

    def zoom_by(self, factor: float, anchor_view: Optional[QPointF] = None) -> None:
        """Zoom by ``factor`` keeping the image point under ``anchor_view`` (viewport px) fixed."""
        current = self.zoom()
        factor = max(MIN_ZOOM / current, min(MAX_ZOOM / current, factor))
        if anchor_view is None:
            anchor_view = QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor_view.toPoint())
        old_anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(factor, factor)
        self.setTransformationAnchor(old_anchor)
        # Scroll so that the anchored image point is back under the cursor (clamped by the range).
        moved = self.mapFromScene(before)
        dx, dy = moved.x() - anchor_view.x(), moved.y() - anchor_view.y()
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + round(dx))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + round(dy))
        self._auto_fit = False
        self._update_smoothing()
        self._update_cursor_item()
        self.viewChanged.emit()

    def _update_smoothing(self) -> None:
        if self._image_item is not None:
            # Smooth when shrinking, nearest when magnifying (pixels must look like pixels).
            mode = Qt.TransformationMode.SmoothTransformation if self.zoom() < 1.0 else Qt.TransformationMode.FastTransformation
            self._image_item.setTransformationMode(mode)

    def view_state(self) -> tuple[float, QPointF]:
        return self.zoom(), self.mapToScene(self.viewport().rect().center())

    def set_view_state(self, zoom: float, center: QPointF) -> None:
        """Zoom and centre like another canvas (linked views)."""
        self.resetTransform()
        self.scale(zoom, zoom)
        self.centerOn(center)
        self._auto_fit = False
        self._update_smoothing()

    def image_point(self, view_pos: QPointF) -> QPointF:
        return self.mapToScene(view_pos.toPoint())

    # ---------------------------------------------------------------------------- events
    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps == 0:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier and self.editable:
            self.step_brush_size(1 if steps > 0 else -1)
        else:
            self.zoom_by(1.25 ** steps, event.position())
        event.accept()

    def _painting_tool(self, button: Qt.MouseButton) -> Optional[str]:
        if self._mask is None or not self.editable or self._space_down or self._tool == TOOL_PAN:
            return None
        if button == Qt.MouseButton.LeftButton:
            return self._tool
        if button == Qt.MouseButton.RightButton:
            return TOOL_ERASER
        return None

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        button = event.button()
        tool = self._painting_tool(button)
        if tool is not None and self._tool in SHAPE_TOOLS:
            point = self.image_point(event.position())
            adding = button == Qt.MouseButton.LeftButton
            if self._tool == TOOL_RECTANGLE:
                self._shape_points = [point]
                self._shape_value = adding
                self._shape_button = button
                self._update_shape_preview(point)
            elif self._near_first_vertex(event.position()):
                self.close_polygon()
            else:
                self.add_polygon_vertex(point, adding)
            event.accept()
            return
        if tool is not None:
            point = self.image_point(event.position())
            self._stroke_button = button
            self._mask.begin_stroke(tool == TOOL_BRUSH, self._sizes[tool])
            self._mask.add_point(point.x(), point.y())
            event.accept()
            return
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and (self._space_down or self._tool == TOOL_PAN)
        ):
            self._pan_anchor = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        point = self.image_point(event.position())
        if self._stroke_button is not None and self._mask is not None:
            self._mask.add_point(point.x(), point.y())
        elif self._shape_points:
            self._update_shape_preview(point)
        elif self._pan_anchor is not None:
            delta = event.position() - self._pan_anchor
            self._pan_anchor = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
            self._auto_fit = False
            self.viewChanged.emit()
        self._move_cursor_item(point)
        h, w = self._image_size
        x, y = int(np.floor(point.x())), int(np.floor(point.y()))
        if 0 <= x < w and 0 <= y < h:
            self.hovered.emit(x, y)
        else:
            self.hovered.emit(-1, -1)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._tool == TOOL_RECTANGLE and self._shape_button is not None and event.button() == self._shape_button:
            self._finish_rectangle(self.image_point(event.position()))
            event.accept()
            return
        if self._stroke_button is not None and event.button() == self._stroke_button:
            erase = not self._mask._stroke_value
            self._stroke_button = None
            if self._mask.end_stroke("erase" if erase else "brush") is not None:
                self.strokeFinished.emit("erase" if erase else "brush")
            event.accept()
            return
        if self._pan_anchor is not None:
            self._pan_anchor = None
            self.viewport().unsetCursor()
            self._update_cursor_item()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._tool == TOOL_POLYGON and self.editable:
            # the double click's first press added a vertex; the double click closes the polygon
            self.close_polygon()
            event.accept()
            return
        if self._tool == TOOL_PAN or not self.editable:
            self.fit_to_view()
            event.accept()
            return
        self.mousePressEvent(event)

    _SHAPE_KEYS = (Qt.Key.Key_Escape, Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Backspace)

    def event(self, event) -> bool:  # noqa: A003 - Qt override
        # While a polygon is drawn, Esc / Enter / Backspace edit it rather than trigger the
        # window's shortcuts (Esc = cancel the running job).
        if (event.type() == QEvent.Type.ShortcutOverride and self._shape_points
                and event.key() in self._SHAPE_KEYS and event.modifiers() == Qt.KeyboardModifier.NoModifier):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if self._shape_points and event.key() in self._SHAPE_KEYS:
            if event.key() == Qt.Key.Key_Escape:
                self.cancel_shape()
            elif event.key() == Qt.Key.Key_Backspace:
                self._shape_points.pop()
                self._update_shape_preview()
            else:
                self.close_polygon()
            event.accept()
            return
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            self._cursor_item.setVisible(False)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.viewport().unsetCursor()
            self._update_cursor_item()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self._cursor_item.setVisible(False)
        self.hovered.emit(-1, -1)
        super().leaveEvent(event)

    def enterEvent(self, event) -> None:  # noqa: N802
        self._update_cursor_item()
        super().enterEvent(event)

    # ------------------------------------------------------------------------- brush cursor
    def _cursor_shown(self) -> bool:
        """The brush ring (not for pan and the shape tools, which use a cross)."""
        return (self.editable and self._mask is not None and self._tool in (TOOL_BRUSH, TOOL_ERASER)
                and not self._space_down)

    def _update_cursor_item(self) -> None:
        shown = self._cursor_shown() and self.underMouse()
        self._cursor_item.setVisible(shown)
        if self._cursor_shown() or (self._tool in SHAPE_TOOLS and self.editable and not self._space_down):
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
        elif self._tool == TOOL_PAN:
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.viewport().unsetCursor()
        tool = self._tool if self._tool in (TOOL_BRUSH, TOOL_ERASER) else TOOL_BRUSH
        # Brush: white ring; eraser: dashed yellow ring. Neither is a mask colour.
        pen = QPen(QColor(255, 255, 255) if tool == TOOL_BRUSH else QColor(255, 220, 0), 1.5)
        pen.setCosmetic(True)
        if tool == TOOL_ERASER:
            pen.setStyle(Qt.PenStyle.DashLine)
        self._cursor_item.setPen(pen)
        center = self._cursor_item.rect().center()
        self._set_cursor_rect(center)

    def _set_cursor_rect(self, center: QPointF) -> None:
        size = float(self.brush_size())
        self._cursor_item.setRect(QRectF(center.x() - size / 2, center.y() - size / 2, size, size))

    def _move_cursor_item(self, point: QPointF) -> None:
        if self._cursor_shown():
            # Centre on the pixel the brush paints (strokes round to the nearest pixel centre).
            self._set_cursor_rect(QPointF(round(point.x()) + 0.5, round(point.y()) + 0.5))
            self._cursor_item.setVisible(True)

    # ------------------------------------------------------------------------------ drawing
    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        super().drawForeground(painter, rect)
        if not (self._title or self._subtitle or self._image_item is None):
            return
        painter.save()
        painter.resetTransform()
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        if self._image_item is None:
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
        lines = [t for t in (self._title, self._subtitle) if t]
        if lines:
            width = max(metrics.horizontalAdvance(t) for t in lines) + 12
            height = metrics.height() * len(lines) + 8
            painter.fillRect(QRectF(6, 6, width, height), QColor(0, 0, 0, 170))
            painter.setPen(QColor(255, 255, 255))
            for i, text in enumerate(lines):
                if i == 1:
                    painter.setPen(QColor(210, 210, 210))
                painter.drawText(QPointF(12, 10 + metrics.ascent() + i * metrics.height()), text)
        painter.restore()


def link_views(a: ImageCanvas, b: ImageCanvas) -> None:
    """Keep two canvases of same-size images at the same zoom and centre."""
    guard = {"busy": False}

    def follow(src: ImageCanvas, dst: ImageCanvas) -> None:
        if guard["busy"] or src.image_size != dst.image_size:
            return
        guard["busy"] = True
        try:
            dst.set_view_state(*src.view_state())
        finally:
            guard["busy"] = False

    a.viewChanged.connect(lambda: follow(a, b))
    b.viewChanged.connect(lambda: follow(b, a))
