"""Editing the masks: the tool (brush, eraser, rectangle, polygon, pan), the brush and eraser sizes,
and which canvas Ctrl+Z acts on (the one edited or focused last: the query's R or the selected
support's mask). The Editing toolbar's size fields live here; its tool buttons are actions
(:mod:`.window_actions`)."""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel, QSpinBox, QToolBar

from ..editing import EditableMask
from .canvas import TOOL_BRUSH, TOOL_ERASER, TOOL_PAN, TOOL_POLYGON, TOOL_RECTANGLE, ImageCanvas
from .query_panel import QueryPanel
from .support_panel import SupportPanel

#: canvas tool -> its action id
TOOL_ACTIONS = {TOOL_BRUSH: "tool_brush", TOOL_ERASER: "tool_eraser", TOOL_RECTANGLE: "tool_rectangle",
                TOOL_POLYGON: "tool_polygon", TOOL_PAN: "tool_pan"}
TOOL_HINTS = {TOOL_BRUSH: "left drag paints, right drag erases", TOOL_ERASER: "left drag erases",
              TOOL_RECTANGLE: "left drag adds a rectangle, right drag removes one",
              TOOL_POLYGON: "click the vertices (right clicks remove); double click or Enter closes, Esc cancels",
              TOOL_PAN: "drag to pan; wheel zooms"}


class EditTools(QObject):
    """The editing state shared by the query and support canvases (see the module docstring)."""

    toolChanged = Signal(str)
    message = Signal(str)  # "Nothing to undo", for the status bar

    def __init__(self, query: QueryPanel, supports: SupportPanel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.query, self.supports = query, supports
        self.tool = TOOL_BRUSH
        self.last_canvas: ImageCanvas = query.canvas
        self.brush_spin = QSpinBox()
        self.brush_spin.setRange(1, 400)
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush diameter in image pixels ([ and ], Ctrl+wheel)")
        self.eraser_spin = QSpinBox()
        self.eraser_spin.setRange(1, 400)
        self.eraser_spin.setSuffix(" px")
        self.eraser_spin.setToolTip("Eraser diameter in image pixels (its own size)")
        self.hint = QLabel("")
        self.brush_spin.valueChanged.connect(lambda v: self._set_size(TOOL_BRUSH, v))
        self.eraser_spin.valueChanged.connect(lambda v: self._set_size(TOOL_ERASER, v))
        for canvas in self.canvases:
            canvas.brushSizeChanged.connect(self._on_canvas_brush_size)
        query.canvas.strokeFinished.connect(lambda _kind: self._edited(query.canvas))
        supports.maskEdited.connect(lambda _index: self._edited(supports.canvas))
        QApplication.instance().focusChanged.connect(self._on_focus_changed)

    @property
    def canvases(self) -> tuple[ImageCanvas, ImageCanvas]:
        return self.query.canvas, self.supports.canvas

    def add_size_fields(self, bar: QToolBar) -> None:
        """The brush and eraser sizes and the tool hint, on the Editing toolbar."""
        bar.addWidget(QLabel("  brush "))
        bar.addWidget(self.brush_spin)
        bar.addWidget(QLabel("  eraser "))
        bar.addWidget(self.eraser_spin)

    # ------------------------------------------------------------------ tool and sizes
    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.apply_to_canvases()
        self.hint.setText(f"   {TOOL_HINTS[tool]} · wheel zooms · Space+drag pans")
        self.toolChanged.emit(tool)

    def apply_to_canvases(self) -> None:
        for canvas in self.canvases:
            canvas.set_tool(self.tool)
            canvas.set_brush_size(self.brush_spin.value(), TOOL_BRUSH)
            canvas.set_brush_size(self.eraser_spin.value(), TOOL_ERASER)

    def _set_size(self, tool: str, size: int) -> None:
        for canvas in self.canvases:
            canvas.set_brush_size(size, tool)

    def _on_canvas_brush_size(self, tool: str, size: int) -> None:
        spin = self.brush_spin if tool == TOOL_BRUSH else self.eraser_spin
        if spin.value() != size:
            spin.setValue(size)

    def step_brush_size(self, delta: int) -> None:
        self.active_canvas().step_brush_size(delta)

    def set_mask_opacity(self, value: int) -> None:
        for canvas in self.canvases:
            canvas.set_layer_opacity("mask", value / 100.0)

    # ------------------------------------------------------------------ which mask
    def _on_focus_changed(self, _old, new) -> None:
        for canvas in self.canvases:
            if new is canvas or (new is not None and canvas.isAncestorOf(new)):
                self.last_canvas = canvas

    def _edited(self, canvas: ImageCanvas) -> None:
        self.last_canvas = canvas

    def active_canvas(self) -> ImageCanvas:
        return self.last_canvas

    def editable_masks(self) -> dict[str, Optional[EditableMask]]:
        """The masks under edit by their names in the autosave ("region", "support_0", ...)."""
        masks: dict[str, Optional[EditableMask]] = {"region": self.query.region}
        masks.update({f"support_{i}": item.mask for i, item in enumerate(self.supports.items)})
        return masks

    def active_mask_name(self) -> str:
        """The mask that Ctrl+Z acts on now."""
        if self.last_canvas is self.query.canvas:
            return "region"
        index = self.supports.current_index()
        return f"support_{index}" if index >= 0 else ""

    def set_active_mask(self, name: str) -> None:
        """Make mask ``name`` ("region", "support_2") the one Ctrl+Z acts on."""
        if name == "region":
            self.last_canvas = self.query.canvas
        elif name.startswith("support_"):
            self.supports.select(int(name.split("_")[1]))
            self.last_canvas = self.supports.canvas

    # ------------------------------------------------------------------ undo, redo, clear
    def undo(self) -> None:
        self._history_step("undo", "Nothing to undo")

    def redo(self) -> None:
        self._history_step("redo", "Nothing to redo")

    def _history_step(self, which: str, nothing: str) -> None:
        canvas = self.active_canvas()
        if canvas.mask is None or getattr(canvas.mask, which)() is None:
            self.message.emit(nothing)
            return
        self._after_mask_change(canvas)

    def clear_active_mask(self) -> None:
        canvas = self.active_canvas()
        if canvas.mask is not None and canvas.mask.clear() is not None:
            self._after_mask_change(canvas)

    def _after_mask_change(self, canvas: ImageCanvas) -> None:
        if canvas is self.query.canvas:
            self.query.region_changed()
        else:
            self.supports.mask_changed(self.supports.current_index())

    # ------------------------------------------------------------------ view
    def fit_all(self, extra: tuple[ImageCanvas, ...] = ()) -> None:
        for canvas in self.canvases + tuple(extra):
            canvas.fit_to_view()

    def zoom(self, factor: float) -> None:
        self.active_canvas().zoom_by(factor)
