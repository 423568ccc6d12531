"""The one export format of a class explanation (fssgui.prototypes.export.export_class): what
the Prototypes tab's "Export…" and `fssgui protos` write, file by file, and that both write the
same layout for the same class."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fssgui.cli import main as cli_main
from fssgui.imaging import load_mask, load_rgb
from fssgui.models.scaleprotoseg import CITYSCAPES_CLASSES, load_scaleprotoseg
from fssgui.prototypes.compare import compare_classes
from fssgui.prototypes.export import export_class
from fssgui.prototypes.graph import PrototypeRunResult, class_slug, explain_class, explain_image
from fssgui.prototypes.inspection import inspect_cell
from fssgui.prototypes.run import image_key, predicted_class_shares, run_scaleprotoseg
from prototypes_testkit import ALPHA, forward, make_image, save_official_pickle, small_model
from prototypes_testkit import model, run, top_class  # noqa: F401 - module-scoped fixtures


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official") / "checkpoints"
    folder.mkdir()
    return save_official_pickle(small_model(seed=1), folder / "th-0.05-nopush-group_last.pth")


def test_export_writes_overlays_and_proto_info_json(model, run, top_class, tmp_path):
    exp = explain_class(run, top_class, ALPHA)
    comparison = compare_classes(run, top_class, (top_class + 1) % 19, ALPHA)
    inspection = inspect_cell(exp, (1, 2))
    files = export_class(exp, tmp_path / "out", comparison=comparison, inspection=inspection)
    slug = class_slug(exp.class_name, top_class)
    out = tmp_path / "out"
    names = {p.relative_to(out).as_posix() for p in files}
    for p in exp.prototypes:
        assert f"proto_{p.index}_scale_{p.scale}_class_{slug}.png" in names
    for n in range(3):
        assert f"group_{n}_class_{slug}.png" in names
    for s in range(4):
        assert f"scale_{s}_class_{slug}.png" in names
    assert {f"group_max_class_{slug}.png", f"graph_class_{slug}.png", f"graph_class_{slug}.json",
            f"prototype_maps_class_{slug}.npy", f"group_maps_class_{slug}.npy", f"scale_maps_class_{slug}.npy",
            f"predicted_labels_class_{slug}.npy", f"prediction_class_{slug}.png", f"mask_class_{slug}.png",
            f"cell_1_2_class_{slug}.json"} <= names
    for path in files:
        assert path.is_file()
        if path.suffix == ".png" and path.name.startswith(("proto_", "group_", "scale_", "prediction_")):
            assert load_rgb(path).shape == (60, 80, 3)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # atomic writes left nothing behind
    overlay = load_rgb(out / f"group_1_class_{slug}.png")
    assert np.array_equal(overlay, exp.overlay("g1"))
    assert np.array_equal(load_rgb(out / f"scale_2_class_{slug}.png"), exp.overlay("s2"))
    np.testing.assert_array_equal(np.load(out / f"prototype_maps_class_{slug}.npy"), exp.prototype_maps)
    np.testing.assert_array_equal(np.load(out / f"group_maps_class_{slug}.npy"), exp.group_maps)
    np.testing.assert_array_equal(np.load(out / f"scale_maps_class_{slug}.npy"), exp.scale_maps)
    np.testing.assert_array_equal(np.load(out / f"predicted_labels_class_{slug}.npy"), exp.predicted_labels)
    np.testing.assert_array_equal(load_mask(out / f"mask_class_{slug}.png"), exp.class_mask)

    data = json.loads((out / f"graph_class_{slug}.json").read_text())
    assert data["format"] == "fssgui-prototype-graph" and data["version"] == 2 and data["masked_overlays"]
    assert data["class_name"] == exp.class_name and data["threshold"] == ALPHA and data["stage"] == 2
    assert "provenance" not in data  # none given: nothing invented
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
        assert group["head_weight"] == pytest.approx(float(model.last_layer_group.weight[top_class, 3 * top_class + n]))
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
    inspection = inspect_cell(exp, (0, 0))
    assert inspection.groups == [] and all(p.used for p in inspection.prototypes)
    out = forward(stage1, run)
    np.testing.assert_allclose([c.logit for c in inspection.classes], out.logits[0, :, 0, 0].numpy(),
                               rtol=1e-4, atol=1e-3)
    files = export_class(exp, tmp_path)
    data = json.loads(next(p for p in files if p.suffix == ".json").read_text())
    assert data["stage"] == 1 and len(data["prototype_class_weights"]) == 12


def test_panel_export_reports_errors_in_the_window(qtbot, model, run, top_class, tmp_path):
    from fssgui.gui.prototypes.panel import PrototypePanel

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
    handle = panel.export_to(tmp_path / "export")  # written on the pool
    assert handle.wait(30000) and handle.error is None, handle.message
    files = handle.result
    assert files and all(p.is_file() for p in files) and "exported" in panel.status_label.text()
    assert any(p.name == f"cell_2_3_class_{class_slug(result.explanation.class_name, top_class)}.json"
               for p in files)
    assert any(p.name.startswith("compare_") for p in files)
    graph = json.loads(next(p for p in files if p.name.startswith("graph_class_") and p.suffix == ".json").read_text())
    assert graph["provenance"]["model"] == "scaleprotoseg-cityscapes"
    assert graph["provenance"]["checkpoint"] == str(tmp_path / "x.pth") and graph["provenance"]["device"] == "cpu"
    assert graph["provenance"]["image_key"] == image_key(run.image)

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert panel.export_to(blocker).wait(10000)  # shown, not raised
    assert "export to" in errors[-1] and "not a folder" in errors[-1]
    assert "failed" in panel.status_label.text() and panel.status_label.isVisibleTo(panel)
    assert panel.export_to(blocker / "sub").wait(10000) and "failed" in errors[-1]  # an OSError too

    # a new run clears the inspected cell (it belonged to the previous image)
    panel.show_result(result)
    assert panel.view.inspection is None and panel.view.drawn_boxes() == []


def test_protos_command_writes_maps_graph_and_json(official_file, tmp_path):
    image_path = tmp_path / "street.png"
    cv2.imwrite(str(image_path), make_image()[..., ::-1])
    out = tmp_path / "out"
    code = cli_main(["protos", str(image_path), "--checkpoint", str(official_file), "--class", "road",
                     "--threshold", "0.1", "--size", "65", "--out", str(out)])
    assert code == 0
    document = json.loads((out / "graph_class_road.json").read_text())
    assert document["class_name"] == "road" and document["threshold"] == 0.1
    assert document["dataset"] == "cityscapes" and document["stage"] == 2
    assert "absent" in document["projection"]
    assert document["provenance"]["checkpoint"] == str(official_file)
    assert document["provenance"]["image"] == str(image_path) and document["provenance"]["device"] == "cpu"
    assert document["provenance"]["model_info"]["num_prototypes"] == 228
    prototypes = [n for n in document["nodes"] if n["kind"] == "prototype"]
    assert [n["index"] for n in prototypes] == [0, 1, 2, 57, 58, 59, 114, 115, 116, 171, 172, 173]
    grid = tuple(document["grid_size"])
    proto_maps = np.load(out / "prototype_maps_class_road.npy")
    group_maps = np.load(out / "group_maps_class_road.npy")
    assert proto_maps.shape == (12, *grid) and group_maps.shape == (3, *grid)
    assert np.load(out / "scale_maps_class_road.npy").shape == (4, *grid)
    assert np.load(out / "predicted_labels_class_road.npy").shape == (90, 120)
    # the group maps are exp of the active edge weights times the prototype maps
    weights = np.zeros((3, 12))
    for e in document["edges"]:
        if e["target"].startswith("g") and e["active"]:
            weights[int(e["target"][1:]), [n["id"] for n in prototypes].index(e["source"])] = e["weight"]
    assert np.allclose(group_maps.reshape(3, -1), np.exp(weights @ proto_maps.reshape(12, -1)), rtol=1e-4)
    graph = cv2.imread(str(out / "graph_class_road.png"))
    assert graph is not None and graph.shape[0] > 200
    for name in ("mask_class_road.png", "prediction_class_road.png", "group_max_class_road.png", "scale_0_class_road.png",
                 "group_2_class_road.png"):
        assert (out / name).is_file(), name

    assert cli_main(["protos", str(image_path), "--checkpoint", str(official_file), "--class", "unicorn",
                     "--size", "65", "--out", str(out)]) == 2


def test_the_tab_and_the_command_write_the_same_layout(qtbot, official_file, tmp_path):
    """One format: `fssgui protos` and the tab's export of the same class on the same image write
    the same files (the tab adds the comparison and the inspected cell) with the same contents."""
    from fssgui.gui.prototypes.panel import PrototypePanel

    image = make_image()
    image_path = tmp_path / "street.png"
    cv2.imwrite(str(image_path), image[..., ::-1])
    by_command = tmp_path / "command"
    assert cli_main(["protos", str(image_path), "--checkpoint", str(official_file), "--class", "car",
                     "--size", "65", "--out", str(by_command)]) == 0
    car = CITYSCAPES_CLASSES.index("car")
    result = explain_image(load_scaleprotoseg(official_file), image, official_file, "scaleprotoseg-cityscapes",
                           size=65, class_index=car)
    panel = PrototypePanel()
    qtbot.addWidget(panel)
    panel.show_result(result)
    panel.view.inspect_cell(1, 1)
    by_tab = tmp_path / "tab"
    written = panel.export_to(by_tab)
    assert written.wait(30000) and written.result and panel.view.result.class_index == car

    def names(folder):
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}

    command_files, tab_files = names(by_command), names(by_tab)
    assert command_files and command_files <= tab_files
    assert {n for n in tab_files - command_files if not n.startswith(("compare_", "cell_1_1_class_car"))} == set()
    assert any(n.startswith("compare_car_vs_") for n in tab_files) and "cell_1_1_class_car.json" in tab_files
    for name in command_files:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(by_command / name), np.load(by_tab / name), err_msg=name)
        elif name.endswith(".png"):
            assert (by_command / name).read_bytes() == (by_tab / name).read_bytes(), name
        else:
            command_json, tab_json = (json.loads((f / name).read_text()) for f in (by_command, by_tab))
            if name.startswith("graph_class_"):  # the same but for who ran it on which image
                assert command_json.pop("provenance")["image"] == str(image_path)
                assert tab_json.pop("provenance")["model"] == "scaleprotoseg-cityscapes"
            assert command_json == tab_json, name
