"""Predict and Explain R: the window's model jobs on the device worker, and what is shown of them.

Consistency rules a person can rely on:

* every explanation says which region it explains (R = brushed / prediction / ground truth);
* a newer Predict (or Explain) discards the older one, so an old result never replaces a newer one;
* a result computed from inputs edited while it ran is shown with a warning: the counters of
  :class:`~fssgui.edit_state.EditState` say which inputs each result read (R is an input of an
  explanation, not of the prediction);
* the same inputs twice: the cached explanation is shown again, nothing is recomputed;
* errors of any job reach the log pane and the status bar; the window keeps working.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from PySide6.QtCore import QObject, QTimer, Signal

from ..pipeline import BRUSHED, ExplanationResult, PredictionResult, input_key, jobs, region_title
from .workers import JobHandle, LatestJob

CACHE_SIZE = 8
#: a model chosen in the model bar is loaded this long after the last change (a person going
#: through the combo with the arrow keys loads only the model they stop on)
PRELOAD_DELAY_MS = 600
#: the explainers a loaded model rules out are asked for once the device thread has been idle this long
RESTRICTIONS_IDLE_MS = 1500


class RunController(QObject):
    """The Predict / Explain / Cancel / Release actions of ``window`` (see the module docstring)."""

    predictionShown = Signal(object)  # PredictionResult
    resultShown = Signal(object)  # ExplanationResult
    pipelineFinished = Signal(bool, str)  # ok, message: the end of run_pipeline()

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.predict_job = LatestJob()
        self.explain_job = LatestJob()
        self.last_result: Optional[ExplanationResult] = None
        self._cache: OrderedDict[str, ExplanationResult] = OrderedDict()
        self._count = 0
        self.preload_job = LatestJob()
        self.restrictions_job = LatestJob()
        self._restrictions_spec = None
        self._restrictions_timer = QTimer(self, singleShot=True, interval=RESTRICTIONS_IDLE_MS)
        self._restrictions_timer.timeout.connect(self._check_restrictions)
        self._preload_timer = QTimer(self, singleShot=True, interval=PRELOAD_DELAY_MS)
        self._preload_timer.timeout.connect(self.preload)
        self._closed = False
        window.model_bar.modelChanged.connect(self._schedule_preload)
        window.model_bar.deviceChanged.connect(self._schedule_preload)

    def shutdown(self) -> None:
        """No more preloads (the window is closing: its device worker stops next)."""
        self._closed = True
        self._preload_timer.stop()
        self._restrictions_timer.stop()

    def _schedule_preload(self) -> None:
        if not self._closed:
            self._preload_timer.start()  # restarted by every change: loads what the person stops on

    # ------------------------------------------------------------------ checks
    def _ready(self) -> bool:
        w = self.window
        if not w.has_episode():
            w.log_error("no episode is open: open one with File ▸ Open episode (Ctrl+O)")
            return False
        if w.support_panel.count() == 0:
            w.log_error("the episode has no supports: add at least one (drop an image on the support list)")
            return False
        empty = [i + 1 for i, item in enumerate(w.support_panel.items) if item.mask.count() == 0]
        if empty:
            w.log_error(f"support {', '.join(map(str, empty))}: the mask is empty; brush the object first")
            return False
        if not w.model_bar.model_name():
            w.log_error("no model is available")
            return False
        return True

    # ------------------------------------------------------------------ preload
    def preload(self) -> Optional[JobHandle]:
        """Load the chosen model on the device thread now (at launch, and shortly after another
        model, checkpoint or device is chosen), so the first Predict or Explain does not wait for
        its imports and weights; a newer preload discards a pending one; a model that needs a
        checkpoint not chosen yet is left alone (None)."""
        self._preload_timer.stop()
        w = self.window
        name = w.model_bar.model_name()
        if self._closed or not name or w.model_bar.checkpoint_missing():
            return None
        spec = w.model_bar.model_spec()
        handle = self.preload_job.start(w.device_worker.submit(jobs.load, spec, description=f"Load {name}"))
        handle.finished.connect(lambda _name: self._schedule_restrictions(spec))
        handle.failed.connect(lambda message, trace: w.log_error(f"loading {name} failed: {message}", trace))
        return handle

    def _schedule_restrictions(self, spec) -> None:
        self._restrictions_spec = spec
        self._restrictions_timer.start()

    def _check_restrictions(self) -> None:
        """After a preload, once the device thread has been idle a while, ask which explainers the
        built model rules out (greyed in the model bar). A job of its own, and not before the first
        Predict or Explain: the check imports captum (about 1.5 s of CPU)."""
        spec = self._restrictions_spec
        w = self.window
        if self._closed or spec is None or spec != w.model_bar.model_spec():
            return  # another model chosen since: its own preload asks again (no rebuild of this one)
        if w.device_worker.is_busy:
            self._restrictions_timer.start()  # try again once the device thread has been idle
            return
        self._restrictions_spec = None
        handle = self.restrictions_job.start(w.device_worker.submit(
            jobs.built_restrictions, spec, description=f"Check the explainers of {spec.name}"))
        handle.finished.connect(lambda result: w.model_bar.set_built_restrictions(result.name, result.unavailable))
        handle.failed.connect(lambda message, trace: w.log_error(
            f"checking the explainers of {spec.name} failed: {message}", trace))

    # ------------------------------------------------------------------ predict
    def predict(self) -> Optional[JobHandle]:
        if not self._ready():
            return None
        w = self.window
        spec, revision = w.model_bar.model_spec(), w.edits.prediction_revision
        handle = self.predict_job.start(w.device_worker.submit(jobs.predict, spec, w.current_episode(),
                                                               description=f"Predict ({spec.name})"))
        handle.finished.connect(lambda result: self._predicted(result, revision))
        handle.failed.connect(lambda message, trace: w.log_error(f"predict failed: {message}", trace))
        handle.cancelled.connect(lambda: w.log("predict cancelled; the previous result is kept"))
        return handle

    def _predicted(self, result: PredictionResult, revision: int) -> None:
        if revision != self.window.edits.prediction_revision:
            self.window.log("prediction arrived after the supports or the model changed: shown, but it may be "
                            "out of date")
        self.show_prediction(result)
        self.window.statusBar().showMessage(f"Prediction done in {result.seconds:.2f} s", 5000)

    def show_prediction(self, result: PredictionResult) -> None:
        self.window.query.show_prediction_result(result)  # R = prediction follows: not an edit
        self.predictionShown.emit(result)

    # ------------------------------------------------------------------ explain
    def explain(self) -> Optional[JobHandle]:
        """Explain region R with the chosen explainer (predicts too). Returns the job (None if refused
        or answered from the cache)."""
        if not self._ready():
            return None
        w, bar = self.window, self.window.model_bar
        name = bar.explainer()
        if not name:
            w.log_error("no explainer is installed: fssgui.explain.registry provides none")
            return None
        reason = bar.unavailable_reason(name)
        if reason:
            w.log_error(reason)
            return None
        try:
            params = bar.params()
        except ValueError as exc:
            w.log_error(f"explainer parameters: {exc}")
            return None
        source, region = w.query.region_source, w.query.brushed_region()
        if source == BRUSHED and not region.any():
            w.log_error("region R is empty: brush it on the query, or choose R = prediction (2)")
            return None
        episode, spec = w.current_episode(), bar.model_spec()
        key = input_key(episode, region, spec, name, sorted(params.items()), source)
        shown = (w.edits.revision, w.edits.support_version, [s.image for s in episode.supports],
                 [s.mask for s in episode.supports])
        cached = self._cache.get(key)
        if cached is not None:
            w.log(f"{name}: same inputs as {cached.label}; showing the cached result")
            self._show_explanation(cached, *shown)
            self.pipelineFinished.emit(True, "cached")
            return None
        handle = self.explain_job.start(w.device_worker.submit(
            jobs.explain, spec, episode, region, source, name, params, bar.factories, w.query.prediction,
            description=f"Explain R ({name})"))
        handle.finished.connect(lambda result: self._explained(key, result, shown))
        handle.failed.connect(lambda message, trace: self._ended(False, message, f"explain failed: {message}", trace))
        handle.cancelled.connect(lambda: self._ended(False, "cancelled", "explain cancelled; the previous result is kept"))
        return handle

    def _explained(self, key: str, result: ExplanationResult, shown) -> None:
        self._cache[key] = result
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self._show_explanation(result, *shown)
        self.window.statusBar().showMessage(f"{result.method} done in {result.seconds:.1f} s", 5000)
        self.pipelineFinished.emit(True, "")

    def _ended(self, ok: bool, message: str, log: str, trace: str = "") -> None:
        (self.window.log_error(log, trace) if not ok and trace else self.window.log(log))
        self.pipelineFinished.emit(ok, message)

    def _show_explanation(self, result: ExplanationResult, revision: int, support_version: int, images, masks) -> None:
        w = self.window
        if not result.label:
            self._count += 1
            result.label = (f"#{self._count} {result.method} · R = {region_title(result.region_source)} · "
                            f"{result.model} · supports v{support_version}")
        stale = revision != w.edits.revision
        if not stale:
            self.show_prediction(result.prediction)
        self.last_result = result
        w.analysis.show_result(result, images, masks,
                               "the inputs were edited while this was computed (Ctrl+E to rerun)" if stale else "")
        shared = f" (the level maps and weights of {result.levels_from}: no forward or ablation)" if result.levels_from else ""
        w.log(f"{result.label}: {result.seconds:.1f} s on {result.device}{shared}")
        self.resultShown.emit(result)

    def run_pipeline(self) -> Optional[JobHandle]:
        """The one-click path (and ``--demo --screenshot``): explain R with the chosen explainer;
        ``pipelineFinished(ok, message)`` says how it ended."""
        errors = len(self.window.errors)
        handle = self.explain()
        if handle is None and len(self.window.errors) > errors:  # refused (a cached answer is no error)
            self.pipelineFinished.emit(False, self.window.errors[-1])
        return handle

    def mark_stale(self, note: str) -> None:
        """The inputs of the shown explanation changed: say so on it."""
        if self.last_result is not None:
            self.window.analysis.heatmap_view.set_stale(note + " (Ctrl+E to rerun)")

    # ------------------------------------------------------------------ cancel, release
    def cancel_all(self) -> None:
        w = self.window
        if w.device_worker.is_busy:
            w.device_worker.cancel_all()
            w.status.set_job_text("cancelling…")

    def release_model(self) -> JobHandle:
        w = self.window
        handle = w.device_worker.submit(jobs.release, description="Release model")
        handle.finished.connect(lambda _r: (w.set_device_info(None),
                                            w.log("model released; GPU memory cache emptied")))
        return handle
