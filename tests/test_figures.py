"""Report figures rendered from the data (numpy/OpenCV only), in the look of fssgui.look."""
from __future__ import annotations

import numpy as np
import pytest

from fssgui import look
from fssgui.look import colormap_lut
from fssgui.report import charts as C
from fssgui.report import drawing as D
from fssgui.report import figures as F
from testkit import make_episode


def colour_pixels(image: np.ndarray, colour, tolerance: int = 12) -> int:
    return int((np.abs(image.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_ticks_and_labels():
    assert D.nice_ticks(0.0, 1.0, 6) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert D.nice_ticks(0.13, 0.87, 5) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert D.nice_ticks(-3, 7, 5) == pytest.approx([-2.5, 0, 2.5, 5])
    ticks = D.nice_ticks(0, 0.05, 6)
    assert [D.format_tick(t, ticks) for t in ticks] == ["0.00", "0.01", "0.02", "0.03", "0.04", "0.05"]
    assert D.format_tick(0.25, [0, 0.25, 0.5]) == "0.25"
    assert D.nice_ticks(1.0, 1.0) == [1.0]


def test_text_is_ascii_and_drawn():
    assert D.ascii_text("IAUC \u2014 \u03c3 \u2264 1 \u00e9") == "IAUC - sigma <= 1 ?"
    image = D.text_image("Support 1", 0.5)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert (image < 128).any() and (image == 255).any()
    wide = D.text_image("a much longer line of text", 0.5)
    assert wide.shape[1] > image.shape[1]
    assert D.fit_text("a much longer line of text", 60, 0.5).endswith("...")


def test_layout_helpers():
    a = np.zeros((10, 20, 3), np.uint8)
    b = np.zeros((30, 5, 3), np.uint8)
    assert D.hstack([a, b], gap=4).shape == (30, 29, 3)
    assert D.vstack([a, b], gap=4).shape == (44, 20, 3)
    assert D.fit(a, height=40).shape == (40, 80, 3)
    assert D.fit(np.ones((10, 20), bool), width=10, nearest=True).shape == (5, 10, 3)
    table = D.grid([[a, None, a], [b]], row_labels=["one", "two"], gap=2)
    assert table.shape[0] >= 10 + 30 + 2
    packed = D.grid([[a, a], [b]], gap=2, align_columns=False)
    assert packed.shape[1] == 20 + 2 + 20


def test_colorbar_runs_high_to_low():
    bar = D.colorbar("inferno", 0.0, 1.0, 200, "p")
    lut = colormap_lut("inferno")
    assert bar.shape[0] == 200 + 2 or abs(bar.shape[0] - 200) <= 4
    column = bar[:, 5]
    top = next(i for i in range(len(column)) if colour_pixels(column[i : i + 1], lut[255], 20))
    bottom = max(i for i in range(len(column)) if colour_pixels(column[i : i + 1], lut[0], 20))
    assert top < bottom


def test_map_scale_clips_percentiles_and_centres_signed_maps():
    unsigned = look.map_scale([np.array([[0.2, 0.9]]), np.array([[0.4]])], clip_percent=0)
    assert (unsigned.colormap, unsigned.vmin, unsigned.vmax) == ("inferno", pytest.approx(0.2), pytest.approx(0.9))
    signed = look.map_scale(np.array([[0.0, 1.0]]), signed=True, center=0.3, clip_percent=0)
    assert signed.colormap == "diverging" and signed.center == 0.3 and signed.signed
    assert signed.vmin == pytest.approx(-0.4) and signed.vmax == pytest.approx(1.0)
    around_zero = look.map_scale(np.array([[-0.2, 0.5]]), signed=True, clip_percent=0)
    assert (around_zero.vmin, around_zero.vmax) == (pytest.approx(-0.5), pytest.approx(0.5))
    flat = look.map_scale(np.zeros((2, 2)))
    assert flat.vmax > flat.vmin
    # the default clips the extreme 1% at each end: one hot pixel does not darken every other one
    values = np.linspace(0.0, 1.0, 10_000).reshape(100, 100)
    values[0, 0] = 1000.0
    clipped = look.map_scale(values)
    assert look.CLIP_PERCENT == 1.0
    assert clipped.vmax == pytest.approx(np.percentile(values, 99.0)) and clipped.data_max == 1000.0
    assert clipped.vmin == pytest.approx(np.percentile(values, 1.0))
    spread = look.map_scale(values - 0.5, signed=True)
    assert spread.vmax == pytest.approx(-spread.vmin) == pytest.approx(np.percentile(np.abs(values - 0.5), 99.0))


def test_line_plot_draws_series_marker_and_legend():
    x = np.linspace(0, 1, 11)
    blue, orange = look.palette_colour(0), look.palette_colour(1)
    plain = C.line_plot([C.Series("", x, x, blue)], width=300, height=200, legend=False)
    assert plain.shape == (200, 300, 3)
    assert colour_pixels(plain, blue) > 100 and colour_pixels(plain, orange) == 0
    full = C.line_plot([C.Series("a (AUC 0.5)", x, x, blue), C.Series("b", x, x**2, orange, dashed=True)],
                       width=300, height=200, title="IAUC", xlabel="fraction", ylabel="score",
                       marker=(0.5, 0.5), scale=2)
    # every corner of this small plot would hide a curve: the legend goes under the chart
    assert full.shape[1] == 600 and full.shape[0] > 400
    roomy = C.line_plot([C.Series("a (AUC 0.5)", x, x**3, blue)], width=560, height=360, title="IAUC")
    assert roomy.shape == (360, 560, 3)  # the top-left corner is free: the legend sits there
    assert colour_pixels(full, orange) > 50
    # NaNs (an unfinished point) are skipped, not drawn
    C.line_plot([C.Series("a", [0, 0.5, 1], [0.1, float("nan"), 0.9], blue)], width=200, height=150)


def test_bar_chart():
    chart = C.bar_chart([f"level {i}" for i in range(5)], [0.1, 0.3, 0.2, 0.25, 0.15], title="weights",
                        colour=look.palette_colour(2))
    assert colour_pixels(chart, look.palette_colour(2)) > 500


def test_episode_figure_with_supports_of_different_sizes():
    episode = make_episode(shots=2, size=(40, 60))
    big = make_episode(shots=1, size=(80, 50), seed=2).supports[0]
    images = [episode.supports[0].image, big.image]
    masks = [episode.supports[0].mask, big.mask]
    rng = np.random.default_rng(0)
    rows = [F.MapRow("affex-signed", [rng.random(i.shape[:2]) for i in images], signed=True, zero_level=0.4),
            F.MapRow("saliency", [rng.random((8, 8)), rng.random((8, 8))])]
    figure = F.episode_figure(episode.query_image, images, masks, rows, prediction=episode.query_mask,
                              region=episode.query_mask, ground_truth=episode.query_mask, iou=0.5, title="t",
                              tile=60)
    fewer = F.episode_figure(episode.query_image, images, masks, rows[:1], tile=60)
    assert figure.shape[1] > fewer.shape[1] + 60  # one column per method
    lut = colormap_lut("diverging")
    assert colour_pixels(figure, lut[-1], 30) > 0  # the signed map's colour scale is drawn


def test_episode_figure_fills_its_width_and_wraps_many_methods():
    episode = make_episode(shots=1, size=(64, 64))
    images, masks = [episode.supports[0].image], [episode.supports[0].mask]
    rng = np.random.default_rng(1)
    rows = [F.MapRow(f"m{i}", [rng.random((64, 64))]) for i in range(8)]
    for count in (1, 2, 8):
        figure = F.episode_figure(episode.query_image, images, masks, rows[:count], prediction=episode.query_mask,
                                  region=episode.query_mask, ground_truth=episode.query_mask, width=720, scale=2)
        assert abs(figure.shape[1] - 2 * 720) <= 2 * 40, (count, figure.shape)
    one = F.episode_figure(episode.query_image, images, masks, rows[:2], width=720)
    many = F.episode_figure(episode.query_image, images, masks, rows, width=720)
    assert many.shape[0] > 1.5 * one.shape[0]  # eight methods wrap into blocks instead of shrinking


def test_frame_figure():
    episode = make_episode(shots=2, size=(40, 60))
    figure = F.frame_figure([s.image for s in episode.supports], [s.mask for s in episode.supports],
                            episode.query_image, episode.query_mask, np.full((16, 16), 0.7, np.float32),
                            title="step 3", tile=50)
    # 2 supports x (image, mask) + prediction + probability + colorbar, side by side
    assert figure.shape[1] > 6 * 50 and figure.shape[0] < 150
    assert colour_pixels(figure, colormap_lut("inferno")[int(0.7 * 255)], 3) >= 50 * 70
