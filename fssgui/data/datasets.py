"""Few-shot segmentation datasets on disk: three layouts, one interface, deterministic episodes.

``open_dataset(root, layout, fold, split) -> FSSDataset`` gives the classes of that fold/split,
the (image, mask) samples of each class and deterministic episode lists from a seed. Training
(:mod:`fssgui.train`) and batch evaluation both use it. Nothing here imports Qt; images and
masks are read by :mod:`fssgui.imaging` (pixels as stored: the EXIF orientation is ignored, as the
reference loaders do).

Layouts
-------
``folders``
    ``ROOT/<class>/images/<stem>.jpg|jpeg|png`` and ``ROOT/<class>/masks/<stem>.png`` (0 =
    background, anything > 0 = foreground). One image may appear under several classes (with a
    different mask each). When ``ROOT/train`` and ``ROOT/val`` exist, the split picks that
    sub-folder (each itself a ``folders`` root). Folds: with ``fold = -1`` every class is in both
    splits; with ``fold = f`` in ``0..n_folds-1`` (``n_folds = 4``) the classes (sorted by name)
    with ``index % 4 == f`` are the held-out (``val``/``test``) classes and the others train.
``pascal5i``
    PASCAL VOC 2012 (+SBD): ``ROOT/JPEGImages/<name>.jpg`` and label maps
    ``ROOT/SegmentationClassAug/<name>.png`` (or ``SegmentationClass``), values 0 = background,
    1..20 = class, 255 = ignore. Per-class image lists come from HSNet's
    ``ROOT/splits/pascal/{trn,val}/fold<f>.txt`` (lines ``<name>__<class:02d>``) when present,
    otherwise from ``ROOT/ImageSets/Segmentation/{train_aug|train,val}.txt`` by scanning which
    classes each label map contains. Fold f holds out classes 5f+1..5f+5 (PASCAL-5i); ``fold = -1``
    uses all 20.
``coco20i``
    COCO 2014 as class-index label maps (the HSNet/PFENet conversion):
    ``ROOT/{train2014,val2014}/<name>.jpg`` and ``ROOT/annotations/{train2014,val2014}/<name>.png``
    with 0 = background, 1..80 = class, 255 = ignore (a ``COCO2014`` sub-folder is also
    accepted). Fold f holds out classes {4k + f + 1 : k = 0..19} (the interleaved COCO-20i split
    of HSNet/DCAMA); ``fold = -1`` uses all 80. Class membership is found by scanning the label
    maps once; the result is cached as JSON under the user cache folder.

Masks returned by :meth:`FSSDataset.load` are ``uint8`` with 0 = background, 1 = foreground and
255 = ignore (from the label map's 255 pixels; ``folders`` masks have no ignore pixels).
A class counts as present in an image as soon as one pixel carries it (no size filter).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import FssguiError
from ..io import write_bytes_atomic
from ..imaging import load_rgb as read_rgb  # noqa: F401 - the one image reader (pixels as stored, EXIF ignored)
from ..imaging import read_mask_values

LAYOUTS = ("folders", "pascal5i", "coco20i")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE = 255

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


class DatasetError(FssguiError):
    """A dataset folder does not follow the layout it was opened with."""


@dataclass(frozen=True)
class Sample:
    """One (image, mask source) pair. ``label_value`` is None for binary masks (folders layout)."""

    image: Path
    mask: Path
    label_value: Optional[int] = None


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode: indices into ``dataset.samples(class_index)``."""

    class_index: int
    query: int
    supports: tuple[int, ...]


@dataclass
class EpisodeData:
    """A loaded episode: RGB uint8 images and uint8 masks (0/1, 255 = ignore)."""

    class_name: str
    query_image: np.ndarray
    query_mask: np.ndarray
    support_images: list[np.ndarray]
    support_masks: list[np.ndarray]


def read_label(path: Path) -> np.ndarray:
    """A label/mask PNG as its raw values (palette indices for paletted PNGs; see
    :func:`fssgui.imaging.read_mask_values`, which also refuses oversized and damaged files)."""
    return read_mask_values(path)[0]


class FSSDataset:
    """Classes of one fold/split and the samples of each class (see the module docstring)."""

    def __init__(self, root: Path, layout: str, fold: int, split: str,
                 class_names: list[str], samples: list[list[Sample]]):
        self.root = root
        self.layout = layout
        self.fold = fold
        self.split = split
        self.classes = class_names
        self._samples = samples

    def __len__(self) -> int:
        return sum(len(s) for s in self._samples)

    def __repr__(self) -> str:
        return (f"FSSDataset({self.layout}, root={str(self.root)!r}, fold={self.fold}, split={self.split!r}, "
                f"{len(self.classes)} classes, {len(self)} samples)")

    def samples(self, class_index: int) -> list[Sample]:
        return self._samples[class_index]

    def load(self, class_index: int, sample_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 ``[H, W, 3]``, mask uint8 ``[H, W]`` with 0/1 and 255 = ignore)."""
        sample = self._samples[class_index][sample_index]
        image = read_rgb(sample.image)
        raw = read_label(sample.mask)
        if raw.shape[:2] != image.shape[:2]:
            raise DatasetError(f"{sample.mask}: mask size {raw.shape[1]}x{raw.shape[0]} differs from its image "
                               f"{sample.image} ({image.shape[1]}x{image.shape[0]})")
        if sample.label_value is None:
            mask = (raw > 0).astype(np.uint8)
        else:
            mask = (raw == sample.label_value).astype(np.uint8)
            mask[raw == IGNORE] = IGNORE
        return image, mask

    def episodes(self, count: int, shots: int, seed: int) -> list[EpisodeSpec]:
        """``count`` episodes of ``shots`` supports; the same seed gives the same list.

        The class is drawn uniformly among classes with at least ``shots + 1`` samples; the query
        and the supports are distinct samples of that class.
        """
        eligible = [c for c, s in enumerate(self._samples) if len(s) >= shots + 1]
        if not eligible:
            raise DatasetError(f"{self.root}: no class of {self.split} fold {self.fold} has {shots + 1} images "
                               f"(needed for a {shots}-shot episode)")
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            c = eligible[int(rng.integers(len(eligible)))]
            picks = rng.choice(len(self._samples[c]), size=shots + 1, replace=False)
            out.append(EpisodeSpec(c, int(picks[0]), tuple(int(p) for p in picks[1:])))
        return out

    def load_episode(self, spec: EpisodeSpec) -> EpisodeData:
        q_img, q_mask = self.load(spec.class_index, spec.query)
        s_imgs, s_masks = [], []
        for s in spec.supports:
            img, mask = self.load(spec.class_index, s)
            s_imgs.append(img)
            s_masks.append(np.where(mask == 1, 1, 0).astype(np.uint8))
        return EpisodeData(self.classes[spec.class_index], q_img, q_mask, s_imgs, s_masks)


# --------------------------------------------------------------------------------------------
def _check_split(split: str) -> str:
    aliases = {"train": "train", "trn": "train", "val": "val", "test": "val"}
    if split not in aliases:
        raise DatasetError(f"unknown split {split!r} (use train or val)")
    return aliases[split]


def _held_out(index: int, fold: int, n_folds: int) -> bool:
    return index % n_folds == fold


def _open_folders(root: Path, fold: int, split: str, n_folds: int = 4) -> FSSDataset:
    base = root
    if (root / "train").is_dir() and (root / "val").is_dir():
        base = root / split
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and (d / "images").is_dir()) if base.is_dir() else []
    if not class_dirs:
        raise DatasetError(
            f"{base}: not a 'folders' dataset (expected {base}/<class>/images/*.jpg|png and {base}/<class>/masks/*.png)"
        )
    if fold >= n_folds:
        raise DatasetError(f"{root}: fold {fold} out of range for the folders layout (use -1 or 0..{n_folds - 1})")
    names, samples = [], []
    for index, cdir in enumerate(class_dirs):
        if fold >= 0 and _held_out(index, fold, n_folds) != (split == "val"):
            continue
        mask_dir = cdir / "masks"
        if not mask_dir.is_dir():
            raise DatasetError(f"{mask_dir}: missing (the 'folders' layout needs <class>/masks/ next to <class>/images/)")
        items = []
        for img in sorted((cdir / "images").iterdir()):
            if img.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            mask = mask_dir / f"{img.stem}.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing mask for image {img}")
            items.append(Sample(img, mask))
        if not items:
            raise DatasetError(f"{cdir / 'images'}: no .jpg/.png images")
        names.append(cdir.name)
        samples.append(items)
    if not names:
        raise DatasetError(f"{root}: no class of the folders layout falls in split {split!r} of fold {fold}")
    return FSSDataset(root, "folders", fold, split, names, samples)


def _cache_file(key: str) -> Path:
    from platformdirs import user_cache_dir

    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return Path(user_cache_dir("fssgui")) / "dataset_index" / f"{digest}.json"


def _scan_label_classes(label_dir: Path, names: Sequence[str], cache_key: str,
                        use_cache: bool = True) -> dict[str, list[int]]:
    """{name: sorted class values present} for the label maps ``label_dir/<name>.png``."""
    cache = _cache_file(cache_key) if use_cache else None
    if cache is not None and cache.is_file():
        try:  # a damaged or foreign cache file is ignored (and rewritten below)
            data = json.loads(cache.read_text(encoding="utf-8"))
            classes = data["classes"] if isinstance(data, dict) else None
            if (data.get("key") == cache_key and data.get("count") == len(names) and isinstance(classes, dict)
                    and set(classes) == set(names)
                    and all(isinstance(v, list) and all(type(c) is int for c in v) for v in classes.values())):
                return {k: list(v) for k, v in classes.items()}
        except (OSError, ValueError, KeyError, AttributeError, RecursionError):
            pass
    result = {}
    for name in names:
        path = label_dir / f"{name}.png"
        if not path.is_file():
            raise DatasetError(f"{path}: missing label map for image {name}")
        values = np.unique(read_label(path))
        result[name] = [int(v) for v in values if 0 < v < IGNORE]
    if cache is not None:
        try:
            write_bytes_atomic(cache, json.dumps({"key": cache_key, "count": len(names), "classes": result}).encode())
        except OSError:
            pass
    return result


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as a text list ({exc})") from None


def _read_list(path: Path) -> list[str]:
    names = []
    for line in _read_text(path).splitlines():
        line = line.strip()
        if not line:
            continue
        first = line.split()[0]  # PFENet lists: "JPEGImages/x.jpg SegmentationClassAug/x.png"
        names.append(Path(first).stem)
    return names


def _open_pascal(root: Path, fold: int, split: str, use_cache: bool) -> FSSDataset:
    image_dir = root / "JPEGImages"
    label_dir = root / "SegmentationClassAug"
    if not label_dir.is_dir():
        label_dir = root / "SegmentationClass"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise DatasetError(f"{root}: not a 'pascal5i' dataset (expected {image_dir} and "
                           f"{root / 'SegmentationClassAug'} or {root / 'SegmentationClass'})")
    if not -1 <= fold <= 3:
        raise DatasetError(f"{root}: PASCAL-5i fold must be 0..3 or -1 (all classes), got {fold}")
    held = set(range(5 * fold + 1, 5 * fold + 6)) if fold >= 0 else set()
    wanted = [c for c in range(1, 21) if fold < 0 or ((c in held) == (split == "val"))]
    per_class: dict[int, list[str]] = {c: [] for c in wanted}
    hsnet = root / "splits" / "pascal" / ("trn" if split == "train" else "val") / f"fold{max(fold, 0)}.txt"
    if fold >= 0 and hsnet.is_file():
        for line in _read_text(hsnet).split():
            name, _, cls = line.rpartition("__")
            if not name or not cls.isdigit():
                raise DatasetError(f"{hsnet}: line {line!r} is not '<image>__<class>'")
            if int(cls) in per_class:
                per_class[int(cls)].append(name)
    else:
        lists = root / "ImageSets" / "Segmentation"
        candidates = ["train_aug.txt", "train.txt"] if split == "train" else ["val.txt"]
        list_file = next((lists / c for c in candidates if (lists / c).is_file()), None)
        if list_file is None:
            raise DatasetError(f"{lists}: no {' or '.join(candidates)} list for the {split} split "
                               f"(nor {hsnet})")
        names = _read_list(list_file)
        present = _scan_label_classes(label_dir, names, f"pascal5i|{label_dir.resolve()}|{list_file.resolve()}",
                                      use_cache)
        for name in names:
            for c in present[name]:
                if c in per_class:
                    per_class[c].append(name)
    class_names, samples = [], []
    for c in wanted:
        items = [Sample(image_dir / f"{n}.jpg", label_dir / f"{n}.png", c) for n in per_class[c]]
        class_names.append(PASCAL_CLASSES[c - 1])
        samples.append(items)
    return FSSDataset(root, "pascal5i", fold, split, class_names, samples)


def _open_coco(root: Path, fold: int, split: str, use_cache: bool) -> FSSDataset:
    base = root / "COCO2014" if (root / "COCO2014").is_dir() else root
    sub = "train2014" if split == "train" else "val2014"
    image_dir = base / sub
    label_dir = base / "annotations" / sub
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise DatasetError(f"{root}: not a 'coco20i' dataset (expected {image_dir}/*.jpg and {label_dir}/*.png)")
    if not -1 <= fold <= 3:
        raise DatasetError(f"{root}: COCO-20i fold must be 0..3 or -1 (all classes), got {fold}")
    held = {4 * k + fold + 1 for k in range(20)} if fold >= 0 else set()
    wanted = [c for c in range(1, 81) if fold < 0 or ((c in held) == (split == "val"))]
    names = sorted(p.stem for p in label_dir.iterdir() if p.suffix.lower() == ".png")
    if not names:
        raise DatasetError(f"{label_dir}: no label maps (*.png)")
    present = _scan_label_classes(label_dir, names, f"coco20i|{label_dir.resolve()}", use_cache)
    per_class: dict[int, list[str]] = {c: [] for c in wanted}
    for name in names:
        for c in present[name]:
            if c in per_class:
                per_class[c].append(name)
    class_names, samples = [], []
    for c in wanted:
        items = []
        for n in per_class[c]:
            image = image_dir / f"{n}.jpg"
            if not image.is_file():
                raise DatasetError(f"{image}: missing image for label map {label_dir / (n + '.png')}")
            items.append(Sample(image, label_dir / f"{n}.png", c))
        class_names.append(COCO_CLASSES[c - 1])
        samples.append(items)
    return FSSDataset(root, "coco20i", fold, split, class_names, samples)


def open_dataset(root: str | Path, layout: str, fold: int = -1, split: str = "train",
                 *, use_cache: bool = True) -> FSSDataset:
    """Open ``root`` in ``layout`` (``folders``, ``pascal5i``, ``coco20i``) for one fold/split.

    Raises :class:`DatasetError` (a :class:`~fssgui.errors.FssguiError`) naming the path when the
    folder does not follow the layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    split = _check_split(split)
    openers = {"folders": lambda: _open_folders(root, fold, split),
               "pascal5i": lambda: _open_pascal(root, fold, split, use_cache),
               "coco20i": lambda: _open_coco(root, fold, split, use_cache)}
    if layout not in openers:
        raise DatasetError(f"unknown dataset layout {layout!r} (use one of {', '.join(LAYOUTS)})")
    try:
        return openers[layout]()
    except OSError as exc:  # a folder that cannot be listed, a link loop...
        raise DatasetError(f"{exc.filename or root}: cannot be read ({exc.strerror or exc})") from None
