"""Hostile input for the episode readers: ``episode.json`` (wrong types, missing keys, unknown
versions, paths leaving the folder directly or through symbolic links), images (truncated, other
modes, 16-bit, palette, CMYK, alpha, EXIF rotation, decompression bombs) and masks (values other
than 0/1/255, other sizes). Every case ends in the data or in one :class:`FssguiError` whose
one-line message names the file; a few CLI runs show exit status 2 and no output folder."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from testkit import make_episode
from fssgui.episode import load_episode, save_episode
from fssgui.errors import EpisodeError, FssguiError
from fssgui.imaging import MAX_IMAGE_PIXELS, ImageError, load_mask, load_rgb
from hostile_testkit import (
    FEW,
    SOME,
    assert_one_line_naming,
    cli,
    damaged_file,
    encoded,
    fresh_folder,
    jpeg_declaring,
    png_declaring,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """An episode folder (K = 2, ground truth) with symbolic links that lead out of it, a loop,
    and one that stays inside; beside it, a readable image the links point to."""
    root = tmp_path_factory.mktemp("hostile_episode")
    folder = root / "ep"
    save_episode(make_episode(shots=2), folder)
    shutil.copy(folder / "query.png", root / "outside.png")
    os.symlink("../outside.png", folder / "link_out.png")
    os.symlink(str(root / "outside.png"), folder / "link_abs.png")
    os.symlink("..", folder / "parent")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink("query.png", folder / "link_in.png")
    return folder


def _copy(base: Path, scratch: Path) -> Path:
    folder = fresh_folder(scratch) / "ep"
    shutil.copytree(base, folder, symlinks=True)
    return folder


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_scratch")


# ------------------------------------------------------------------------------ episode.json
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
hostile_paths = st.sampled_from([
    "../outside.png", "/etc/hostname", "link_out.png", "link_abs.png", "parent/outside.png", "loop.png",
    "link_in.png", "query.png", "support_0_mask.png", "", ".", "..", "query.png\x00.txt", "a" * 5000,
    "C:\\windows\\x.png", "sub/../query.png", "sub/../../outside.png", "./query.png", "query_mask.png",
    "episode.json", "ünïcode.png", "\\\\server\\share\\x.png",
]) | st.lists(st.sampled_from(list("ab./\\\x00~: ") + ["..", "query", ".png", "link_out"]), max_size=8).map("".join)
KEYS = [("format",), ("version",), ("class_name",), ("query",), ("query", "image"), ("query", "mask"),
        ("supports",), ("supports", 0), ("supports", 0, "image"), ("supports", 1, "mask"), ("region",),
        ("notes",), ("extra",)]
mutations = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(["delete", "value", "path"]),
                               json_values, hostile_paths), min_size=1, max_size=3)


def _mutate(spec: dict, key: tuple, action: str, value, path: str) -> None:
    container = spec
    for part in key[:-1]:
        try:
            container = container[part]
        except (KeyError, IndexError, TypeError):
            return
    last = key[-1]
    if not isinstance(container, (dict, list)) or (isinstance(container, list) and
                                                   not (isinstance(last, int) and last < len(container))):
        return
    if isinstance(container, dict) and not isinstance(last, str):
        return
    if action == "delete":
        if isinstance(container, dict):
            container.pop(last, None)
        else:
            del container[last]
    else:
        container[last] = value if action == "value" else path


@SOME
@given(mutations)
def test_mutated_episode_json_loads_or_fails_with_one_line(base, scratch, changes):
    folder = _copy(base, scratch)
    json_path = folder / "episode.json"
    spec = json.loads(json_path.read_text())
    for key, action, value, path in changes:
        _mutate(spec, key, action, value, path)
    json_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    try:
        episode = load_episode(folder)
    except EpisodeError as exc:
        assert_one_line_naming(exc, folder)
    else:  # what loads is the episode's own files: nothing from outside the folder
        assert episode.query_image.dtype == np.uint8 and episode.supports
        assert spec.get("format") == "fssgui-episode" and spec.get("version") == 1
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("relative", ["../outside.png", "link_out.png", "link_abs.png", "parent/outside.png",
                                      "sub/../../outside.png", "/etc/hostname"])
def test_paths_leaving_the_folder_are_refused(base, scratch, relative):
    folder = _copy(base, scratch)
    spec = json.loads((folder / "episode.json").read_text())
    spec["supports"][0]["image"] = relative
    (folder / "episode.json").write_text(json.dumps(spec))
    with pytest.raises(EpisodeError) as err:
        load_episode(folder)
    message = assert_one_line_naming(err.value, folder)
    assert "escapes the episode folder" in message or "must be relative" in message


def test_links_inside_the_folder_loops_and_nul_characters(base, scratch):
    folder = _copy(base, scratch)
    spec = json.loads((folder / "episode.json").read_text())
    spec["query"]["image"] = "link_in.png"  # a link that stays inside is an ordinary file
    (folder / "episode.json").write_text(json.dumps(spec))
    assert load_episode(folder).query_image.shape == (60, 80, 3)
    for relative, words in (("loop.png", "cannot be followed"), ("query.png\x00x", "NUL"), ("a" * 5000, "cannot be")):
        spec["query"]["image"] = relative
        (folder / "episode.json").write_text(json.dumps(spec))
        with pytest.raises(EpisodeError, match=words) as err:
            load_episode(folder)
        assert_one_line_naming(err.value, folder)


@pytest.mark.parametrize("text, words", [
    ('{"format": "fssgui-episode", "version": true}', "unknown episode format version True"),
    ('{"format": "fssgui-episode", "version": 1.0}', "unknown episode format version 1.0"),
    ('{"format": "fssgui-episode", "version": 2}', "unknown episode format version 2"),
    ('{"format": "fssgui-episode"}', "unknown episode format version None"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"format": "fssgui-episode", "version": 1, "query": []}', '"query" must be an object'),
    ('{"format": "fssgui-episode", "version": 1, "query": {"image": 7}}', "query image must be a relative path"),
    ("\xff\xfe", "not valid JSON"),
])
def test_versions_types_and_nesting(scratch, text, words):
    folder = fresh_folder(scratch)
    (folder / "episode.json").write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    with pytest.raises(EpisodeError, match=words) as err:
        load_episode(folder)
    assert_one_line_naming(err.value, folder / "episode.json")


def test_huge_or_unreadable_episode_files(scratch):
    folder = fresh_folder(scratch)
    (folder / "episode.json").write_bytes(b" " * (2 * 1024 * 1024))
    with pytest.raises(EpisodeError, match="too large") as err:
        load_episode(folder)
    assert_one_line_naming(err.value, folder)
    (folder / "episode.json").unlink()
    (folder / "episode.json").mkdir()  # a folder where the file should be
    with pytest.raises(EpisodeError, match="not found") as err:
        load_episode(folder)
    assert_one_line_naming(err.value, folder)


# ------------------------------------------------------------------------------------ images
RNG = np.random.default_rng(7)
PICTURE = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _samples() -> dict[str, bytes]:
    """Valid files of many kinds (the seeds that hypothesis truncates and damages)."""
    grey = PICTURE[..., 0]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    return {
        "rgb.png": encoded(PICTURE, "PNG"),
        "grey.png": encoded(grey, "PNG"),
        "palette.png": encoded(PICTURE, "PNG", "P"),
        "rgba.png": encoded(PICTURE, "PNG", "RGBA"),
        "la.png": encoded(grey, "PNG", "LA"),
        "bits.png": encoded(grey > 128, "PNG"),
        "grey16.png": cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(),
        "rgb16.png": cv2.imencode(".png", PICTURE[..., ::-1].astype(np.uint16) * 257)[1].tobytes(),  # BGR
        "rgb.jpg": encoded(PICTURE, "JPEG", quality=90),
        "cmyk.jpg": encoded(PICTURE, "JPEG", "CMYK"),
        "exif.jpg": encoded(PICTURE, "JPEG", exif=exif),
        "rgb.bmp": encoded(PICTURE, "BMP"),
        "rgb.tif": encoded(PICTURE, "TIFF"),
        "float.tif": encoded(grey.astype(np.float32) - 100, "TIFF"),
        "rgb.webp": encoded(PICTURE, "WEBP", lossless=True),
        "anim.gif": encoded(PICTURE, "GIF"),
    }


SAMPLES = _samples()


@SOME
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_damaged_images_read_or_fail_with_one_line(scratch, name, data):
    path = damaged_file(scratch, name, SAMPLES[name], data)
    for reader in (load_rgb, load_mask):
        try:
            array = reader(path)
        except ImageError as exc:
            assert_one_line_naming(exc, path)
        else:
            assert array.ndim == (3 if reader is load_rgb else 2)
            assert array.dtype == (np.uint8 if reader is load_rgb else bool)


def test_modes_convert_to_rgb_exactly(scratch):
    folder = fresh_folder(scratch)
    for name, raw in SAMPLES.items():
        (folder / name).write_bytes(raw)
    grey = np.repeat(PICTURE[..., :1], 3, axis=2)
    exact = {"rgb.png": PICTURE, "grey.png": grey, "rgba.png": PICTURE, "la.png": grey, "rgb16.png": PICTURE,
             "grey16.png": grey, "rgb.bmp": PICTURE, "rgb.tif": PICTURE, "rgb.webp": PICTURE}
    for name, expected in exact.items():
        np.testing.assert_array_equal(load_rgb(folder / name), expected, err_msg=name)
    palette = Image.open(folder / "palette.png")
    np.testing.assert_array_equal(load_rgb(folder / "palette.png"), np.asarray(palette.convert("RGB")))
    for name in ("rgb.jpg", "cmyk.jpg", "anim.gif"):
        image = load_rgb(folder / name)
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8, name
    decoded = np.asarray(Image.open(folder / "rgb.jpg").convert("RGB")).astype(int)
    assert np.abs(load_rgb(folder / "rgb.jpg").astype(int) - decoded).mean() < 1
    # EXIF orientation is ignored: the pixels as stored (as the datasets' reference loaders read them)
    assert load_rgb(folder / "exif.jpg").shape == (24, 32, 3)
    with pytest.raises(ImageError, match="float32 pixels are not read") as err:
        load_rgb(folder / "float.tif")
    assert_one_line_naming(err.value, folder / "float.tif")


@given(st.integers(0, 255))
@FEW
def test_sixteen_bit_values_round_to_their_eight_bit_value(scratch, value):
    path = fresh_folder(scratch) / "v.png"
    cv2.imwrite(str(path), np.full((2, 3), value * 257, np.uint16))
    assert load_rgb(path).max() == load_rgb(path).min() == value


@pytest.mark.parametrize("raw_maker, size", [
    (lambda: png_declaring(100_000, 100_000), "100000x100000"),  # over Pillow's own bomb limit too
    (lambda: png_declaring(10_000, 10_000), "10000x10000"),  # over ours only
    (lambda: png_declaring(9_000, 9_000), "9000x9000"),
    (lambda: jpeg_declaring(60_000, 60_000), "60000x60000"),
])
def test_decompression_bombs_are_refused_before_decoding(scratch, monkeypatch, raw_maker, size):
    path = fresh_folder(scratch) / "bomb.png"
    raw = raw_maker()
    path.write_bytes(raw)

    def never(*_args, **_kwargs):
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(cv2, "imdecode", never)
    monkeypatch.setattr(Image.Image, "load", never)
    for reader in (load_rgb, load_mask):
        started = time.perf_counter()
        with pytest.raises(ImageError) as err:
            reader(path)
        assert time.perf_counter() - started < 1.0
        message = assert_one_line_naming(err.value, path)
        assert "before decoding" in message and f"({len(raw)} bytes)" in message
        assert size in message or str(MAX_IMAGE_PIXELS) in message


def test_images_read_by_the_datasets_are_the_same_pixels(scratch):
    from fssgui.data.datasets import read_label, read_rgb

    folder = fresh_folder(scratch)
    for name in ("exif.jpg", "rgb16.png", "palette.png"):
        (folder / name).write_bytes(SAMPLES[name])
        np.testing.assert_array_equal(read_rgb(folder / name), load_rgb(folder / name))
    path = folder / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    with pytest.raises(FssguiError, match="before decoding"):
        read_label(path)


# ------------------------------------------------------------------------------------- masks
mask_values = st.lists(st.sampled_from([0, 1, 255, 2, 128, 254, 15]), min_size=1, max_size=3, unique=True)


@SOME
@given(mask_values, st.sampled_from(["L", "P", "RGB", "LA"]), st.integers(0, 2**32 - 1))
def test_mask_values_other_than_0_1_255_are_an_error(scratch, values, mode, seed):
    rng = np.random.default_rng(seed)
    array = rng.choice(np.array(values, np.uint8), size=(6, 7))
    path = fresh_folder(scratch) / "mask.png"
    if mode == "P":  # palette indices are the values, whatever colours the palette shows
        image = Image.fromarray(array, "P")
        image.putpalette(list(rng.integers(0, 256, 768).astype(int)))
        image.save(path)
    else:
        Image.fromarray(array).convert(mode).save(path)
    if set(values) <= {0, 1, 255}:
        np.testing.assert_array_equal(load_mask(path), array > 0)
    else:
        with pytest.raises(ImageError, match="mask values must be 0 and 255") as err:
            load_mask(path)
        message = assert_one_line_naming(err.value, path)
        assert all(str(v) in message for v in sorted(set(values) - {0, 1, 255})[:3])


def test_mask_kinds(scratch):
    folder = fresh_folder(scratch)
    cv2.imwrite(str(folder / "sixteen.png"), np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(load_mask(folder / "sixteen.png"), [[False, True]])
    cv2.imwrite(str(folder / "sixteen_255.png"), np.array([[0, 255]], np.uint16))
    with pytest.raises(ImageError, match="found 0, 255"):
        load_mask(folder / "sixteen_255.png")
    Image.fromarray(np.array([[0, 255]], np.uint8) > 0).save(folder / "bits.png")
    np.testing.assert_array_equal(load_mask(folder / "bits.png"), [[False, True]])
    red = np.zeros((2, 2, 3), np.uint8)
    red[0, 0] = (255, 0, 0)
    Image.fromarray(red).save(folder / "red.png")
    with pytest.raises(ImageError, match="colour channels"):
        load_mask(folder / "red.png")
    (folder / "cmyk.jpg").write_bytes(SAMPLES["cmyk.jpg"])
    with pytest.raises(ImageError, match="CMYK image is not a mask") as err:
        load_mask(folder / "cmyk.jpg")
    assert_one_line_naming(err.value, folder / "cmyk.jpg")


@FEW
@given(st.integers(1, 90), st.integers(1, 90))
def test_masks_of_another_size_are_named(base, scratch, height, width):
    folder = _copy(base, scratch)
    cv2.imwrite(str(folder / "support_1_mask.png"), np.full((height, width), 255, np.uint8))
    if (height, width) == (60, 80):
        assert load_episode(folder).supports[1].mask.all()
        return
    with pytest.raises(EpisodeError) as err:
        load_episode(folder)
    message = assert_one_line_naming(err.value, folder / "support_1_mask.png")
    assert f"{width}x{height}" in message and "80x60" in message
    assert ("EXIF" in message) == ((height, width) == (80, 60))


# ---------------------------------------------------------------------------------------- CLI
def test_cli_bad_episodes_exit_2_with_one_line_and_no_output(base, scratch, capsys):
    from fssgui.cli import main

    cases = {}
    folder = _copy(base, scratch)
    (folder / "support_0.png").write_bytes(png_declaring(10_000, 10_000))
    cases["bomb"] = (folder, folder / "support_0.png")
    folder = _copy(base, scratch)
    spec = json.loads((folder / "episode.json").read_text())
    spec["query"]["image"] = "link_out.png"
    (folder / "episode.json").write_text(json.dumps(spec))
    cases["escape"] = (folder, folder / "episode.json")
    folder = _copy(base, scratch)
    cv2.imwrite(str(folder / "query_mask.png"), np.full((60, 80), 128, np.uint8))
    cases["grey mask"] = (folder, folder / "query_mask.png")
    for what, (folder, named) in cases.items():
        out = folder.parent / "out"
        if what == "bomb":  # the real console entry point once
            code, _, stderr = cli("predict", folder, "--device", "cpu", "--out", out)
        else:
            code, stderr = main(["predict", str(folder), "--device", "cpu", "--out", str(out)]), capsys.readouterr().err
        assert code == 2, (what, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fssgui: error: ") and str(named) in lines[0], (what, stderr)
        assert not out.exists(), what
