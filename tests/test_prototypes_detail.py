"""Prototype detail pane of the Prototypes tab (fssgui.prototypes.detail, .nearest, .dataset and
the pane): the push source image with its boxes, the self-activation overlay, the top-k nearest
patches of a split, the messages when metadata or the dataset folder are missing, and the pane
opening from a node click. A tiny random ScaleProtoSeg,
a synthetic push folder and a synthetic dataset folder (official layout) written in tmp."""
from __future__ import annotations

import copy
import dataclasses
import html
import json
import os
import time


import cv2
import numpy as np
import pytest
import torch
from PySide6 import QtCore
from torch import nn

from fssgui.errors import Cancelled, ExplainError
from fssgui.look import colormap_lut
from fssgui.prototypes import nearest
from fssgui.prototypes.dataset import NO_DATASET_TEXT, DatasetFolder
from fssgui.prototypes.detail import SourceRequest, describe_prototype, locate_source
from fssgui.prototypes.graph import explain_class
from fssgui.prototypes.inspection import CellGrid
from fssgui.prototypes.nearest import NearestDistanceCache, NearestRequest, find_nearest_patches
from fssgui.prototypes.overlays import BOX_COLOUR, CELL_COLOUR, clip_box
from fssgui.prototypes.projection import ProjectionMetadata
from fssgui.prototypes.run import run_scaleprotoseg
from prototypes_testkit import make_image, save_official_pickle, small_model

ALPHA = 0.05
IMAGE_HW = (40, 56)  # Cityscapes keeps the image size: a 5x7 feature grid (stride 8)
PUSH_CELL = (2, 4)  # the cell of the source image the prototype is projected from
VAL_IDS = ["v0", "v1", "v2", "v3", "v4"]
WINNER = "v3"  # the val image that is the push source too: its minimum distance is ~0


def _image(seed: int) -> np.ndarray:
    """Distinct small RGB images: the shared pattern, shifted and noised per seed."""
    rng = np.random.default_rng(seed)
    image = np.roll(make_image(*IMAGE_HW), 7 * seed, axis=1).astype(np.int16)
    image += rng.integers(-60, 60, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model with one prototype projected onto ``PUSH_CELL`` of the winner image (as the
    push does), the dataset folder and the push folder."""
    model = small_model(seed=6)
    # A tiny stride-8 backbone in place of the dilated ResNet (one forward in milliseconds); the
    # add-on, the per-scale distances, the activations and the group head are the model's own.
    torch.manual_seed(6)
    model.features = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                   nn.Conv2d(64, 4 * model.config.feature_dim, 3, 2, 1)).eval()
    model.requires_grad_(False)
    cls = 2  # "building"
    prototype = model.class_prototypes[cls][4]  # scale 1 (its 5th column)
    scale = int(model.prototype_scale[prototype])
    images = {image_id: _image(seed) for seed, image_id in enumerate(VAL_IDS)}
    source = images[WINNER]
    with torch.no_grad():
        features = model.conv_features(model.preprocess(source, model.input_size(IMAGE_HW)))
        dim = features.shape[1] // model.num_scales
        vector = features[0, scale * dim:(scale + 1) * dim, PUSH_CELL[0], PUSH_CELL[1]]
        model.prototype_vectors[prototype] = vector.view(dim, 1, 1)

    root = tmp_path_factory.mktemp("detail")
    data = root / "DATA"
    train_ids = ["t0", "t1", "t_missing"]
    for split, ids in (("val", VAL_IDS), ("train", train_ids[:2])):
        (data / "img_with_margin_0" / split).mkdir(parents=True)
        for image_id in ids:
            image = images[image_id] if split == "val" else (source if image_id == "t1" else _image(11))
            cv2.imwrite(str(data / "img_with_margin_0" / split / f"{image_id}.png"), image[..., ::-1])
    (data / "all_images.json").write_text(json.dumps({"train": train_ids, "val": VAL_IDS}))

    # push output of the stage-1 run: a record only for `prototype` (train image #1 = t1 = the source)
    push = root / "run" / "prototypes"
    push.mkdir(parents=True)
    grid = CellGrid(IMAGE_HW, IMAGE_HW, run_scaleprotoseg(model, source).grid_hw)
    cell_box = grid.cell_box(*PUSH_CELL)
    box = (cell_box[0] - 3, cell_box[1] + 5, cell_box[2] - 6, cell_box[3] + 4)
    boxes = np.full((model.num_prototypes, 6), -1, dtype=np.int64)
    receptive = boxes.copy()
    boxes[prototype] = [1, *box, cls]
    receptive[prototype] = [1, *cell_box, cls]
    np.save(push / "bbNone.npy", boxes)
    np.save(push / "bb-receptive_fieldNone.npy", receptive)
    return {"model": model, "class": cls, "prototype": prototype, "scale": scale, "data": data, "push": push,
            "images": images, "box": box, "cell_box": cell_box, "train_ids": train_ids}


@pytest.fixture(scope="module")
def runs(setup):
    """The query run without and with the push metadata."""
    model = setup["model"]
    plain = run_scaleprotoseg(model, make_image(48, 64))
    meta, note = ProjectionMetadata.find(None, setup["push"], model.num_scales)
    assert meta is not None and meta.image_ids is None  # no all_images.json beside the push output
    return plain, dataclasses.replace(plain, projection=meta, projection_note=note)


# ------------------------------------------------------------------------------ the detail


def test_detail_lists_class_scale_and_group_weights(setup, runs):
    _, run = runs
    model, p = setup["model"], setup["prototype"]
    detail = describe_prototype(run, p, ALPHA)
    assert (detail.index, detail.class_index, detail.class_name) == (p, setup["class"], "building")
    assert detail.scale == setup["scale"] == 1 and detail.dilation == 12
    assert detail.column == model.class_prototypes[setup["class"]].index(p)
    weights = model.group_weights(setup["class"])[:, detail.column].numpy()
    assert [g.weight for g in detail.group_weights] == pytest.approx(weights.tolist())
    assert [g.active for g in detail.group_weights] == [bool(w >= ALPHA and w > 0) for w in weights]
    heads = model.last_layer_group.weight[setup["class"], model.group_columns(setup["class"])].numpy()
    assert [g.head_weight for g in detail.group_weights] == pytest.approx(heads.tolist())
    assert detail.used == any(g.active for g in detail.group_weights)
    assert detail.projection is not None and detail.projection.box == setup["box"]
    assert detail.projection.receptive_box == setup["cell_box"]
    with pytest.raises(ExplainError, match="does not exist"):
        describe_prototype(run, model.num_prototypes, ALPHA)


def test_missing_metadata_and_dataset_are_named_exactly(setup, runs, tmp_path):
    plain, run = runs
    p = setup["prototype"]
    dataset = DatasetFolder.open(setup["data"])

    # no push output and no dataset folder: both said, nothing else invented
    location = locate_source(describe_prototype(plain, p, ALPHA), None)
    assert location.path is None and location.image_id is None and not location.ready
    assert location.missing == [f"no push output for this checkpoint: {plain.projection_note}", NO_DATASET_TEXT]
    # no push output, dataset chosen: only the push output is missing
    assert locate_source(describe_prototype(plain, p, ALPHA), dataset).missing == [
        f"no push output for this checkpoint: {plain.projection_note}"]
    # push output, no dataset folder
    detail = describe_prototype(run, p, ALPHA)
    assert locate_source(detail, None).missing == [NO_DATASET_TEXT]
    # a prototype the push has no record for
    other = describe_prototype(run, p + 1, ALPHA)
    missing = locate_source(other, dataset).missing
    assert len(missing) == 1 and f"no record for prototype p{p + 1}" in missing[0]
    assert str(setup["push"]) in missing[0]
    # both present: the id comes from the dataset's all_images.json (train #1)
    location = locate_source(detail, dataset)
    assert location.ready and location.image_id == "t1"
    assert location.path == setup["data"] / "img_with_margin_0" / "train" / "t1.png"

    # the record points at a train id whose file does not exist
    boxes = np.load(setup["push"] / "bbNone.npy")
    boxes[p, 0] = 2
    push = tmp_path / "prototypes"
    push.mkdir()
    np.save(push / "bbNone.npy", boxes)
    meta, note = ProjectionMetadata.find(None, push)
    moved = describe_prototype(dataclasses.replace(run, projection=meta, projection_note=note), p, ALPHA)
    assert locate_source(moved, dataset).missing == [
        f"training image not found: {setup['data'] / 'img_with_margin_0' / 'train' / 't_missing.png'}"]
    # ... or beyond the train list, or with no all_images.json anywhere
    boxes[p, 0] = 9
    np.save(push / "bbNone.npy", boxes)
    meta, _ = ProjectionMetadata.find(None, push)
    beyond = describe_prototype(dataclasses.replace(run, projection=meta), p, ALPHA)
    assert locate_source(beyond, dataset).missing == [
        f"train image #9 has no id: {setup['data'] / 'all_images.json'} lists 3 train images"]
    bare = tmp_path / "bare"
    (bare / "img_with_margin_0" / "train").mkdir(parents=True)
    no_json = DatasetFolder.open(bare)
    assert no_json.images_json is None and "no all_images.json" in no_json.note
    assert locate_source(detail, no_json).missing == [
        f"train image #1 has no id: no all_images.json next to the push output nor in {bare}"]

    # not the official layout
    with pytest.raises(ExplainError, match="no img_with_margin_0/ folder"):
        DatasetFolder.open(tmp_path)
    with pytest.raises(ExplainError, match="dataset folder not found"):
        DatasetFolder.open(tmp_path / "nowhere")
    assert DatasetFolder.open(setup["data"] / "img_with_margin_0").root == setup["data"]  # the inner folder
    assert dataset.splits() == ["train", "val"] and dataset.image_ids("val") == VAL_IDS


# --------------------------------------------------------------------------- the source view


def test_source_view_boxes_and_self_activation_overlay(setup, runs):
    _, run = runs
    model, p = setup["model"], setup["prototype"]
    dataset = DatasetFolder.open(setup["data"])
    detail = describe_prototype(run, p, ALPHA)
    view = SourceRequest(detail, locate_source(detail, dataset)).run(model)
    source = setup["images"][WINNER]
    assert view.image_id == "t1" and np.array_equal(view.image, source)
    assert view.box == setup["box"] and view.receptive_box == setup["cell_box"] and not view.notes

    # the activation is this prototype's on the source image, the push cell is its peak
    with torch.no_grad():
        out = model(model.preprocess(source, model.input_size(IMAGE_HW)))
    np.testing.assert_allclose(view.activation_grid, out.prototype_activations[0, p].numpy(), rtol=1e-6)
    assert view.peak_cell == PUSH_CELL and view.cell == PUSH_CELL  # the cell under the receptive box
    assert view.cell_activation == view.peak_activation > 9.0  # distance ~0: log(1/1e-4) = 9.21

    # overlay: cubic upsampling to the image, min-max normalised, JET blended 0.5 / 0.5
    upsampled = cv2.resize(view.activation_grid, (IMAGE_HW[1], IMAGE_HW[0]), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(view.activation_image(), upsampled)
    normalised = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
    heat = colormap_lut("jet")[(normalised * 255).astype(np.uint8)].astype(np.float32)
    expected = (0.5 * source.astype(np.float32) + 0.5 * heat + 0.5).astype(np.uint8)
    overlay = view.overlay()
    assert overlay.shape == source.shape
    assert np.abs(overlay.astype(int) - expected.astype(int)).max() <= 1
    y0, y1, x0, x1 = setup["cell_box"]
    hottest = np.unravel_index(int(np.argmax(upsampled)), upsampled.shape)
    assert y0 <= hottest[0] < y1 and x0 <= hottest[1] < x1  # the hot spot lies in the push cell

    # the boxes drawn on the image: border pixels in the box colours, the inside untouched
    drawn = view.image_with_boxes()
    by0, by1, bx0, bx1 = setup["box"]
    assert (drawn[by0, bx0:bx1] == BOX_COLOUR).all() and (drawn[by1 - 1, bx0:bx1] == BOX_COLOUR).all()
    assert (drawn[by0:by1, bx0] == BOX_COLOUR).all() and (drawn[by0:by1, bx1 - 1] == BOX_COLOUR).all()
    assert (drawn[y0, x0:x1] == CELL_COLOUR).all() and (drawn[y0:y1, x1 - 1] == CELL_COLOUR).all()
    untouched = np.ones(IMAGE_HW, bool)
    untouched[by0:by1, bx0:bx1] = False
    assert np.array_equal(drawn[untouched], source[untouched])
    assert np.array_equal(drawn[y0 + 1:y1 - 1, x0 + 1:x1 - 1], source[y0 + 1:y1 - 1, x0 + 1:x1 - 1])

    # a push box partly outside the image is clipped, and said so
    assert clip_box((-4, 10, 50, 70), IMAGE_HW) == (0, 10, 50, 56)
    assert clip_box((45, 50, 0, 5), IMAGE_HW) is None


# --------------------------------------------------------------------------- nearest patches


def test_nearest_patches_rank_images_by_their_minimum_distance(setup):
    model, p = setup["model"], setup["prototype"]
    dataset = DatasetFolder.open(setup["data"])
    progress: list[float] = []
    result = NearestRequest(p, dataset, "val", max_images=50).run(model, lambda f, _m: progress.append(f))

    # brute force: every image's minimum distance from a direct forward
    minima = {}
    for image_id in VAL_IDS:
        image = setup["images"][image_id]
        with torch.no_grad():
            out = model(model.preprocess(image, model.input_size(IMAGE_HW)))
        minima[image_id] = float(out.distances[0, p].min())
    expected = sorted(VAL_IDS, key=lambda i: (minima[i], VAL_IDS.index(i)))[:3]
    assert [patch.image_id for patch in result.patches] == expected
    assert expected[0] == WINNER and minima[WINNER] < 1e-3 < min(v for k, v in minima.items() if k != WINNER)
    assert [patch.rank for patch in result.patches] == [1, 2, 3]
    assert [patch.distance for patch in result.patches] == pytest.approx([minima[i] for i in expected], rel=1e-5,
                                                                         abs=1e-6)
    first = result.patches[0]
    assert first.cell == PUSH_CELL and first.activation > 9.0
    assert first.cell_box == CellGrid(IMAGE_HW, IMAGE_HW, first.activation_grid.shape).cell_box(*PUSH_CELL)
    assert first.crop().shape[:2] == (first.cell_box[1] - first.cell_box[0], first.cell_box[3] - first.cell_box[2])
    assert first.overlay_with_box().shape == first.image.shape
    assert (result.total, result.searched, result.missing) == (5, 5, [])
    assert result.summary() == "top 3 of 5 images searched in 'val' (all 5)"
    assert progress[-1] == 1.0 and progress == sorted(progress)

    # the cap: only the first images of the list are searched, and the count says so
    capped = find_nearest_patches(model, p, dataset, "val", max_images=2)
    assert [patch.image_id for patch in capped.patches] == sorted(VAL_IDS[:2], key=minima.get)
    assert capped.searched == 2 and capped.summary() == "top 2 of 2 images searched in 'val' (capped at 2 of 5)"

    # cancelled between two images: nothing is returned
    calls = []
    with pytest.raises(Cancelled):
        find_nearest_patches(model, p, dataset, "val", cancelled=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3
    # missing files are skipped and counted; an empty split is an error
    train = find_nearest_patches(model, p, dataset, "train")
    assert train.missing == ["t_missing"] and train.searched == 2 and "1 listed files missing" in train.summary()
    assert train.patches[0].image_id == "t1"  # the push source itself
    with pytest.raises(ExplainError, match="no images in split 'test'"):
        find_nearest_patches(model, p, dataset, "test")


def test_nearest_search_cache_needs_only_the_winners_forwards(setup, monkeypatch):
    """A cache keeps every prototype's minimum per image: a search for another prototype runs only
    the k winners' forwards and returns what an uncached search returns; changed files and another
    model are searched again."""
    model, p = setup["model"], setup["prototype"]
    other = (p + 7) % int(model.prototype_vectors.shape[0])
    dataset = DatasetFolder.open(setup["data"])
    plain = {q: find_nearest_patches(model, q, dataset, "val") for q in (p, other)}
    forwards: list[int] = []
    real_forward = nearest.forward_image
    monkeypatch.setattr(nearest, "forward_image", lambda *args: forwards.append(1) or real_forward(*args))
    cache = NearestDistanceCache()

    first = NearestRequest(p, dataset, "val", cache=cache).run(model)
    assert len(forwards) == 5 and first.cached == 0 and len(cache) == 5
    forwards.clear()
    second = find_nearest_patches(model, other, dataset, "val", cache=cache)
    assert len(forwards) == 3 and second.cached == 5
    assert second.summary() == "top 3 of 5 images searched in 'val' (all 5); 5 from earlier searches"
    for result, expected in ((first, plain[p]), (second, plain[other])):
        assert [q.image_id for q in result.patches] == [q.image_id for q in expected.patches]
        for got, want in zip(result.patches, expected.patches):
            assert (got.distance, got.cell, got.cell_box, got.activation) == (want.distance, want.cell,
                                                                              want.cell_box, want.activation)
            assert np.array_equal(got.activation_grid, want.activation_grid) and np.array_equal(got.image, want.image)

    # a rewritten file is searched again; the others still come from the cache
    changed = dataset.image_path("val", VAL_IDS[1])
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    forwards.clear()
    third = find_nearest_patches(model, other, dataset, "val", cache=cache)
    assert third.cached == 4 and len(forwards) == 1 + sum(q.image_id != VAL_IDS[1] for q in third.patches)
    # another model object starts afresh
    twin = copy.deepcopy(model)
    assert find_nearest_patches(twin, other, dataset, "val", cache=cache).cached == 0 and len(cache) == 5


# ------------------------------------------------------------------------------------ GUI


@pytest.fixture
def panel(qtbot, setup, runs, tmp_path):
    """The Prototypes tab showing the run with push metadata, detail jobs on a real worker."""
    from fssgui.gui.prototypes.panel import PrototypePanel
    from fssgui.prototypes.graph import PrototypeRunResult
    from fssgui.prototypes.run import image_key, predicted_class_shares
    from fssgui.gui.workers import DeviceWorker

    _, run = runs
    model = setup["model"]
    worker = DeviceWorker()
    submitted: list = []

    def submit(request):
        submitted.append(request)
        return worker.submit(lambda ctx, _cache: request.run(model, ctx.progress, ctx.cancelled),
                             description=request.description)

    widget = PrototypePanel()
    qtbot.addWidget(widget)
    widget.resize(1300, 1400)
    widget.detail_pane.attach_submit(submit)
    shares = predicted_class_shares(run, ALPHA)
    widget.show_result(PrototypeRunResult(run, explain_class(run, setup["class"], ALPHA), shares,
                                          model.describe(ALPHA), "scaleprotoseg-cityscapes", str(tmp_path / "x.pth"),
                                          "cpu", 0.1, image_key(run.image)))
    widget.show()
    qtbot.waitExposed(widget)
    widget.submitted = submitted
    yield widget
    worker.shutdown()


def test_a_node_click_opens_the_detail_pane_with_the_source(qtbot, panel, setup, monkeypatch):
    pane, view, p = panel.detail_pane, panel.view, setup["prototype"]
    assert not pane.isVisible()
    qtbot.wait(50)
    scene_point = view.graph_box.mapViewToScene(view.node_position(f"p{p}"))
    # no dataset folder yet: the pane opens and says what is missing, no job is started
    qtbot.mouseClick(view.graph_widget.viewport(), QtCore.Qt.MouseButton.LeftButton,
                     pos=view.graph_widget.mapFromScene(scene_point))
    assert pane.isVisible() and pane.detail.index == p and view.current_node == f"p{p}"
    text = pane.info_label.text()
    assert f"p{p}" in text and "building" in text and "scale 2 (dilation 12)" in text and "group 1:" in text
    assert pane.messages() == [NO_DATASET_TEXT] and panel.submitted == []
    assert html.escape(NO_DATASET_TEXT) in pane.message_label.text()
    assert not pane.nearest_button.isEnabled()

    # choosing the dataset folder starts the source job on the worker thread
    with qtbot.waitSignal(pane.sourceShown, timeout=30000) as shown:
        assert pane.set_dataset_folder(setup["data"])
    source = shown.args[0]
    assert isinstance(panel.submitted[0], SourceRequest) and source.image_id == "t1"
    assert np.array_equal(pane.source_item.image, setup["images"][WINNER])
    assert np.array_equal(pane.overlay_item.image, source.overlay())
    y0, y1, x0, x1 = setup["box"]
    cy0, cy1, cx0, cx1 = setup["cell_box"]
    assert pane.drawn_boxes() == [(x0, y0, x1 - x0, y1 - y0), (cx0, cy0, cx1 - cx0, cy1 - cy0)]
    assert "t1" in pane.source_title.text and "t1" in pane.source_label.text() and not pane.message_label.isVisible()
    assert pane.dataset_folder == str(setup["data"])

    # nearest patches on demand, in the chosen split
    pane.split_combo.setCurrentIndex(pane.split_combo.findData("val"))
    pane.max_spin.setValue(4)
    with qtbot.waitSignal(pane.nearestShown, timeout=30000) as found:
        pane.nearest_button.click()
        assert pane.nearest_button.text() == "Cancel"
    result = found.args[0]
    assert result.patches[0].image_id == WINNER and result.searched == 4
    assert pane.nearest_status.startswith("top 3 of 4 images searched in 'val' (capped at 4 of 5)") and pane.nearest_button.text() == "Find top-3"
    assert pane.nearest_titles[0].text.startswith(f"#1 {WINNER}")
    assert np.array_equal(pane.nearest_items[0].image, result.patches[0].overlay_with_box())
    # the same search again: the pane's cache answers for every image, the result is the same
    with qtbot.waitSignal(pane.nearestShown, timeout=30000) as found:
        pane.nearest_button.click()
    again = found.args[0]
    assert again.cached == 4 and pane.nearest_status.startswith(
        "top 3 of 4 images searched in 'val' (capped at 4 of 5); 4 from earlier searches")
    assert [(q.image_id, q.distance, q.cell) for q in again.patches] == [
        (q.image_id, q.distance, q.cell) for q in result.patches]

    # a search runs until the pane cancels it: nothing shown, the button back to "Find"
    def until_cancelled(model, prototype_index, dataset, split, max_images, k, size, progress, cancelled, cache=None):
        deadline = time.monotonic() + 20
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        raise Cancelled()

    monkeypatch.setattr(nearest, "find_nearest_patches", until_cancelled)
    pane.nearest_button.click()
    assert pane.is_running("nearest") and pane.nearest_button.text() == "Cancel" and pane.nearest is None
    assert pane.nearest_status == "searching 4 of 5 images of 'val'…"
    pane.nearest_button.click()
    qtbot.waitUntil(lambda: not pane.is_running("nearest"), timeout=10000)
    assert pane.nearest_status == "nearest patches: cancelled" and pane.nearest_button.text() == "Find top-3"
    assert pane.nearest is None and pane.nearest_items[0].image is None

    # a nearest-prototype row of the inspector opens its prototype (any class)
    inspection = view.inspect_cell(*PUSH_CELL)
    row = next(r for r, n in enumerate(inspection.nearest) if n.prototype.index != p)
    other = inspection.nearest[row].prototype.index
    item = view.inspector.nearest_table.item(row, 1)
    rect = view.inspector.nearest_table.visualItemRect(item)
    qtbot.mouseClick(view.inspector.nearest_table.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=rect.center())
    assert pane.detail.index == other and pane.source is None
    assert len(pane.messages()) == 1 and f"no record for prototype p{other}" in pane.messages()[0]  # nothing invented
    assert pane.nearest_items[0].image is None
    pane.close_button.click()
    assert not pane.isVisible()


def test_the_window_runs_detail_jobs_with_the_tab_model_and_remembers_the_folder(qtbot, tmp_path, make_window):
    """Through the main window: the Prototypes run, then a node click; the source view is computed
    by the worker with the tab's checkpoint, and the dataset folder goes into the settings."""
    from fssgui.settings import Settings
    from fssgui.models.scaleprotoseg import ScaleProtoSeg, ScaleProtoSegConfig
    from testkit import make_episode

    torch.manual_seed(3)
    model = ScaleProtoSeg(ScaleProtoSegConfig(n_blocks=(1, 1, 1, 1))).eval()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    checkpoint = save_official_pickle(model, tmp_path / "run" / "checkpoints" / "th-0.05-nopush-group_last.pth")
    push = tmp_path / "run" / "prototypes"  # <ckpt dir>/../prototypes: found with the checkpoint
    push.mkdir()
    owner = model.prototype_class_identity.argmax(1).numpy()
    boxes = np.stack([np.zeros(model.num_prototypes), np.full(model.num_prototypes, 4),
                      np.full(model.num_prototypes, 20), np.full(model.num_prototypes, 6),
                      np.full(model.num_prototypes, 30), owner], axis=1).astype(np.int64)
    np.save(push / "bbNone.npy", boxes)
    data = tmp_path / "DATA"
    (data / "img_with_margin_0" / "train").mkdir(parents=True)
    cv2.imwrite(str(data / "img_with_margin_0" / "train" / "t0.png"), _image(4)[..., ::-1])
    (data / "all_images.json").write_text(json.dumps({"train": ["t0"]}))

    window = make_window()
    panel = window.proto_panel
    pane = panel.detail_pane
    window.set_episode(make_episode(shots=1, size=(40, 56)))
    panel.set_model("scaleprotoseg-cityscapes")
    panel.set_checkpoint(checkpoint)
    assert pane.set_dataset_folder(data)
    with qtbot.waitSignal(panel.resultShown, timeout=60000):
        panel.run()
    shown = panel.view.result
    assert shown.run.projection is not None
    node = shown.prototypes[0].node_id
    with qtbot.waitSignal(pane.sourceShown, timeout=60000) as done:
        panel.view.select_node(node)  # as a click on the node does
    view = done.args[0]
    assert view.prototype_index == shown.prototypes[0].index and view.image_id == "t0"
    assert view.box == (4, 20, 6, 30) and view.receptive_box is None
    assert "no bb-receptive_fieldNone.npy record: no cell box" in pane.messages()
    expected = run_scaleprotoseg(model, _image(4)).activations[shown.prototypes[0].index]
    np.testing.assert_allclose(view.activation_grid, expected, rtol=1e-4, atol=1e-5)  # the tab's model
    window.store_settings()
    assert Settings.load().proto_dataset_dir == str(data)

