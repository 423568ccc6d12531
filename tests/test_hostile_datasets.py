"""Hostile input for the dataset readers (dataset roots in the three layouts, their image lists
and the index cache), the episode CSVs of ``fssgui evaluate`` and the settings file. Every case
ends in data or in one :class:`FssguiError` whose one-line message names the file (the settings
file: defaults, with the file set aside and a message)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fssgui.data import datasets
from fssgui.data.datasets import DatasetError, open_dataset
from fssgui.errors import FssguiError
from fssgui.evaluate.episodes import EpisodeRow, EpisodeSource, read_episode_csv
from hostile_testkit import FEW, SOME, assert_one_line_naming, fresh_folder, png_declaring


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_data")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """The dataset index cache goes to a test folder, not the user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(datasets, "_cache_file", lambda key: cache / f"{abs(hash(key))}.json")
    return cache


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


GOOD_IMAGE = _png(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))
GOOD_MASK = _png((np.arange(20 * 24).reshape(20, 24) % 3 == 0).astype(np.uint8) * 255)
IMAGE_KINDS = {
    "good": GOOD_IMAGE, "cut": GOOD_IMAGE[: len(GOOD_IMAGE) // 2], "junk": b"not an image at all",
    "empty": b"", "bomb": png_declaring(20_000, 20_000), "small": _png(np.zeros((5, 6, 3), np.uint8)),
}
MASK_KINDS = {
    "good": GOOD_MASK, "cut": GOOD_MASK[:40], "junk": b"\x89PNG\r\n\x1a\nrubbish", "missing": None,
    "small": _png(np.full((5, 6), 255, np.uint8)), "palette": None, "grey": _png(np.full((20, 24), 77, np.uint8)),
    "folder": "folder",
}


def _write(path: Path, content) -> None:
    if content is None:
        return
    if content == "folder":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.write_bytes(content)


# ----------------------------------------------------------------------------- folders layout
@SOME
@given(st.lists(st.lists(st.tuples(st.sampled_from(sorted(IMAGE_KINDS)), st.sampled_from(sorted(MASK_KINDS)),
                                   st.sampled_from([".png", ".jpg", ".PNG", ".txt"])),
                         max_size=4), min_size=0, max_size=3),
       st.sampled_from(["folders", "pascal5i", "coco20i"]))
def test_folders_roots_open_and_load_or_fail_with_one_line(scratch, classes, layout):
    root = fresh_folder(scratch)
    for c, samples in enumerate(classes):
        images, masks = root / f"class{c}" / "images", root / f"class{c}" / "masks"
        images.mkdir(parents=True)
        if c != 2:  # the third class has no masks/ folder
            masks.mkdir()
        for i, (image_kind, mask_kind, suffix) in enumerate(samples):
            _write(images / f"s{i}{suffix}", IMAGE_KINDS[image_kind])
            if masks.is_dir():
                if mask_kind == "palette":
                    from PIL import Image

                    Image.fromarray(np.full((20, 24), 1, np.uint8), "P").save(masks / f"s{i}.png")
                else:
                    _write(masks / f"s{i}.png", MASK_KINDS[mask_kind])
    started = time.perf_counter()
    try:
        dataset = open_dataset(root, layout, -1, "train")
    except FssguiError as exc:
        assert_one_line_naming(exc, root)
        return
    for c in range(len(dataset.classes)):
        for i in range(len(dataset.samples(c))):
            try:
                image, mask = dataset.load(c, i)
            except FssguiError as exc:
                assert_one_line_naming(exc, root)
            else:
                assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 1}
    assert time.perf_counter() - started < 20


def _voc(root: Path) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name, value in (("a", 6), ("b", 6), ("c", 12)):
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((20, 24, 3), np.uint8))[1])
        label = np.zeros((20, 24), np.uint8)
        label[3:9, 4:12] = value
        label[0] = 255
        (root / "SegmentationClassAug" / f"{name}.png").write_bytes(_png(label))
    return root


list_texts = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from(["a", "b", "c", "zz", "a__06", "b__x", "__06", "../a", "a b c", "\x00", "é"]),
             max_size=5).map(lambda names: "\n".join(names).encode("utf-8")),
)
cache_texts = st.one_of(
    st.binary(max_size=30),
    st.recursive(st.none() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=5).map(lambda value: json.dumps(value).encode()),
    st.just(b'{"key": 1, "count": 3, "classes": [1, 2]}'),
)


@SOME
@given(list_texts, list_texts, cache_texts, st.booleans())
def test_pascal_lists_and_a_damaged_index_cache(scratch, private_cache, image_list, split_list, cache, hsnet):
    root = _voc(fresh_folder(scratch))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(image_list)
    if hsnet:
        (root / "splits" / "pascal" / "trn").mkdir(parents=True)
        (root / "splits" / "pascal" / "trn" / "fold0.txt").write_bytes(split_list)
    for existing in private_cache.glob("*.json"):
        existing.write_bytes(cache)
    try:
        dataset = open_dataset(root, "pascal5i", 0, "train")
    except FssguiError as exc:
        assert_one_line_naming(exc, root)
    else:
        assert len(dataset.classes) == 15


# --------------------------------------------------------------------------------- episode CSVs
cells = st.one_of(
    st.sampled_from(["0", "7", "²", "٣", "9" * 5000, "-1", "cat", "bus", "6", "2008_000001", "../etc/passwd",
                     "a/b", "..", "", " ", "\x00", "dog", "400851", "[[1, 2]]", "[[('a', 'b'), ('c', 'd')]]",
                     "[[[6], [6]]]", "[[['x'], [6]]]", "[[[1e400], [6]]]", "[[[True], [6]]]", "[" * 3000,
                     "[[('a', 'b')]]", "[[[6, 7], [6]]]", "[[[-1], [6]]]", "[[None, 'x']]", "x" * 200_000]),
    st.text(max_size=8),
)
headers = st.sampled_from(["episode,class,query,support_1", "class,query,support_1,support_2", "image_ids,classes",
                           "q,s", "episode,class,query", "", "IMAGE_IDS,Classes"])


@SOME
@given(headers, st.lists(st.lists(cells, min_size=1, max_size=4), max_size=4),
       st.sampled_from(["folders", "pascal5i", "coco20i"]))
def test_episode_csvs_read_or_fail_with_one_line(scratch, header, rows, layout):
    text = header + "\n" + "\n".join(",".join(f'"{c}"' if "," in c else c for c in row) for row in rows) + "\n"
    path = fresh_folder(scratch) / "episodes.csv"
    path.write_text(text, encoding="utf-8")
    try:
        read = read_episode_csv(path, layout)
    except DatasetError as exc:
        assert_one_line_naming(exc, path)
    else:
        assert read and all(isinstance(r, EpisodeRow) for r in read)
        for row in read:
            for image_id in (row.query, *row.supports):
                assert "/" not in image_id and "\\" not in image_id and image_id not in ("", ".", "..")


def test_episode_csv_bytes_and_ids_resolve_inside_the_dataset(scratch):
    folder = fresh_folder(scratch)
    path = folder / "episodes.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError) as err:
        read_episode_csv(path, "pascal5i")
    assert_one_line_naming(err.value, path)
    root = _voc(folder / "voc")
    source = EpisodeSource(root, "pascal5i")
    for row in (EpisodeRow(0, "bus", "a", ("zz",)), EpisodeRow(1, "bus", "²", ("a",))):
        with pytest.raises(DatasetError) as err:
            source.check([row])
        assert_one_line_naming(err.value, root)
    path.write_text("class,query,support_1\nbus,a,../../../../etc/hostname\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a file name") as err:
        read_episode_csv(path, "pascal5i")
    assert_one_line_naming(err.value, path)


# ------------------------------------------------------------------------------ settings file
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8)
json_anything = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSGUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _settings_problems(settings) -> list[str]:
    """Every value a window would apply: the right type and in range."""
    from fssgui.settings import _CHOICES, _RANGES, Settings

    problems = []
    defaults = Settings()
    for name in defaults.__dataclass_fields__:
        value, default = getattr(settings, name), getattr(defaults, name)
        if type(value) is not type(default):
            problems.append(f"{name} is {type(value).__name__}")
        elif name in _RANGES and not (_RANGES[name][0] <= value <= _RANGES[name][1]):
            problems.append(f"{name} = {value}")
        elif name in _CHOICES and value not in _CHOICES[name]:
            problems.append(f"{name} = {value}")
        elif isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(f"{name} holds {value}")
    return problems


@SOME
@given(st.dictionaries(st.sampled_from(["recent_episodes", "recent_checkpoints", "model", "heat_opacity",
                                        "mask_opacity", "clip_percent", "brush_size", "eraser_size",
                                        "autosave_seconds", "proto_size", "theme", "colormap", "training",
                                        "signed_colormap", "device", "window_geometry"]) | st.text(max_size=5),
                       json_anything | st.lists(json_scalars, max_size=4), max_size=8))
def test_settings_with_any_values_load_valid(home, values):
    from fssgui.settings import Settings

    Settings.path().parent.mkdir(parents=True, exist_ok=True)
    Settings.path().write_text(json.dumps(values), encoding="utf-8")
    loaded = Settings.load()
    assert not _settings_problems(loaded)
    assert not loaded.load_problem
    loaded.save()  # and what it saves loads back the same
    assert Settings.load() == loaded


@FEW
@given(st.one_of(st.binary(max_size=50), st.just(b"[" * 100000), st.just(b'"just a string"'), st.just(b"\xff\xfe{}")))
def test_an_unreadable_settings_file_is_set_aside_with_a_message(home, raw):
    from fssgui.settings import Settings

    folder = Settings.path().parent
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("settings.json*"):
        old.unlink()
    Settings.path().write_bytes(raw)
    try:
        readable = isinstance(json.loads(raw.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        readable = False
    loaded = Settings.load()
    assert not _settings_problems(loaded)
    if readable:
        assert not loaded.load_problem and Settings.path().exists()
        return
    message = assert_one_line_naming(loaded.load_problem, Settings.path())
    aside = [p for p in folder.iterdir() if p.name.startswith("settings.json.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == raw and aside[0].name in message
    assert not Settings.path().exists()


def test_settings_never_raise_on_a_folder_or_an_unreadable_file(home):
    from fssgui.settings import Settings

    Settings.path().mkdir(parents=True)  # a folder where the file should be
    loaded = Settings.load()
    assert not _settings_problems(loaded) and "settings.json" in loaded.load_problem
    if os.geteuid() != 0:  # root reads anything
        Settings.path().rmdir()
        Settings.path().write_text("{}")
        Settings.path().chmod(0)
        assert not _settings_problems(Settings.load())
