"""The Prototypes tab end to end: a tiny random-weight ScaleProtoSeg checkpoint (an official-style
whole-module pickle) is run on the query by the worker thread and shown in the group graph."""

import numpy as np
import pytest
import torch
from PySide6.QtCore import QThread

from fssgui.gui.prototypes.panel import PanelState
from fssgui.pipeline import jobs
from fssgui.models.registry import TASK_SEMSEG, list_models
from fssgui.models.scaleprotoseg import ScaleProtoSeg, ScaleProtoSegConfig, load_scaleprotoseg
from fssgui.prototypes.graph import explain_class
from fssgui.prototypes.run import DEFAULT_THRESHOLD, image_key, run_scaleprotoseg
from testkit import make_episode
from prototypes_testkit import save_official_pickle

MODEL = "scaleprotoseg-cityscapes"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Cityscapes-layout ScaleProtoSeg with one block per ResNet stage, random weights."""
    torch.manual_seed(3)
    model = ScaleProtoSeg(ScaleProtoSegConfig(n_blocks=(1, 1, 1, 1))).eval()
    folder = tmp_path_factory.mktemp("sps")
    return save_official_pickle(model, folder / "th-0.05-nopush-group_last.pth")


def test_prototypes_tab_runs_the_checkpoint_on_the_query(qtbot, window, checkpoint):
    panel = window.proto_panel
    assert window.proto_panel.view is panel.view
    # one registry, two pickers: the tab lists the semseg models, the workspace only few-shot ones
    semseg = [e.name for e in list_models(TASK_SEMSEG)]
    assert [panel.model_combo.itemData(i) for i in range(panel.model_combo.count())] == semseg
    assert MODEL in semseg and all(window.model_bar.model_combo.findData(name) < 0 for name in semseg)
    window.set_episode(make_episode(shots=1, size=(56, 72)))
    assert not panel.run_button.isEnabled()  # no checkpoint yet: the button says why
    assert "checkpoint" in panel.run_button.toolTip()
    assert window.proto_panel.run() is None and "needs a checkpoint" in window.errors[-1]

    panel.set_model(MODEL)
    window.proto_panel.set_checkpoint(checkpoint)
    assert panel.run_button.isEnabled()
    threads = []
    original = jobs.prototypes

    def recording(*args, **kwargs):
        threads.append(QThread.currentThread())
        return original(*args, **kwargs)

    started, progress = [], []

    def follow(handle):
        handle.started.connect(lambda: started.append(handle.description))
        handle.progress.connect(lambda fraction, _text: progress.append(fraction))

    window.device_worker.jobSubmitted.connect(follow)
    jobs.prototypes, restore = recording, original
    try:
        with qtbot.waitSignal(panel.resultShown, timeout=60000) as blocker:
            panel.run_button.click()
            assert panel.run_button.text() == "Cancel"
    finally:
        jobs.prototypes = restore
    result = blocker.args[0]
    assert threads and threads[0] is not QThread.currentThread()  # the worker thread ran it
    assert started == [f"Prototypes ({MODEL})"] and progress and progress[-1] == 1.0
    assert panel.run_button.text() == "Run on query"

    # the graph shows the class predicted on the largest area, computed on the query image
    query = window.query.image
    assert result.run.image_hw == query.shape[:2] and result.image_key == image_key(query)
    shares = [share for _, share in result.class_shares]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    top = result.class_shares[0][0]
    shown = panel.view.result
    assert shown.class_index == top and panel.class_combo.currentData() == top
    assert len(panel.view.graph_item.scatter.data) == 12 + 3 + 1  # 3 prototypes x 4 scales, 3 groups, class
    # the same numbers as the core computes from the checkpoint directly
    model = load_scaleprotoseg(checkpoint)
    expected = explain_class(run_scaleprotoseg(model, query), top, DEFAULT_THRESHOLD)
    assert np.allclose(shown.prototype_maps, expected.prototype_maps, atol=1e-4)
    assert np.array_equal(shown.class_mask, expected.class_mask)
    assert "stage 2" in panel.info_label.text() and "228 prototypes" in panel.info_label.text()

    # another class from the picker, keeping the threshold chosen on the graph's slider
    with qtbot.waitSignal(panel.view.thresholdChanged, timeout=10000):
        panel.view.threshold_slider.setValue(20)
    other = next(panel.class_combo.itemData(i) for i in range(panel.class_combo.count())
                 if panel.class_combo.itemData(i) not in (None, top))
    with qtbot.waitSignal(panel.classShown, timeout=10000) as picked:  # computed on the compute pool
        panel.select_class(other)
    assert picked.args == [other]
    assert panel.view.result.class_index == other and panel.view.result.threshold == pytest.approx(0.2)
    assert np.allclose(panel.view.result.prototype_maps,
                       result.run.activations[result.run.head.class_prototypes[other]])

    # a new query makes the shown graph stale
    window.set_episode(make_episode(shots=1, size=(56, 72), seed=5))
    assert "previous query" in panel.info_label.text()


def test_prototype_errors_and_cancel_are_reported(qtbot, window, checkpoint, tmp_path):
    panel = window.proto_panel
    window.set_episode(make_episode(shots=1, size=(48, 64)))
    panel.set_model("scaleprotoseg-pascal")  # 21 classes: the Cityscapes checkpoint does not fit
    window.proto_panel.set_checkpoint(checkpoint)
    with qtbot.waitSignal(window.log_pane.errorReported, timeout=60000) as blocker:
        window.proto_panel.run()
    assert "19 classes" in blocker.args[0] and "pascal" in blocker.args[0]
    qtbot.waitUntil(lambda: panel.state is PanelState.IDLE, timeout=5000)
    assert "failed" in panel.info_label.text() and panel.view.result is None

    # cancelled while queued behind a slow job: the panel goes back to idle, nothing shown
    panel.set_model(MODEL)
    index = window.model_bar.explainer_combo.findData("test-slow")
    window.model_bar.explainer_combo.setCurrentIndex(index)
    window.runs.explain()
    job = window.proto_panel.run()
    assert job is not None and panel.state is PanelState.RUNNING
    panel.run_button.click()  # "Cancel"
    qtbot.waitUntil(lambda: panel.state is PanelState.IDLE and not window.device_worker.is_busy, timeout=30000)
    assert "cancelled" in panel.info_label.text() and panel.view.result is None


def test_the_tab_is_built_when_first_shown_and_keeps_its_settings_until_then(make_window, checkpoint):
    """The Prototypes tab (0.3 s of imports and widgets) is built only when it is first shown or its
    panel first asked for; it then takes the window's query and the saved settings, and a window that
    never built it leaves those settings as they were."""
    window = make_window(proto_model=MODEL, proto_checkpoint=str(checkpoint), proto_size=64)
    window.set_episode(make_episode(shots=1, size=(56, 72)))
    assert window.prototypes_tab.widget is None
    window.store_settings()
    assert (window.settings.proto_model, window.settings.proto_checkpoint) == (MODEL, str(checkpoint))
    tabs = window.analysis.tabs
    tabs.setCurrentIndex(next(i for i in range(tabs.count()) if tabs.tabText(i) == "Prototypes"))
    panel = window.prototypes_tab.widget
    assert panel is not None and window.proto_panel is panel  # built by showing the tab, once
    assert panel.model_name == MODEL and panel.checkpoint == str(checkpoint) and panel.size_spin.value() == 64
    assert panel.query_image is window.query.image
    assert panel.run_button.isEnabled()
