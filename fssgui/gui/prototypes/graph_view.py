"""ScaleProtoSeg group graph view: prototypes by scale -> groups -> class (pyqtgraph).

API for the Prototypes tab::

    view = ProtoGraphView(pool, parent)         # the pool recomputes a class or a threshold
    view.set_result(explanation, image)        # a fssgui.prototypes.graph.PrototypeExplanation
    view.request(class_index=3)                # another class (at the slider's threshold), on the pool
    view.nodeClicked.connect(lambda node_id: ...)   # "p<index>", "g<n>" or "class"
    view.thresholdChanged.connect(lambda alpha: ...)
    view.resultShown.connect(lambda explanation: ...)

The left pane is a ``pg.GraphItem``: prototype nodes in four scale columns (colour = scale,
grey when no group uses them at the current threshold), the class's groups (red/green/blue)
and the class node; edge widths follow the weights, edges below the threshold are grey.
Clicking a node shows its activation map over the image (``ImageItem`` with a JET lookup table,
masked to the predicted class unless "mask" is unticked), its numbers, and for a prototype the
push's training patch when projection metadata exists. Under it: the per-scale maps, the
predicted class mask and (stage 2) the group-assignment map. The threshold slider re-thresholds
the group weights without renormalising and recomputes everything from the stored activations
(:func:`~fssgui.prototypes.graph.explain_class`: full-size upsampling and argmax) on the pool; a
newer request (slider move, class pick) discards an older one, so the view shows the latest.

Pixel inspector: a click on the map image picks the feature cell under it
(:class:`~fssgui.prototypes.inspection.CellGrid`), outlines the cell in white and the boxes of
the three nearest used prototypes in red / green / blue, and shows the numbers at the cell in the
pane below the maps (:class:`~fssgui.gui.prototypes.inspector.CellInspectorWidget`).
The cell stays selected across classes and thresholds (the numbers are recomputed).

Theme: the four pyqtgraph views (graph, map, per-scale maps, class / group / source) are
registered with :func:`~fssgui.gui.theme.follow_theme`, so their backgrounds and titles follow
the app's theme, also when it is switched at run time; the graph's own colours come from
:func:`graph_colours` of the plot colours and are set again on a switch (no rebuild: the view's
zoom stays). Node fills keep their hue (scale / group colours) made dark or light enough for 3:1
on the background, outlines, labels and above-threshold edges have text-level contrast, unused
nodes and below-threshold edges are a grey of exactly :data:`INACTIVE_CONTRAST` (visible, but
fainter than anything active). The map images (JET overlays, masks) and the boxes drawn on them
are the same in both themes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets
from PySide6.QtGui import QColor

from ...look import colormap_lut
from ...prototypes.graph import PrototypeExplanation, graph_layout
from ...prototypes.inspection import CellGrid, CellInspection, inspect_cell
from ...prototypes.overlays import CELL_COLOUR, GROUP_COLOURS, ExplanationImages, explanation_images
from ...prototypes.graph import explain_class
from ..theme import CURVE_CONTRAST, GRAPHICS_CONTRAST, PlotColours, follow_theme, plot_colours, readable_colour
from ..workers import LatestJob, WorkerPool
from .inspector import NEAREST_COLOURS, CellInspectorWidget

SCALE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189)]
NEGATIVE_EDGE_COLOUR = (200, 40, 40)
GRAPH_WIDTH = 10.0  # view units across the graph (layout x in [0, 1] is scaled by this)
GRAPH_HEIGHT = 6.0
INACTIVE_CONTRAST = 2.0  # unused nodes, edges below α: below the 3:1 of everything active
LABEL_FILL_ALPHA = 210  # node labels sit on a translucent patch of the background (edges cross them)


@dataclass(frozen=True)
class GraphColours:
    """The group graph's colours in one theme (see the module docstring)."""

    background: QColor
    label_text: QColor  # node labels
    label_fill: QColor  # the translucent patch behind a node label
    header_text: QColor  # the "Scale s / dilation d" headers
    node_outline: QColor  # used nodes
    inactive: QColor  # unused nodes' fill and outline, edges below α
    class_fill: QColor
    scale_fills: tuple[QColor, ...]
    group_fills: tuple[QColor, ...]
    edge: QColor  # positive weights above α
    negative_edge: QColor  # negative weights above α


def graph_colours(colours: PlotColours) -> GraphColours:
    """Graph colours on the plot background of ``colours``."""
    background = colours.background
    fill = QColor(background)
    fill.setAlpha(LABEL_FILL_ALPHA)
    edge = QColor(200, 202, 208) if colours.dark else QColor(40, 40, 40)
    return GraphColours(
        background=QColor(background),
        label_text=QColor(colours.text),
        label_fill=fill,
        header_text=QColor(colours.axis),
        node_outline=QColor(colours.text),
        inactive=readable_colour(background, background, INACTIVE_CONTRAST),
        class_fill=QColor(colours.text),
        scale_fills=tuple(readable_colour(QColor(*rgb), background, GRAPHICS_CONTRAST) for rgb in SCALE_COLOURS),
        group_fills=tuple(readable_colour(QColor(*rgb), background, GRAPHICS_CONTRAST) for rgb in GROUP_COLOURS),
        edge=readable_colour(edge, background, CURVE_CONTRAST),
        negative_edge=readable_colour(QColor(*NEGATIVE_EDGE_COLOUR), background, CURVE_CONTRAST),
    )


def _image_view(title: str = "") -> tuple[pg.GraphicsLayoutWidget, pg.ViewBox]:
    widget = pg.GraphicsLayoutWidget()
    if title:
        widget.addLabel(title, row=0, col=0, size="8pt")
    box = widget.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMouse=False)
    return widget, box


class ProtoGraphView(QtWidgets.QWidget):
    """Group graph + activation maps of one :class:`PrototypeExplanation` (see module doc)."""

    nodeClicked = QtCore.Signal(str)
    thresholdChanged = QtCore.Signal(float)  # a recomputed explanation at another α is shown
    resultShown = QtCore.Signal(object)  # PrototypeExplanation: a recomputed class or threshold is shown
    errorRaised = QtCore.Signal(str)
    cellInspected = QtCore.Signal(object)  # CellInspection
    cellClicked = QtCore.Signal(int, int)  # (i, j) picked by a click on the map (not by code)
    #: a prototype picked by the user: its graph node (click or ``select_node``), a row of the
    #: inspector's prototype table, or a nearest-prototype row (any class): global index
    prototypeSelected = QtCore.Signal(int)

    def __init__(self, pool: Optional[WorkerPool] = None, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.pool = pool if pool is not None else WorkerPool("prototype-maps", 1, self)
        self.job = LatestJob()  # the class / threshold being recomputed
        self._result: Optional[PrototypeExplanation] = None
        self._image: Optional[np.ndarray] = None
        self._images: Optional[ExplanationImages] = None  # what is drawn of the result (see set_result)
        self._node_ids: list[str] = []
        self._labels: list[pg.TextItem] = []
        self._header_labels: list[pg.TextItem] = []  # the scale headers among _labels
        self._adjacency = np.zeros((0, 2), dtype=int)
        self.graph_colours: GraphColours = graph_colours(plot_colours())
        self.current_node: Optional[str] = None
        self.selected_cell: Optional[tuple[int, int]] = None
        self.inspection: Optional[CellInspection] = None
        self._box_items: list[QtWidgets.QGraphicsItem] = []

        # --- graph pane
        self.graph_widget = pg.GraphicsLayoutWidget()
        self.graph_box = self.graph_widget.addViewBox(invertY=True)
        self.graph_box.setMouseEnabled(x=True, y=True)
        self.graph_item = pg.GraphItem()
        self.graph_box.addItem(self.graph_item)
        self.graph_item.scatter.sigClicked.connect(self._on_points_clicked)

        self.threshold_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 50)  # alpha = value / 100
        self.threshold_slider.setValue(5)
        self.threshold_slider.setToolTip("group weights below α are dropped (not renormalised)")
        self.threshold_label = QtWidgets.QLabel("α = 0.05")
        self.threshold_slider.valueChanged.connect(self._on_threshold_slider)
        self.mask_check = QtWidgets.QCheckBox("mask to predicted class")
        self.mask_check.setChecked(True)
        self.mask_check.toggled.connect(lambda _checked: self._render())
        self.summary_label = QtWidgets.QLabel("")
        self.summary_label.setWordWrap(True)

        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(QtWidgets.QLabel("threshold"))
        controls.addWidget(self.threshold_slider, 1)
        controls.addWidget(self.threshold_label)
        controls.addWidget(self.mask_check)
        left = QtWidgets.QVBoxLayout()
        left.addWidget(self.summary_label)
        left.addWidget(self.graph_widget, 1)
        left.addLayout(controls)

        # --- map pane
        self.node_label = QtWidgets.QLabel("click a node")
        self.node_label.setWordWrap(True)
        self.map_widget, self.map_box = _image_view()
        self.base_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setLookupTable(colormap_lut("jet"))
        self.heat_item.setOpacity(0.5)
        self.map_box.addItem(self.base_item)
        self.map_box.addItem(self.heat_item)
        self.map_widget.setToolTip("Click the image to inspect the feature cell under the pointer")
        self.map_widget.scene().sigMouseClicked.connect(self._on_map_clicked)

        self.scale_widget = pg.GraphicsLayoutWidget()
        self.scale_items: list[pg.ImageItem] = []
        for s in range(4):
            self.scale_widget.addLabel(f"Scale {s + 1}", row=0, col=s, size="8pt")
            box = self.scale_widget.addViewBox(row=1, col=s, lockAspect=True, invertY=True, enableMouse=False)
            item = pg.ImageItem(axisOrder="row-major")
            box.addItem(item)
            self.scale_items.append(item)

        self.extra_widget = pg.GraphicsLayoutWidget()
        self.extra_items: dict[str, pg.ImageItem] = {}
        self.extra_titles: dict[str, pg.LabelItem] = {}
        for col, name in enumerate(("class mask", "group assignment", "prototype source")):
            self.extra_titles[name] = self.extra_widget.addLabel(name, row=0, col=col, size="8pt")
            box = self.extra_widget.addViewBox(row=1, col=col, lockAspect=True, invertY=True, enableMouse=False)
            item = pg.ImageItem(axisOrder="row-major")
            box.addItem(item)
            self.extra_items[name] = item

        self.inspector = CellInspectorWidget()
        self.inspector.nodeRequested.connect(self._on_inspector_node)
        self.inspector.prototypeRequested.connect(self._on_inspector_prototype)

        # backgrounds and titles follow the app's theme; the graph recolours its nodes and edges
        follow_theme(self.graph_widget, self._apply_plot_colours)
        for widget in (self.map_widget, self.scale_widget, self.extra_widget):
            follow_theme(widget)

        # Three panes over the full width (twelve prototype columns need it): the graph; the
        # clicked node's map (click it to inspect a cell) beside the per-scale maps and class /
        # group / source; the pixel inspector's numbers.
        right = QtWidgets.QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.node_label)
        maps = QtWidgets.QHBoxLayout()
        maps.addWidget(self.map_widget, 3)
        small = QtWidgets.QVBoxLayout()
        small.addWidget(self.scale_widget, 1)
        small.addWidget(self.extra_widget, 1)
        maps.addLayout(small, 4)
        right.addLayout(maps, 1)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        left_widget, right_widget = QtWidgets.QWidget(), QtWidgets.QWidget()
        left_widget.setLayout(left)
        right_widget.setLayout(right)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(left_widget)
        splitter.addWidget(right_widget)
        splitter.addWidget(self.inspector)
        splitter.setSizes([430, 340, 500])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        layout.addWidget(splitter)

    # ------------------------------------------------------------------ public API
    @property
    def result(self) -> Optional[PrototypeExplanation]:
        return self._result

    def set_result(self, result: PrototypeExplanation, image: Optional[np.ndarray] = None,
                   images: Optional[ExplanationImages] = None) -> None:
        """Show an explanation. ``image`` (RGB uint8) defaults to the one it was computed on;
        ``images``: its overlays and node maps drawn on a worker (:func:`explanation_images`);
        without them they are drawn here, on the GUI thread."""
        self._result = result
        self._images = images
        self._image = result.image if image is None else np.ascontiguousarray(image)
        if self._image.shape[:2] != result.class_mask.shape:
            raise ValueError(f"image {self._image.shape[:2]} differs from the explanation's {result.class_mask.shape}")
        alpha = result.threshold or 0.0
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round(alpha * 100)))
        self.threshold_slider.blockSignals(False)
        self.threshold_slider.setEnabled(result.grouped)
        self.threshold_label.setText(f"α = {alpha:.2f}" if result.grouped else "stage 1: no groups")
        self._rebuild_graph()
        self.base_item.setImage(self._image, autoLevels=False, levels=(0, 255))
        self.current_node = self.current_node if self.current_node in self._node_ids else "class"
        self._refresh_maps()
        self._reinspect()

    def select_node(self, node_id: str, emit: bool = True) -> None:
        """Show ``node_id``'s activation map (as a click on it does)."""
        if self._result is None:
            return
        if node_id not in self._node_ids:
            raise KeyError(f"no node {node_id!r} in the graph")
        self.current_node = node_id
        self._show_node_map()
        if emit:
            self.nodeClicked.emit(node_id)
            if node_id.startswith("p"):
                self.prototypeSelected.emit(int(node_id[1:]))

    def shown_map(self) -> Optional[np.ndarray]:
        """The map currently shown over the image (image size, NaN outside the mask)."""
        return None if self.heat_item.image is None else np.asarray(self.heat_item.image)

    def inspect_pixel(self, x: float, y: float) -> Optional[CellInspection]:
        """Inspect the feature cell under image point ``(x, y)`` (column, row), as a click on the
        map does; None outside the image or without a result."""
        if self._result is None:
            return None
        cell = CellGrid.of(self._result.run).cell_at(x, y)
        return None if cell is None else self.inspect_cell(*cell)

    def inspect_cell(self, i: int, j: int) -> CellInspection:
        """Show the numbers at feature cell ``(i, j)`` and outline it and its nearest prototypes."""
        if self._result is None:
            raise RuntimeError("no explanation is shown")
        self.selected_cell = (int(i), int(j))
        self.inspection = inspect_cell(self._result, self.selected_cell)
        self.inspector.show_inspection(self.inspection)
        self._draw_boxes()
        self.cellInspected.emit(self.inspection)
        return self.inspection

    def clear_inspection(self) -> None:
        self.selected_cell, self.inspection = None, None
        self.inspector.clear()
        self._draw_boxes()

    def drawn_boxes(self) -> list[tuple[float, float, float, float]]:
        """(x, y, w, h) of the boxes drawn on the map: the cell first, then the nearest prototypes'."""
        return [tuple(item.rect().getRect()) for item in self._box_items
                if isinstance(item, QtWidgets.QGraphicsRectItem)]

    def node_position(self, node_id: str) -> QtCore.QPointF:
        """A node's position in graph-view coordinates (for tests and overlays)."""
        x, y = self._positions[self._node_ids.index(node_id)]
        return QtCore.QPointF(float(x), float(y))

    # ------------------------------------------------------------------- internals
    def _rebuild_graph(self) -> None:
        result = self._result
        layout = graph_layout(result)
        self._node_ids = result.node_ids()
        self._positions = np.array(
            [(layout[n][0] * GRAPH_WIDTH, layout[n][1] * GRAPH_HEIGHT) for n in self._node_ids], dtype=float
        )
        self._sizes = [16] * len(result.prototypes) + [22] * len(result.groups) + [26]
        index = {n: i for i, n in enumerate(self._node_ids)}
        self._adjacency = np.array([(index[e.source], index[e.target]) for e in result.edges],
                                   dtype=int).reshape(-1, 2)
        for label in self._labels:
            self.graph_box.removeItem(label)
        self._labels, self._header_labels = [], []
        head = result.run.head
        for s in range(head.num_scales):
            text = pg.TextItem(f"Scale {s + 1}\ndilation {head.scale_dilations[s]}", anchor=(0.5, 1))
            text.setPos((s + 0.5) / head.num_scales * GRAPH_WIDTH, 0.1 * GRAPH_HEIGHT - 0.35)
            self._add_label(text)
            self._header_labels.append(text)
        for node in result.prototypes:
            self._add_label(self._node_text(f"p{node.index}", node.node_id, (0.5, -0.2)))
        for g in result.groups:
            self._add_label(self._node_text(f"group {g.index + 1} (head {g.head_weight:.2f})", g.node_id, (0.5, -0.4)))
        self._add_label(self._node_text(result.class_name, "class", (0.5, -0.5)))
        self._style_graph()
        # explicit range: autoRange ignores the text items, and would clip the scale headers
        self.graph_box.setRange(xRange=(-0.4, GRAPH_WIDTH + 0.4),
                                yRange=(0.1 * GRAPH_HEIGHT - 1.3, 0.9 * GRAPH_HEIGHT + 0.8), padding=0.0)
        sparsity = result.sparsity()
        self.summary_label.setText(
            f"<b>{result.class_name}</b> (class {result.class_index}), {result.class_mask.mean():.1%} of pixels; "
            f"{sparsity['used_prototypes']}/{sparsity['prototypes']} prototypes used"
            + (f", per group {sparsity['prototypes_per_group']}" if result.grouped else " (stage 1)")
            + ". Edges are the class's weights, the same for every image; node maps are this image's."
            + f"<br><i>{result.projection_note}</i>"
        )

    def _node_text(self, text: str, node_id: str, anchor: tuple[float, float]) -> pg.TextItem:
        # a patch of the background behind the label keeps it readable where edges cross it
        item = pg.TextItem(text, anchor=anchor)
        item.setPos(self.node_position(node_id))
        return item

    def _apply_plot_colours(self, colours: PlotColours) -> None:
        """The theme changed (or the view was built): recolour the graph in place."""
        self.graph_colours = graph_colours(colours)
        if self._result is not None:
            self._style_graph()

    def _style_graph(self) -> None:
        """Set the nodes', edges' and labels' colours (:attr:`graph_colours`) on the built graph."""
        result, colours = self._result, self.graph_colours
        brushes, outlines = [], []
        for node in result.prototypes:
            fill = colours.scale_fills[node.scale % len(colours.scale_fills)] if node.used else colours.inactive
            brushes.append(pg.mkBrush(fill))
            outlines.append(pg.mkPen(colours.node_outline if node.used else colours.inactive))
        for g in result.groups:
            brushes.append(pg.mkBrush(colours.group_fills[g.index % len(colours.group_fills)]))
            outlines.append(pg.mkPen(colours.node_outline))
        brushes.append(pg.mkBrush(colours.class_fill))
        outlines.append(pg.mkPen(colours.node_outline))

        pens = np.empty(len(result.edges), dtype=[("red", np.ubyte), ("green", np.ubyte), ("blue", np.ubyte),
                                                   ("alpha", np.ubyte), ("width", float)])
        max_weight = max([abs(e.weight) for e in result.edges] + [1e-6])
        for i, e in enumerate(result.edges):
            if e.active:
                colour = colours.negative_edge if e.weight < 0 else colours.edge
                pens[i] = (*colour.getRgb()[:3], 255, 1.0 + 6.0 * abs(e.weight) / max_weight)
            else:
                pens[i] = (*colours.inactive.getRgb()[:3], 255, 1.0)
        self.graph_item.setData(pos=self._positions, adj=self._adjacency, pen=pens, size=self._sizes, symbol="o",
                                symbolBrush=brushes, symbolPen=outlines,
                                data=np.array(self._node_ids, dtype=object), pxMode=True)
        headers = {id(header) for header in self._header_labels}
        for label in self._labels:
            if id(label) in headers:
                label.setColor(colours.header_text)
                label.fill = pg.mkBrush(None)
            else:
                label.setColor(colours.label_text)
                label.fill = pg.mkBrush(colours.label_fill)
            label.update()

    def _add_label(self, item: pg.TextItem) -> None:
        self.graph_box.addItem(item)
        self._labels.append(item)

    def _mask(self) -> Optional[np.ndarray]:
        if self.mask_check.isChecked() and self._result is not None and self._result.class_mask.any():
            return self._result.class_mask
        return None

    def _drawn(self) -> ExplanationImages:
        """The images of the shown result for the mask setting (drawn here when none were given)."""
        masked = self._mask() is not None
        if self._images is None or self._images.masked != masked:
            self._images = explanation_images(self._result, masked=masked)
        return self._images

    def _render(self) -> None:
        """The mask setting changed: draw the images again on the pool, then show them."""
        result = self._result
        if result is None:
            return
        masked = self.mask_check.isChecked()
        handle = self.job.start(self.pool.submit(lambda ctx: explanation_images(result, masked),
                                                 description="draw the prototype maps"))
        handle.finished.connect(lambda images: result is self._result and self._show_images(images))

    def _show_images(self, images: ExplanationImages) -> None:
        self._images = images
        self._refresh_maps()

    def _refresh_maps(self) -> None:
        result = self._result
        if result is None:
            return
        images = self._drawn()
        for s, item in enumerate(self.scale_items):
            if s < len(images.scales):
                item.setImage(images.scales[s], autoLevels=False, levels=(0, 255))
            else:
                item.clear()
        self.extra_items["class mask"].setImage(images.class_mask, autoLevels=False, levels=(0, 255))
        if images.assignment is not None:
            self.extra_items["group assignment"].setImage(images.assignment, autoLevels=False, levels=(0, 255))
        else:
            self.extra_items["group assignment"].clear()
        if self.current_node is not None:
            self._show_node_map()

    def _show_node_map(self) -> None:
        node_id = self.current_node
        self.heat_item.setImage(self._drawn().node_maps[node_id], autoLevels=False, levels=(0.0, 1.0))
        self.map_box.autoRange(padding=0.0)
        self.node_label.setText(self._describe(node_id))
        self._show_source(node_id)

    def _describe(self, node_id: str) -> str:
        result = self._result
        if node_id.startswith("p"):
            node = next(p for p in result.prototypes if p.node_id == node_id)
            weights = ""
            if result.group_weights is not None:
                weights = ", group weights " + " / ".join(f"{w:.3f}" for w in result.group_weights[:, node.column])
            source = ""
            if node.projection is not None:
                pr = node.projection
                source = f"<br>push source: train image {pr.image_id or '#' + str(pr.image_index)}, box h{pr.box[:2]} w{pr.box[2:]}"
            return (f"<b>prototype {node.index}</b>, scale {node.scale + 1} (dilation {node.dilation}); "
                    f"activation peak {node.peak:.2f}, mean {node.mean:.2f} (0..9.21){weights}"
                    + ("" if node.used else " — <i>unused at this threshold</i>") + source)
        if node_id.startswith("g"):
            g = next(g for g in result.groups if g.node_id == node_id)
            return (f"<b>group {g.index + 1}</b>: exp of the weighted sum of {g.num_prototypes} prototypes; "
                    f"peak {g.peak:.4g}, mean {g.mean:.4g} (1..1e4); weight to the class {g.head_weight:.3f}")
        score = result.class_score
        return (f"<b>{result.class_name}</b>: mean logit in the mask {score['mean_logit_in_mask']:.3f}, "
                f"mean probability {score['mean_probability_in_mask']:.3f}")

    def _show_source(self, node_id: str) -> None:
        item = self.extra_items["prototype source"]
        title = self.extra_titles["prototype source"]
        projection = None
        if node_id.startswith("p"):
            projection = next(p for p in self._result.prototypes if p.node_id == node_id).projection
        path = None
        if projection is not None:
            path = projection.patch_path or projection.original_with_box_path
        if path is None:
            item.clear()
            title.setText("source: " + ("none stored" if projection is None else "no image file"))
            return
        from ...imaging import load_rgb

        item.setImage(load_rgb(path), autoLevels=False, levels=(0, 255))
        title.setText(f"source: {path.name}")

    def _reinspect(self) -> None:
        """Keep the selected cell across a class or threshold change (new numbers)."""
        if self.selected_cell is None:
            return
        grid = self._result.run.grid_hw
        if self.selected_cell[0] < grid[0] and self.selected_cell[1] < grid[1]:
            self.inspection = inspect_cell(self._result, self.selected_cell)
            self.inspector.show_inspection(self.inspection)
            self._draw_boxes()
            self.cellInspected.emit(self.inspection)
        else:
            self.clear_inspection()

    def _draw_boxes(self) -> None:
        for item in self._box_items:
            self.map_box.removeItem(item)
        self._box_items = []
        if self.inspection is None:
            return

        def rect(box, colour, width: float, style=QtCore.Qt.PenStyle.SolidLine, z: float = 10):
            y0, y1, x0, x1 = box
            item = QtWidgets.QGraphicsRectItem(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
            pen = pg.mkPen(colour, width=width, style=style)
            pen.setCosmetic(True)
            item.setPen(pen)
            item.setZValue(z)
            self.map_box.addItem(item)
            self._box_items.append(item)

        rect(self.inspection.box, CELL_COLOUR, 3, z=12)
        rect(self.inspection.box, (0, 0, 0), 1, QtCore.Qt.PenStyle.DotLine, z=13)
        for n in self.inspection.nearest:
            rect(n.box, NEAREST_COLOURS[(n.rank - 1) % 3], 2, QtCore.Qt.PenStyle.DashLine, z=11)

    def _on_map_clicked(self, event) -> None:
        if self._result is None or event.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        scene_pos = event.scenePos()
        if not self.map_box.sceneBoundingRect().contains(scene_pos):
            return
        point = self.map_box.mapSceneToView(scene_pos)
        inspection = self.inspect_pixel(point.x(), point.y())
        if inspection is not None:
            event.accept()
            self.cellClicked.emit(*inspection.cell)

    def _on_inspector_node(self, node_id: str) -> None:
        if node_id in self._node_ids:
            self.select_node(node_id)

    def _on_inspector_prototype(self, index: int) -> None:
        """A nearest-prototype row: the node when it is the shown class's, else only the detail."""
        if f"p{index}" in self._node_ids:
            self.select_node(f"p{index}")
        else:
            self.prototypeSelected.emit(int(index))

    def _on_points_clicked(self, _scatter, points, _event=None) -> None:
        if len(points):
            self.select_node(str(points[0].data()))

    def _on_threshold_slider(self, value: int) -> None:
        alpha = value / 100.0
        self.threshold_label.setText(f"α = {alpha:.2f}")
        if self._result is not None and self._result.grouped:
            self.request(threshold=alpha if alpha > 0 else None)

    def request(self, class_index: Optional[int] = None, threshold: float | None | str = "slider") -> None:
        """Recompute the graph of ``class_index`` (default: the shown class) at ``threshold``
        (default: the slider's α) on the pool; shown when it arrives unless a newer request came."""
        if self._result is None:
            return
        run = self._result.run
        class_index = self._result.class_index if class_index is None else int(class_index)
        if threshold == "slider":
            alpha = self.threshold_slider.value() / 100.0
            threshold = (alpha if alpha > 0 else None) if self._result.grouped else self._result.threshold
        masked = self.mask_check.isChecked()

        def recompute(ctx):
            explanation = explain_class(run, class_index, threshold)
            ctx.check()
            return explanation, explanation_images(explanation, masked)

        handle = self.job.start(self.pool.submit(recompute, description=f"prototype graph of class {class_index}"))
        handle.finished.connect(lambda done: self._show_recomputed(*done))
        handle.failed.connect(lambda message, _trace: self.errorRaised.emit(f"prototype graph failed: {message}"))

    def _show_recomputed(self, result: PrototypeExplanation, images: ExplanationImages) -> None:
        threshold_changed = self._result is None or result.threshold != self._result.threshold
        self.set_result(result, self._image if self._image is not None and
                        self._image.shape[:2] == result.class_mask.shape else None, images)
        self.resultShown.emit(result)
        if threshold_changed:
            self.thresholdChanged.emit(result.threshold or 0.0)
