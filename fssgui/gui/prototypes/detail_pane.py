"""Prototype detail pane of the Prototypes tab: one prototype, its push source and nearest patches.

A thin view of :mod:`fssgui.prototypes.detail` and :mod:`fssgui.prototypes.nearest` (every
number and image is computed there, without Qt). Selecting a prototype (its node in the group
graph, a row of the inspector's tables) opens the pane beside the graph; it shows:

* the prototype's class, scale / dilation, index and its weight in each group of its class (and
  the group -> class weights), at the graph's threshold α;
* with the push metadata of the checkpoint and a dataset folder (official layout
  ``DATA/img_with_margin_0/<split>/<id>.png`` + ``DATA/all_images.json``, chosen in the pane):
  the push's training image with the high-activation box (yellow) and the feature-cell box
  (white), and the prototype's self-activation on it (JET 0.5 / 0.5), computed by the loaded
  model on the worker thread;
* on demand ("Find nearest"), the top-3 images of a chosen split by per-image minimum distance,
  at most the chosen number of images, with the cell of the minimum boxed; cancellable; the
  number of images searched is shown;
* without the metadata or the dataset folder: one line per missing piece, nothing invented.

The pane never runs the model itself: it emits ``jobRequested(request)`` and hands the request
to the submit function given to :meth:`PrototypeDetailPane.attach_submit` (the main window submits
it on the device worker with the tab's ScaleProtoSeg model), then follows the job's handle. One job
per kind (source, nearest): a newer request discards the older one, and results of a prototype no
longer shown are ignored.

Theme: the image views follow the app theme (:func:`~fssgui.gui.theme.follow_theme`: background
and titles); the images and their boxes are the same in both themes; messages are coloured for the
theme in use (:func:`~fssgui.gui.prototypes.inspector.message_html`) and recoloured on a switch.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Optional

import pyqtgraph as pg
from PySide6 import QtCore
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...prototypes.dataset import NO_DATASET_TEXT, DatasetFolder
from ...prototypes.detail import (
    PrototypeDetail,
    SourceLocation,
    SourceRequest,
    SourceView,
    describe_prototype,
    locate_source,
)
from ...prototypes.nearest import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_NEAREST_K,
    NearestDistanceCache,
    NearestPatches,
    NearestRequest,
)
from ...prototypes.overlays import BOX_COLOUR
from ...prototypes.run import ScaleProtoSegRun
from ..theme import follow_theme
from ..workers import JobHandle, LatestJob
from .inspector import message_html, text_label

Submit = Callable[[Any], Optional["JobHandle"]]


def _view(widget: pg.GraphicsLayoutWidget, title: str, row: int, col: int
          ) -> tuple[pg.LabelItem, pg.ViewBox, pg.ImageItem]:
    label = widget.addLabel(title, row=row, col=col, size="8pt")
    box = widget.addViewBox(row=row + 1, col=col, lockAspect=True, invertY=True, enableMouse=False)
    item = pg.ImageItem(axisOrder="row-major")
    box.addItem(item)
    return label, box, item


class PrototypeDetailPane(QWidget):
    """The detail of one prototype (see the module docstring)."""

    jobRequested = Signal(object)  # SourceRequest / NearestRequest (also passed to the submit function)
    datasetFolderChanged = Signal(str)
    detailShown = Signal(object)  # PrototypeDetail
    sourceShown = Signal(object)  # SourceView
    nearestShown = Signal(object)  # NearestPatches
    errorRaised = Signal(str)
    closed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.run: Optional[ScaleProtoSegRun] = None
        self.threshold: Optional[float] = None
        self.detail: Optional[PrototypeDetail] = None
        self.location: Optional[SourceLocation] = None
        self.dataset: Optional[DatasetFolder] = None
        # every image's per-prototype minima, kept between searches (same model, unchanged files)
        self.distance_cache = NearestDistanceCache()
        self.source: Optional[SourceView] = None
        self.nearest: Optional[NearestPatches] = None
        self.size_provider: Callable[[], Optional[int]] = lambda: None  # the tab's model input size
        self._submit: Optional[Submit] = None
        self._jobs: dict[str, LatestJob] = {"source": LatestJob(), "nearest": LatestJob()}  # one job per kind
        self._messages: list[tuple[str, str]] = []  # (kind "warning"/"error"/"", text)
        self._nearest_status: tuple[str, str] = ("", "")  # (plain text, kind)
        self._box_items: list[tuple[pg.ViewBox, QGraphicsRectItem]] = []  # (view, box item)
        self.setMinimumWidth(340)

        root = QVBoxLayout(self)
        root.setContentsMargins(4, 2, 2, 2)
        root.setSpacing(3)
        row = QHBoxLayout()
        self.title_label = QLabel("<b>Prototype detail</b>")
        row.addWidget(self.title_label, 1)
        self.close_button = QToolButton(self)
        self.close_button.setText("×")
        self.close_button.setToolTip("Close the prototype detail")
        row.addWidget(self.close_button)
        root.addLayout(row)
        self.info_label = text_label("Select a prototype in the graph or in the inspector's tables.")
        root.addWidget(self.info_label)

        row = QHBoxLayout()
        row.addWidget(QLabel("Dataset"))
        self.dataset_edit = QLineEdit(self)
        self.dataset_edit.setReadOnly(True)
        self.dataset_edit.setPlaceholderText("folder with img_with_margin_0/ and all_images.json…")
        row.addWidget(self.dataset_edit, 1)
        self.dataset_button = QPushButton("Choose…", self)
        self.dataset_button.setToolTip("The official data layout: DATA/img_with_margin_0/<split>/<id>.png and "
                                       "DATA/all_images.json ({split: [ids]})")
        row.addWidget(self.dataset_button)
        root.addLayout(row)
        self.message_label = text_label()
        root.addWidget(self.message_label)

        self.source_widget = pg.GraphicsLayoutWidget()
        self.source_title, self.source_box, self.source_item = _view(
            self.source_widget, "push source", 0, 0)
        self.overlay_title, self.overlay_box, self.overlay_item = _view(
            self.source_widget, "self-activation", 2, 0)
        self.source_widget.setMinimumHeight(380)
        root.addWidget(self.source_widget, 3)
        # the numbers under the two views (the views' titles stay short: they set the pane's width)
        self.source_label = text_label()
        root.addWidget(self.source_label)

        row = QHBoxLayout()
        row.addWidget(QLabel("Nearest in"))
        self.split_combo = QComboBox(self)
        self.split_combo.setToolTip("The split whose images are searched")
        self.split_combo.setEnabled(False)
        row.addWidget(self.split_combo, 1)
        row.addWidget(QLabel("max"))
        self.max_spin = QSpinBox(self)
        self.max_spin.setRange(1, 1_000_000)
        self.max_spin.setValue(DEFAULT_MAX_IMAGES)
        self.max_spin.setToolTip("Search at most this many images of the split (one model forward each), in the "
                                 "order of all_images.json")
        row.addWidget(self.max_spin)
        row.addWidget(QLabel("images"))
        self.nearest_button = QPushButton(f"Find top-{DEFAULT_NEAREST_K}", self)
        self.nearest_button.setEnabled(False)
        row.addWidget(self.nearest_button)
        root.addLayout(row)
        self.nearest_label = text_label()
        root.addWidget(self.nearest_label)
        self.nearest_widget = pg.GraphicsLayoutWidget()
        self.nearest_titles, self.nearest_items = [], []
        for k in range(DEFAULT_NEAREST_K):
            label, _box, item = _view(self.nearest_widget, f"#{k + 1}", 0, k)
            self.nearest_titles.append(label)
            self.nearest_items.append(item)
        self.nearest_widget.setMinimumHeight(150)
        root.addWidget(self.nearest_widget, 1)

        follow_theme(self.source_widget)
        follow_theme(self.nearest_widget)
        self.close_button.clicked.connect(self.close_pane)
        self.dataset_button.clicked.connect(self.choose_dataset_folder)
        self.nearest_button.clicked.connect(self._on_nearest_clicked)
        self._update_nearest_button()

    # ------------------------------------------------------------------ public API
    def attach_submit(self, submit: Submit) -> None:
        """Run requests with ``submit(request) -> JobHandle or None`` (None: refused, said in the log)."""
        self._submit = submit

    @property
    def dataset_folder(self) -> str:
        return str(self.dataset.root) if self.dataset is not None else ""

    def set_run(self, run: Optional[ScaleProtoSegRun], threshold: Optional[float]) -> None:
        """A new model run: what was shown belongs to the old one; close the pane."""
        self.run, self.threshold = run, threshold
        self._cancel_jobs()
        self.detail = self.location = self.source = self.nearest = None
        self._clear_source()
        self._clear_nearest()
        self._set_nearest_status("")
        self.info_label.setText("Select a prototype in the graph or in the inspector's tables.")
        self._set_messages([])
        self._update_nearest_button()
        self.setVisible(False)

    def show_prototype(self, run: ScaleProtoSegRun, index: int, threshold: Optional[float]) -> PrototypeDetail:
        """Open the pane on prototype ``index`` of ``run`` (at threshold α); asks for its source
        view when the push metadata and the dataset folder allow it."""
        same = self.detail is not None and self.detail.index == int(index) and run is self.run
        self.run, self.threshold = run, threshold
        self.detail = describe_prototype(run, index, threshold)
        self.setVisible(True)
        self._show_info()
        if not same:
            self._cancel_jobs()
            self.source = self.nearest = None
            self._clear_source()
            self._clear_nearest()
            self._set_nearest_status("")
            self._locate_and_request()
        self._update_nearest_button()
        self.detailShown.emit(self.detail)
        return self.detail

    def set_threshold(self, threshold: Optional[float]) -> None:
        """α changed on the graph: the group weights' on/off state follows (no model run)."""
        self.threshold = threshold
        if self.detail is not None and self.run is not None:
            self.detail = describe_prototype(self.run, self.detail.index, threshold)
            self._show_info()

    def choose_dataset_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder (with img_with_margin_0/ and all_images.json)",
                                                  self.dataset_folder or str(Path.home()))
        if folder:
            self.set_dataset_folder(folder)

    def set_dataset_folder(self, folder: str | Path, announce: bool = True) -> bool:
        """Use ``folder`` (official layout); False (and the reason shown) when it is not one."""
        from ...errors import ExplainError

        try:
            dataset = DatasetFolder.open(folder)
        except ExplainError as exc:
            self._set_messages([("error", str(exc))] + self._missing_messages())
            self.errorRaised.emit(str(exc))
            return False
        self.dataset = dataset
        self.dataset_edit.setText(str(dataset.root))
        self.dataset_edit.setToolTip(str(dataset.root) + (f"\n{dataset.note}" if dataset.note else ""))
        current = self.split_combo.currentText()
        self.split_combo.clear()
        for split in dataset.splits():
            self.split_combo.addItem(f"{split} ({len(dataset.image_ids(split))} images)", split)
        index = self.split_combo.findData(current)
        self.split_combo.setCurrentIndex(max(0, index))
        self.split_combo.setEnabled(self.split_combo.count() > 0)
        if announce:
            self.datasetFolderChanged.emit(str(dataset.root))
        if self.detail is not None:  # the source image comes from the new folder
            self.source = None
            self._clear_source()
            self._locate_and_request()
        else:
            self._set_messages(self._missing_messages())
        self._update_nearest_button()
        return True

    def find_nearest(self) -> Optional[int]:
        """Ask for the top-k nearest patches of the shown prototype in the chosen split."""
        if self.detail is None:
            return None
        if self.dataset is None:
            self._set_nearest_status(NO_DATASET_TEXT, "warning")
            return None
        split = self.split_combo.currentData()
        if not split:
            self._set_nearest_status(f"no split folder in {self.dataset.split_folder('')}", "warning")
            return None
        request = NearestRequest(self.detail.index, self.dataset, str(split), int(self.max_spin.value()),
                                 DEFAULT_NEAREST_K, self.size_provider(), cache=self.distance_cache)
        self._clear_nearest()
        self.nearest = None
        total = len(self.dataset.image_ids(str(split)))
        self._set_nearest_status(f"searching {min(total, request.max_images)} of {total} images of '{split}'…")
        return self._request(request)

    def cancel_nearest(self) -> None:
        if self.is_running("nearest"):
            self._jobs["nearest"].cancel()
            self._set_nearest_status("cancelling…")

    def messages(self) -> list[str]:
        """The pane's messages now (plain text): what is missing, failures, notes."""
        return [text for _kind, text in self._messages]

    def is_running(self, kind: str) -> bool:
        return self._jobs[kind].running

    def close_pane(self) -> None:
        self._cancel_jobs()
        self.setVisible(False)
        self.closed.emit()

    def drawn_boxes(self) -> list[tuple[float, float, float, float]]:
        """(x, y, w, h) of the boxes drawn on the source image: the push box, then the cell."""
        return [tuple(item.rect().getRect()) for target, item in self._box_items if target is self.source_box]

    # ------------------------------------------------------------------- internals

    def _show_info(self) -> None:
        d = self.detail
        parts = [f"<b>p{d.index}</b> · class <b>{html.escape(d.class_name)}</b> ({d.class_index}) · "
                 f"scale {d.scale + 1} (dilation {d.dilation}) · column {d.column} of its class"]
        if d.group_weights:
            alpha = "" if d.threshold is None else f" (α = {d.threshold:.2f})"
            weights = ", ".join(
                f"group {g.group + 1}: {g.weight:.3f}" + ("" if g.active else " <i>off</i>")
                + f" → class {g.head_weight:.2f}" for g in d.group_weights)
            parts.append(f"group weights{alpha}: {weights}")
            if not d.used:
                parts.append("<i>unused at this threshold: no group keeps it</i>")
        elif d.class_weight is not None:
            parts.append(f"stage 1: weight to the class {d.class_weight:.3f}")
        pr = d.projection
        if pr is not None:
            who = pr.image_id or f"#{pr.image_index}"
            parts.append(f"push: train image {html.escape(str(who))}, box h{pr.box[:2]} w{pr.box[2:]}"
                         + (f", cell h{pr.receptive_box[:2]} w{pr.receptive_box[2:]}" if pr.receptive_box else ""))
        self.info_label.setText("<br>".join(parts))
        self.title_label.setText(f"<b>Prototype detail: p{d.index}</b>")

    def _missing_messages(self) -> list[tuple[str, str]]:
        if self.detail is None:
            return [] if self.dataset is not None else [("", "choose a dataset folder for the source images "
                                                             "and the nearest patches")]
        self.location = locate_source(self.detail, self.dataset)
        return [("warning", text) for text in self.location.missing]

    def _locate_and_request(self) -> None:
        messages = self._missing_messages()
        self._set_messages(messages)
        if self.location is not None and self.location.ready:
            self.source_title.setText(f"push source {self.location.image_id}: computing…")
            self._request(SourceRequest(self.detail, self.location, self.size_provider()))

    def _request(self, request) -> Optional[JobHandle]:
        self.jobRequested.emit(request)
        if self._submit is None:
            self._set_messages(self._messages + [("warning", "no worker thread attached: the model cannot run here")])
            return None
        handle = self._submit(request)
        if handle is None:
            self._set_messages(self._messages + [("error", f"{request.description}: could not be started "
                                                            "(see the log)")])
            return None
        self._jobs[request.kind].start(handle)
        handle.finished.connect(lambda result: self._on_job_finished(request, result))
        handle.failed.connect(lambda message, _trace: self._on_job_failed(request, message))
        handle.cancelled.connect(lambda: self._on_job_cancelled(request))
        handle.ended.connect(self._update_nearest_button)
        self._update_nearest_button()
        return handle

    def _cancel_jobs(self) -> None:
        for job in self._jobs.values():
            job.discard()
        self._update_nearest_button()

    def _current(self, request) -> bool:
        return self.detail is not None and request.prototype_index == self.detail.index

    def _on_job_finished(self, request, result: object) -> None:
        if not self._current(request):
            return
        if request.kind == "source":
            self.show_source(result)
        else:
            self.show_nearest(result)

    def _on_job_failed(self, request, message: str) -> None:
        if not self._current(request):
            return
        text = f"{request.description} failed: {message}"
        if request.kind == "source":
            self.source_title.setText("push source: failed")
            self._set_messages(self._messages + [("error", text)])
        else:
            self._set_nearest_status(text, "error")

    def _on_job_cancelled(self, request) -> None:
        if self._current(request) and request.kind == "nearest":
            self._set_nearest_status("nearest patches: cancelled")
        elif self._current(request):
            self.source_title.setText("push source: cancelled")

    def _on_nearest_clicked(self) -> None:
        if self.is_running("nearest"):
            self.cancel_nearest()
        else:
            self.find_nearest()

    def _update_nearest_button(self) -> None:
        if self.is_running("nearest"):
            self.nearest_button.setText("Cancel")
            self.nearest_button.setToolTip("Stop the search (nothing is shown)")
            self.nearest_button.setEnabled(True)
            return
        self.nearest_button.setText(f"Find top-{DEFAULT_NEAREST_K}")
        ready = self.detail is not None and self.dataset is not None and self.split_combo.count() > 0
        self.nearest_button.setEnabled(ready)
        if self.detail is None:
            tip = "Select a prototype first"
        elif self.dataset is None:
            tip = NO_DATASET_TEXT
        else:
            tip = (f"The {DEFAULT_NEAREST_K} images of the split with the smallest minimum distance to the prototype "
                   "over all feature cells (official nearest_img: no class mask); one model forward per image, on the "
                   "worker thread")
        self.nearest_button.setToolTip(tip)

    # ----------------------------------------------------------------------- views
    def show_source(self, view: SourceView) -> None:
        self.source = view
        self.source_item.setImage(view.image, autoLevels=False, levels=(0, 255))
        self.overlay_item.setImage(view.overlay(), autoLevels=False, levels=(0, 255))
        self.source_box.autoRange(padding=0.0)
        self.overlay_box.autoRange(padding=0.0)
        self._draw_source_boxes(view)
        self.source_title.setText(f"push source {view.image_id}")
        cell = "" if view.cell is None else (f"; activation at the push cell {view.cell}: "
                                             f"{view.cell_activation:.2f}")
        self.overlay_title.setText(f"self-activation of p{view.prototype_index}")
        self.source_label.setText(html.escape(
            f"train image {view.image_id} ({view.image_hw[1]}×{view.image_hw[0]}, run at {view.input_hw[1]}×"
            f"{view.input_hw[0]}): push box yellow, feature cell white dashed; self-activation (JET 0.5/0.5, "
            f"min-max over the image) peaks at {view.peak_activation:.2f} at cell {view.peak_cell}{cell}"))
        self._set_messages([("warning", note) for note in view.notes])
        self.sourceShown.emit(view)

    def show_nearest(self, result: NearestPatches) -> None:
        self.nearest = result
        self._clear_nearest()
        for k, patch in enumerate(result.patches[: len(self.nearest_items)]):
            self.nearest_items[k].setImage(patch.overlay_with_box(), autoLevels=False, levels=(0, 255))
            self.nearest_items[k].getViewBox().autoRange(padding=0.0)
            short = patch.image_id if len(patch.image_id) <= 14 else patch.image_id[:13] + "…"  # keeps the pane narrow
            self.nearest_titles[k].setText(f"#{patch.rank} {short}")
        lines = [result.summary()]
        lines += [f"#{p.rank} {p.image_id}: min distance {p.distance:.4g} (activation {p.activation:.2f}) at cell {p.cell}"
                  for p in result.patches]
        self._set_nearest_status("\n".join(lines))
        self.nearestShown.emit(result)

    def _clear_source(self) -> None:
        self.source_item.clear()
        self.overlay_item.clear()
        self._draw_source_boxes(None)
        self.source_title.setText("push source")
        self.overlay_title.setText("self-activation")
        self.source_label.setText("")

    def _clear_nearest(self) -> None:
        for k, item in enumerate(self.nearest_items):
            item.clear()
            self.nearest_titles[k].setText(f"#{k + 1}")

    def _draw_source_boxes(self, view: Optional[SourceView]) -> None:
        for target, item in self._box_items:
            target.removeItem(item)
        self._box_items = []
        if view is None:
            return
        for box, colour in view.boxes():
            for target in (self.source_box, self.overlay_box):
                y0, y1, x0, x1 = box
                item = QGraphicsRectItem(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
                pen = pg.mkPen(colour, width=2 if colour == BOX_COLOUR else 1,
                               style=Qt.PenStyle.SolidLine if colour == BOX_COLOUR else Qt.PenStyle.DashLine)
                pen.setCosmetic(True)
                item.setPen(pen)
                item.setZValue(10)
                target.addItem(item)
                self._box_items.append((target, item))

    def _set_messages(self, messages: list[tuple[str, str]]) -> None:
        self._messages = list(messages)
        lines = [message_html(text, kind, self.palette()) if kind in ("warning", "error") else html.escape(text)
                 for kind, text in self._messages]
        self.message_label.setText("<br>".join(lines))
        self.message_label.setVisible(bool(lines))

    def _set_nearest_status(self, text: str, kind: str = "") -> None:
        """The nearest-patch line(s) (plain text, one per line); warnings and errors coloured."""
        self._nearest_status = (text, kind)
        lines = text.split("\n") if text else []
        self.nearest_label.setText("<br>".join(
            message_html(line, kind, self.palette()) if kind in ("warning", "error") else html.escape(line)
            for line in lines))

    @property
    def nearest_status(self) -> str:
        """The nearest-patch status now (plain text)."""
        return self._nearest_status[0]

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # the theme's message colours
            if self._messages:
                self._set_messages(self._messages)
            if self._nearest_status[1]:
                self._set_nearest_status(*self._nearest_status)
