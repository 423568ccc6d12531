"""The query panel: the query image with the region R being edited, the prediction and ground-truth
outlines, the region-source buttons, and a caption that says which R an explanation will use.

The panel owns the query's state: the image, its ground truth, R (an
:class:`~fssgui.editing.EditableMask`, brushed or taken from the prediction / ground truth) and the
prediction shown. It tells the window when R changed (``regionEdited``), never what to do about it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QButtonGroup, QCheckBox, QHBoxLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget

from ..editing import EditableMask
from ..pipeline import BRUSHED, GROUND_TRUTH, PREDICTION, PredictionResult, region_title
from .canvas import ImageCanvas
from ..look import PREDICTION_COLOUR, REGION_COLOUR, TRUTH_COLOUR, outline_rgba
SOURCES = (BRUSHED, PREDICTION, GROUND_TRUTH)
FROM_FILE = "from the episode file"


class QueryPanel(QWidget):
    """See the module docstring."""

    regionEdited = Signal(str)  # why results of the old R are out of date
    errorRaised = Signal(str)
    hovered = Signal(str)  # the pixel under the pointer, for the status bar

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: Optional[np.ndarray] = None
        self.truth: Optional[np.ndarray] = None  # the query's ground truth, never edited in place
        self.region: Optional[EditableMask] = None
        self.region_source = PREDICTION
        self.region_note = ""
        self.prediction: Optional[PredictionResult] = None
        self.class_name = ""
        self._build()
        self.canvas.strokeFinished.connect(lambda _kind: self.region_changed())
        self.canvas.hovered.connect(self._on_hover)
        self.region_group.idClicked.connect(lambda i: self.set_region_source(SOURCES[i]))
        self.clear_region_button.clicked.connect(self.clear_region)
        self.show_prediction.toggled.connect(lambda _on: self.update_layers())
        self.show_truth.toggled.connect(lambda _on: self.update_layers())
        self.mask_opacity.valueChanged.connect(lambda v: self.canvas.set_layer_opacity("mask", v / 100.0))

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.header = QLabel("<b>Query</b>")
        top.addWidget(self.header)
        top.addStretch(1)
        self.legend = QLabel(
            "<span style='color:#00c8ff'>■</span> region R &nbsp; "
            "<span style='color:#e6c000'>▭</span> prediction &nbsp; "
            "<span style='color:#3cdc5a'>▭</span> ground truth"
        )
        top.addWidget(self.legend)
        layout.addLayout(top)
        self.canvas = ImageCanvas(self, editable=True)
        self.canvas.set_placeholder("open an episode (Ctrl+O) or drop an episode folder here")
        layout.addWidget(self.canvas, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Region R ="))
        self.region_group = QButtonGroup(self)
        self.region_buttons: dict[str, QToolButton] = {}
        tips = ("R is what you brush on the query (1)", "R is the model's predicted foreground (2)",
                "R is the query's ground-truth mask (3)")
        for i, (source, tip) in enumerate(zip(SOURCES, tips)):
            button = QToolButton(self)
            button.setText(region_title(source))
            button.setCheckable(True)
            button.setToolTip(tip)
            self.region_group.addButton(button, i)
            self.region_buttons[source] = button
            row.addWidget(button)
        self.clear_region_button = QToolButton(self)
        self.clear_region_button.setText("clear R")
        self.clear_region_button.setToolTip("Erase the whole region R (undoable)")
        row.addWidget(self.clear_region_button)
        row.addStretch(1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        self.show_prediction = QCheckBox("prediction")
        self.show_prediction.setChecked(True)
        self.show_prediction.setToolTip("Outline of the predicted foreground (yellow), Shift+P")
        self.show_truth = QCheckBox("ground truth")
        self.show_truth.setChecked(True)
        self.show_truth.setToolTip("Outline of the ground-truth mask (green), G")
        row.addWidget(self.show_prediction)
        row.addWidget(self.show_truth)
        row.addSpacing(12)
        row.addWidget(QLabel("mask opacity"))
        self.mask_opacity = QSlider(Qt.Orientation.Horizontal)
        self.mask_opacity.setRange(0, 100)
        self.mask_opacity.setFixedWidth(90)
        self.mask_opacity.setToolTip("Opacity of the region R and support-mask tints")
        row.addWidget(self.mask_opacity)
        row.addStretch(1)
        layout.addLayout(row)

    # ------------------------------------------------------------------ the query
    def set_query(self, image: np.ndarray, truth: Optional[np.ndarray], region: Optional[np.ndarray],
                  class_name: str = "") -> None:
        """A new query: R is the episode's stored region when it has one, else the prediction."""
        self.image, self.truth, self.class_name = image, truth, class_name
        has_region = region is not None and bool(np.any(region))
        self.region = EditableMask(region if has_region else np.zeros(image.shape[:2], dtype=bool))
        self.region_source = BRUSHED if has_region else PREDICTION
        self.region_note = FROM_FILE if has_region else ""
        self.prediction = None
        self.canvas.set_image(image, fit=True)
        self.canvas.set_mask(self.region, REGION_COLOUR)
        self.canvas.set_layer_opacity("mask", self.mask_opacity.value() / 100.0)
        self.update_layers()

    def has_query(self) -> bool:
        return self.image is not None

    # ------------------------------------------------------------------ region R
    def set_region_source(self, source: str) -> bool:
        """R = brushed / prediction / ground truth; False (and an error) when that source is missing."""
        if not self.has_query():
            return False
        if source == GROUND_TRUTH and self.truth is None:
            self.errorRaised.emit("this episode has no ground-truth mask for the query: R = ground truth is not available")
            self.update_caption()
            return False
        self.region_source = source
        self.region_note = ""
        if source == GROUND_TRUTH:
            self.region.replace(self.truth, "R = ground truth")
        elif source == PREDICTION and self.prediction is not None:
            self.region.replace(self.prediction.mask, "R = prediction")
        self.regionEdited.emit(f"R was switched to {region_title(source)} since this explanation")
        self.update_caption()
        return True

    def region_changed(self) -> None:
        """R was brushed, erased, undone or cleared: it is a brushed region from now on."""
        if self.region_source != BRUSHED:
            self.region_note = f"started from the {region_title(self.region_source)}"
            self.region_source = BRUSHED
        elif self.region_note == FROM_FILE:
            self.region_note = f"{FROM_FILE}, edited"
        self.regionEdited.emit("region R was edited since this explanation")
        self.update_caption()

    def clear_region(self) -> None:
        if self.region is not None and self.region.clear() is not None:
            self.region_changed()

    def brushed_region(self) -> Optional[np.ndarray]:
        """R as a mask when it is brushed (what an explanation of a brushed R gets), else None."""
        return self.region.as_bool() if self.region_source == BRUSHED and self.region is not None else None

    # ------------------------------------------------------------------ prediction
    def show_prediction_result(self, result: Optional[PredictionResult]) -> None:
        """Outline ``result`` (None: no prediction); R = prediction follows it (no edit of R)."""
        self.prediction = result
        if result is not None and self.region_source == PREDICTION and self.region is not None:
            self.region.replace(result.mask, "R = prediction")
        self.update_layers()

    def update_layers(self) -> None:
        if not self.has_query():
            return
        if self.prediction is not None and self.show_prediction.isChecked():
            self.canvas.set_layer("prediction", outline_rgba(self.prediction.mask, PREDICTION_COLOUR), z=6)
        else:
            self.canvas.remove_layer("prediction")
        if self.truth is not None and self.show_truth.isChecked():
            self.canvas.set_layer("truth", outline_rgba(self.truth, TRUTH_COLOUR), z=7)
        else:
            self.canvas.remove_layer("truth")
        self.update_caption()

    def update_caption(self) -> None:
        """The buttons, the header and the canvas title say which R an explanation uses."""
        for source, button in self.region_buttons.items():
            button.setChecked(source == self.region_source)
        self.region_buttons[GROUND_TRUTH].setEnabled(self.truth is not None)
        if not self.has_query():
            return
        pixels = self.region.count() if self.region is not None else 0
        if self.region_source == PREDICTION and self.prediction is None:
            title = "R = prediction (computed when you press Explain)"
        else:
            title = f"R = {region_title(self.region_source)} · {pixels:,} px"
            if self.region_note:
                title += f" ({self.region_note})"
            if pixels == 0:
                title += " · empty: brush on the query"
        h, w = self.image.shape[:2]
        subtitle = f"query {w}×{h}" + (f" · class {self.class_name}" if self.class_name else "")
        if self.prediction is not None:
            subtitle += f" · prediction {float(self.prediction.mask.mean() * 100):.1f}% of the image"
        self.canvas.set_title(title, subtitle)
        self.header.setText(f"<b>Query</b> &nbsp; region R = <b>{region_title(self.region_source)}</b>")

    def _on_hover(self, x: int, y: int) -> None:
        if x < 0 or not self.has_query():
            self.hovered.emit("")
            return
        text = f"query x {x}, y {y}"
        if self.prediction is not None:
            text += f" · p(fg) {self.prediction.probability[y, x]:.3f}"
        if self.region is not None and self.region.data[y, x]:
            text += " · in R"
        self.hovered.emit(text)
