"""Dataset readers: folders, pascal5i, coco20i layouts, episodes, and clear layout errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fssgui.data import DatasetError, open_dataset
from fssgui.data.tensors import EpisodeTensorDataset
from fssgui.errors import FssguiError

from synthetic_fss import make_synthetic_fss


@pytest.fixture(scope="module")
def folders_root(tmp_path_factory):
    return make_synthetic_fss(tmp_path_factory.mktemp("syn"), n_classes=4, images_per_class=5, size=48, seed=3)


def test_folders_all_classes(folders_root):
    ds = open_dataset(folders_root, "folders", fold=-1, split="train")
    assert ds.classes == ["00_disk", "01_square", "02_triangle", "03_cross"]
    for c in range(4):
        assert len(ds.samples(c)) >= 5
        image, mask = ds.load(c, 0)
        assert image.dtype == np.uint8 and image.shape == (48, 48, 3)
        assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1}
        assert mask.sum() > 0


def test_folders_folds_split_classes(folders_root):
    train = open_dataset(folders_root, "folders", fold=1, split="train")
    val = open_dataset(folders_root, "folders", fold=1, split="val")
    assert val.classes == ["01_square"]
    assert train.classes == ["00_disk", "02_triangle", "03_cross"]


def test_folders_train_val_subfolders(tmp_path):
    root = make_synthetic_fss(tmp_path / "d", n_classes=2, images_per_class=3, size=32, seed=1, splits=("train", "val"))
    train = open_dataset(root, "folders", -1, "train")
    val = open_dataset(root, "folders", -1, "val")
    assert train.classes == val.classes == ["00_disk", "01_square"]
    assert all(s.image.parent.parent.parent.name == "val" for s in val.samples(0))


def test_episodes_deterministic(folders_root):
    ds = open_dataset(folders_root, "folders", -1, "val")
    a = ds.episodes(20, shots=2, seed=5)
    b = ds.episodes(20, shots=2, seed=5)
    c = ds.episodes(20, shots=2, seed=6)
    assert a == b and a != c
    for spec in a:
        assert len(spec.supports) == 2
        assert spec.query not in spec.supports and len(set(spec.supports)) == 2
    episode = ds.load_episode(a[0])
    assert len(episode.support_images) == 2 and episode.class_name == ds.classes[a[0].class_index]


def test_episode_tensors(folders_root):
    ds = open_dataset(folders_root, "folders", -1, "train")
    data = EpisodeTensorDataset(ds, ds.episodes(3, 2, seed=0), 40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    item = data[0]
    assert item["query"].shape == (3, 40, 40) and item["supports"].shape == (2, 3, 40, 40)
    assert item["support_masks"].shape == (2, 40, 40) and item["support_masks"].dtype == torch.float32
    assert item["query_mask"].dtype == torch.int64
    assert set(torch.unique(item["support_masks"]).tolist()) <= {0.0, 1.0}


def test_folders_errors_name_the_path(tmp_path, folders_root):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        open_dataset(tmp_path, "folders")  # empty folder
    (tmp_path / "cls" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cls" / "images" / "a.png")
    with pytest.raises(DatasetError, match="masks"):
        open_dataset(tmp_path, "folders")
    (tmp_path / "cls" / "masks").mkdir()
    with pytest.raises(DatasetError, match=r"a\.png: missing mask"):
        open_dataset(tmp_path, "folders")
    # a folders dataset opened as another layout: error names the expected path
    with pytest.raises(FssguiError, match="JPEGImages"):
        open_dataset(folders_root, "pascal5i", 0, "train")
    with pytest.raises(FssguiError, match="train2014"):
        open_dataset(folders_root, "coco20i", 0, "train")
    with pytest.raises(FssguiError, match="unknown dataset layout"):
        open_dataset(folders_root, "voc", 0, "train")
    with pytest.raises(FssguiError, match="not found"):
        open_dataset(tmp_path / "nope", "folders")


def _label_map(values: list[tuple[int, slice, slice]], size=(20, 24)) -> np.ndarray:
    lab = np.zeros(size, np.uint8)
    for v, ys, xs in values:
        lab[ys, xs] = v
    lab[0, :] = 255  # an ignore border
    return lab


def _save_palette_png(arr: np.ndarray, path) -> None:
    im = Image.fromarray(arr, mode="P")
    palette = [0] * 768
    palette[3:6] = [128, 0, 0]
    im.putpalette(palette)
    im.save(path)


def test_pascal5i_layout(tmp_path):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    contents = {
        "2007_000001": [(1, slice(2, 8), slice(2, 8)), (7, slice(10, 15), slice(10, 20))],  # aeroplane + car
        "2007_000002": [(7, slice(5, 12), slice(3, 9))],  # car
        "2007_000003": [(15, slice(5, 12), slice(3, 9))],  # person
    }
    for name, vals in contents.items():
        Image.fromarray(np.full((20, 24, 3), 100, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        _save_palette_png(_label_map(vals), root / "SegmentationClassAug" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2007_000002\n")
    # fold 1 holds out classes 6..10 (bus, car, cat, chair, cow)
    val = open_dataset(root, "pascal5i", fold=1, split="val", use_cache=False)
    assert val.classes == ["bus", "car", "cat", "chair", "cow"]
    car = val.classes.index("car")
    assert [s.image.stem for s in val.samples(car)] == ["2007_000001", "2007_000002"]
    image, mask = val.load(car, 0)
    assert image.shape == (20, 24, 3)
    assert mask[12, 15] == 1 and mask[4, 4] == 0 and mask[0, 0] == 255
    train = open_dataset(root, "pascal5i", fold=1, split="train", use_cache=False)
    assert "car" not in train.classes and len(train.classes) == 15
    assert [s.image.stem for s in train.samples(train.classes.index("aeroplane"))] == ["2007_000001"]
    assert [s.image.stem for s in train.samples(train.classes.index("person"))] == ["2007_000003"]
    # HSNet split files take precedence
    (root / "splits" / "pascal" / "val").mkdir(parents=True)
    (root / "splits" / "pascal" / "val" / "fold1.txt").write_text("2007_000002__07\n")
    val2 = open_dataset(root, "pascal5i", fold=1, split="val", use_cache=False)
    assert [s.image.stem for s in val2.samples(car)] == ["2007_000002"]
    with pytest.raises(DatasetError, match="fold"):
        open_dataset(root, "pascal5i", fold=4, split="val")


def test_coco20i_layout(tmp_path):
    root = tmp_path / "coco"
    for sub in ("train2014", "val2014"):
        (root / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
    files = {
        ("val2014", "a"): [(1, slice(2, 8), slice(2, 8))],  # person (fold 0 novel: 1, 5, 9, ...)
        ("val2014", "b"): [(5, slice(2, 8), slice(2, 8)), (2, slice(10, 14), slice(2, 8))],  # airplane + bicycle
        ("train2014", "c"): [(2, slice(2, 8), slice(2, 8))],  # bicycle
    }
    for (sub, name), vals in files.items():
        Image.fromarray(np.full((20, 24, 3), 50, np.uint8)).save(root / sub / f"{name}.jpg")
        Image.fromarray(_label_map(vals)).save(root / "annotations" / sub / f"{name}.png")
    val = open_dataset(root, "coco20i", fold=0, split="val", use_cache=False)
    assert len(val.classes) == 20 and val.classes[0] == "person" and val.classes[1] == "airplane"
    assert [s.image.stem for s in val.samples(0)] == ["a"]
    assert [s.image.stem for s in val.samples(1)] == ["b"]
    image, mask = val.load(1, 0)
    assert mask[3, 3] == 1 and mask[11, 3] == 0 and mask[0, 5] == 255
    train = open_dataset(root, "coco20i", fold=0, split="train", use_cache=False)
    assert len(train.classes) == 60 and "person" not in train.classes
    assert [s.image.stem for s in train.samples(train.classes.index("bicycle"))] == ["c"]
    with pytest.raises(DatasetError, match="no class"):
        val.episodes(3, shots=1, seed=0)  # every class has a single image
