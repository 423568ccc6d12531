"""ScaleProtoSeg interaction (Prototypes tab): pixel inspector, nearest prototypes, compare mode
with shared normalisation, export. Core functions are checked against a direct model forward
and hand-built cases; the Qt widgets are driven offscreen with real clicks where it matters."""
from __future__ import annotations

import copy
import dataclasses
import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2
import numpy as np
import pytest
import torch
from PySide6 import QtCore

from fssgui.errors import ExplainError
from fssgui.explain import proto_inspect as pi
from fssgui.explain.prototypes import ProjectionMetadata, explain_class, run_scaleprotoseg, upsample_cubic
from fssgui.imaging import load_rgb
from fssgui.models.scaleprotoseg import CITYSCAPES_CLASSES, ScaleProtoSeg, ScaleProtoSegConfig, feature_grid_size
from test_scaleprotoseg import make_image, small_model

ALPHA = 0.05


@pytest.fixture(scope="module")
def model() -> ScaleProtoSeg:
    """A shallow Cityscapes-layout model whose head is perturbed so that several classes are
    predicted on the test image (the default +1/-0.5 head predicts one class everywhere)."""
    model = small_model(seed=4)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        model.last_layer_group.weight.add_(3 * torch.randn(model.last_layer_group.weight.shape, generator=generator))
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def run(model):
    # Cityscapes keeps the image size unless told: size=49 -> input 49x65, a 7x9 grid, and the
    # image (60x80) is not a multiple of the grid, so the cell mapping is not trivial
    return run_scaleprotoseg(model, make_image(60, 80), size=49)


@pytest.fixture(scope="module")
def top_class(run) -> int:
    from fssgui.gui.jobs import predicted_class_shares

    shares = predicted_class_shares(run, ALPHA)
    return next(c for c, _ in shares if run.head.class_prototypes[c])


def forward(model, run):
    with torch.no_grad():
        return model(model.preprocess(run.image, run.input_hw))


# ------------------------------------------------------------------------------ cell mapping


def test_cell_grid_maps_pixels_to_cells_and_measures_the_stride(run):
    grid = pi.CellGrid.of(run)
    assert grid.input_hw == (49, 65) and grid.grid_hw == (7, 9) == feature_grid_size(49, 65)
    assert grid.stride == (8, 8)  # measured from the sizes of this forward
    for size in [(513, 513), (1024, 2048), (375, 500), (321, 321)]:  # spec §1.9 sizes
        assert pi.CellGrid(size, size, feature_grid_size(*size)).stride == (8, 8)
    assert pi.CellGrid((60, 80), (60, 80), (30, 40)).stride == (2, 2)  # not hard-coded

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
    inspection = pi.inspect_cell(exp, (i, j))
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
    at_alpha = pi.inspect_cell(explain_class(run, top_class, ALPHA), (i, j))
    np.testing.assert_allclose([c.logit for c in at_alpha.classes], out_t.logits[0, :, i, j].numpy(),
                               rtol=1e-4, atol=1e-3)
    assert json.loads(json.dumps(at_alpha.to_json()))["cell_ij"] == [i, j]


def test_a_click_on_the_map_inspects_that_cell(qtbot, model, run, top_class):
    from fssgui.gui.proto_graph import ProtoGraphView

    exp = explain_class(run, top_class, ALPHA)
    view = ProtoGraphView()
    qtbot.addWidget(view)
    view.resize(900, 1100)
    view.set_result(exp)
    view.show()
    qtbot.waitExposed(view)
    grid = pi.CellGrid.of(run)
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
    assert pi.grow_box(hot, (3, 4, 3, 4)) == (2, 5, 3, 8)
    assert pi.grow_box(np.zeros((10, 10), bool), (3, 4, 3, 5)) == (3, 4, 3, 5)  # nothing hot: the cell
    assert pi.grow_box(np.ones((6, 7), bool), (2, 3, 2, 3)) == (0, 6, 0, 7)


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

    nearest = pi.nearest_prototypes(exp, (i, j))
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
    grid = pi.CellGrid.of(run)
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
    box = pi.nearest_prototypes(region_exp, (i, j))[0].box
    inside = hot.copy()
    inside[:, 50:] = False
    _, parts = cv2.connectedComponents(inside.astype(np.uint8))
    ys, xs = np.nonzero(parts == parts[(y0 + y1) // 2, (x0 + x1) // 2])
    assert box == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) and box[3] == 50


def test_training_patches_only_when_the_push_metadata_exists(qtbot, run, top_class, tmp_path):
    from fssgui.gui.proto_inspector import CellInspectorWidget

    exp = explain_class(run, top_class, ALPHA)
    inspection = pi.inspect_cell(exp, (2, 2))
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
    with_push = pi.inspect_cell(explain_class(dataclasses.replace(run, projection=meta, projection_note=note),
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
    comparison = pi.compare_classes(run, top_class, other, ALPHA, masked=False)
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

    masked = pi.compare_classes(run, top_class, other, ALPHA, masked=True)
    region = a.class_mask | b.class_mask
    assert np.array_equal(masked.region, region)
    lo, hi = masked.limits["group"]
    assert lo == pytest.approx(min(e.image_map(g.node_id)[region].min() for e in (a, b) for g in e.groups))
    assert (masked.normalised(1, "g0")[~region] == 0).all()
    sheet = masked.render_sheet(tile=64)
    assert sheet.ndim == 3 and sheet.shape[1] > 2 * 4 * 64
    with pytest.raises(ExplainError):
        pi.compare_classes(run, top_class, top_class)


def test_compare_view_follows_pickers_swap_and_threshold(qtbot, run, top_class):
    from fssgui.gui.proto_compare import ClassCompareView

    other = next(c for c in range(19) if c != top_class)
    view = ClassCompareView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    items = [(CITYSCAPES_CLASSES[c], c) for c in range(19)]
    shown: list = []
    view.comparisonShown.connect(shown.append)
    view.set_run(run, ALPHA, items, top_class, other)
    assert shown and view.comparison.class_indices == (top_class, other)
    expected = pi.compare_classes(run, top_class, other, ALPHA)
    assert view.comparison.limits == expected.limits
    assert view.sheet() is not None and not view.sheet_label.pixmap().isNull()
    view.swap()
    assert view.comparison.class_indices == (other, top_class)
    view.set_threshold(0.3)
    assert view.comparison.explanations[0].threshold == pytest.approx(0.3)
    view.mask_check.setChecked(False)
    assert view.comparison.region is None
    view.set_classes(other, other)
    assert view.comparison is None and "two different" in view.summary_label.text()

    hidden = ClassCompareView()  # hidden: computed lazily, on demand
    qtbot.addWidget(hidden)
    hidden.set_run(run, ALPHA, items, top_class, other)
    assert hidden.comparison is None
    assert hidden.current_comparison().class_indices == (top_class, other)


# ---------------------------------------------------------------------------------- export


def test_export_writes_overlays_and_proto_info_json(model, run, top_class, tmp_path):
    exp = explain_class(run, top_class, ALPHA)
    comparison = pi.compare_classes(run, top_class, (top_class + 1) % 19, ALPHA)
    inspection = pi.inspect_cell(exp, (1, 2))
    files = pi.export_class(exp, tmp_path / "out", comparison=comparison, inspection=inspection)
    slug = pi.class_slug(exp.class_name, top_class)
    out = tmp_path / "out"
    names = {p.relative_to(out).as_posix() for p in files}
    for p in exp.prototypes:
        assert f"proto_{p.index}_scale_{p.scale}_class_{slug}.png" in names
    for n in range(3):
        assert f"group_{n}_class_{slug}.png" in names
    assert {f"group_max_class_{slug}.png", f"graph_class_{slug}.png", f"group_weights_class_{slug}.json",
            f"cell_1_2_class_{slug}.json"} <= names
    for path in files:
        assert path.is_file()
        if path.suffix == ".png" and path.name.startswith(("proto_", "group_")):
            assert load_rgb(path).shape == (60, 80, 3)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # atomic writes left nothing behind
    overlay = load_rgb(out / f"group_1_class_{slug}.png")
    assert np.array_equal(overlay, exp.overlay("g1"))

    data = json.loads((out / f"group_weights_class_{slug}.json").read_text())
    assert data["class_name"] == exp.class_name and data["threshold"] == ALPHA and data["stage"] == 2
    weights = model.group_weights(top_class).numpy()
    columns = model.class_prototypes[top_class]
    assert len(data["proto_info"]) == 3
    for n, members in enumerate(data["proto_info"]):
        kept = [m for m in range(len(columns)) if weights[n, m] >= ALPHA]
        assert [e["real_proto_id"] for e in members] == [columns[m] for m in kept]
        for entry in members:
            assert set(entry) == {"real_proto_id", "proto_weight", "scale"}  # the official shape
            m = columns.index(entry["real_proto_id"])
            assert entry["proto_weight"] == pytest.approx(float(weights[n, m]))  # not renormalised
            assert entry["scale"] == int(model.prototype_scale[entry["real_proto_id"]])
        group = data["groups"][n]
        assert group["proto_info"] == members
        assert group["class_weight"] == pytest.approx(float(model.last_layer_group.weight[top_class, 3 * top_class + n]))
        official = out / "group_composition" / group["folder"] / "proto_info.json"
        assert json.loads(official.read_text()) == members  # the bare official list
        assert group["folder"].endswith("single-low" if len(members) <= 1 else "mutliple")
    head = model.last_layer_group.weight[:, model.group_columns(top_class)].T.numpy()
    np.testing.assert_allclose(data["group_class_weights"]["weights"], head, rtol=1e-6)
    assert data["group_class_weights"]["classes"] == list(CITYSCAPES_CLASSES)
    cell = json.loads((out / f"cell_1_2_class_{slug}.json").read_text())
    assert cell["cell_ij"] == [1, 2] and len(cell["nearest_prototypes"]) == 3
    compare = next(p for p in files if p.name.startswith("compare_") and p.suffix == ".json")
    assert set(json.loads(compare.read_text())["shared_limits"]) == {"prototype", "group", "class"}


def test_stage1_model_inspects_and_exports_without_groups(tmp_path):
    stage1 = small_model(seed=6, grouped=False)
    run = run_scaleprotoseg(stage1, make_image(40, 48))
    exp = explain_class(run, 0, ALPHA)
    inspection = pi.inspect_cell(exp, (0, 0))
    assert inspection.groups == [] and all(p.used for p in inspection.prototypes)
    out = forward(stage1, run)
    np.testing.assert_allclose([c.logit for c in inspection.classes], out.logits[0, :, 0, 0].numpy(),
                               rtol=1e-4, atol=1e-3)
    files = pi.export_class(exp, tmp_path)
    data = json.loads(next(p for p in files if p.suffix == ".json").read_text())
    assert data["stage"] == 1 and len(data["prototype_class_weights"]) == 12


def test_panel_export_reports_errors_in_the_window(qtbot, model, run, top_class, tmp_path):
    from fssgui.gui.jobs import PrototypeRunResult, image_key, predicted_class_shares
    from fssgui.gui.proto_panel import PrototypePanel

    panel = PrototypePanel()
    qtbot.addWidget(panel)
    assert not panel.export_button.isEnabled()
    errors: list[str] = []
    panel.errorRaised.connect(errors.append)
    assert panel.export_to(tmp_path / "nothing") is None and "run the model first" in errors[-1]
    result = PrototypeRunResult(run, explain_class(run, top_class, ALPHA), predicted_class_shares(run, ALPHA),
                                model.describe(ALPHA), "scaleprotoseg-cityscapes", str(tmp_path / "x.pth"), "cpu",
                                0.1, image_key(run.image))
    panel.show_result(result)
    assert panel.export_button.isEnabled()
    assert panel.compare_view.first_combo.currentData() == top_class
    panel.view.inspect_cell(2, 3)
    files = panel.export_to(tmp_path / "export")
    assert files and all(p.is_file() for p in files) and "exported" in panel.status_label.text()
    assert any(p.name == f"cell_2_3_class_{pi.class_slug(result.explanation.class_name, top_class)}.json"
               for p in files)
    assert any(p.name.startswith("compare_") for p in files)

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert panel.export_to(blocker) is None  # shown, not raised
    assert "export to" in errors[-1] and "not a folder" in errors[-1]
    assert "failed" in panel.status_label.text() and panel.status_label.isVisibleTo(panel)
    assert panel.export_to(blocker / "sub") is None and "failed" in errors[-1]  # an OSError too

    # a new run clears the inspected cell (it belonged to the previous image)
    panel.show_result(result)
    assert panel.view.inspection is None and panel.view.drawn_boxes() == []


def test_a_map_click_in_the_scrolling_tab_brings_the_numbers_into_view(qtbot, model, run, top_class, tmp_path):
    from PySide6.QtWidgets import QScrollArea

    from fssgui.gui.jobs import PrototypeRunResult, image_key, predicted_class_shares
    from fssgui.gui.proto_panel import PrototypePanel

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
    y0, y1, x0, x1 = pi.CellGrid.of(run).cell_box(2, 3)
    scene_point = view.map_box.mapViewToScene(QtCore.QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    qtbot.mouseClick(view.map_widget.viewport(), QtCore.Qt.MouseButton.LeftButton,
                     pos=view.map_widget.mapFromScene(scene_point))
    assert view.inspection is not None and view.inspection.cell == (2, 3)
    assert scroll.verticalScrollBar().value() > before
    top = view.inspector.mapTo(scroll.viewport(), view.inspector.rect().topLeft()).y()
    assert 0 <= top < scroll.viewport().height() - 100  # the inspector's first rows are on screen
