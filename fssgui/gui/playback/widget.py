"""Insertion / deletion playback: IAUC and DAUC curves, scrubbed step by step.

API for the window (everything is called from the GUI thread)::

    widget = PlaybackWidget(device_worker, pool)   # the pool writes the exports
    widget.set_context(model, episode, attributions, region, region_source="prediction")
    widget.run()                                   # computes on the device worker; returns the job handle
    widget.cancel()

* ``model``: a model name or a :class:`~fssgui.pipeline.ModelSpec` (name, checkpoint, device).
* ``attributions``: ``{method name: maps}``, the maps being an
  :class:`~fssgui.explain.base.Attribution` (``[K, S, S]`` at the model size, used as is), an
  :class:`~fssgui.pipeline.ExplanationResult` (its model-size maps are ranked), an array/tensor
  ``[K, h, w]`` or a list of per-support arrays.
* ``region``: the query region R (bool, query resolution) scored by the confidence measure;
  ``None`` = the model's prediction on the unperturbed episode.
* :meth:`add_explanation` adds one method to the current context (a new context when the model,
  episode or region changed); the window calls it with every explanation it shows.

What it shows: one plot per metric (IAUC, DAUC) with every computed method overlaid
(:class:`~.plots.CurvePlots`); a slider, play/pause and step buttons choose point *i* of the
selected method's curve; the panels (:class:`~.panels.FramePanels`) then show the state behind
that point (frame *i*): the perturbed supports and their masks, the query prediction on those
supports and the foreground probability. Frame *i* and the marker at curve point *i* come from the
same :class:`~fssgui.report.CausalFrame`, so they cannot be a step apart.

The computation is :func:`fssgui.pipeline.playback.curves_job` on the device worker: its frames
stream in on the job's handle while they are computed (coalesced into one repaint per
:attr:`PlaybackWidget.FLUSH_MS`), so the curves grow and the view can follow the newest step. A
new run or context discards the previous job's handle: nothing of an older run is ever shown.
Exports (:mod:`.exports`, ``widget.exports``) are written on the worker pool from a snapshot.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from functools import partial
from typing import Any, Mapping, Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QSizePolicy,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ... import report as R
from ...metrics.causal import METRIC_TITLES, Curve, curve_state_count, metric_settings
from ...pipeline import BRUSHED, PREDICTION, ModelSpec, input_key
from ...pipeline.playback import METRICS, MethodInput, RunStart, curves_job, method_input
from ...pipeline.regions import canonical_source
from ...playback_export import legend_text
from ..workers import DeviceWorker, JobHandle, LatestJob, WorkerPool
from .exports import ExportMenu, PlaybackExports
from .panels import FramePanels
from .plots import CurvePlots


class PlaybackState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


class PlaybackWidget(QWidget):
    """See the module docstring."""

    frameShown = Signal(int)  # index of the frame now selected (slider, marker, title)
    frameDrawn = Signal(int)  # index of the frame whose panels are now drawn (drawn on the compute pool)
    runFinished = Signal(str)  # final state: done / cancelled / failed
    framesArrived = Signal(int)  # how many frames the last flush brought
    exported = Signal(str)  # the path an export wrote
    errorRaised = Signal(str)  # a failed export or run, for the window's log

    FLUSH_MS = 100  # streamed frames are taken in batches: one repaint of the plots per batch
    DRAWN_FRAMES = 64  # drawn frames kept (scrubbing back shows them at once)

    def __init__(self, device: Optional[DeviceWorker] = None, pool: Optional[WorkerPool] = None,
                 compute: Optional[WorkerPool] = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.device = device
        self.pool = pool if pool is not None else WorkerPool("playback-exports", 1, self)
        self.compute = compute if compute is not None else WorkerPool("playback-frames", 1, self)
        self.draw_job = LatestJob()  # the panels of the frame being drawn
        self._drawn: OrderedDict[tuple, dict] = OrderedDict()  # (method, metric, index) -> panel images
        self.spec: Optional[ModelSpec] = None
        self.episode = None
        self.region: Optional[np.ndarray] = None
        self.region_source = PREDICTION
        self.methods: dict[str, MethodInput] = {}
        self.frames: dict[tuple[str, str], list[R.CausalFrame]] = {}
        self.curves: dict[tuple[str, str], Curve] = {}
        self.start: Optional[RunStart] = None
        self.state = PlaybackState.IDLE
        self.message = ""
        self.job = LatestJob()
        self.run_params: dict[str, Any] = {}
        self._pending: list[Any] = []  # streamed messages not shown yet
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(self.FLUSH_MS)
        self._flush_timer.timeout.connect(self.drain)
        self._current: Optional[int] = None
        self._follow = True
        self._context_key: Any = None
        self._player = QTimer(self)
        self._player.timeout.connect(self._tick)
        self._build()
        self._update_controls()

    # ------------------------------------------------------------------------------- building
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()  # what to compute
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
        bar = QHBoxLayout()  # run, progress, status, export
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
        # a new status text must not lay the tab out again (and repaint the plots) at every step
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar.addWidget(self.status_label, 1)
        self.export_button = QToolButton(self)
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.exports = PlaybackExports(self, self.pool)
        self.export_menu = ExportMenu(self, self.export_button)
        self.export_button.setMenu(self.export_menu)
        bar.addWidget(self.export_button)
        root.addLayout(bar)

        splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.curve_plots = CurvePlots(METRICS, splitter)
        self.curve_plots.pointClicked.connect(self._on_plot_clicked)
        self.curve_plots.coloursChanged.connect(self._update_values)
        splitter.addWidget(self.curve_plots)
        lower = QWidget(splitter)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        # which curve: its own row, so that the method names are never cut short
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Show"))
        self.method_combo = QComboBox(self)
        self.method_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.method_combo.setMinimumContentsLength(12)
        self.method_combo.currentIndexChanged.connect(lambda _: self._on_selection_changed())
        pick.addWidget(self.method_combo)
        self.metric_combo = QComboBox(self)
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for metric in METRICS:
            self.metric_combo.addItem(METRIC_TITLES[metric], metric)
        self.metric_combo.currentIndexChanged.connect(lambda _: self._on_selection_changed())
        pick.addWidget(self.metric_combo)
        pick.addStretch(1)
        lower_layout.addLayout(pick)
        nav = QHBoxLayout()  # which step
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
        self.slider.valueChanged.connect(self.set_frame)
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
        self.frame_panels = FramePanels(lower)
        self.frame_panels.exportRequested.connect(self.export_menu.panel_dialog)
        lower_layout.addWidget(self.frame_panels, 1)
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

    # the plots' and panels' parts, by the names the tests and the window use
    @property
    def plots(self):
        return self.curve_plots.plots

    @property
    def lines(self):
        return self.curve_plots.lines

    @property
    def markers(self):
        return self.curve_plots.markers

    @property
    def marker_lines(self):
        return self.curve_plots.marker_lines

    @property
    def value_labels(self):
        return self.curve_plots.value_labels

    @property
    def panels(self):
        return self.frame_panels.panels

    @property
    def colorbar_label(self):
        return self.frame_panels.colorbar

    # -------------------------------------------------------------------------------- context
    def set_context(self, model, episode, attributions: Mapping[str, Any], region: Optional[np.ndarray] = None,
                    *, region_source: Optional[str] = None) -> None:
        """A new episode/model/region/attribution set: discards a running job, clears the curves."""
        self._discard_running()
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
        self.episode = episode
        self.region = None if region is None else np.asarray(region, bool)
        self.region_source = canonical_source(region_source or (PREDICTION if region is None else BRUSHED))
        self.methods = {name: method_input(name, value) for name, value in attributions.items()}
        self._context_key = (self.spec, input_key(episode, self.region))
        self._clear_results()
        self._fill_methods()
        self._update_controls()

    def add_explanation(self, result, episode=None, model=None) -> None:
        """Add one explanation (an ExplanationResult) to the context, or start a new context
        when its model, episode or region differ from the current ones."""
        model = model if model is not None else (self.spec or ModelSpec(getattr(result, "model", "")))
        episode = episode if episode is not None else self.episode
        if episode is None or len(getattr(result, "maps", [])) != episode.shots:
            return
        spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
        region = getattr(result, "region", None)
        name = getattr(result, "method", "method")
        key = (spec, input_key(episode, None if region is None else np.asarray(region, bool)))
        if key != self._context_key or self.episode is None:
            self.set_context(spec, episode, {name: result}, region, region_source=getattr(result, "region_source", None))
            return
        self.methods[name] = method_input(name, result)
        self._fill_methods()
        self._update_controls()

    def _fill_methods(self) -> None:
        """One checkable entry per method; new methods start checked, others keep their state."""
        previous = {a.text(): a.isChecked() for a in self.methods_menu.actions()}
        self.methods_menu.clear()
        for name in self.methods:
            self.curve_plots.colour(name)  # a colour per method, in the order they came
            action = QAction(name, self.methods_menu)
            action.setCheckable(True)
            action.setChecked(previous.get(name, True))
            action.toggled.connect(lambda _: self._update_methods_button())
            self.methods_menu.addAction(action)
        self._update_methods_button()

    def _update_methods_button(self) -> None:
        self.methods_button.setText(f"Methods ({len(self.selected_methods())}/{len(self.methods)})")

    def selected_methods(self) -> list[str]:
        return [a.text() for a in self.methods_menu.actions() if a.isChecked()]

    def set_parameters(self, *, measure: Optional[str] = None, steps: Optional[int] = None,
                       percent: Optional[float] = None) -> None:
        if measure is not None:
            self.measure_combo.setCurrentIndex(max(0, self.measure_combo.findData(measure)))
        if steps is not None:
            self.steps_spin.setValue(int(steps))
        if percent is not None:
            self.percent_spin.setValue(float(percent))

    # ------------------------------------------------------------------------------------ run
    def run(self) -> Optional[JobHandle]:
        """Compute the curves of the selected methods on the device worker. Returns the job's handle."""
        if self.device is None or self.episode is None or not self.methods:
            self.set_status("Nothing to run: explain the region first (the playback uses the explanations).")
            return None
        methods = {n: self.methods[n] for n in self.selected_methods() if n in self.methods}
        if not methods:
            self.set_status("Choose at least one method (Methods menu).")
            return None
        self._discard_running()
        self._clear_results()
        measure = self.measure_combo.currentData()
        steps = int(self.steps_spin.value())
        percent = float(self.percent_spin.value())
        percentage = None if percent >= 100.0 else percent / 100.0
        self.run_params = {"measure": measure, "steps": steps, "percentage": percentage, "methods": list(methods)}
        region = None if self.region is None else self.region.copy()
        job = partial(curves_job, region_source=self.region_source, measure=measure, steps=steps,
                      percentage=percentage)
        self.curve_plots.set_score_label("confidence over R" if measure == "confidence" else "foreground IoU")
        self.state = PlaybackState.RUNNING
        self.progress.setValue(0)
        handle = self.job.start(self.device.submit(job, self.spec, self.episode.copy(), methods, region,
                                                   description=f"IAUC/DAUC ({', '.join(methods)})"))
        handle.yielded.connect(self._on_yielded)
        handle.progress.connect(self._on_progress)
        handle.finished.connect(self._on_finished)
        handle.failed.connect(lambda message, _trace: self._end(PlaybackState.FAILED, f"failed: {message}"))
        handle.cancelled.connect(lambda: self._end(
            PlaybackState.CANCELLED, "cancelled: the curves stop at the last computed step (no value)"))
        self._follow = True
        self.set_status(f"computing {len(methods)} method(s) x {len(METRICS)} curves, {steps} steps…")
        self._update_controls()
        self._update_values()
        return handle

    def cancel(self) -> None:
        """Ask the running job to stop (at its next step); the frames computed so far stay."""
        if self.job.running and self.state == PlaybackState.RUNNING:
            self.job.cancel()
            self.state = PlaybackState.CANCELLING
            self.set_status("cancelling…")
            self._update_controls()

    def _discard_running(self) -> None:
        self.job.discard()
        self._flush_timer.stop()
        self._pending.clear()
        self.pause()

    def _clear_results(self) -> None:
        self.draw_job.discard()
        self._drawn.clear()
        self.frames.clear()
        self.curves.clear()
        self.start = None
        self._current = None
        self.state = PlaybackState.IDLE
        self.curve_plots.clear()
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.blockSignals(False)
        self.frame_panels.clear()
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        self.method_combo.blockSignals(False)
        self.frame_label.setText("No frames yet: choose the methods and press Run.")
        self._update_values()

    # ------------------------------------------------------------------------------ messages
    def _on_yielded(self, message: Any) -> None:
        self._pending.append(message)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def drain(self) -> int:
        """Show the streamed messages not shown yet (GUI thread). Returns how many frames they held."""
        self._flush_timer.stop()
        messages, self._pending = self._pending, []
        arrived = 0
        changed: set[tuple[str, str]] = set()
        finished_curve = False
        for message in messages:
            if isinstance(message, RunStart):
                self.start = message
                self.frame_panels.build(message.base.shots)
            elif isinstance(message, Curve):
                self.curves[message.key] = message
                changed.add(message.key)
                finished_curve = True
            else:  # a CausalFrame
                key = (message.method, message.metric)
                frames = self.frames.setdefault(key, [])
                if message.index != len(frames):  # never show a frame out of place
                    continue
                frames.append(message)
                changed.add(key)
                arrived += 1
                if self.method_combo.findText(message.method) < 0:
                    self.method_combo.addItem(message.method)
        for key in changed:
            self._update_line(key)
        if finished_curve:  # the values beside the plots change when a curve is complete
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
        if self.start is None or not self.run_params:
            return 0
        p = self.run_params
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

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        if self.state == PlaybackState.RUNNING:
            self.set_status(message)

    def _on_finished(self, curves) -> None:
        for curve in curves or []:
            self.curves[curve.key] = curve
        self._end(PlaybackState.DONE, "done")

    def _end(self, state: PlaybackState, message: str) -> None:
        self.drain()
        for key in self.curves:
            self._update_line(key)
        self.state = state
        if state == PlaybackState.DONE:
            self.progress.setValue(1000)
        if state == PlaybackState.FAILED:
            self.errorRaised.emit(f"IAUC / DAUC {message}")
        self.set_status(message)
        self._update_controls()
        self._update_values()
        self.runFinished.emit(state.value)

    def set_status(self, text: str) -> None:
        self.message = text
        self.status_label.setText(text)

    def _update_controls(self) -> None:
        running = self.state in (PlaybackState.RUNNING, PlaybackState.CANCELLING)
        self.run_button.setEnabled(not running and bool(self.methods) and self.device is not None)
        self.cancel_button.setEnabled(self.state == PlaybackState.RUNNING)
        self.cancel_button.setText("Cancelling…" if self.state == PlaybackState.CANCELLING else "Cancel")
        has_frames = self.frame_count() > 0
        for b in (self.first_button, self.back_button, self.play_button, self.forward_button, self.last_button):
            b.setEnabled(has_frames or running)

    # ---------------------------------------------------------------------------------- curves
    def _update_line(self, key: tuple[str, str]) -> None:
        frames = self.frames.get(key, [])
        self.curve_plots.set_curve(key[0], key[1], [f.fraction for f in frames], [f.score for f in frames],
                                   legend_text(key[0], self.curves.get(key)))

    def _update_values(self) -> None:
        """The value of each curve and the parameters that change it, next to the plots."""
        self.curve_plots.show_values(self.run_params, self.curves, self.frames, self.region_source,
                                     computing=self.state in (PlaybackState.RUNNING, PlaybackState.CANCELLING))

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

    def all_frames(self) -> list[R.CausalFrame]:
        return [f for key in self.frames for f in self.frames[key]]

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
        self._draw(frame)
        p = self.run_params
        total = curve_state_count(metric_settings(frame.metric, p.get("measure", "confidence"), p.get("steps"),
                                                  p.get("percentage")),
                                  self.start.base.shots, self.start.input_size) if p else None
        self.frame_label.setText(R.frame_title(frame, total, p.get("measure", "")))
        self._show_marker()
        self._update_controls()
        self.frameShown.emit(index)

    def _draw(self, frame: R.CausalFrame) -> None:
        """Show the panels of ``frame``: at once when drawn before, else drawn on the compute pool
        (a newer frame replaces an older one still drawing)."""
        key = (frame.method, frame.metric, frame.index)
        images = self._drawn.get(key)
        if images is not None:
            self._drawn.move_to_end(key)
            self.draw_job.discard()
            self.frame_panels.show_images(images)
            self.frameDrawn.emit(frame.index)
            return
        base = self.start.base
        handle = self.draw_job.start(self.compute.submit(lambda ctx: R.frame_panels(base, frame),
                                                         description="draw a frame"))
        handle.finished.connect(lambda drawn: self._drawn_frame(key, drawn))

    def _drawn_frame(self, key: tuple, images: dict) -> None:
        self._drawn[key] = images
        while len(self._drawn) > self.DRAWN_FRAMES:
            self._drawn.popitem(last=False)
        frame = self.current_frame()
        if frame is not None and (frame.method, frame.metric, frame.index) == key:
            self.frame_panels.show_images(images)
            self.frameDrawn.emit(key[2])

    def _show_marker(self) -> None:
        frame = self.current_frame()
        key = self.selected_key()
        if frame is None or key is None:
            self.curve_plots.show_marker(None)
        else:
            self.curve_plots.show_marker(key[1], frame.fraction, frame.score)

    def marker_position(self) -> Optional[tuple[float, float]]:
        """(x, y) of the marker on the selected curve's plot, as drawn."""
        key = self.selected_key()
        return None if key is None else self.curve_plots.marker_position(key[1])

    def curve_point(self, method: str, metric: str, index: int) -> tuple[float, float]:
        """Point ``index`` of a plotted curve, as drawn."""
        return self.curve_plots.curve_point(method, metric, index)

    def step(self, delta: int) -> None:
        self.set_frame(0 if self._current is None else self._current + delta)

    def play(self) -> None:
        if self.frame_count() == 0:
            return
        if (self._current is not None and self._current >= self.frame_count() - 1
                and self.state != PlaybackState.RUNNING):
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
        if self._current is not None and self._current >= self.frame_count() - 1:
            if self.state not in (PlaybackState.RUNNING, PlaybackState.CANCELLING):
                self.pause()  # the end; while computing, wait for the next frame
            return
        self.step(1)

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

    def _on_plot_clicked(self, metric: str, x: float) -> None:
        """Click on a plot: jump to the nearest point of the selected method's curve of that metric."""
        key = self.selected_key()
        frames = self.frames.get((key[0], metric), []) if key is not None else []
        if not frames:
            return
        nearest = int(np.argmin([abs(f.fraction - x) for f in frames]))
        if metric != key[1]:
            self.metric_combo.setCurrentIndex(self.metric_combo.findData(metric))
        self.set_frame(nearest)

    # ------------------------------------------------------------------------------ teardown
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._discard_running()
        super().closeEvent(event)
