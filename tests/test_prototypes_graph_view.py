"""The ScaleProtoSeg group-graph widget, offscreen: build it, show a result, click a node."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PySide6 import QtCore

from fssgui.models.scaleprotoseg import CITYSCAPES_CLASSES, ScaleProtoSeg, ScaleProtoSegConfig
from fssgui.prototypes.graph import explain_class
from fssgui.prototypes.run import run_scaleprotoseg


@pytest.fixture(scope="module")
def explanation():
    torch.manual_seed(2)
    model = ScaleProtoSeg(ScaleProtoSegConfig(n_blocks=(1, 1, 1, 1))).eval()
    yy, xx = np.mgrid[0:60, 0:80]
    image = np.stack([(xx * 3) % 256, (yy * 4) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    run = run_scaleprotoseg(model, image, size=49)
    return explain_class(run, CITYSCAPES_CLASSES.index("road"), threshold=0.05)


def test_graph_view_click_threshold_and_maps(qtbot, explanation):
    from fssgui.gui.prototypes.graph_view import ProtoGraphView

    view = ProtoGraphView()
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.set_result(explanation, explanation.image)
    view.show()
    qtbot.waitExposed(view)

    assert view.current_node == "class"
    nodes = view.graph_item.scatter.data
    assert len(nodes) == 12 + 3 + 1
    assert len(view.graph_item.adjacency) == len(explanation.edges)
    widths = view.graph_item.pen["width"]
    active = np.array([e.active for e in explanation.edges])
    assert widths[~active].max(initial=1.0) == 1.0 and widths[active].max() > 1.0
    before = view.shown_map().copy()

    # a real mouse click on prototype node p57 (scale 2)
    clicked: list[str] = []
    view.nodeClicked.connect(clicked.append)
    scene_point = view.graph_box.mapViewToScene(view.node_position("p57"))
    widget_point = view.graph_widget.mapFromScene(scene_point)
    qtbot.mouseClick(view.graph_widget.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=widget_point)
    assert clicked == ["p57"] and view.current_node == "p57"
    after = view.shown_map()
    assert after.shape == explanation.class_mask.shape
    assert not np.allclose(np.nan_to_num(before), np.nan_to_num(after))
    assert "prototype 57" in view.node_label.text() and "scale 2" in view.node_label.text()
    expected = explanation.image_map("p57")
    inside = explanation.class_mask if explanation.class_mask.any() else np.ones_like(explanation.class_mask)
    corr = np.corrcoef(after[inside], expected[inside])[0, 1]
    assert corr > 0.999  # the shown map is this node's map (min-max normalised)

    view.select_node("g1")
    assert "group 2" in view.node_label.text()

    # the threshold slider re-thresholds the groups without renormalising
    thresholds: list[float] = []
    view.thresholdChanged.connect(thresholds.append)
    with qtbot.waitSignal(view.thresholdChanged, timeout=10000):  # recomputed on the view's pool
        view.threshold_slider.setValue(30)
    assert thresholds == [0.3] and view.result.threshold == pytest.approx(0.3)
    assert sum(e.active for e in view.result.edges) < sum(e.active for e in explanation.edges)
    assert view.current_node == "g1"
    for s, item in enumerate(view.scale_items):
        assert item.image is not None and item.image.shape[:2] == explanation.class_mask.shape
    assert view.extra_items["group assignment"].image is not None
    with pytest.raises(KeyError):
        view.select_node("p9999")
