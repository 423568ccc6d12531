"""The insertion/deletion playback widget, offscreen: frames in sync with the curve marker,
streaming while the job runs, cancel, play, exports."""
from __future__ import annotations

import csv
import threading
import zipfile
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from fssgui import report as R
from fssgui.explain.base import Attribution
from fssgui.gui.playback import PlaybackState, PlaybackWidget
from fssgui.gui.workers import DeviceWorker
from fssgui.models.base import EpisodeTensors
from testkit import TINY_REPORT_SIZE as TINY_SIZE, TinyModel, tiny_setup

STEPS = 6
POINTS = STEPS + 1
#: forwards until the first curve is complete: the prediction (its logits give the target class), then
#: one per state (the causal batch size on the CPU is 1: EpisodeRun.causal_batch_size)
FIRST_CURVE = 1 + POINTS


class GatedModel(TinyModel):
    """TinyModel that blocks (in the worker thread) after ``free`` forward passes until ``gate`` is set."""

    def __init__(self, gate: threading.Event, free: int) -> None:
        super().__init__()
        self.gate, self.free = gate, free

    def predict(self, batch, **kwargs):
        if self.forwards >= self.free:
            assert self.gate.wait(20), "the test never opened the gate"
        return super().predict(batch, **kwargs)


@pytest.fixture
def make_worker(qtbot):
    workers = []

    def make(model_factory):
        worker = DeviceWorker(model_builder=lambda name, checkpoint=None, device="cpu", log=None: model_factory())
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        assert worker.shutdown(10000)


@pytest.fixture(scope="module")
def setup():
    model, episode, batch, region, attributions = tiny_setup()
    attributions = {name: Attribution(maps, name, {"seed": 0}) for name, maps in attributions.items()}
    return episode, attributions


def make_widget(qtbot, worker, setup, **params):
    episode, attributions = setup
    widget = PlaybackWidget(worker)
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.set_context("tiny", episode, attributions, episode.query_mask, region_source="ground truth")
    widget.set_parameters(measure="confidence", steps=params.get("steps", STEPS))
    return widget


def wait_finished(qtbot, widget, timeout=20000):
    with qtbot.waitSignal(widget.runFinished, timeout=timeout) as blocker:
        pass
    return blocker.args[0]


def show_frame(qtbot, widget, index: int) -> None:
    """Select frame ``index`` and wait until its panels are drawn (on the widget's compute pool)."""
    with qtbot.waitSignal(widget.frameDrawn, timeout=10000):
        widget.set_frame(index)


def expected_score(widget, frame) -> float:
    """The tiny model's confidence on the state the widget displays for ``frame``."""
    model = TinyModel().eval()
    from fssgui.episode import episode_to_tensors
    from fssgui.pipeline.regions import region_from_mask

    batch = episode_to_tensors(widget.episode, model.entry)
    kept = torch.from_numpy(frame.kept()).float()
    state = EpisodeTensors(batch.query, (batch.supports[0] * kept[:, None])[None], (batch.support_masks[0] * kept)[None])
    probability = torch.softmax(model.predict(state).logits, 1)[0, 1]
    return float(probability[torch.from_numpy(region_from_mask(widget.episode.query_mask, TINY_SIZE))].mean())


def test_frames_are_in_sync_with_the_curve_marker(qtbot, make_worker, setup):
    widget = make_widget(qtbot, make_worker(TinyModel), setup)
    with qtbot.waitSignal(widget.runFinished, timeout=20000) as blocker:
        assert widget.run() is not None
    assert blocker.args == ["done"]
    assert widget.state is PlaybackState.DONE
    assert sorted(widget.curves) == [("good", "dauc"), ("good", "iauc"), ("random", "dauc"), ("random", "iauc")]
    for (method, metric), curve in widget.curves.items():
        assert curve.complete and len(curve.scores) == POINTS
        widget.select(method, metric)
        for i in (0, 3, POINTS - 1, 2):
            show_frame(qtbot, widget, i)
            frame = widget.current_frame()
            assert frame.index == i and (frame.method, frame.metric) == (method, metric)
            # the marker sits on curve point i, and that point is the score of the state on display
            assert widget.marker_position() == pytest.approx(widget.curve_point(method, metric, i))
            assert widget.marker_position() == pytest.approx((curve.fractions[i], curve.scores[i]))
            assert expected_score(widget, frame) == pytest.approx(curve.scores[i], abs=1e-5)
            shown_mask = widget.panels["support_1_mask"].image[..., 0] > 127
            full = R.frame_panels(widget.start.base, frame)
            assert np.array_equal(shown_mask, full["support_1_mask"][..., 0] > 127)
            assert np.array_equal(widget.panels["support_2"].image, full["support_2"])
            assert widget.slider.value() == i
    # the values and the parameters are shown next to the plots
    text = widget.value_labels["iauc"].text()
    good = widget.curves[("good", "iauc")]
    assert f"{good.value:.4f}" in text and "6 steps" in text and "zero substrate" in text and "p = 100%" in text
    assert "confidence" in text
    # insertion state 0 shows empty supports, deletion state 0 the full supports
    widget.select("good", "iauc")
    show_frame(qtbot, widget, 0)
    assert widget.panels["support_1_mask"].image.max() == 0
    widget.select("good", "dauc")
    show_frame(qtbot, widget, 0)
    assert np.array_equal(widget.panels["support_1"].image, widget.episode.supports[0].image)


def test_frames_stream_in_while_the_job_runs(qtbot, make_worker, setup):
    gate = threading.Event()
    worker = make_worker(lambda: GatedModel(gate, free=FIRST_CURVE))
    widget = make_widget(qtbot, worker, setup)
    try:
        widget.run()
        qtbot.waitUntil(lambda: widget.frame_count() == POINTS, timeout=20000)
        # the first curve is on screen while the job is still running (blocked on the gate)
        assert widget.state is PlaybackState.RUNNING and worker.is_busy
        assert widget.current_index() == POINTS - 1  # following the newest step
        assert widget.marker_position() == pytest.approx(widget.curve_point("good", "iauc", POINTS - 1))
        assert "computing" in widget.value_labels["iauc"].text()
        assert ("good", "iauc") in widget.curves and ("good", "dauc") not in widget.curves
        assert widget.progress.value() > 0
    finally:
        gate.set()
    assert wait_finished(qtbot, widget) == "done"
    assert len(widget.all_frames()) == 4 * POINTS


def test_cancel_stops_the_job_and_keeps_the_computed_frames(qtbot, make_worker, setup):
    gate = threading.Event()
    worker = make_worker(lambda: GatedModel(gate, free=FIRST_CURVE))
    widget = make_widget(qtbot, worker, setup)
    widget.run()
    qtbot.waitUntil(lambda: widget.frame_count() == POINTS, timeout=20000)
    widget.cancel()
    assert widget.state is PlaybackState.CANCELLING and not widget.cancel_button.isEnabled()
    gate.set()
    assert wait_finished(qtbot, widget) == "cancelled"
    assert not worker.is_busy
    frames = len(widget.all_frames())
    assert POINTS <= frames < 4 * POINTS
    assert widget.drain() == 0  # nothing else comes
    assert ("random", "dauc") not in widget.curves
    assert "incomplete" in widget.value_labels["dauc"].text() or "not computed" in widget.value_labels["dauc"].text()
    assert widget.run_button.isEnabled()
    # the frames that did arrive can still be scrubbed
    widget.set_frame(2)
    assert widget.current_frame().index == 2


def test_a_new_run_drops_the_old_runs_frames(qtbot, make_worker, setup):
    gate = threading.Event()
    worker = make_worker(lambda: GatedModel(gate, free=FIRST_CURVE))
    widget = make_widget(qtbot, worker, setup)
    first = widget.run()
    qtbot.waitUntil(lambda: widget.frame_count() == POINTS, timeout=20000)
    widget.set_parameters(steps=3)
    gate.set()
    second = widget.run()
    assert second != first
    assert widget.frame_count() == 0
    assert wait_finished(qtbot, widget) == "done"
    assert {len(f) for f in widget.frames.values()} == {4}  # only the 3-step run's frames
    assert all(c.params["steps"] == 3 for c in widget.curves.values())


def test_play_runs_to_the_end(qtbot, make_worker, setup):
    widget = make_widget(qtbot, make_worker(TinyModel), setup)
    widget.run()
    wait_finished(qtbot, widget)
    widget.select("random", "dauc")
    widget.fps_spin.setValue(30)
    widget.set_frame(0)
    shown = []
    widget.frameShown.connect(shown.append)
    widget.play()
    assert widget.is_playing()
    qtbot.waitUntil(lambda: not widget.is_playing(), timeout=5000)
    assert shown == list(range(1, POINTS))
    widget.step(-2)
    assert widget.current_index() == POINTS - 3


def test_exports_from_the_widget(qtbot, make_worker, setup, tmp_path):
    widget = make_widget(qtbot, make_worker(TinyModel), setup, steps=3)
    widget.run()
    wait_finished(qtbot, widget)
    widget.select("good", "iauc")
    show_frame(qtbot, widget, 2)
    episode = widget.episode

    def written(handle):
        assert handle.wait(30000) and handle.error is None, handle.message
        return handle.result

    png = written(widget.exports.panel_png("support_2", tmp_path / "panel.png"))
    image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, widget.panels["support_2"].image)
    assert image.shape == episode.supports[1].image.shape
    figure = cv2.imread(str(written(widget.exports.frame_figure(tmp_path / "frame.png"))))
    assert figure.shape[1] > 2 * episode.query_image.shape[1]
    rows = list(csv.DictReader(written(widget.exports.curves_csv(tmp_path / "curves.csv")).open()))
    assert len(rows) == 4 * 4
    assert cv2.imread(str(written(widget.exports.curves_png(tmp_path / "iauc.png", "iauc")))) is not None
    with zipfile.ZipFile(written(widget.exports.frames(tmp_path / "frames.zip"))) as archive:
        assert sum(n.endswith("_figure.png") for n in archive.namelist()) == 4 * 4
    assert (written(widget.exports.frames(tmp_path / "frames")) / "index.csv").is_file()
    assert cv2.imread(str(written(widget.exports.attribution_figure(tmp_path / "maps.png")))) is not None
    files = written(widget.exports.report(tmp_path / "report", pdf=False))
    assert files.html.is_file() and files.summary.is_file()
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []
    # written on the pool (the window keeps responding); a failure is said, never raised
    assert "saved" in widget.status_label.text()
    failed = widget.exports.curves_png(tmp_path / "none.png", "no-such-metric")
    assert failed.wait(10000) and failed.error is not None and "export failed" in widget.status_label.text()


def test_add_explanation_builds_the_context(qtbot, make_worker, setup):
    episode, attributions = setup
    widget = PlaybackWidget(make_worker(TinyModel))
    qtbot.addWidget(widget)

    def result(method, region):
        maps = [np.random.default_rng(1).random(s.image.shape[:2]).astype(np.float32) for s in episode.supports]
        return SimpleNamespace(method=method, maps=maps, signed=False, params={}, level_weights=None,
                               level_names=None, seconds=0.1, region=region, region_source="brushed", model="tiny")

    widget.add_explanation(result("saliency", episode.query_mask), episode, "tiny")
    widget.add_explanation(result("random", episode.query_mask), episode, "tiny")
    assert list(widget.methods) == ["saliency", "random"] and widget.selected_methods() == ["saliency", "random"]
    other = episode.query_mask.copy()
    other[0, 0] = not other[0, 0]
    widget.add_explanation(result("lime", other), episode, "tiny")  # another region: a new context
    assert list(widget.methods) == ["lime"]
    widget.set_parameters(steps=STEPS)
    with qtbot.waitSignal(widget.runFinished, timeout=20000) as blocker:
        widget.run()
    assert blocker.args == ["done"]
    assert widget.methods["lime"].model_maps(TINY_SIZE).shape == (2, TINY_SIZE, TINY_SIZE)
    assert len(widget.frames[("lime", "iauc")]) == POINTS


def test_inside_the_main_window(qtbot, make_window):
    """Created by the window as its "Insertion / deletion" tab: it uses the window's device worker
    and picks up every explanation the window shows."""
    from testkit import TINY_MODEL, make_episode

    window = make_window(explainer="affex-signed")
    widget = window.playback_widget
    assert isinstance(widget, PlaybackWidget) and widget.device is window.device_worker
    window.set_episode(make_episode(shots=2, size=(48, 64)))
    with qtbot.waitSignal(window.runs.resultShown, timeout=30000):
        window.runs.explain()
    assert list(widget.methods) == ["affex-signed"]
    assert widget.spec.name == TINY_MODEL
    widget.set_parameters(steps=4)
    with qtbot.waitSignal(widget.runFinished, timeout=30000) as blocker:
        widget.run()
    assert blocker.args == ["done"]
    assert sorted(widget.curves) == [("affex-signed", "dauc"), ("affex-signed", "iauc")]
    assert all(len(c.scores) == 5 and c.value is not None for c in widget.curves.values())
