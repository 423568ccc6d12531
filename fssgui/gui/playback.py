"""Insertion / deletion playback: IAUC and DAUC curves, scrubbed step by step.

API for the window (everything is called from the GUI thread)::

    widget = PlaybackWidget(worker, parent)        # or PlaybackWidget(main_window): its .worker is used
    widget.set_context(model, episode, attributions, region, region_source="prediction")
    widget.run()                                   # computes on the worker; returns the job id
    widget.cancel()

* ``model``: a model name or a :class:`~fssgui.gui.jobs.ModelSpec` (name, checkpoint, device).
* ``attributions``: ``{method name: maps}``, the maps being an
  :class:`~fssgui.explain.base.Attribution` (``[K, S, S]`` at the model size, used as is), a
  :class:`~fssgui.gui.jobs.ExplanationResult` (per-support maps, resized to S for ranking), an
  array/tensor ``[K, h, w]`` or a list of per-support arrays.
* ``region``: the query region R (bool, query resolution) scored by the confidence measure;
  ``None`` = the model's prediction on the unperturbed episode.
* :meth:`add_explanation` adds one method to the current context (a new context when the model,
  episode or region changed). Constructed with the main window as its parent, the widget also
  listens to the window's ``resultShown`` signal and adds each explanation by itself.

What it shows: one plot per metric (IAUC, DAUC) with every computed method overlaid; next to the
plots the value of each curve and the parameters that change it (steps, measure, substrate, p).
A slider, play/pause and step buttons choose point *i* of the selected method's curve; the panels
then show the state behind that point (frame *i*): the perturbed supports and their masks, the
query prediction on those supports and the foreground probability. Frame *i* and the marker at
curve point *i* come from the same :class:`~fssgui.report.CausalFrame`, so they cannot be a step
apart (the reference Streamlit app showed each step's supports with the previous prediction).

Computation runs on the GPU worker (channel ``"playback"``) with progress and cancel; frames
stream in while they are computed (the job puts them in a thread-safe queue that a GUI-thread
timer drains), so the curves grow and the view can follow the newest step.

Exports (menu "Export", or right-click a panel): any panel as a full-resolution PNG rendered from
the data, the current frame as a labelled figure, the attribution figure, the curves as CSV or
PNG, every frame as a folder or a ZIP, and the HTML + PDF report. Every file is written atomically.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QDoubleSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import figures as F
from .. import report as R
from ..imaging import resize_map
from .canvas import rgb_to_pixmap
from .heatmap_view import Colorbar, Scale
from ..metrics.causal import MEASURE_TITLES, METRIC_TITLES, SUBSTRATE, Curve, curve_state_count, metric_settings
from ..pipeline import BRUSHED, PREDICTION, ModelCache, ModelSpec, input_key
from ..pipeline.regions import canonical_source
from ..pipeline.jobs import JobContext
from .theme import PlotColours, follow_theme, plot_colours

CHANNEL = "playback"
METRICS = ("iauc", "dauc")
STATE_IDLE, STATE_RUNNING, STATE_CANCELLING, STATE_DONE, STATE_CANCELLED, STATE_FAILED = (
    "idle", "running", "cancelling", "done", "cancelled", "failed")


# ======================================================================================= inputs
@dataclass
class MethodInput:
    """One method's maps as handed to the widget, with what the report shows about it."""

    name: str
    maps: Any  # tensor/array [K, h, w] (model size when it came from an Attribution) or list of [Hs, Ws]
    signed: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    level_weights: Optional[np.ndarray] = None
    level_names: Optional[list[str]] = None
    seconds: Optional[float] = None
    ranked: Optional[np.ndarray] = None  # [K, S, S]: the maps the explainer returned (what is ranked)

    def model_maps(self, size: int) -> np.ndarray:
        """``[K, S, S]`` float32 for ranking: the explainer's own model-size maps when known (an
        explanation of the pipeline), else the given maps resized bilinearly to S."""
        if self.ranked is not None and self.ranked.shape[-2:] == (size, size):
            return np.asarray(self.ranked, np.float32)
        maps = self.maps
        if hasattr(maps, "detach"):
            maps = maps.detach().float().cpu().numpy()
        return np.stack([resize_map(np.asarray(m, np.float32), (size, size)) for m in maps]).astype(np.float32)

    def support_maps(self, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        maps = self.maps
        if hasattr(maps, "detach"):
            maps = maps.detach().float().cpu().numpy()
        return [resize_map(np.asarray(m, np.float32), size) for m, size in zip(maps, sizes)]


def method_input(name: str, value: Any) -> MethodInput:
    """Normalise an Attribution, an ExplanationResult, an array/tensor or a list of maps."""
    if isinstance(value, MethodInput):
        return value

    def numpy_or_none(x):
        if x is None:
            return None
        return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    if hasattr(value, "maps") and hasattr(value, "method"):  # Attribution or ExplanationResult
        return MethodInput(name, value.maps, bool(getattr(value, "signed", False)), dict(getattr(value, "params", {})),
                           numpy_or_none(getattr(value, "level_weights", None)),
                           list(value.level_names) if getattr(value, "level_names", None) is not None else None,
                           getattr(value, "seconds", None), numpy_or_none(getattr(value, "model_maps", None)))
    return MethodInput(name, value)


@dataclass
class RunStart:
    """First message of a run: the shared frame data and what the model predicted unperturbed."""

    base: R.FrameBase
    device: str
    prediction: np.ndarray  # [H, W] bool at the query's resolution
    region: np.ndarray  # [H, W] bool: the R actually scored
    input_size: int
    model_description: str


def playback_job(
    ctx: JobContext,
    cache: ModelCache,
    spec: ModelSpec,
    episode,
    methods: Mapping[str, MethodInput],
    region: Optional[np.ndarray],
    outbox: "queue.Queue",
    run_id: int,
    *,
    region_source: str = PREDICTION,
    metrics: Sequence[str] = METRICS,
    measure: str = "confidence",
    steps: Optional[int] = None,
    percentage: Optional[float] = None,
    batch_size: Optional[int] = None,
) -> list:
    """Runs in the worker thread (no Qt here): the pipeline's curves of ``methods`` for R (its
    ``region_source``; a brushed R is the mask ``region``), putting ``(kind, run_id, payload)``
    messages in ``outbox`` (``"start"``: :class:`RunStart`, ``"frame"``: a
    :class:`~fssgui.report.CausalFrame`, ``"curve"``: a finished curve); returns the curves."""
    from ..errors import ExplainError
    from ..pipeline import EpisodeRun
    from ..pipeline.curves import run_curves

    run = EpisodeRun(cache.get(spec, ctx.log), episode)
    ctx.check()
    size = run.size
    r = run.region(region_source, region)
    attributions = {}
    for name, m in methods.items():
        maps = m.model_maps(size)
        if maps.shape[0] != episode.shots:
            raise ExplainError(f"{name}: {maps.shape[0]} map(s) for {episode.shots} support(s); rerun the explainer")
        attributions[name] = maps
    entry = run.loaded.entry
    outbox.put(("start", run_id, RunStart(R.frame_base(episode, run.batch, entry), str(run.device),
                                          run.predicted().mask, r.image, size,
                                          getattr(entry, "description", "") or "")))

    def on_step(curve, step) -> None:
        outbox.put(("frame", run_id, R.CausalFrame.from_step(curve.method, curve.metric, step)))

    return run_curves(run, attributions, r, metrics=metrics, measure=measure, steps=steps, percentage=percentage,
                      batch_size=batch_size, cancelled=ctx.cancelled, on_step=on_step,
                      on_curve=lambda curve: outbox.put(("curve", run_id, curve)), on_progress=ctx.progress)


# ======================================================================================= panels
class ImagePanel(QWidget):
    """A titled image that keeps its RGB data; the picture is scaled to fit, and the right-click
    menu saves the data itself (full resolution) as PNG."""

    exportRequested = Signal(str)  # panel name

    def __init__(self, name: str, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.name = name
        self.image: Optional[np.ndarray] = None
        self._pixmap: Optional[QPixmap] = None
        self.title = QLabel(title, self)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view = QLabel(self)
        self.view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view.setMinimumSize(80, 80)
        self.view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.view.setStyleSheet("background: #202020;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)

    def set_image(self, image: Optional[np.ndarray]) -> None:
        self.image = image
        self._pixmap = None if image is None else rgb_to_pixmap(image)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None:
            self.view.clear()
            return
        size = self.view.size()
        self.view.setPixmap(self._pixmap.scaled(max(1, size.width()), max(1, size.height()),
                                                Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.FastTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._rescale()

    def _menu(self, pos) -> None:
        if self.image is None:
            return
        menu = QMenu(self)
        action = menu.addAction(f"Save PNG ({self.image.shape[1]} x {self.image.shape[0]})…")
        action.triggered.connect(lambda: self.exportRequested.emit(self.name))
        menu.exec(self.mapToGlobal(pos))


# ======================================================================================= widget
class PlaybackWidget(QWidget):
    """See the module docstring."""

    frameShown = Signal(int)  # index of the frame now displayed
    runFinished = Signal(str)  # final state: done / cancelled / failed
    framesArrived = Signal(int)  # how many frames the last drain brought

    POLL_MS = 40

    def __init__(self, worker=None, parent: Optional[QWidget] = None) -> None:
        window = None
        if worker is not None and not hasattr(worker, "submit") and hasattr(worker, "worker"):
            window, worker = worker, worker.worker  # created as PlaybackWidget(main_window)
            parent = parent or window
        super().__init__(parent)
        self.worker = worker
        self.spec: Optional[ModelSpec] = None
        self.episode = None
        self.region: Optional[np.ndarray] = None
        self.region_source = "prediction"
        self.methods: dict[str, MethodInput] = {}
        self.frames: dict[tuple[str, str], list[R.CausalFrame]] = {}
        self.curves: dict[tuple[str, str], Curve] = {}
        self.start: Optional[RunStart] = None
        self.state = STATE_IDLE
        self.message = ""
        self.job_id: Optional[int] = None
        self._run_id = 0
        self._run_params: dict[str, Any] = {}
        self._inbox: "queue.Queue" = queue.Queue()
        self._colour_index: dict[str, int] = {}
        self.plot_colours: PlotColours = plot_colours()  # set again by each plot when the theme changes
        self._current: Optional[int] = None
        self._follow = True
        self._context_key: Any = None
        self._poll = QTimer(self)
        self._poll.setInterval(self.POLL_MS)
        self._poll.timeout.connect(self.drain)
        self._player = QTimer(self)
        self._player.timeout.connect(self._tick)
        self._build()
        if self.worker is not None:
            self.worker.progress.connect(self._on_progress)
            self.worker.finished.connect(self._on_finished)
            self.worker.failed.connect(self._on_failed)
            self.worker.cancelled.connect(self._on_cancelled)
            self.worker.dropped.connect(self._on_dropped)
        if window is not None and hasattr(window, "resultShown"):
            self._window = window
            window.resultShown.connect(self._on_window_result)
        self._update_controls()

    # ------------------------------------------------------------------------------- building
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        # run controls
        bar = QHBoxLayout()
        self.methods_button = QToolButton(self)
        self.methods_button.setText("Methods")
        self.methods_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.methods_button.setToolTip("Which methods to compute and overlay")
        self.methods_menu = QMenu(self.methods_button)
        self.methods_button.setMenu(self.methods_menu)
        bar.addWidget(self.methods_button)
        bar.addWidget(QLabel("Measure"))
        self.measure_combo = QComboBox(self)
        self.measure_combo.addItem("confidence (mean p over R)", "confidence")
        self.measure_combo.addItem("mIoU (vs ground truth)", "miou")
        bar.addWidget(self.measure_combo)
        bar.addWidget(QLabel("Steps"))
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(30)
        self.steps_spin.setToolTip("Number of perturbation steps T (the paper uses 75)")
        bar.addWidget(self.steps_spin)
        bar.addWidget(QLabel("p"))
        self.percent_spin = QDoubleSpinBox(self)
        self.percent_spin.setRange(0.1, 100.0)
        self.percent_spin.setDecimals(1)
        self.percent_spin.setValue(100.0)
        self.percent_spin.setSuffix(" %")
        self.percent_spin.setToolTip("Share of the support pixels the curve covers (100% = the full curve; "
                                     "less gives IAUC@p / DAUC@p)")
        bar.addWidget(self.percent_spin)
        bar.addStretch(1)
        root.addLayout(bar)
        # second row: run, progress, status, export (one row did not fit the analysis pane)
        bar = QHBoxLayout()
        self.run_button = QPushButton("Run IAUC / DAUC", self)
        self.run_button.clicked.connect(self.run)
        bar.addWidget(self.run_button)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)
        bar.addWidget(self.cancel_button)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(200)
        bar.addWidget(self.progress)
        self.status_label = QLabel("", self)
        bar.addWidget(self.status_label, 1)
        self.export_button = QToolButton(self)
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_menu = QMenu(self.export_button)
        self.export_menu.aboutToShow.connect(self._fill_export_menu)
        self.export_button.setMenu(self.export_menu)
        bar.addWidget(self.export_button)
        root.addLayout(bar)

        splitter = QSplitter(Qt.Orientation.Vertical, self)
        plots = QWidget(splitter)
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        self.value_labels: dict[str, QLabel] = {}
        self.markers: dict[str, pg.ScatterPlotItem] = {}
        self.marker_lines: dict[str, pg.InfiniteLine] = {}
        self.lines: dict[tuple[str, str], pg.PlotDataItem] = {}
        for column, metric in enumerate(METRICS):
            plot = pg.PlotWidget(plots, background="w")
            plot.setMinimumHeight(160)
            item = plot.getPlotItem()
            item.showGrid(x=True, y=True, alpha=0.25)
            item.setLabel("bottom", f"fraction of support pixels {'inserted' if metric == 'iauc' else 'deleted'}")
            item.setLabel("left", "score")
            item.getAxis("left").enableAutoSIPrefix(False)
            item.setTitle(METRIC_TITLES[metric])
            # insertion curves rise (legend bottom right), deletion curves fall (top right)
            item.addLegend(offset=(-10, -10) if metric == "iauc" else (-10, 10),
                           brush=pg.mkBrush(255, 255, 255, 210), pen=pg.mkPen(200, 200, 200), labelTextColor="k")
            item.setXRange(0, 1, padding=0.02)
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((90, 90, 90), width=1))
            marker = pg.ScatterPlotItem(size=13, pen=pg.mkPen((20, 20, 20), width=2), brush=pg.mkBrush(None))
            line.setVisible(False)
            marker.setVisible(False)
            item.addItem(line, ignoreBounds=True)
            item.addItem(marker)
            plot.scene().sigMouseClicked.connect(lambda event, m=metric: self._on_plot_clicked(m, event))
            label = QLabel("", plots)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(plot, 0, column)
            grid.addWidget(label, 1, column)
            self.plots[metric], self.value_labels[metric] = plot, label
            self.markers[metric], self.marker_lines[metric] = marker, line
            # background, axes, text and curve colours follow the app's theme, also when it changes
            follow_theme(plot, lambda colours, m=metric: self._apply_plot_colours(m, colours))
        splitter.addWidget(plots)

        lower = QWidget(splitter)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        nav = QHBoxLayout()
        nav.addWidget(QLabel("Show"))
        self.method_combo = QComboBox(self)
        self.method_combo.setMinimumContentsLength(12)
        self.method_combo.currentIndexChanged.connect(lambda _: self._on_selection_changed())
        nav.addWidget(self.method_combo)
        self.metric_combo = QComboBox(self)
        for metric in METRICS:
            self.metric_combo.addItem(METRIC_TITLES[metric], metric)
        self.metric_combo.currentIndexChanged.connect(lambda _: self._on_selection_changed())
        nav.addWidget(self.metric_combo)
        self.first_button = self._nav_button("|<", "First point (Home)", lambda: self.set_frame(0))
        self.back_button = self._nav_button("<", "Previous point (Left)", lambda: self.step(-1))
        self.play_button = self._nav_button("Play", "Play / pause (Space)", self.toggle_play)
        self.play_button.setMinimumWidth(56)
        self.forward_button = self._nav_button(">", "Next point (Right)", lambda: self.step(1))
        self.last_button = self._nav_button(">|", "Last point (End)", lambda: self.set_frame(self.frame_count() - 1))
        for b in (self.first_button, self.back_button, self.play_button, self.forward_button, self.last_button):
            nav.addWidget(b)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._on_slider)
        nav.addWidget(self.slider, 1)
        nav.addWidget(QLabel("fps"))
        self.fps_spin = QSpinBox(self)
        self.fps_spin.setRange(1, 30)
        self.fps_spin.setValue(4)
        self.fps_spin.valueChanged.connect(lambda v: self._player.setInterval(int(1000 / v)))
        nav.addWidget(self.fps_spin)
        lower_layout.addLayout(nav)
        self.frame_label = QLabel("No frames yet: choose the methods and press Run.", self)
        self.frame_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lower_layout.addWidget(self.frame_label)
        self.panel_area = QWidget(self)
        self.panel_layout = QHBoxLayout(self.panel_area)
        self.panel_layout.setContentsMargins(0, 0, 0, 0)
        self.panels: dict[str, ImagePanel] = {}
        # the probability colour bar, painted from the palette (follows the theme)
        self.colorbar_label = Colorbar(self)
        self.colorbar_label.set_scale(Scale("inferno", 0.0, 1.0, False), "p(foreground)")
        lower_layout.addWidget(self.panel_area, 1)
        splitter.addWidget(lower)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        root.addWidget(splitter, 1)
        self._player.setInterval(int(1000 / self.fps_spin.value()))
        for key, slot in ((Qt.Key.Key_Space, self.toggle_play), (Qt.Key.Key_Left, lambda: self.step(-1)),
                          (Qt.Key.Key_Right, lambda: self.step(1)), (Qt.Key.Key_Home, lambda: self.set_frame(0)),
                          (Qt.Key.Key_End, lambda: self.set_frame(self.frame_count() - 1))):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)

    def _nav_button(self, text: str, tip: str, slot) -> QToolButton:
        button = QToolButton(self)  # compact: the analysis pane is narrow
        button.setText(text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def _build_panels(self, shots: int) -> None:
        names = R.panel_names(shots)
        if list(self.panels) == names:
            return
        for panel in self.panels.values():
            self.panel_layout.removeWidget(panel)
            panel.deleteLater()
        self.panel_layout.removeWidget(self.colorbar_label)
        self.panels = {}
        for name in names:
            panel = ImagePanel(name, R.panel_title(name), self.panel_area)
            panel.exportRequested.connect(self._export_panel_dialog)
            self.panels[name] = panel
            self.panel_layout.addWidget(panel, 1)
        self.panel_layout.addWidget(self.colorbar_label, 0)

    # -------------------------------------------------------------------------------- context
    def set_context(self, model, episode, attributions: Mapping[str, Any], region: Optional[np.ndarray] = None,
                    *, region_source: Optional[str] = None) -> None:
        """A new episode/model/region/attribution set: cancels a running job, clears the curves."""
        self._cancel_running()
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
        self.episode = episode
        self.region = None if region is None else np.asarray(region, bool)
        self.region_source = canonical_source(region_source or (PREDICTION if region is None else BRUSHED))
        self.methods = {name: method_input(name, value) for name, value in attributions.items()}
        self._context_key = self._key_of(self.spec, episode, self.region)
        self._clear_results()
        self._fill_methods()
        self._update_controls()

    def add_explanation(self, result, episode=None, model=None) -> None:
        """Add one explanation (an ExplanationResult) to the context, or start a new context
        when its model, episode or region differ from the current ones."""
        model = model if model is not None else (self.spec or ModelSpec(getattr(result, "model", "")))
        episode = episode if episode is not None else self.episode
        spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
        region = getattr(result, "region", None)
        source = getattr(result, "region_source", None)
        name = getattr(result, "method", "method")
        if episode is None:
            return
        key = self._key_of(spec, episode, None if region is None else np.asarray(region, bool))
        if key != self._context_key or self.episode is None:
            self.set_context(spec, episode, {name: result}, region, region_source=source)
            return
        self.methods[name] = method_input(name, result)
        self._fill_methods()
        self._update_controls()

    @staticmethod
    def _key_of(spec: ModelSpec, episode, region: Optional[np.ndarray]) -> Any:
        return (spec, input_key(episode, region))

    @Slot(object)
    def _on_window_result(self, result) -> None:
        window = getattr(self, "_window", None)
        if window is None:
            return
        try:
            episode = window.current_episode()
            spec = window.model_spec()
        except Exception:  # noqa: BLE001 - a window without an episode: nothing to add
            return
        if len(getattr(result, "maps", [])) != episode.shots:
            return
        self.add_explanation(result, episode, spec)

    def _fill_methods(self) -> None:
        """One checkable entry per method; new methods start checked, others keep their state."""
        previous = {a.text(): a.isChecked() for a in self.methods_menu.actions()}
        self.methods_menu.clear()
        for name in self.methods:
            self._colour_index.setdefault(name, len(self._colour_index))
            action = QAction(name, self.methods_menu)
            action.setCheckable(True)
            action.setChecked(previous.get(name, True))
            self.methods_menu.addAction(action)
        self.methods_button.setText(f"Methods ({len(self.selected_methods())}/{len(self.methods)})")
        for action in self.methods_menu.actions():
            action.toggled.connect(lambda _: self.methods_button.setText(
                f"Methods ({len(self.selected_methods())}/{len(self.methods)})"))

    def selected_methods(self) -> list[str]:
        return [a.text() for a in self.methods_menu.actions() if a.isChecked()]

    def set_selected_methods(self, names: Sequence[str]) -> None:
        for action in self.methods_menu.actions():
            action.setChecked(action.text() in names)

    def set_parameters(self, *, measure: Optional[str] = None, steps: Optional[int] = None,
                       percent: Optional[float] = None) -> None:
        if measure is not None:
            self.measure_combo.setCurrentIndex(max(0, self.measure_combo.findData(measure)))
        if steps is not None:
            self.steps_spin.setValue(int(steps))
        if percent is not None:
            self.percent_spin.setValue(float(percent))

    # ------------------------------------------------------------------------------------ run
    def run(self) -> Optional[int]:
        """Compute the curves of the selected methods on the worker. Returns the job id."""
        if self.worker is None or self.episode is None or not self.methods:
            self._set_status("Nothing to run: explain the region first (the playback uses the explanations).")
            return None
        methods = {n: self.methods[n] for n in self.selected_methods() if n in self.methods}
        if not methods:
            self._set_status("Choose at least one method (Methods menu).")
            return None
        self._cancel_running()
        self._clear_results()
        self._run_id += 1
        run_id = self._run_id
        measure = self.measure_combo.currentData()
        steps = int(self.steps_spin.value())
        percent = float(self.percent_spin.value())
        percentage = None if percent >= 100.0 else percent / 100.0
        self._run_params = {"measure": measure, "steps": steps, "percentage": percentage,
                            "methods": list(methods)}
        spec, episode, region, outbox = self.spec, self.episode.copy(), self.region, self._inbox
        region = None if region is None else region.copy()

        source = self.region_source

        def job(ctx, cache):
            return playback_job(ctx, cache, spec, episode, methods, region, outbox, run_id, region_source=source,
                                measure=measure, steps=steps, percentage=percentage)

        for plot in self.plots.values():
            plot.getPlotItem().setLabel("left", "confidence over R" if measure == "confidence" else "foreground IoU")
        self.state = STATE_RUNNING
        self.progress.setValue(0)
        self.job_id = self.worker.submit(CHANNEL, job, f"IAUC/DAUC ({', '.join(methods)})")
        self._follow = True
        self._poll.start()
        self._set_status(f"computing {len(methods)} method(s) x {len(METRICS)} curves, {steps} steps…")
        self._update_controls()
        return self.job_id

    def cancel(self) -> None:
        """Ask the running job to stop (at its next step); the frames computed so far stay."""
        if self.job_id is not None and self.state == STATE_RUNNING and self.worker is not None:
            self.worker.cancel(self.job_id)
            self.state = STATE_CANCELLING
            self._set_status("cancelling…")
            self._update_controls()

    def _cancel_running(self) -> None:
        if self.job_id is not None and self.worker is not None and self.state in (STATE_RUNNING, STATE_CANCELLING):
            self.worker.cancel(self.job_id)
        self.job_id = None
        self._poll.stop()
        self.pause()
        self._drop_inbox()

    def _drop_inbox(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return

    def _clear_results(self) -> None:
        self.frames.clear()
        self.curves.clear()
        self.start = None
        self._current = None
        self.state = STATE_IDLE
        for metric, plot in self.plots.items():
            item = plot.getPlotItem()
            for line in [l for (m, k), l in self.lines.items() if k == metric]:
                item.removeItem(line)
            if item.legend is not None:
                item.legend.clear()
            self.markers[metric].setVisible(False)
            self.marker_lines[metric].setVisible(False)
        self.lines.clear()
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.blockSignals(False)
        for panel in self.panels.values():
            panel.set_image(None)
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        self.method_combo.blockSignals(False)
        self.frame_label.setText("No frames yet: choose the methods and press Run.")
        self._update_values()

    # ------------------------------------------------------------------------------ messages
    @Slot()
    def drain(self) -> int:
        """Take the frames the job has produced so far (GUI thread). Returns how many arrived."""
        arrived = 0
        changed: set[tuple[str, str]] = set()
        finished_curve = False
        while True:
            try:
                kind, run_id, payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            if run_id != self._run_id:
                continue  # a message of an older run
            if kind == "start":
                self.start = payload
                self._build_panels(payload.base.shots)
            elif kind == "frame":
                key = (payload.method, payload.metric)
                frames = self.frames.setdefault(key, [])
                if payload.index != len(frames):  # never show a frame out of place
                    continue
                frames.append(payload)
                changed.add(key)
                arrived += 1
                if self.method_combo.findText(payload.method) < 0:
                    self.method_combo.addItem(payload.method)
            elif kind == "curve":
                self.curves[payload.key] = payload
                changed.add(payload.key)
                finished_curve = True
        for key in changed:
            self._update_line(key)
        if changed or finished_curve:
            self._update_values()
        if arrived:
            expected = self.expected_frames()
            if expected:
                done = sum(len(f) for f in self.frames.values())
                self.progress.setValue(max(self.progress.value(), int(1000 * done / expected)))
            self._after_arrival()
            self.framesArrived.emit(arrived)
        return arrived

    def expected_frames(self) -> int:
        """How many frames the running (or last) run produces in all, once its start is known."""
        if self.start is None or not self._run_params:
            return 0
        p = self._run_params
        return len(p["methods"]) * sum(
            curve_state_count(metric_settings(metric, p["measure"], p["steps"], p["percentage"]),
                              self.start.base.shots, self.start.input_size) for metric in METRICS)

    def _after_arrival(self) -> None:
        count = self.frame_count()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, count - 1))
        self.slider.blockSignals(False)
        if count and (self._current is None or (self._follow and not self._player.isActive())):
            self.set_frame(count - 1, follow=True)
        elif self._current is not None:
            self._show_marker()

    @Slot(int, float, str)
    def _on_progress(self, job_id: int, fraction: float, message: str) -> None:
        if job_id == self.job_id:
            self.progress.setValue(int(fraction * 1000))
            if self.state == STATE_RUNNING:
                self._set_status(message)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result) -> None:
        if job_id != self.job_id:
            return
        self.drain()
        for curve in result or []:
            self.curves[curve.key] = curve
            self._update_line(curve.key)
        self._end(STATE_DONE, "done")
        self._update_values()

    @Slot(int, str, str)
    def _on_failed(self, job_id: int, message: str, trace: str) -> None:
        if job_id == self.job_id:
            self.drain()
            self._end(STATE_FAILED, f"failed: {message}")

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if job_id == self.job_id:
            self.drain()
            self._end(STATE_CANCELLED, "cancelled: the curves stop at the last computed step (no value)")

    @Slot(int)
    def _on_dropped(self, job_id: int) -> None:
        if job_id == self.job_id:
            self._end(STATE_CANCELLED, "cancelled")

    def _end(self, state: str, message: str) -> None:
        self._poll.stop()
        self.state = state
        self.job_id = None
        if state == STATE_DONE:
            self.progress.setValue(1000)
        self._set_status(message)
        self._update_controls()
        self._update_values()
        self.runFinished.emit(state)

    def _set_status(self, text: str) -> None:
        self.message = text
        self.status_label.setText(text)

    def _update_controls(self) -> None:
        running = self.state in (STATE_RUNNING, STATE_CANCELLING)
        self.run_button.setEnabled(not running and bool(self.methods) and self.worker is not None)
        self.cancel_button.setEnabled(self.state == STATE_RUNNING)
        self.cancel_button.setText("Cancelling…" if self.state == STATE_CANCELLING else "Cancel")
        has_frames = self.frame_count() > 0
        for b in (self.first_button, self.back_button, self.play_button, self.forward_button, self.last_button):
            b.setEnabled(has_frames or running)

    # ---------------------------------------------------------------------------------- curves
    def _colour(self, method: str) -> tuple[int, int, int]:
        """The method's colour in exported figures (white background)."""
        index = self._colour_index.setdefault(method, len(self._colour_index))
        return F.palette_colour(index)

    def _display_colour(self, method: str) -> QColor:
        """The method's colour on screen: the same hue, with enough contrast on the plot background."""
        index = self._colour_index.setdefault(method, len(self._colour_index))
        return self.plot_colours.series_colour(index)

    def _apply_plot_colours(self, metric: str, colours: PlotColours) -> None:
        """Recolour what this widget drew on ``metric``'s plot (curves, marker, step line)."""
        self.plot_colours = colours
        self.markers[metric].setPen(pg.mkPen(colours.marker, width=2))
        self.marker_lines[metric].setPen(pg.mkPen(colours.guide, width=1))
        for (method, line_metric), line in self.lines.items():
            if line_metric == metric:
                colour = self._display_colour(method)
                line.setPen(pg.mkPen(colour, width=2))
                line.setSymbolBrush(pg.mkBrush(colour))
        self._update_values()

    def _update_line(self, key: tuple[str, str]) -> None:
        method, metric = key
        if metric not in self.plots:
            return
        frames = self.frames.get(key, [])
        x = np.array([f.fraction for f in frames], float)
        y = np.array([f.score for f in frames], float)
        line = self.lines.get(key)
        item = self.plots[metric].getPlotItem()
        if line is None:
            colour = self._display_colour(method)
            line = pg.PlotDataItem(pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                                   symbolBrush=pg.mkBrush(colour), symbolPen=None, name=method)
            item.addItem(line)
            self.lines[key] = line
        line.setData(x, y)
        line.setSymbol("o" if len(x) <= 40 else None)
        curve = self.curves.get(key)
        if item.legend is not None:
            for sample, label in item.legend.items:
                if sample.item is line:
                    label.setText(self._legend_text(method, curve))

    @staticmethod
    def _legend_text(method: str, curve: Optional[Curve]) -> str:
        if curve is not None and curve.value is not None:
            return f"{method} ({curve.value_name()} {curve.value:.4f})"
        return method

    def _update_values(self) -> None:
        """The value of each curve and the parameters that change it, next to the plots."""
        params = self._run_params
        for metric, label in self.value_labels.items():
            if not params:
                label.setText("")
                continue
            p = params.get("percentage")
            head = (f"<b>{METRIC_TITLES[metric]}{'@p' if p else ''}</b>: {params['steps']} steps · measure "
                    f"{MEASURE_TITLES.get(params['measure'], params['measure'])} · zero substrate · "
                    f"p = {100 * (p or 1.0):g}% · ranking global over supports · R = {self.region_source}")
            rows = []
            for method in params.get("methods", []):
                curve = self.curves.get((method, metric))
                frames = self.frames.get((method, metric), [])
                colour = self._display_colour(method).name()
                if curve is not None and curve.value is not None:
                    value = f"{curve.value_name()} <b>{curve.value:.4f}</b>"
                elif self.state in (STATE_RUNNING, STATE_CANCELLING):
                    value = f"computing… ({len(frames)} points)"
                elif frames:
                    value = f"incomplete ({len(frames)} points, no value)"
                else:
                    value = "not computed"
                rows.append(f'<span style="color:{colour}">&#9632;</span> {method}: {value}')
            label.setText(head + "<br>" + " &nbsp; ".join(rows))

    # -------------------------------------------------------------------------------- frames
    def selected_key(self) -> Optional[tuple[str, str]]:
        method = self.method_combo.currentText()
        metric = self.metric_combo.currentData()
        return (method, metric) if method else None

    def select(self, method: str, metric: str) -> None:
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findText(method)))
        self.metric_combo.setCurrentIndex(max(0, self.metric_combo.findData(metric)))

    def frame_count(self) -> int:
        key = self.selected_key()
        return len(self.frames.get(key, [])) if key else 0

    def current_frame(self) -> Optional[R.CausalFrame]:
        key = self.selected_key()
        frames = self.frames.get(key, []) if key else []
        if self._current is None or not 0 <= self._current < len(frames):
            return None
        return frames[self._current]

    def current_index(self) -> Optional[int]:
        return self._current

    def set_frame(self, index: int, follow: bool = False) -> None:
        """Show frame ``index`` of the selected curve (clamped) and put the marker on its point."""
        count = self.frame_count()
        if count == 0:
            return
        index = max(0, min(count - 1, int(index)))
        self._follow = follow or index == count - 1
        self._current = index
        if self.slider.value() != index:
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        frame = self.current_frame()
        if frame is None or self.start is None:
            return
        panels = R.frame_panels(self.start.base, frame)
        for name, image in panels.items():
            if name in self.panels:
                self.panels[name].set_image(image)
        p = self._run_params
        total = curve_state_count(metric_settings(frame.metric, p.get("measure", "confidence"), p.get("steps"),
                                                  p.get("percentage")),
                                  self.start.base.shots, self.start.input_size) if p else None
        self.frame_label.setText(R.frame_title(frame, total, self._run_params.get("measure", "")))
        self._show_marker()
        self._update_controls()
        self.frameShown.emit(index)

    def _show_marker(self) -> None:
        frame = self.current_frame()
        key = self.selected_key()
        for metric in self.plots:
            visible = frame is not None and key is not None and metric == key[1]
            self.markers[metric].setVisible(visible)
            self.marker_lines[metric].setVisible(visible)
            if visible:
                self.markers[metric].setData([frame.fraction], [frame.score])
                self.marker_lines[metric].setValue(frame.fraction)

    def marker_position(self) -> Optional[tuple[float, float]]:
        """(x, y) of the marker on the selected curve's plot, as drawn."""
        key = self.selected_key()
        if key is None or not self.markers[key[1]].isVisible():
            return None
        x, y = self.markers[key[1]].getData()
        return float(x[0]), float(y[0])

    def curve_point(self, method: str, metric: str, index: int) -> tuple[float, float]:
        """Point ``index`` of a plotted curve, as drawn."""
        x, y = self.lines[(method, metric)].getData()
        return float(x[index]), float(y[index])

    def step(self, delta: int) -> None:
        if self._current is None:
            self.set_frame(0)
        else:
            self.set_frame(self._current + delta)

    def play(self) -> None:
        if self.frame_count() == 0:
            return
        if self._current is not None and self._current >= self.frame_count() - 1 and self.state != STATE_RUNNING:
            self.set_frame(0)
        self._player.start()
        self.play_button.setText("Pause")

    def pause(self) -> None:
        self._player.stop()
        self.play_button.setText("Play")

    def toggle_play(self) -> None:
        self.pause() if self._player.isActive() else self.play()

    def is_playing(self) -> bool:
        return self._player.isActive()

    def _tick(self) -> None:
        count = self.frame_count()
        if self._current is not None and self._current >= count - 1:
            if self.state not in (STATE_RUNNING, STATE_CANCELLING):
                self.pause()  # the end; while computing, wait for the next frame
            return
        self.step(1)

    def _on_slider(self, value: int) -> None:
        self.set_frame(value)

    def _on_selection_changed(self) -> None:
        count = self.frame_count()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, count - 1))
        self.slider.blockSignals(False)
        if count:
            self.set_frame(min(self._current if self._current is not None else count - 1, count - 1))
        else:
            self._current = None
            self._show_marker()

    def _on_plot_clicked(self, metric: str, event) -> None:
        """Click on a plot: jump to the nearest point of the selected method's curve of that metric."""
        key = self.selected_key()
        if key is None:
            return
        frames = self.frames.get((key[0], metric), [])
        if not frames:
            return
        view = self.plots[metric].getPlotItem().vb
        point = view.mapSceneToView(event.scenePos())
        nearest = int(np.argmin([abs(f.fraction - point.x()) for f in frames]))
        if metric != key[1]:
            self.metric_combo.setCurrentIndex(self.metric_combo.findData(metric))
        self.set_frame(nearest)

    # ------------------------------------------------------------------------------- exports
    def all_frames(self) -> list[R.CausalFrame]:
        return [f for key in self.frames for f in self.frames[key]]

    def export_panel_png(self, name: str, path: str | Path) -> Path:
        """One panel of the current frame at full resolution (rendered from the data)."""
        frame = self._need_frame()
        return R.write_png(path, R.frame_panels(self.start.base, frame)[name])

    def export_frame_figure(self, path: str | Path, scale: float = 2.0) -> Path:
        frame = self._need_frame()
        title = self.frame_label.text()
        return R.write_png(path, R.frame_composite(self.start.base, frame, title=title, scale=scale))

    def export_curves_csv(self, path: str | Path) -> Path:
        return R.write_curves_csv(path, self.export_curves())

    def export_curves_png(self, path: str | Path, metric: str, scale: float = 2.0) -> Path:
        curves = [c for c in self.export_curves() if c.metric == metric]
        if not curves:
            raise R.ExportError(f"no {METRIC_TITLES.get(metric, metric)} curve to export")
        frame = self.current_frame()
        marker = (frame.fraction, frame.score) if frame is not None and frame.metric == metric else None
        series = [F.Series(self._legend_text(c.method, c if c.complete else None), c.fractions, c.scores,
                           self._colour(c.method)) for c in curves]
        verb = "deleted" if metric == "dauc" else "inserted"
        image = F.line_plot(series, title=f"{METRIC_TITLES[metric]}: {curves[0].describe()}",
                            xlabel=f"fraction of support pixels {verb}",
                            ylabel="confidence over R" if curves[0].measure == "confidence" else "foreground IoU",
                            marker=marker, scale=scale)
        return R.write_png(path, image)

    def export_curves(self) -> list[Curve]:
        """Finished curves, and the computed part of unfinished ones (``complete`` False, no value)."""
        out = []
        for key, frames in self.frames.items():
            curve = self.curves.get(key)
            if curve is None:
                method, metric = key
                measure = self._run_params.get("measure", "confidence")
                params = dict(metric_settings(metric, measure, self._run_params.get("steps"),
                                              self._run_params.get("percentage")), substrate=SUBSTRATE)
                curve = Curve(metric, measure, method, [f.fraction for f in frames], [f.score for f in frames],
                              None, params, False)
            out.append(curve)
        return out

    def export_frames(self, path: str | Path) -> Path:
        """Every frame: a ZIP when ``path`` ends in .zip, otherwise a folder."""
        if self.start is None or not self.frames:
            raise R.ExportError("no frames to export: run the metrics first")
        measure = self._run_params.get("measure", "")
        if str(path).lower().endswith(".zip"):
            return R.write_frames_zip(path, self.start.base, self.all_frames(), measure=measure)
        return R.write_frames_folder(path, self.start.base, self.all_frames(), measure=measure)

    def export_attribution_figure(self, path: str | Path, scale: float = 2.0) -> Path:
        if self.episode is None or not self.methods:
            raise R.ExportError("no attribution maps to export")
        sizes = [s.image.shape[:2] for s in self.episode.supports]
        rows = [F.MapRow(name, m.support_maps(sizes), m.signed,
                         m.params.get("zero_level") if isinstance(m.params.get("zero_level"), (int, float)) else None)
                for name, m in self.methods.items()]
        ep = self.episode
        prediction = self.start.prediction if self.start is not None else None
        iou = None
        if prediction is not None and ep.query_mask is not None:
            from ..imaging import foreground_iou

            iou = foreground_iou(prediction, ep.query_mask)
        region = self.start.region if self.start is not None else self.region
        image = F.episode_figure(ep.query_image, [s.image for s in ep.supports], [s.mask for s in ep.supports], rows,
                                 prediction=prediction, region=region, region_label=self.region_source,
                                 ground_truth=ep.query_mask, iou=iou, scale=scale, tile=200)
        return R.write_png(path, image)

    def report_inputs(self) -> R.ReportInputs:
        if self.episode is None or self.start is None:
            raise R.ExportError("run the metrics first: the report needs the prediction and the curves")
        sizes = [s.image.shape[:2] for s in self.episode.supports]
        methods = [R.MethodResult(name, m.support_maps(sizes), m.signed, m.params, m.seconds, m.level_weights,
                                  m.level_names) for name, m in self.methods.items()]
        folder = getattr(self.episode, "folder", None)
        return R.ReportInputs(
            self.episode, str(folder) if folder else "(unsaved episode)", self.spec.name,
            self.start.model_description, self.start.input_size, self.start.device,
            "GPU" if self.start.device.startswith("cuda") else "CPU", self.start.prediction, self.start.region,
            self.region_source, methods, self.export_curves(), checkpoint=self.spec.checkpoint,
            measure=self._run_params.get("measure", "confidence"),
            notes=["Maps computed in the window; for ranking they were resized from the supports' resolution to "
                   "the model's input size."],
        )

    def export_report(self, folder: str | Path, pdf: bool = True) -> R.ReportFiles:
        return R.write_report(folder, self.report_inputs(), pdf=pdf)

    def _need_frame(self) -> R.CausalFrame:
        frame = self.current_frame()
        if frame is None or self.start is None:
            raise R.ExportError("no frame is shown: run the metrics first")
        return frame

    # ---------------------------------------------------------------------- export dialogs
    def _fill_export_menu(self) -> None:
        menu = self.export_menu
        menu.clear()
        has_frame = self.current_frame() is not None
        has_curves = bool(self.frames)
        panel_menu = menu.addMenu("Panel of this frame (PNG, full resolution)")
        panel_menu.setEnabled(has_frame)
        for name, panel in self.panels.items():
            panel_menu.addAction(panel.title.text(), lambda n=name: self._export_panel_dialog(n))
        menu.addAction("This frame as a figure (PNG)…", self._dialog(
            "Frame figure", "frame.png", "PNG image (*.png)", self.export_frame_figure)).setEnabled(has_frame)
        menu.addSeparator()
        menu.addAction("Curves (CSV)…", self._dialog("Curves", "curves.csv", "CSV (*.csv)",
                                                      self.export_curves_csv)).setEnabled(has_curves)
        for metric in METRICS:
            menu.addAction(f"{METRIC_TITLES[metric]} plot (PNG)…", self._dialog(
                f"{METRIC_TITLES[metric]} plot", f"{metric}.png", "PNG image (*.png)",
                lambda p, m=metric: self.export_curves_png(p, m))).setEnabled(has_curves)
        menu.addAction("All frames (ZIP)…", self._dialog("Frames", "frames.zip", "ZIP archive (*.zip)",
                                                          self.export_frames)).setEnabled(has_curves)
        menu.addAction("All frames (folder)…", self._folder_dialog("Frames folder", self.export_frames)).setEnabled(
            has_curves)
        menu.addSeparator()
        menu.addAction("Attribution figure (PNG)…", self._dialog(
            "Attribution figure", "attributions.png", "PNG image (*.png)", self.export_attribution_figure)
        ).setEnabled(bool(self.methods))
        menu.addAction("Report (HTML + PDF)…", self._folder_dialog("Report folder", self.export_report)).setEnabled(
            self.start is not None)

    def _dialog(self, title: str, default: str, filters: str, writer):
        def run() -> None:
            path, _ = QFileDialog.getSaveFileName(self, f"Export {title}", default, filters)
            if path:
                self._guarded(writer, path)

        return run

    def _folder_dialog(self, title: str, writer):
        def run() -> None:
            path = QFileDialog.getExistingDirectory(self, title)
            if path:
                self._guarded(writer, path)

        return run

    def _export_panel_dialog(self, name: str) -> None:
        frame = self.current_frame()
        default = f"{name}_step{frame.index:03d}.png" if frame is not None else f"{name}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Export panel", default, "PNG image (*.png)")
        if path:
            self._guarded(lambda p: self.export_panel_png(name, p), path)

    def _guarded(self, writer, path: str) -> None:
        from PySide6.QtWidgets import QApplication

        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            writer(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the widget keeps working
            QApplication.restoreOverrideCursor()
            QMessageBox.warning(self, "Export failed", f"{path}: {exc}")
            return
        QApplication.restoreOverrideCursor()
        self._set_status(f"saved {path}")

    # ------------------------------------------------------------------------------ teardown
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._cancel_running()
        super().closeEvent(event)
