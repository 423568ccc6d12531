"""The Prototypes tab's pixel inspector, nearest prototypes and compare mode
(fssgui.prototypes.inspection and .compare, and their widgets). Core functions are checked against a direct model
forward and hand-built cases; the Qt widgets are driven offscreen with real clicks where it
matters. The export is tested in test_prototypes_export.py."""
from __future__ import annotations

import copy
import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from PySide6 import QtCore

from fssgui.errors import ExplainError
from fssgui.models.scaleprotoseg import CITYSCAPES_CLASSES, feature_grid_size
from fssgui.prototypes.compare import compare_classes
from fssgui.prototypes.graph import PrototypeRunResult, explain_class
from fssgui.prototypes.inspection import CellGrid, grow_box, inspect_cell, nearest_prototypes
from fssgui.prototypes.overlays import upsample_cubic
from fssgui.prototypes.projection import ProjectionMetadata
from fssgui.prototypes.run import image_key, predicted_class_shares
from prototypes_testkit import ALPHA, forward
from prototypes_testkit import model, run, top_class  # noqa: F401 - module-scoped fixtures


# ------------------------------------------------------------------------------ cell mapping


def test_cell_grid_maps_pixels_to_cells_and_measures_the_stride(run):
    grid = CellGrid.of(run)
    assert grid.input_hw == (49, 65) and grid.grid_hw == (7, 9) == feature_grid_size(49, 65)
    assert grid.stride == (8, 8)  # measured from the sizes of this forward
    for size in [(513, 513), (1024, 2048), (375, 500), (321, 321)]:  # the official evaluation sizes
        assert CellGrid(size, size, feature_grid_size(*size)).stride == (8, 8)
    assert CellGrid((60, 80), (60, 80), (30, 40)).stride == (2, 2)  # not hard-coded

    # hand-checked: 60 rows over 7 cells (8.57 px), 80 columns over 9 cells (8.89 px)
    assert grid.cell_at(0, 0) == (0, 0)
    assert grid.cell_at(8.99, 8.99) == (0, 0) and grid.cell_at(9.0, 9.0) == (1, 1)  # pixel 8 / pixel 9
    assert grid.cell_at(79.99, 59.99) == (6, 8)
    assert grid.cell_box(1, 1) == (9, 18, 9, 18) and grid.cell_box(6, 8) == (52, 60, 72, 80)
    for outside in [(-0.1, 5), (5, -1), (80, 5), (5, 60)]:
        assert grid.cell_at(*outside) is None
    with pytest.raises(ExplainError):
        grid.cell_box(7, 0)

    # every pixel lies in the box of the cell it maps to, and the boxes tile the image
    covered = np.zeros((60, 80), np.int32)
    for i in range(7):
        for j in range(9):
            y0, y1, x0, x1 = grid.cell_box(i, j)
            covered[y0:y1, x0:x1] += 1
            for y, x in [(y0, x0), (y1 - 1, x1 - 1), ((y0 + y1) // 2, (x0 + x1) // 2)]:
                assert grid.cell_at(x + 0.5, y + 0.5) == (i, j)
    assert (covered == 1).all()


# ------------------------------------------------------------------------------- inspector


def test_inspector_numbers_equal_the_model_at_the_cell(model, run, top_class):
    out = forward(model, run)
    i, j = 3, 5
    exp = explain_class(run, top_class, None)  # no threshold: exactly the model as loaded
    inspection = inspect_cell(exp, (i, j))
    columns = model.class_prototypes[top_class]
    assert [p.index for p in inspection.prototypes] == columns
    assert [p.scale for p in inspection.prototypes] == [int(model.prototype_scale[c]) for c in columns]
    np.testing.assert_allclose([p.activation for p in inspection.prototypes],
                               out.prototype_activations[0, columns, i, j].numpy(), rtol=1e-6)
    np.testing.assert_allclose([p.distance for p in inspection.prototypes],
                               out.distances[0, columns, i, j].numpy(), rtol=1e-3)
    group_columns = model.group_columns(top_class)
    np.testing.assert_allclose([g.activation for g in inspection.groups],
                               out.group_activations[0, group_columns, i, j].numpy(), rtol=1e-5)
    np.testing.assert_allclose([g.head_weight for g in inspection.groups],
                               model.last_layer_group.weight[top_class, group_columns].numpy())
    logits = out.logits[0, :, i, j].double()
    np.testing.assert_allclose([c.logit for c in inspection.classes], logits.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose([c.probability for c in inspection.classes], torch.softmax(logits, 0).numpy(),
                               atol=1e-5)
    assert [c.class_name for c in inspection.classes] == list(CITYSCAPES_CLASSES)
    assert inspection.predicted_class == int(logits.argmax())
    # the class logit = its own groups' contributions + the other classes' groups (off-class weights)
    others = [c for c in range(model.last_layer_group.weight.shape[1]) if c not in group_columns]
    off_class = float(model.last_layer_group.weight[top_class, others] @ out.group_activations[0, others, i, j])
    assert inspection.other_groups_contribution == pytest.approx(off_class, rel=1e-4, abs=1e-3)
    assert sum(g.contribution for g in inspection.groups) + off_class == pytest.approx(
        inspection.classes[top_class].logit, rel=1e-4)

    # at α the logits are those of the model thresholded like the official threshold_save
    thresholded = copy.deepcopy(model).threshold_groups_(ALPHA)
    out_t = forward(thresholded, run)
    at_alpha = inspect_cell(explain_class(run, top_class, ALPHA), (i, j))
    np.testing.assert_allclose([c.logit for c in at_alpha.classes], out_t.logits[0, :, i, j].numpy(),
                               rtol=1e-4, atol=1e-3)
    assert json.loads(json.dumps(at_alpha.to_json()))["cell_ij"] == [i, j]


def test_a_click_on_the_map_inspects_that_cell(qtbot, model, run, top_class):
    from fssgui.gui.prototypes.graph_view import ProtoGraphView

    exp = explain_class(run, top_class, ALPHA)
    view = ProtoGraphView()
    qtbot.addWidget(view)
    view.resize(900, 1100)
    view.set_result(exp)
    view.show()
    qtbot.waitExposed(view)
    grid = CellGrid.of(run)
    i, j = 4, 2
    y0, y1, x0, x1 = grid.cell_box(i, j)
    shown: list = []
    view.cellInspected.connect(shown.append)
    scene_point = view.map_box.mapViewToScene(QtCore.QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    widget_point = view.map_widget.mapFromScene(scene_point)
    qtbot.mouseClick(view.map_widget.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=widget_point)
    assert len(shown) == 1 and view.inspection.cell == (i, j) and view.selected_cell == (i, j)
    assert view.drawn_boxes()[0] == (x0, y0, x1 - x0, y1 - y0)  # the cell outline on the image
    assert len(view.drawn_boxes()) == 2 + 3  # cell (two pens) + the 3 nearest prototypes' boxes

    # the inspector's tables hold the model's own numbers at that cell
    out = forward(copy.deepcopy(model).threshold_groups_(ALPHA), run)
    table = view.inspector
    columns = model.class_prototypes[top_class]
    assert table.values(table.prototype_table, 0) == columns
    np.testing.assert_allclose(table.values(table.prototype_table, 2),
                               out.prototype_activations[0, columns, i, j].numpy(), rtol=1e-6)
    np.testing.assert_allclose(table.values(table.group_table, 1)[:3],
                               out.group_activations[0, model.group_columns(top_class), i, j].numpy(), rtol=1e-5)
    ranked = table.values(table.class_table, 0)
    logits = out.logits[0, :, i, j].numpy()
    assert ranked[0] == int(logits.argmax()) and sorted(ranked) == list(range(19))
    np.testing.assert_allclose(table.values(table.class_table, 1), logits[ranked], rtol=1e-4, atol=1e-3)
    assert f"cell (i={i}, j={j})" in table.header_label.text() and "stride 8 px" in table.header_label.text()

    # another class and another threshold keep the cell, with new numbers
    other = next(c for c in range(19) if c != top_class)
    view.set_result(explain_class(run, other, ALPHA))
    assert view.inspection.cell == (i, j) and view.inspection.class_index == other
    assert table.values(table.prototype_table, 0) == model.class_prototypes[other]
    with qtbot.waitSignal(view.thresholdChanged, timeout=10000):  # recomputed on the view's pool
        view.threshold_slider.setValue(30)
    assert view.inspection.threshold == pytest.approx(0.3) and len(shown) == 3
    assert view.inspect_pixel(-5, 3) is None and view.inspection.cell == (i, j)  # outside: ignored
    # clicking a prototype row shows that prototype's map
    table.prototype_table.cellClicked.emit(1, 0)
    assert view.current_node == f"p{model.class_prototypes[other][1]}"


# ------------------------------------------------------------------------ nearest prototypes


def test_grow_box_follows_connected_hot_pixels_only():
    hot = np.zeros((10, 10), bool)
    hot[2:5, 3] = True  # a vertical bar through the start pixel
    hot[4, 3:8] = True  # and a horizontal one from its bottom end
    hot[0, 9] = True  # far away: must not be reached
    assert grow_box(hot, (3, 4, 3, 4)) == (2, 5, 3, 8)
    assert grow_box(np.zeros((10, 10), bool), (3, 4, 3, 5)) == (3, 4, 3, 5)  # nothing hot: the cell
    assert grow_box(np.ones((6, 7), bool), (2, 3, 2, 3)) == (0, 6, 0, 7)


def test_nearest_prototypes_rank_used_prototypes_of_all_classes(run):
    head = run.head
    car, road, person = (CITYSCAPES_CLASSES.index(n) for n in ("car", "road", "person"))
    # make one 'person' prototype unused: zero its column in every group of the class
    weights = [w.copy() for w in head.group_weights]
    k = head.group_classes.index(person)
    weights[k][:, 0] = 0.0
    unused = head.class_prototypes[person][0]
    # and make sure the prototypes given high activations below are used
    weights[head.group_classes.index(car)][0, [4, 7, 8]] = 0.2
    weights[head.group_classes.index(road)][1, 1] = 0.2
    # and let a single class win everywhere, so the region is the whole image
    head_weight = head.head_weight.copy()
    head_weight[road] = 1000.0
    head2 = dataclasses.replace(head, group_weights=weights, head_weight=head_weight)
    used = head2.used_prototypes(ALPHA)
    expected_used = sorted(
        head2.class_prototypes[c][m] for kk, c in enumerate(head2.group_classes)
        for m in range(weights[kk].shape[1]) if (weights[kk][:, m] >= ALPHA).any())
    assert used.tolist() == expected_used and unused not in used

    i, j = 3, 4
    activations = np.full_like(run.activations, 0.5)
    first = head.class_prototypes[car][4]  # used (checked below), a plateau over cells rows 2-4, cols 3-6
    second = head.class_prototypes[road][1]
    tie_low, tie_high = sorted(head.class_prototypes[car][7:9])
    for index in (first, second, tie_low, tie_high):
        assert index in used
    activations[first, 2:5, 3:7] = 5.0
    activations[first, 0, 0] = 5.0  # a second hot spot, not connected to the cell's
    activations[second, i, j] = 4.0
    activations[tie_low, i, j] = activations[tie_high, i, j] = 3.0
    activations[unused, i, j] = 9.0  # closest of all, but unused: left out
    run2 = dataclasses.replace(run, activations=activations, head=head2)
    exp = explain_class(run2, person, ALPHA)
    assert (exp.predicted_labels == road).all()

    nearest = nearest_prototypes(exp, (i, j))
    assert [n.prototype.index for n in nearest] == [first, second, tie_low]
    assert [n.rank for n in nearest] == [1, 2, 3]
    assert [n.prototype.class_name for n in nearest] == ["car", "road", "car"]
    assert [n.prototype.scale for n in nearest] == [int(head.prototype_scale[p]) for p in (first, second, tie_low)]
    distances = [n.prototype.distance for n in nearest]
    assert distances == sorted(distances)
    assert distances[0] == pytest.approx((1 - 1e-4 * np.exp(5.0)) / (np.exp(5.0) - 1))

    # the box of the first: the connected pixels >= 0.99 x 5.0 of the cubic-upsampled plateau
    hot = upsample_cubic(activations[first], run.image_hw) >= 0.99 * 5.0
    _, components = cv2.connectedComponents(hot.astype(np.uint8))
    grid = CellGrid.of(run)
    y0, y1, x0, x1 = grid.cell_box(i, j)
    label = components[(y0 + y1) // 2, (x0 + x1) // 2]
    ys, xs = np.nonzero(components == label)
    assert label > 0 and nearest[0].box == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    assert nearest[0].box_threshold == pytest.approx(4.95)
    # the 2nd only peaks at the cell itself: its box stays around the cell
    by0, by1, bx0, bx1 = nearest[1].box
    assert by0 <= y0 and bx0 <= x0 and by1 >= y1 and bx1 >= x1 and by1 - by0 < 3 * (y1 - y0)

    # the box stays inside the region of the class predicted at the cell: predicted labels that
    # split the plateau (the cell's columns are road, the columns right of x = 50 are car)
    split = exp.predicted_labels.copy()
    split[:, 50:] = car
    assert x1 <= 50 and xs.max() >= 50  # the plateau's hot pixels cross the split
    region_exp = dataclasses.replace(exp, predicted_labels=split)
    box = nearest_prototypes(region_exp, (i, j))[0].box
    inside = hot.copy()
    inside[:, 50:] = False
    _, parts = cv2.connectedComponents(inside.astype(np.uint8))
    ys, xs = np.nonzero(parts == parts[(y0 + y1) // 2, (x0 + x1) // 2])
    assert box == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) and box[3] == 50


def test_training_patches_only_when_the_push_metadata_exists(qtbot, run, top_class, tmp_path):
    from fssgui.gui.prototypes.inspector import CellInspectorWidget

    exp = explain_class(run, top_class, ALPHA)
    inspection = inspect_cell(exp, (2, 2))
    assert not inspection.projection_available
    assert all(n.projection is None for n in inspection.nearest)
    assert "no projection metadata available" in inspection.projection_note
    widget = CellInspectorWidget()
    qtbot.addWidget(widget)
    widget.show_inspection(inspection)
    assert widget.values(widget.nearest_table, 7) == ["no projection metadata"] * 3
    assert "no projection metadata available" in widget.projection_label.text()
    assert widget.nearest_table.item(0, 7).data(QtCore.Qt.ItemDataRole.DecorationRole) is None

    # a push folder with a record (and a patch image) for the nearest prototype
    nearest = inspection.nearest[0].prototype
    folder = tmp_path / "prototypes"
    (folder / nearest.class_name).mkdir(parents=True)
    boxes = np.full((run.activations.shape[0], 6), -1)
    boxes[nearest.index] = [7, 10, 40, 20, 60, nearest.class_index]
    np.save(folder / "bbNone.npy", boxes)
    (tmp_path / "all_images.json").write_text(json.dumps({"train": [f"img_{i}" for i in range(10)]}))
    patch = np.zeros((30, 40, 3), np.uint8)
    patch[:, :20] = (255, 0, 0)
    cv2.imwrite(str(folder / nearest.class_name / f"prototype-img_scale_{nearest.scale}_{nearest.index}.png"), patch)
    meta, note = ProjectionMetadata.find(None, folder)
    with_push = inspect_cell(explain_class(dataclasses.replace(run, projection=meta, projection_note=note),
                                              top_class, ALPHA), (2, 2))
    assert with_push.projection_available and with_push.nearest[0].projection.image_id == "img_7"
    assert with_push.nearest[0].projection.box == (10, 40, 20, 60)
    assert all(n.projection is None for n in with_push.nearest[1:])  # no record: nothing invented
    widget.show_inspection(with_push)
    patches = widget.values(widget.nearest_table, 7)
    assert "img_7" in patches[0] and patches[1:] == ["no push record for this prototype"] * 2
    icons = [widget.nearest_table.item(r, 7).data(QtCore.Qt.ItemDataRole.DecorationRole) for r in range(3)]
    assert icons[0] is not None and not icons[0].isNull() and icons[1:] == [None, None]  # the patch thumbnail
    assert "prototype-img_scale_" in widget.nearest_table.item(0, 7).toolTip()


# ---------------------------------------------------------------------------- compare mode


def test_compare_mode_uses_one_shared_range_per_map_kind(run, top_class):
    other = next(c for c in range(19) if c != top_class and run.head.class_prototypes[c])
    comparison = compare_classes(run, top_class, other, ALPHA, masked=False)
    assert comparison.region is None and comparison.class_indices == (top_class, other)
    a, b = comparison.explanations
    maps = {kind: [] for kind in ("prototype", "group", "class")}
    for exp in (a, b):
        maps["prototype"] += [exp.image_map(p.node_id) for p in exp.prototypes]
        maps["group"] += [exp.image_map(g.node_id) for g in exp.groups]
        maps["class"].append(exp.image_map("class"))
    for kind, values in maps.items():
        assert comparison.limits[kind] == pytest.approx((min(v.min() for v in values), max(v.max() for v in values)))
    lo, hi = comparison.limits["prototype"]
    node = a.prototypes[0].node_id
    np.testing.assert_allclose(comparison.normalised(0, node), (a.image_map(node) - lo) / (hi - lo), atol=1e-6)
    # shared: only the map that holds the overall maximum reaches 1 (per-map min-max would give
    # 1 on every map)
    peaks = [[comparison.normalised(side, p.node_id).max() for p in e.prototypes]
             for side, e in enumerate(comparison.explanations)]
    flat = np.concatenate(peaks)
    assert flat.max() == pytest.approx(1.0) and (flat < 0.999).sum() >= len(flat) - 1
    assert min(comparison.normalised(s, p.node_id).min() for s, e in enumerate((a, b)) for p in e.prototypes) == 0.0

    masked = compare_classes(run, top_class, other, ALPHA, masked=True)
    region = a.class_mask | b.class_mask
    assert np.array_equal(masked.region, region)
    lo, hi = masked.limits["group"]
    assert lo == pytest.approx(min(e.image_map(g.node_id)[region].min() for e in (a, b) for g in e.groups))
    assert (masked.normalised(1, "g0")[~region] == 0).all()
    sheet = masked.render_sheet(tile=64)
    assert sheet.ndim == 3 and sheet.shape[1] > 2 * 4 * 64
    with pytest.raises(ExplainError):
        compare_classes(run, top_class, top_class)


def test_compare_view_follows_pickers_swap_and_threshold(qtbot, run, top_class):
    from fssgui.gui.prototypes.compare_view import ClassCompareView

    other = next(c for c in range(19) if c != top_class)
    view = ClassCompareView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    items = [(CITYSCAPES_CLASSES[c], c) for c in range(19)]
    shown: list = []
    view.comparisonShown.connect(shown.append)

    def compared(change):  # the comparison is computed on the view's pool
        with qtbot.waitSignal(view.comparisonShown, timeout=10000):
            change()
        return view.comparison

    assert compared(lambda: view.set_run(run, ALPHA, items, top_class, other)).class_indices == (top_class, other)
    expected = compare_classes(run, top_class, other, ALPHA)
    assert view.comparison.limits == expected.limits
    assert view.sheet() is not None and not view.sheet_label.pixmap().isNull()
    assert compared(view.swap).class_indices == (other, top_class)
    assert compared(lambda: view.set_threshold(0.3)).explanations[0].threshold == pytest.approx(0.3)
    assert compared(lambda: view.mask_check.setChecked(False)).region is None
    view.set_classes(other, other)
    assert view.comparison is None and "two different" in view.summary_label.text()
    assert len(shown) == 4

    hidden = ClassCompareView()  # hidden: computed when shown
    qtbot.addWidget(hidden)
    hidden.set_run(run, ALPHA, items, top_class, other)
    assert hidden.comparison is None and hidden.current_comparison() is None
    with qtbot.waitSignal(hidden.comparisonShown, timeout=10000):
        hidden.show()
    assert hidden.current_comparison().class_indices == (top_class, other)


def test_a_map_click_in_the_scrolling_tab_brings_the_numbers_into_view(qtbot, model, run, top_class, tmp_path):
    from PySide6.QtWidgets import QScrollArea

    from fssgui.gui.prototypes.panel import PrototypePanel

    scroll = QScrollArea()  # as the window hosts the tab
    scroll.setWidgetResizable(True)
    panel = PrototypePanel()
    scroll.setWidget(panel)
    qtbot.addWidget(scroll)
    scroll.resize(760, 620)
    scroll.show()
    qtbot.waitExposed(scroll)
    panel.show_result(PrototypeRunResult(run, explain_class(run, top_class, ALPHA), predicted_class_shares(run, ALPHA),
                                         model.describe(ALPHA), "scaleprotoseg-cityscapes", str(tmp_path / "x.pth"),
                                         "cpu", 0.1, image_key(run.image)))
    view = panel.view
    scroll.ensureWidgetVisible(view.map_widget, 0, 0)
    qtbot.wait(10)
    before = scroll.verticalScrollBar().value()
    y0, y1, x0, x1 = CellGrid.of(run).cell_box(2, 3)
    scene_point = view.map_box.mapViewToScene(QtCore.QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    qtbot.mouseClick(view.map_widget.viewport(), QtCore.Qt.MouseButton.LeftButton,
                     pos=view.map_widget.mapFromScene(scene_point))
    assert view.inspection is not None and view.inspection.cell == (2, 3)
    assert scroll.verticalScrollBar().value() > before
    top = view.inspector.mapTo(scroll.viewport(), view.inspector.rect().topLeft()).y()
    assert 0 <= top < scroll.viewport().height() - 100  # the inspector's first rows are on screen
