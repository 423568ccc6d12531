"""The group graph of one class (fssgui.prototypes.graph): maps, edges and the threshold
against the model's own tensors, its JSON document, and the push's projection metadata."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from fssgui.errors import ExplainError
from fssgui.models import scaleprotoseg as sps
from fssgui.models.scaleprotoseg import ScaleProtoSeg, feature_grid_size
from fssgui.prototypes.graph import explain_class, render_graph_png
from fssgui.prototypes.projection import ProjectionMetadata
from fssgui.prototypes.run import run_scaleprotoseg
from prototypes_testkit import make_image, small_model


@pytest.fixture(scope="module")
def grouped_model() -> ScaleProtoSeg:
    return small_model(seed=1)


@pytest.fixture(scope="module")
def run_result(grouped_model):
    return run_scaleprotoseg(grouped_model, make_image(), size=65)


def test_explanation_maps_edges_and_threshold(grouped_model, run_result):
    assert run_result.input_hw == (65, 87) and run_result.grid_hw == feature_grid_size(65, 87)
    # the numpy head reproduces the model's own logits
    logits, _ = run_result.head.logits(run_result.activations, None)
    assert np.allclose(logits, run_result.model_logits, rtol=1e-4, atol=1e-3)

    c = sps.CITYSCAPES_CLASSES.index("car")
    exp = explain_class(run_result, c, threshold=0.05)
    columns = grouped_model.class_prototypes[c]
    assert [p.index for p in exp.prototypes] == columns
    assert [p.scale for p in exp.prototypes] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert np.array_equal(exp.prototype_maps, run_result.activations[columns])
    weights = grouped_model.group_weights(c).numpy()
    thresholded = np.where(weights < 0.05, 0, weights)
    a = exp.prototype_maps.reshape(12, -1).astype(np.float64)
    assert np.allclose(exp.group_maps.reshape(3, -1), np.exp(thresholded @ a), rtol=1e-5)
    for s in range(4):
        assert np.allclose(exp.scale_maps[s], exp.prototype_maps[3 * s: 3 * s + 3].max(0))
    group_edges = [e for e in exp.edges if e.target.startswith("g")]
    assert len(group_edges) == int((weights > 0).sum())
    for e in group_edges:
        j = columns.index(int(e.source[1:]))
        n = int(e.target[1:])
        assert e.weight == pytest.approx(weights[n, j]) and e.active == (weights[n, j] >= 0.05)
    head = grouped_model.last_layer_group.weight.detach().numpy()
    class_edges = {e.source: e.weight for e in exp.edges if e.target == "class"}
    assert class_edges == {f"g{n}": pytest.approx(head[c, grouped_model.group_columns(c)[n]]) for n in range(3)}
    assert exp.class_mask.shape == (90, 120)
    assert np.array_equal(exp.class_mask, exp.predicted_labels == c)

    strict = exp.with_threshold(0.3)
    assert sum(e.active for e in strict.edges) < sum(e.active for e in exp.edges)
    assert sum(p.used for p in strict.prototypes) <= sum(p.used for p in exp.prototypes)
    document = json.loads(json.dumps(strict.to_json()))
    assert document["threshold"] == 0.3 and len(document["nodes"]) == 12 + 3 + 1
    for group in document["groups"]:
        assert all(m["proto_weight"] >= 0.3 for m in group["proto_info"])

    with pytest.raises(ExplainError):
        explain_class(run_result, 99)
    assert render_graph_png(exp, thumb=48).ndim == 3


def test_projection_metadata_is_read_when_present(run_result, tmp_path):
    folder = tmp_path / "prototypes"
    (folder / "car").mkdir(parents=True)
    boxes = np.full((232, 6), -1)  # 4 more than the model has: 4 duplicates were removed by the push
    unique = [i for i in range(232) if i not in (5, 60, 120, 200)]
    car_first = sps.CITYSCAPES_CLASSES.index("car") * 3  # model index 39 -> original 39 (< 60)
    boxes[unique[car_first]] = [7, 10, 40, 20, 60, 13]
    np.save(folder / "bbNone.npy", boxes)
    (folder / "unique_prototypes.json").write_text(json.dumps(unique))
    (tmp_path / "all_images.json").write_text(json.dumps({"train": [f"img_{i}" for i in range(10)]}))
    cv2.imwrite(str(folder / "car" / f"prototype-img_scale_0_{unique[car_first]}.png"), np.zeros((30, 40, 3), np.uint8))
    meta, note = ProjectionMetadata.find(None, folder)
    assert meta is not None and "projection metadata" in note
    info = meta.info(car_first, "car")
    assert info.image_id == "img_7" and info.box == (10, 40, 20, 60)
    assert info.patch_path is not None and info.patch_path.is_file()
    assert meta.info(car_first + 1, "car") is None  # no row for it
    found, _ = ProjectionMetadata.find(tmp_path / "checkpoints" / "x.pth")  # <run>/checkpoints -> <run>/prototypes
    assert found is not None and found.folder == folder
    absent, note = ProjectionMetadata.find(tmp_path / "prototypes" / "car" / "x.pth")
    assert absent is None and "absent" in note

    exp = explain_class(dataclasses.replace(run_result, projection=meta), sps.CITYSCAPES_CLASSES.index("car"))
    assert exp.prototypes[0].projection.image_id == "img_7"
    assert all(p.projection is None for p in exp.prototypes[1:])
    assert json.loads(json.dumps(exp.to_json()))["nodes"][0]["projection"]["box_hhww"] == [10, 40, 20, 60]
