"""The Prototypes tab follows the app's theme: the group graph's four pyqtgraph views, its nodes,
edges and labels, the pixel inspector's tinted rows and the tab's messages are queried from the
widgets (and their offscreen grabs) in both themes, across run-time switches. A small random
ScaleProtoSeg stands in for a checkpoint."""
from __future__ import annotations

import os


import numpy as np
import pytest

import pyqtgraph as pg  # noqa: E402
from PySide6.QtCore import QPoint  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from fssgui.gui.prototypes import compare_view  # noqa: E402
from fssgui.gui.prototypes.graph_view import GROUP_COLOURS, INACTIVE_CONTRAST, SCALE_COLOURS  # noqa: E402
from fssgui.gui.prototypes.inspector import NEAREST_COLOURS  # noqa: E402
from fssgui.gui.prototypes.panel import PrototypePanel  # noqa: E402
from fssgui.gui.theme import (  # noqa: E402
    CURVE_CONTRAST,
    GRAPHICS_CONTRAST,
    THEME_DARK,
    THEME_LIGHT,
    THEME_SYSTEM,
    apply_theme,
    contrast_ratio,
)
from fssgui.prototypes.graph import PrototypeRunResult, explain_class  # noqa: E402
from fssgui.prototypes.run import image_key, predicted_class_shares, run_scaleprotoseg  # noqa: E402
from prototypes_testkit import make_image, several_class_model  # noqa: E402

ALPHA = 0.05
SCREENSHOTS = os.environ.get("FSSGUI_THEME_SCREENSHOTS")  # a folder: keep the grabs to look at them


@pytest.fixture(scope="module")
def run_and_model():
    """A shallow Cityscapes-layout model with a perturbed head, so that several classes are
    predicted, run on a 60x80 image."""
    model = several_class_model()
    return run_scaleprotoseg(model, make_image(60, 80), size=49), model


@pytest.fixture
def themes(qapp):
    """Switch themes inside a test; the default palette comes back afterwards."""
    yield apply_theme
    apply_theme(THEME_LIGHT)
    apply_theme(THEME_SYSTEM)


@pytest.fixture
def panel(qtbot, run_and_model, tmp_path):
    """The Prototypes tab showing a result, with a cell inspected and a prototype's map shown."""
    run, model = run_and_model
    shares = predicted_class_shares(run, ALPHA)
    top = next(c for c, _ in shares if run.head.class_prototypes[c])
    widget = PrototypePanel()
    qtbot.addWidget(widget)
    widget.resize(1100, 1400)
    widget.show_result(PrototypeRunResult(run, explain_class(run, top, ALPHA), shares, model.describe(ALPHA),
                                          "scaleprotoseg-cityscapes", str(tmp_path / "x.pth"), "cpu", 0.1,
                                          image_key(run.image)))
    widget.show()
    qtbot.waitExposed(widget)
    widget.view.inspect_cell(2, 3)
    widget.view.select_node(f"p{run.head.class_prototypes[top][1]}")
    return widget


def _grab(widget, name: str) -> QImage:
    QApplication.processEvents()
    image = widget.grab().toImage()
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        image.save(os.path.join(SCREENSHOTS, name))
    return image


def _hue_distance(a: QColor, b: QColor) -> int:
    d = abs(a.hslHue() - b.hslHue()) % 360
    return min(d, 360 - d)


def _is_dark(colour: QColor) -> bool:
    return colour.lightness() < 60


def _is_white(colour: QColor) -> bool:
    return colour.lightness() == 255


def _check_background(widget: pg.GraphicsView, dark: bool) -> QColor:
    background = widget.backgroundBrush().color()
    assert _is_dark(background) if dark else _is_white(background), background.name()
    titles = [item for item in widget.scene().items() if isinstance(item, pg.LabelItem)]
    for title in titles:  # "Scale 1", "class mask", ...: recoloured with the background
        colour = QColor(title.opts["color"])
        assert contrast_ratio(colour, background) >= 7.0, (title.text, colour.name())
        assert colour.name() in title.item.toHtml().lower()  # re-rendered in that colour
    return background


def _check_graph(view, dark: bool) -> int:
    """Query the graph's own brushes and pens (not the colour functions)."""
    background = _check_background(view.graph_widget, dark)
    result = view.result
    spots = view.graph_item.scatter.data
    assert len(spots) == len(result.prototypes) + len(result.groups) + 1
    inactive = []
    for i, node in enumerate(result.prototypes):
        fill, outline = spots["brush"][i].color(), spots["pen"][i].color()
        if node.used:
            # the scale's hue, at least 3:1 on the background, outlined like text
            base = QColor(*SCALE_COLOURS[node.scale % 4])
            assert _hue_distance(fill, base) <= 4, (node.node_id, fill.name())
            assert contrast_ratio(fill, background) >= GRAPHICS_CONTRAST, (node.node_id, fill.name())
            assert contrast_ratio(outline, background) >= 7.0
        else:
            inactive += [fill, outline]
    assert inactive, "the test's class should have unused prototypes at this threshold"
    for g_index, g in enumerate(result.groups):
        i = len(result.prototypes) + g_index
        fill = spots["brush"][i].color()
        assert _hue_distance(fill, QColor(*GROUP_COLOURS[g.index % 3])) <= 4
        assert contrast_ratio(fill, background) >= GRAPHICS_CONTRAST, fill.name()
        assert contrast_ratio(spots["pen"][i].color(), background) >= 7.0
    class_fill = spots["brush"][-1].color()
    assert contrast_ratio(class_fill, background) >= 7.0
    assert (class_fill.lightness() > 180) if dark else (class_fill.lightness() < 60)

    pens = view.graph_item.pen
    active = np.array([e.active for e in result.edges])
    assert active.any() and not active.all()
    for row, is_active in zip(pens, active):
        colour = QColor(int(row["red"]), int(row["green"]), int(row["blue"]))
        if is_active:
            assert contrast_ratio(colour, background) >= CURVE_CONTRAST, colour.name()
        else:
            inactive.append(colour)
    for colour in inactive:  # greyed: visible, fainter than anything active
        assert INACTIVE_CONTRAST <= contrast_ratio(colour, background) < min(2.2, GRAPHICS_CONTRAST), colour.name()
        assert colour.hslSaturation() < 30
    negative = [QColor(*[int(r[c]) for c in ("red", "green", "blue")]) for r, e in zip(pens, result.edges)
                if e.active and e.weight < 0]
    assert all(_hue_distance(c, QColor(255, 0, 0)) <= 4 for c in negative)  # still red

    labels = [item for item in view.graph_box.addedItems if isinstance(item, pg.TextItem)]
    assert len(labels) == result.run.head.num_scales + len(result.prototypes) + len(result.groups) + 1
    for label in labels:
        assert contrast_ratio(label.color, background) >= 4.5, label.textItem.toPlainText()
        assert label.color.name() == label.textItem.defaultTextColor().name()
        if label.fill.style() != pg.QtCore.Qt.BrushStyle.NoBrush:  # node labels: on a background patch
            fill = label.fill.color()
            assert fill.rgb() == background.rgb() and 150 <= fill.alpha() < 255
            assert contrast_ratio(label.color, fill) >= 7.0
    return len(negative)


def _image_state(view) -> list[np.ndarray]:
    """Everything the map views draw from data: the images, the JET table, the boxes' pens."""
    arrays = [np.asarray(view.base_item.image), np.asarray(view.heat_item.image), np.asarray(view.heat_item.lut)]
    arrays += [np.asarray(item.image) for item in view.scale_items]
    arrays += [np.asarray(item.image) for item in view.extra_items.values() if item.image is not None]
    arrays.append(np.array([item.pen().color().rgba() for item in view._box_items]))
    return arrays


def _scene_pixel(view, image: QImage, node_id: str) -> QColor:
    """The grabbed graph widget's pixel at a node's centre."""
    scene_point = view.graph_box.mapViewToScene(view.node_position(node_id))
    point = view.graph_widget.viewport().mapTo(view.graph_widget, view.graph_widget.mapFromScene(scene_point))
    assert image.rect().contains(point), (node_id, point)
    return QColor(image.pixel(point.x(), point.y()))


def test_group_graph_follows_a_theme_switch_at_run_time(qtbot, panel, themes):
    view = panel.view
    assert themes(THEME_LIGHT) == THEME_LIGHT
    _check_graph(view, dark=False)
    for widget in (view.map_widget, view.scale_widget, view.extra_widget):
        _check_background(widget, dark=False)
    light_images = _image_state(view)
    assert len(view._box_items) == 5  # the inspected cell (two pens) and the 3 nearest prototypes
    light_nodes = [brush.color().name() for brush in view.graph_item.scatter.data["brush"]]
    light = _grab(view.graph_widget, "proto-graph-light.png")
    assert _is_white(QColor(light.pixel(3, 3)))
    assert _scene_pixel(view, light, "class").lightness() < 60  # dark class node on white

    assert themes(THEME_DARK) == THEME_DARK  # no rebuild: the views restyle themselves
    _check_graph(view, dark=True)
    for widget in (view.map_widget, view.scale_widget, view.extra_widget):
        _check_background(widget, dark=True)
    for before, after in zip(light_images, _image_state(view), strict=True):
        assert np.array_equal(before, after, equal_nan=True)  # maps, boxes: as they were
    dark = _grab(view.graph_widget, "proto-graph-dark.png")
    assert _is_dark(QColor(dark.pixel(3, 3)))
    assert _scene_pixel(view, dark, "class").lightness() > 180  # light class node on the dark base
    for widget, name in ((view.map_widget, "map"), (view.scale_widget, "scales")):
        assert _is_dark(QColor(_grab(widget, f"proto-{name}-dark.png").pixel(3, 3))), name
    _grab(panel, "proto-tab-dark.png")

    # a rebuild while dark (another threshold, another class) keeps the dark colours
    with qtbot.waitSignal(view.thresholdChanged, timeout=10000):  # recomputed on the pool
        view.threshold_slider.setValue(20)
    _check_graph(view, dark=True)
    run, shown = view.result.run, view.result.class_index
    negative_class = next(c for c in range(len(run.head.class_names)) if run.head.class_prototypes[c] and any(
        e.active and e.weight < 0 for e in explain_class(run, c, 0.2).edges))
    with qtbot.waitSignal(panel.classShown, timeout=10000):
        panel.select_class(negative_class)
    assert _check_graph(view, dark=True) > 0  # negative weights: red, readable on the dark base
    _grab(view.graph_widget, "proto-graph-negative-dark.png")
    themes(THEME_LIGHT)
    assert _check_graph(view, dark=False) > 0
    themes(THEME_DARK)
    with qtbot.waitSignal(panel.classShown, timeout=10000):
        panel.select_class(shown)

    with qtbot.waitSignal(view.thresholdChanged, timeout=10000):
        view.threshold_slider.setValue(int(ALPHA * 100))
    view.graph_box.setRange(xRange=(1.0, 6.0), yRange=(0.0, 4.0), padding=0.0)  # the user zooms in
    zoomed = view.graph_box.viewRange()
    themes(THEME_LIGHT)  # and back
    _check_graph(view, dark=False)
    assert view.graph_box.viewRange() == zoomed  # recoloured in place: the zoom stays
    assert [brush.color().name() for brush in view.graph_item.scatter.data["brush"]] == light_nodes
    _grab(panel, "proto-tab-light.png")


def _check_tables(inspector, dark: bool) -> None:
    palette = inspector.palette()
    text = palette.color(QPalette.ColorRole.Text)
    rows = (palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.AlternateBase))
    assert all(_is_dark(c) if dark else c.lightness() > 230 for c in rows)
    inspection = inspector.inspection

    groups = inspector.group_table
    for row in range(len(inspection.groups)):
        label = groups.item(row, 0)
        background, foreground = label.background().color(), label.foreground().color()
        assert background.lightness() < 100 if dark else background.lightness() > 180, background.name()
        assert contrast_ratio(foreground, background) >= 4.5, (foreground.name(), background.name())
        expected = QColor(*GROUP_COLOURS[inspection.groups[row].group % 3])
        assert _hue_distance(background, expected) <= 8, background.name()  # a tint of the group's colour
    others = groups.item(len(inspection.groups), 3)
    assert all(contrast_ratio(others.foreground().color(), c) >= 4.5 for c in rows)

    shown = [r for r in range(inspector.class_table.rowCount())
             if inspector.class_table.item(r, 0).data(pg.QtCore.Qt.ItemDataRole.UserRole) == inspection.class_index]
    for col in range(3):
        item = inspector.class_table.item(shown[0], col)
        background = item.background().color()
        assert background.lightness() < 100 if dark else background.lightness() > 180
        assert contrast_ratio(item.foreground().color(), background) >= 4.5

    unused = [r for r, p in enumerate(inspection.prototypes) if not p.used]
    assert unused
    for row in unused:  # greyed, still legible
        grey = inspector.prototype_table.item(row, 2).foreground().color()
        assert all(3.0 <= contrast_ratio(grey, c) < contrast_ratio(text, c) for c in rows), grey.name()

    for row in range(inspector.nearest_table.rowCount()):
        rank = inspector.nearest_table.item(row, 0)
        assert rank.background().color() == QColor(*NEAREST_COLOURS[row % 3])  # the boxes' colours
        assert contrast_ratio(rank.foreground().color(), rank.background().color()) >= 4.5


def _cell_pixel(table, item, image: QImage) -> QColor:
    rect = table.visualItemRect(item)
    point = table.viewport().mapTo(table, QPoint(rect.left() + 1, rect.center().y()))
    return QColor(image.pixel(point.x(), point.y()))


def test_inspector_rows_follow_the_theme(qtbot, panel, themes):
    inspector = panel.view.inspector
    values = [inspector.values(inspector.prototype_table, 2), inspector.values(inspector.class_table, 1)]
    themes(THEME_DARK)
    _check_tables(inspector, dark=True)
    grab = _grab(inspector.group_table, "proto-groups-dark.png")
    first = inspector.group_table.item(0, 0)
    assert _cell_pixel(inspector.group_table, first, grab).rgb() == first.background().color().rgb()
    themes(THEME_LIGHT)
    _check_tables(inspector, dark=False)
    grab = _grab(inspector.group_table, "proto-groups-light.png")
    first = inspector.group_table.item(0, 0)
    assert _cell_pixel(inspector.group_table, first, grab).rgb() == first.background().color().rgb()
    # refilled, the same numbers
    assert [inspector.values(inspector.prototype_table, 2), inspector.values(inspector.class_table, 1)] == values


def _span_colour(html_text: str) -> QColor:
    start = html_text.index("color:") + len("color:")
    return QColor(html_text[start:start + 7])


def test_compare_sheet_and_messages_follow_the_theme(qtbot, panel, themes, tmp_path, monkeypatch):
    compare = panel.compare_view

    def drawn():  # the comparison and its sheet are computed on the pool
        qtbot.waitUntil(lambda: not compare.job.running, timeout=10000)
        return compare.sheet()

    with qtbot.waitSignal(compare.comparisonShown, timeout=10000):
        panel.inner_tabs.setCurrentWidget(compare)
    comparison = compare.current_comparison()
    assert comparison is not None
    light_sheet = drawn().copy()
    assert (light_sheet[0, 0] == 255).all()  # the light theme shows the white figure
    themes(THEME_DARK)
    drawn()
    # the sheet is redrawn dark: same layout, the same map pixels, a dark background and light captions
    dark_sheet = compare.sheet()
    assert dark_sheet.shape == light_sheet.shape
    paper, light_paper = dark_sheet[0, 0], light_sheet[0, 0]
    assert _is_dark(QColor(*[int(v) for v in paper]))
    on_paper = (light_sheet == light_paper).all(axis=2)
    assert (dark_sheet[on_paper] == paper).all()
    text_like = ~on_paper & (np.abs(light_sheet.astype(int) - light_sheet.mean(axis=2, keepdims=True)).max(axis=2) < 3)
    colourful = ~on_paper & ~text_like  # the heat-map tiles
    assert colourful.sum() > 0.2 * on_paper.size and np.array_equal(dark_sheet[colourful], light_sheet[colourful])
    brightest_caption = QColor(*[int(v) for v in dark_sheet[text_like].max(axis=0)])
    assert contrast_ratio(brightest_caption, QColor(*[int(v) for v in paper])) >= 7
    grab = _grab(compare.sheet_scroll.viewport(), "proto-compare-dark.png")
    h, w = dark_sheet.shape[:2]
    assert grab.width() > w + 4 and grab.height() > h + 4, "the viewport should be larger than the sheet"
    assert _is_dark(QColor(grab.pixel(w + 2, 2))) and _is_dark(QColor(grab.pixel(2, h + 2)))
    assert QColor(grab.pixel(w // 2, h // 2)).rgb() == QColor(*[int(v) for v in dark_sheet[h // 2, w // 2]]).rgb()
    # the exported figure stays white whatever the theme
    exported = comparison.render_sheet()
    assert (exported[0, 0] == 255).all()
    themes(THEME_LIGHT)
    assert np.array_equal(drawn(), light_sheet)
    themes(THEME_DARK)
    drawn()

    # messages: the export error and the stale warning in the panel, a failed comparison
    window = lambda: panel.palette().color(QPalette.ColorRole.Window)  # noqa: E731
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    failed = panel.export_to(blocker)  # written on the pool: the failure is shown, not raised
    assert failed.wait(10000) and failed.error is not None
    panel.mark_stale("the query changed")

    def failing(*_args, **_kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(compare_view, "compare_classes", failing)
    compare.refresh()
    drawn()
    assert "compare failed" in compare.summary_label.text() and "boom" in compare.summary_label.text()
    colours = {}
    for theme in (THEME_DARK, THEME_LIGHT):
        themes(theme)
        error = _span_colour(panel.status_label.text())
        warning = _span_colour(panel.info_label.text().split("<br>")[-1])
        compare_error = _span_colour(compare.summary_label.text())
        assert "failed" in panel.status_label.text() and "query changed" in panel.info_label.text()
        for colour in (error, warning, compare_error):
            assert contrast_ratio(colour, window()) >= 4.5, (theme, colour.name())
        assert _hue_distance(error, QColor(224, 70, 78)) <= 4  # still red
        assert _hue_distance(warning, QColor(217, 130, 43)) <= 4  # still orange
        colours[theme] = (error.name(), warning.name())
    assert colours[THEME_DARK] != colours[THEME_LIGHT]  # recoloured at the switch
