"""One look: the app's canvases and every exporter take their colours, colour scales and opacities
from fssgui.look, and an exported image shows the same pixels as the screen."""
import cv2
import numpy as np
import pytest

from fssgui import look
from fssgui.episode import Episode, Support
from fssgui.report import figures as F
from fssgui.report.frames import CausalFrame, FrameBase
from fssgui.report.playback import PANEL_QUERY_PREDICTION, frame_panels

H, W = 48, 64


def flat_episode() -> Episode:
    """Flat grey images, so a drawn colour is the same at every pixel of a tint (after resizing)."""
    query = np.full((H, W, 3), 120, np.uint8)
    truth = np.zeros((H, W), bool)
    truth[4:20, 4:24] = True
    region = np.zeros((H, W), bool)
    region[20:44, 30:60] = True
    support_mask = np.zeros((H, W), bool)
    support_mask[10:40, 8:40] = True
    return Episode(query, [Support(np.full((H, W, 3), 90, np.uint8), support_mask)], "flat", query_mask=truth,
                   region=region)


def pixels_near(image: np.ndarray, colour, tolerance: int = 1) -> int:
    return int((np.abs(image.astype(int) - np.asarray(colour, int)).max(axis=-1) <= tolerance).sum())


DISTINCT = {"REGION_COLOUR": (7, 250, 9), "PREDICTION_COLOUR": (250, 3, 250), "TRUTH_COLOUR": (3, 6, 251),
            "SUPPORT_MASK_COLOUR": (251, 252, 5)}


def test_exported_figures_take_their_colours_from_look(monkeypatch):
    """With other colours in fssgui.look, the exported figures change with them: no exporter
    keeps a copy of its own."""
    for name, colour in DISTINCT.items():
        monkeypatch.setattr(look, name, colour)
    ep = flat_episode()
    support = ep.supports[0]
    figure = F.episode_figure(ep.query_image, [support.image], [support.mask], [], prediction=ep.query_mask,
                              region=ep.region, ground_truth=ep.query_mask, tile=H)
    region_tint = look.tint(ep.query_image, ep.region, DISTINCT["REGION_COLOUR"])[30, 40]
    support_tint = look.tint(support.image, support.mask, DISTINCT["SUPPORT_MASK_COLOUR"])[20, 20]
    assert pixels_near(figure, region_tint) > 0.8 * ep.region.sum()
    assert pixels_near(figure, support_tint) > 0.8 * support.mask.sum()
    assert pixels_near(figure, DISTINCT["PREDICTION_COLOUR"]) > 20
    assert pixels_near(figure, DISTINCT["TRUTH_COLOUR"]) > 20
    # the playback frames: the query prediction is outlined in the prediction colour
    size = 16
    base = FrameBase(ep.query_image, [support.image], np.ones((1, size, size), bool), np.zeros(3, np.uint8), size)
    prediction = np.zeros((size, size), bool)
    prediction[4:12, 4:12] = True
    frame = CausalFrame.pack("m", "iauc", 0, 0, 0, 0.0, 0.5, np.ones((1, size, size), bool), prediction,
                             np.full((size, size), 0.5, np.float32))
    panel = frame_panels(base, frame)[PANEL_QUERY_PREDICTION]
    assert pixels_near(panel, DISTINCT["PREDICTION_COLOUR"], 0) > 20


def test_explain_overlays_are_drawn_by_look(tmp_path):
    """``fssgui explain``'s overlay PNG is exactly the heat-map tile of fssgui.look: the same scale
    rule (signed map centred at its zero level, percentile clipping), opacity and mask outline."""
    import types

    from fssgui.commands.explain import write_attribution

    ep = flat_episode()
    rng = np.random.default_rng(0)
    maps = [rng.random(s.image.shape[:2]).astype(np.float32) for s in ep.supports]
    explanation = types.SimpleNamespace(maps=maps, signed=True, zero_level=0.3)  # an ExplanationResult's part
    write_attribution(tmp_path, ep, explanation)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "overlay_0.png")), cv2.COLOR_BGR2RGB)
    values = np.load(tmp_path / "attribution.npy")[0]
    scale = look.map_scale([values], True, 0.3)
    assert scale.colormap == look.SIGNED_COLORMAP and scale.center == 0.3
    assert scale.vmax - 0.3 == pytest.approx(0.3 - scale.vmin)
    expected = look.heat_overlay(ep.supports[0].image, values, scale, mask=ep.supports[0].mask)
    assert np.array_equal(written, expected)


def _scene_pixels(canvas) -> np.ndarray:
    """What the canvas shows, at the image's own resolution (one image pixel = one pixel)."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter

    h, w = canvas.image_size
    image = QImage(w, h, QImage.Format.Format_RGB888)
    image.fill(0)
    painter = QPainter(image)
    canvas.scene().render(painter, QRectF(0, 0, w, h), QRectF(0, 0, w, h))
    painter.end()
    stride = image.bytesPerLine()
    data = np.frombuffer(image.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return data[:, : w * 3].reshape(h, w, 3).copy()


def test_screen_and_exports_show_the_same_pixels(qtbot, window):
    """The main window's region R tint and heat-map tile against the exported figure's: the same
    colour triple for R, the same scale and the same overlay pixels (the window: the tiny model, the
    test-mask explainer)."""
    ep = flat_episode()
    window.set_episode(ep)
    # the display settings start from fssgui.look
    display = window.analysis.display
    assert (display.colormap, display.signed_colormap, display.opacity, display.clip_percent) == (
        look.UNSIGNED_COLORMAP, look.SIGNED_COLORMAP, look.HEAT_OPACITY, look.CLIP_PERCENT)
    # region R: the canvas tints it with look's colour and opacity, as the export does
    assert window.query.canvas._mask_colour() == look.REGION_COLOUR
    screen = _scene_pixels(window.query.canvas)
    tinted = look.tint(ep.query_image, ep.region, look.REGION_COLOUR, look.MASK_OPACITY)
    assert np.abs(screen[30, 40].astype(int) - tinted[30, 40]).max() <= 2
    figure = F.episode_figure(ep.query_image, [s.image for s in ep.supports], [s.mask for s in ep.supports],
                              region=ep.region, tile=H)
    assert pixels_near(figure, tinted[30, 40]) > 0.8 * ep.region.sum()

    # the heat map: the tile's scale is look's rule with the default settings, its pixels are
    # the exported tile's
    with qtbot.waitSignal(window.runs.resultShown, timeout=30000) as blocker:
        assert window.runs.explain() is not None
    result = blocker.args[0]
    scale = window.analysis.heatmap_view.scale
    assert scale == look.map_scale(list(result.maps), result.signed, 0.0)
    support = ep.supports[0]
    tile = window.analysis.heatmap_view.grid.tiles[0]
    shown = _scene_pixels(tile.canvas)
    exported = look.heat_overlay(support.image, result.maps[0], scale, mask=support.mask)
    for y, x in ((25, 24), (2, 60), (45, 2)):  # inside the mask, outside it, away from its outline
        assert np.abs(shown[y, x].astype(int) - exported[y, x]).max() <= 3, (y, x, shown[y, x], exported[y, x])
    row = F.MapRow("test-mask", list(result.maps), result.signed)
    assert row.scale() == scale
