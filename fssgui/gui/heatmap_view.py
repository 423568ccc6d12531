"""The heat-map viewer: per-support attribution maps, levels, and side-by-side comparison.

Display choices (colormap, opacity, percentile clip, overlay / attribution / image mode) are
made here, at display time; the maps themselves stay as the explainer returned them. They start
from the defaults of :mod:`fssgui.look`, whose colour scale rule (:func:`fssgui.look.map_scale`)
and layers (:func:`fssgui.look.heat_rgba`, :func:`fssgui.look.outline_rgba`) the exported figures
use too, so an export looks like the screen.

Sign convention: a signed explanation (``ExplanationResult.signed``) is drawn with a diverging
colormap centred on its zero, with symmetric limits. AffEx Signed returns min-max scaled maps
and says where "no affinity" landed in ``params["zero_level"]``: that value is the centre (red =
matched foreground, blue = matched background). Other signed maps are centred on 0.
"""
from __future__ import annotations

import html
from typing import Optional

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .. import look
from ..imaging import resize_map
from ..look import COLORMAPS, Scale, colormap_lut, heat_rgba, outline_rgba
from .canvas import ImageCanvas, link_views, rgb_to_qimage
from ..pipeline import ExplanationResult, region_title
from .theme import PlotColours, follow_theme

MODE_OVERLAY = "overlay"
MODE_ATTRIBUTION = "attribution"
MODE_IMAGE = "image"
MODES = (MODE_OVERLAY, MODE_ATTRIBUTION, MODE_IMAGE)


# --------------------------------------------------------------------------------- display
class DisplaySettings(QObject):
    """Shared display choices; every view listens to ``changed``."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.colormap = look.UNSIGNED_COLORMAP
        self.signed_colormap = look.SIGNED_COLORMAP
        self.opacity = look.HEAT_OPACITY
        self.clip_percent = look.CLIP_PERCENT
        self.mode = MODE_OVERLAY
        self.shared_scale = True
        self.show_mask_outline = True

    def update(self, **values) -> None:
        changed = False
        for key, value in values.items():
            if getattr(self, key) != value:
                setattr(self, key, value)
                changed = True
        if changed:
            self.changed.emit()


def signed_center(result: ExplanationResult) -> float:
    return float(result.params.get("zero_level", 0.0)) if result.signed else 0.0


def compute_scale(maps: list[np.ndarray], signed: bool, center: float, settings: DisplaySettings) -> Scale:
    """One colour scale for all ``maps`` (all shots), by :func:`fssgui.look.map_scale`'s rule with
    the display settings' colormaps and clip."""
    return look.map_scale(maps, signed, center, settings.clip_percent, settings.colormap, settings.signed_colormap)


# -------------------------------------------------------------------------------- colorbar
class Colorbar(QWidget):
    """A vertical colour bar with its limits (and the zero of a signed map)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scale: Optional[Scale] = None
        self.title = ""
        self.setMinimumWidth(92)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)

    def set_scale(self, scale: Optional[Scale], title: str = "") -> None:
        self.scale, self.title = scale, title
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        if self.scale is None:
            painter.end()
            return
        metrics = painter.fontMetrics()
        top, bottom = metrics.height() * 2 + 6, self.height() - metrics.height() - 6
        bar = QRectF(8, top, 18, max(10, bottom - top))
        lut = colormap_lut(self.scale.colormap)
        gradient = QLinearGradient(bar.bottomLeft(), bar.topLeft())
        for i in range(0, 256, 8):
            r, g, b = (int(v) for v in lut[i])
            gradient.setColorAt(i / 255.0, QColor(r, g, b))
        r, g, b = (int(v) for v in lut[255])
        gradient.setColorAt(1.0, QColor(r, g, b))
        painter.fillRect(bar, gradient)
        painter.setPen(self.palette().text().color())
        painter.drawRect(bar)
        painter.drawText(QRectF(2, 2, self.width() - 4, metrics.height() * 2 + 2),
                         Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, self.title)
        span = self.scale.vmax - self.scale.vmin or 1.0

        def tick(value: float, text: str) -> None:
            y = bar.bottom() - (value - self.scale.vmin) / span * bar.height()
            painter.drawLine(QPointF(bar.right(), y), QPointF(bar.right() + 4, y))
            painter.drawText(QPointF(bar.right() + 6, y + metrics.ascent() / 2 - 1), text)

        tick(self.scale.vmax, _fmt(self.scale.vmax))
        tick(self.scale.vmin, _fmt(self.scale.vmin))
        if self.scale.signed:
            # AffEx Signed is min-max scaled: its zero ("no affinity") is params["zero_level"]
            tick(self.scale.center, "0" if self.scale.center == 0 else f"{_fmt(self.scale.center)} = 0")
        painter.end()


def _short_label(result: ExplanationResult) -> str:
    """'#2 affex' from '#2 affex · R = prediction · model · supports v1' (the full label is the tooltip)."""
    label = result.label or result.method
    return label.split(" · ")[0]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ------------------------------------------------------------------------------------ tiles
class HeatTile(QWidget):
    """One support: its image, the heat map on top, its mask outline, a title line."""

    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.canvas = ImageCanvas(self, editable=False)
        self.canvas.setMinimumSize(160, 140)
        layout.addWidget(self.canvas)
        self.values: Optional[np.ndarray] = None
        self._key: Optional[tuple] = None  # what the layers show now (skip work when unchanged)
        self.canvas.hovered.connect(self._on_hover)

    def show_map(self, image: np.ndarray, values: np.ndarray, mask: Optional[np.ndarray], scale: Scale,
                 settings: DisplaySettings, title: str, subtitle: str = "") -> None:
        opacity = settings.opacity if settings.mode == MODE_OVERLAY else 1.0
        key = (id(image), id(values), id(mask), scale.colormap, scale.vmin, scale.vmax, settings.mode,
               settings.show_mask_outline)
        if key == self._key:
            # Only the opacity (or nothing) changed: no colormap work, just the layer's opacity.
            self.canvas.set_layer_opacity("heat", opacity)
            self.canvas.set_title(title, subtitle)
            return
        self._key = key
        self._key_refs = (image, values, mask)  # keeps the ids in the key from being reused
        values = resize_map(values, image.shape[:2])
        self.values = values
        first = not self.canvas.has_image() or self.canvas.image_size != image.shape[:2]
        shown_image = image if settings.mode != MODE_ATTRIBUTION else np.zeros_like(image)
        self.canvas.set_image(shown_image, fit=first)
        if settings.mode == MODE_IMAGE:
            self.canvas.remove_layer("heat")
        else:
            self.canvas.set_layer("heat", heat_rgba(values, scale, fade_near_zero=settings.mode == MODE_OVERLAY),
                                  z=2, opacity=opacity)
        if mask is not None and settings.show_mask_outline:
            self.canvas.set_layer("outline", outline_rgba(mask, look.MAP_MASK_OUTLINE_COLOUR), z=3,
                                  opacity=look.MAP_MASK_OUTLINE_OPACITY)
        else:
            self.canvas.remove_layer("outline")
        self.canvas.set_title(title, subtitle)

    def _on_hover(self, x: int, y: int) -> None:
        if self.values is None or x < 0:
            self.hovered.emit("")
            return
        self.hovered.emit(f"x {x}, y {y}: attribution {self.values[y, x]:.4g}")


def _inside_share(values: np.ndarray, mask: Optional[np.ndarray], center: float) -> Optional[float]:
    """Share of the (positive, above-zero) attribution mass that falls inside the support mask."""
    if mask is None:
        return None
    v = np.clip(resize_map(values, mask.shape) - center, 0, None)
    total = float(v.sum())
    return float(v[mask].sum() / total) if total > 0 else None


def tile_title(index: int, values: np.ndarray, mask: Optional[np.ndarray], center: float) -> tuple[str, str]:
    share = _inside_share(values, mask, center)
    sub = f"max {float(np.nanmax(values)):.3g}"
    if share is not None:
        sub += f" · {share * 100:.0f}% in mask"
    return f"Support {index + 1}", sub


class HeatmapGrid(QWidget):
    """Tiles for all K supports in a grid (columns adapt to K)."""

    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self.tiles: list[HeatTile] = []

    def ensure_tiles(self, count: int, columns: Optional[int] = None) -> list[HeatTile]:
        if count != len(self.tiles):
            for tile in self.tiles:
                self._layout.removeWidget(tile)
                tile.hide()
                tile.deleteLater()
            self.tiles = []
            columns = columns or (1 if count <= 1 else 2 if count <= 4 else 3)
            for i in range(count):
                tile = HeatTile(self)
                tile.hovered.connect(self.hovered)
                self._layout.addWidget(tile, i // columns, i % columns)
                self.tiles.append(tile)
        return self.tiles


# ------------------------------------------------------------------------------ controls
class DisplayControls(QWidget):
    """Colormap, opacity, clip, mode and scale controls bound to a :class:`DisplaySettings`."""

    def __init__(self, settings: DisplaySettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setHorizontalSpacing(6)
        layout.setVerticalSpacing(2)
        self.mode = QComboBox()
        self.mode.addItems(["overlay", "attribution only", "image only"])
        self.mode.setToolTip("Overlay the map on the support image, show the map alone, or the image alone")
        self.colormap = QComboBox()
        self.colormap.addItems([c for c in COLORMAPS if c != "diverging"])
        self.colormap.setCurrentText(settings.colormap)
        self.colormap.setToolTip("Colormap of unsigned maps (signed maps use the diverging map)")
        self.signed_colormap = QComboBox()
        self.signed_colormap.addItems(list(COLORMAPS))
        self.signed_colormap.setCurrentText(settings.signed_colormap)
        self.signed_colormap.setToolTip("Colormap of signed maps (centred on zero, symmetric limits)")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(settings.opacity * 100))
        self.opacity.setFixedWidth(110)
        self.opacity.setToolTip("Heat-map opacity over the support image")
        self.clip = QDoubleSpinBox()
        self.clip.setRange(0.0, 20.0)
        self.clip.setSingleStep(0.5)
        self.clip.setSuffix(" %")
        self.clip.setValue(settings.clip_percent)
        self.clip.setToolTip("Percentile clipping at each end of the colour scale")
        self.shared = QCheckBox("one scale for all shots")
        self.shared.setChecked(settings.shared_scale)
        self.outline = QCheckBox("mask outline")
        self.outline.setChecked(settings.show_mask_outline)
        placed = (
            (0, 0, "Show", self.mode), (0, 2, "Colormap", self.colormap), (0, 4, "Signed maps", self.signed_colormap),
            (1, 0, "Opacity", self.opacity), (1, 2, "Clip", self.clip),
        )
        for row, column, label, widget in placed:
            layout.addWidget(QLabel(label), row, column)
            layout.addWidget(widget, row, column + 1)
        layout.addWidget(self.shared, 1, 4, 1, 2)
        layout.addWidget(self.outline, 1, 6)
        layout.setColumnStretch(7, 1)
        self.mode.currentIndexChanged.connect(lambda i: settings.update(mode=MODES[i]))
        self.colormap.currentTextChanged.connect(lambda t: settings.update(colormap=t))
        self.signed_colormap.currentTextChanged.connect(lambda t: settings.update(signed_colormap=t))
        self.opacity.valueChanged.connect(lambda v: settings.update(opacity=v / 100.0))
        self.clip.valueChanged.connect(lambda v: settings.update(clip_percent=float(v)))
        self.shared.toggled.connect(lambda v: settings.update(shared_scale=bool(v)))
        self.outline.toggled.connect(lambda v: settings.update(show_mask_outline=bool(v)))


# ----------------------------------------------------------------------------- main viewer
class HeatmapViewer(QWidget):
    """Per-support attribution of the current explanation, with colour bar and title."""

    hovered = Signal(str)

    def __init__(self, settings: DisplaySettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.result: Optional[ExplanationResult] = None
        self.images: list[np.ndarray] = []
        self.masks: list[Optional[np.ndarray]] = []
        self.scale: Optional[Scale] = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel("No explanation yet: brush a region R on the query (or pick R = prediction) and press Explain.")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.title)
        body = QHBoxLayout()
        self.grid = HeatmapGrid(self)
        self.grid.hovered.connect(self.hovered)
        self.colorbar = Colorbar(self)
        body.addWidget(self.grid, 1)
        body.addWidget(self.colorbar)
        layout.addLayout(body, 1)
        self._stale_reason = ""
        settings.changed.connect(self.refresh)

    def show_result(self, result: ExplanationResult, images: list[np.ndarray], masks: list[Optional[np.ndarray]]) -> None:
        self.result, self.images, self.masks = result, list(images), list(masks)
        self._stale_reason = ""
        self.refresh()

    def set_stale(self, reason: str) -> None:
        if self._stale_reason != reason:
            self._stale_reason = reason
            self._update_title()

    def clear(self) -> None:
        self.result = None
        self.grid.ensure_tiles(0)
        self.colorbar.set_scale(None)
        self.title.setText("No explanation yet.")

    def refresh(self) -> None:
        result = self.result
        if result is None:
            return
        center = signed_center(result)
        tiles = self.grid.ensure_tiles(len(result.maps))
        if self.settings.shared_scale:
            scales = [compute_scale(result.maps, result.signed, center, self.settings)] * len(result.maps)
        else:
            scales = [compute_scale([m], result.signed, center, self.settings) for m in result.maps]
        for i, (tile, values) in enumerate(zip(tiles, result.maps)):
            image = self.images[i] if i < len(self.images) else np.zeros(values.shape + (3,), np.uint8)
            mask = self.masks[i] if i < len(self.masks) else None
            title, subtitle = tile_title(i, values, mask, center)
            tile.show_map(image, values, mask, scales[i], self.settings, title, subtitle)
        self.scale = scales[0] if scales else None
        label = "signed attribution" if result.signed else "attribution"
        if not self.settings.shared_scale:
            label += " (shot 1's scale)"
        self.colorbar.set_scale(self.scale, label)
        self._update_title()

    def _update_title(self) -> None:
        result = self.result
        if result is None:
            return
        region_px = int(np.count_nonzero(result.region))
        # the label repeats R and the model ("#3 affex · R = prediction · model · supports v1"):
        # show its head in bold and every detail once
        supports = next((part for part in (result.label or "").split(" · ") if part.startswith("supports ")), "")
        text = (
            f"<b>{_short_label(result)}</b> &nbsp;·&nbsp; R = <b>{region_title(result.region_source)}</b> "
            f"({region_px:,} px) &nbsp;·&nbsp; {result.model} on {result.device}"
            + (f" &nbsp;·&nbsp; {supports}" if supports else "") + f" &nbsp;·&nbsp; {result.seconds:.1f} s"
            + (f" (levels of {html.escape(result.levels_from)})" if result.levels_from else "")
        )
        if result.signed:
            center = signed_center(result)
            zero = "0" if center == 0 else f"{_fmt(center)}"
            text += (f"<br><span style='color:#e0503c'>red</span> = matched foreground, "
                     f"<span style='color:#4a90e2'>blue</span> = matched background; "
                     f"no affinity = {zero} (transparent over the image)")
        text += "<br>“% in mask”: share of the positive attribution inside the support mask"
        if self._stale_reason:
            text += f"<br><span style='color:#d9822b'>⚠ {self._stale_reason}</span>"
        self.title.setText(text)


# --------------------------------------------------------------------------------- levels
class LevelView(QWidget):
    """Feature-ablation weights per level (bar chart) and the per-level maps of one support."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: Optional[ExplanationResult] = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.info = QLabel("Per-level maps and weights appear here for AffEx explanations.")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        splitter = QSplitter(Qt.Orientation.Vertical)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setLabel("left", "level weight")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setLabel("bottom", "matching level")
        self.plot.setMinimumHeight(150)
        self.bars: Optional[pg.BarGraphItem] = None
        self.plot_colours: PlotColours = follow_theme(self.plot, self._apply_plot_colours)
        splitter.addWidget(self.plot)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Support"))
        self.shot = QComboBox()
        row.addWidget(self.shot)
        row.addWidget(QLabel("each level on its own scale; bars = weight in the aggregation"))
        row.addStretch(1)
        lower_layout.addLayout(row)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.maps_widget = QWidget()
        self.maps_layout = QGridLayout(self.maps_widget)
        self.maps_layout.setSpacing(6)
        self.scroll.setWidget(self.maps_widget)
        lower_layout.addWidget(self.scroll)
        splitter.addWidget(lower)
        splitter.setSizes([220, 500])
        layout.addWidget(splitter, 1)
        self.shot.currentIndexChanged.connect(self._show_maps)
        self._labels: list[QLabel] = []
        self._maps_pending = False  # the maps are drawn when the tab is shown

    def show_result(self, result: ExplanationResult) -> None:
        self.result = result
        self.plot.clear()
        self.bars = None
        if result.level_weights is None and result.level_maps is None:
            self.info.setText(f"{result.method} has no per-level maps (only AffEx explanations have them).")
            self._clear_maps()
            self.shot.clear()
            return
        levels = len(result.level_weights) if result.level_weights is not None else result.level_maps.shape[0]
        names = result.level_names or [f"level {i}" for i in range(levels)]
        if result.level_weights is not None:
            weights = np.asarray(result.level_weights, dtype=float)
            self.bars = pg.BarGraphItem(x=np.arange(levels), height=weights, width=0.7,
                                        brush=pg.mkBrush(self.plot_colours.series_colour(0)), pen=None)
            self.plot.addItem(self.bars)
            axis = self.plot.getAxis("bottom")
            axis.setTicks([[(i, str(i)) for i in range(levels)]])
            top = int(np.argmax(weights))
            self.info.setText(
                f"{result.method}: {levels} matching levels; the largest weight is level {top} "
                f"({names[top]}, {weights[top]:.3f}). Weights come from feature ablation (sum 1)."
            )
        else:
            self.info.setText(f"{result.method}: {levels} levels (no weights)")
        self.shot.blockSignals(True)
        self.shot.clear()
        self.shot.addItems([f"Support {i + 1}" for i in range(len(result.maps))])
        self.shot.blockSignals(False)
        self._show_maps()

    def _apply_plot_colours(self, colours: PlotColours) -> None:
        self.plot_colours = colours
        if self.bars is not None:
            self.bars.setOpts(brush=pg.mkBrush(colours.series_colour(0)), pen=None)

    def _clear_maps(self) -> None:
        for label in self._labels:
            self.maps_layout.removeWidget(label)
            label.hide()
            label.deleteLater()
        self._labels = []

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self._maps_pending:
            self._show_maps()

    def _show_maps(self) -> None:
        self._maps_pending = not self.isVisible()  # a hidden tab draws its maps when it is shown
        if self._maps_pending:
            return
        self._clear_maps()
        result = self.result
        if result is None or result.level_maps is None:
            return
        shot = max(0, self.shot.currentIndex())
        maps = result.level_maps[:, shot]
        names = result.level_names or [f"level {i}" for i in range(len(maps))]
        weights = result.level_weights
        columns = 4
        for i, values in enumerate(maps):
            scale = look.map_scale(values)  # each level on its own scale, by the one scale rule
            rgb = look.apply_colormap(values, scale.colormap, scale.vmin, scale.vmax)
            rgb = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_NEAREST)
            label = QLabel()
            label.setPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
            caption = f"{i}: {names[i] if i < len(names) else ''}"
            if weights is not None:
                caption += f"\nweight {float(weights[i]):.3f}"
            text = QLabel(caption)
            text.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            box = QWidget()
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(0, 0, 0, 0)
            box_layout.addWidget(label, alignment=Qt.AlignmentFlag.AlignHCenter)
            box_layout.addWidget(text)
            self.maps_layout.addWidget(box, i // columns, i % columns)
            self._labels.append(box)


# -------------------------------------------------------------------------------- compare
class CompareView(QWidget):
    """Two explanations side by side (methods A vs B, or before / after a support edit)."""

    hovered = Signal(str)

    def __init__(self, settings: DisplaySettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.history: list[tuple[ExplanationResult, list[np.ndarray], list[Optional[np.ndarray]]]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.combo_a = QComboBox()
        self.combo_b = QComboBox()
        for combo in (self.combo_a, self.combo_b):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(30)
        form.addRow("A", self.combo_a)
        form.addRow("B", self.combo_b)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.swap = QPushButton("Swap A ↔ B")
        self.difference = QCheckBox("show B − A (same supports only)")
        row.addWidget(self.swap)
        row.addWidget(self.difference)
        row.addStretch(1)
        layout.addLayout(row)
        self.note = QLabel("Run two explanations (another method, or after editing a support) to compare them.")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        body = QHBoxLayout()
        self.grid = QGridLayout()
        self.grid.setSpacing(4)
        body.addLayout(self.grid, 1)
        self.colorbar = Colorbar(self)
        self.diff_colorbar = Colorbar(self)
        body.addWidget(self.colorbar)
        body.addWidget(self.diff_colorbar)
        layout.addLayout(body, 1)
        self.tiles: list[HeatTile] = []
        self.headers: list[QLabel] = []
        self.combo_a.currentIndexChanged.connect(self.refresh)
        self.combo_b.currentIndexChanged.connect(self.refresh)
        self.difference.toggled.connect(self.refresh)
        self.swap.clicked.connect(self._swap)
        settings.changed.connect(self.refresh)
        self._pending = False  # drawn when the tab is shown

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self._pending:
            self.refresh()

    def add_result(self, result: ExplanationResult, images, masks, max_items: int = 20) -> None:
        self.history.append((result, list(images), list(masks)))
        if len(self.history) > max_items:
            self.history.pop(0)
        for combo in (self.combo_a, self.combo_b):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([r.label or r.method for r, _, _ in self.history])
            combo.blockSignals(False)
        n = len(self.history)
        self.combo_a.setCurrentIndex(max(0, n - 2))
        self.combo_b.setCurrentIndex(n - 1)
        self.refresh()

    def _swap(self) -> None:
        a, b = self.combo_a.currentIndex(), self.combo_b.currentIndex()
        self.combo_a.blockSignals(True)
        self.combo_a.setCurrentIndex(b)
        self.combo_a.blockSignals(False)
        self.combo_b.setCurrentIndex(a)
        self.refresh()

    def _ensure_tiles(self, rows: int, columns: int) -> None:
        if len(self.tiles) == rows * columns:
            return
        for widget in self.tiles + self.headers:
            self.grid.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self.tiles, self.headers = [], []
        for c in range(columns):
            header = QLabel()
            header.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.grid.addWidget(header, 0, c)
            self.headers.append(header)
        for r in range(rows):
            row_tiles = []
            for c in range(columns):
                tile = HeatTile(self)
                tile.hovered.connect(self.hovered)
                self.grid.addWidget(tile, r + 1, c)
                self.tiles.append(tile)
                row_tiles.append(tile)
            for left, right in zip(row_tiles, row_tiles[1:]):
                link_views(left.canvas, right.canvas)

    def refresh(self) -> None:
        self._pending = not self.isVisible()  # a hidden tab draws when it is shown
        if self._pending:
            return
        ia, ib = self.combo_a.currentIndex(), self.combo_b.currentIndex()
        if ia < 0 or ib < 0 or not self.history:
            return
        (ra, images_a, masks_a), (rb, images_b, masks_b) = self.history[ia], self.history[ib]
        same_supports = len(ra.maps) == len(rb.maps) and all(
            a.shape == b.shape for a, b in zip(ra.maps, rb.maps)
        )
        show_diff = self.difference.isChecked() and same_supports
        rows = max(len(ra.maps), len(rb.maps))
        columns = 3 if show_diff else 2
        self._ensure_tiles(rows, columns)
        signed = ra.signed or rb.signed
        # One scale for both columns so equal colours mean equal values.
        maps_a = [m - signed_center(ra) for m in ra.maps] if signed else ra.maps
        maps_b = [m - signed_center(rb) for m in rb.maps] if signed else rb.maps
        scale = compute_scale(list(maps_a) + list(maps_b), signed, 0.0, self.settings)
        for header, letter, result in ((self.headers[0], "A", ra), (self.headers[1], "B", rb)):
            header.setText(f"<b>{letter}</b>: {_short_label(result)}")
            header.setToolTip(result.label or result.method)
        note = "Same colour scale for A and B."
        if ra.method != rb.method:
            note += " Different methods: compare patterns, not absolute values."
        if self.difference.isChecked() and not same_supports:
            note += " B − A needs the same supports (sizes differ)."
        self.note.setText(note)
        diff_scale = None
        if show_diff:
            diffs = [b - a for a, b in zip(maps_a, maps_b)]
            diff_scale = compute_scale(diffs, True, 0.0, self.settings)
            self.headers[2].setText("<b>B − A</b>")
        for r in range(rows):
            for c, (result, maps, images, masks) in enumerate(
                ((ra, maps_a, images_a, masks_a), (rb, maps_b, images_b, masks_b))
            ):
                tile = self.tiles[r * columns + c]
                if r < len(maps):
                    mask = masks[r] if r < len(masks) else None
                    title, subtitle = tile_title(r, maps[r], mask, 0.0)
                    tile.show_map(images[r], maps[r], mask, scale, self.settings, title, subtitle)
                    tile.setVisible(True)
                else:
                    tile.setVisible(False)
            if show_diff:
                tile = self.tiles[r * columns + 2]
                tile.show_map(images_b[r], maps_b[r] - maps_a[r], masks_b[r] if r < len(masks_b) else None,
                              diff_scale, self.settings, f"Support {r + 1}: B − A")
        self.colorbar.set_scale(scale, "A and B" + (" (signed)" if signed else ""))
        self.diff_colorbar.setVisible(show_diff)
        if show_diff:
            self.diff_colorbar.set_scale(diff_scale, "B − A")

