"""Fixed episode lists for batch evaluation: CSV reading/writing, generation, loading.

An episode list is a sequence of :class:`EpisodeRow` (class name, query image id, K support
image ids). It comes either from a CSV file or is drawn deterministically from a seed by
:meth:`fssgui.data.FSSDataset.episodes` (the ``val`` split of the chosen fold) and written to
``OUT/episodes.csv``, so a run can always be repeated and resumed.

Accepted CSV layouts (detected from the header row)
---------------------------------------------------
``fssgui`` layout (what ``fssgui evaluate`` writes)::

    episode,class,query,support_1,...,support_K
    0,cat,2008_006554,2007_000663
    ...

* ``class``: the class name (the folder name for ``folders``; the VOC name for ``pascal5i``, e.g.
  ``diningtable``; the COCO name for ``coco20i``, e.g. ``traffic light``) or its label value in
  the label maps (1..20 for PASCAL, 1..80 contiguous for COCO-20i).
* ``query``, ``support_k``: image ids = file names without extension: ``<class>/images/<id>.*``
  for ``folders``, ``JPEGImages/<id>.jpg`` for ``pascal5i``, ``{val,train}2014/<id>.jpg`` for
  ``coco20i`` (a bare COCO number such as ``400851`` is also accepted and found as
  ``COCO_val2014_000000400851`` or ``COCO_train2014_000000400851``).
* ``episode`` (optional first column): the episode number, a unique integer >= 0 that keys the
  results (``fssgui evaluate`` writes the row's number in its source list, so that a fold filter
  keeps the numbers); without it, rows are numbered in file order from 0.

``reference`` layout (the AffEx repository's ``data_csv/val_{pascal5i,coco20i}_N1K{1,5}.csv``)::

    image_ids,classes
    "[[('2008_006554', '/SegmentationClass/2008_006554.png'), ('2007_000663', ...)]]","[[[6], [6]]]"
    "[[400851, 414578]]","[[[15], [15]]]"

* ``image_ids``: a Python literal ``[[query, shot_1, ..., shot_K]]``; PASCAL items are
  ``(name, mask_path)`` tuples (the name is used), COCO items are COCO image ids.
* ``classes``: ``[[[c], [c], ...]]`` per image; the query's class is the episode class. PASCAL
  classes are VOC indices 1..20; COCO classes are **COCO category ids** (1..90 with gaps, as in
  ``instances_val2014.json``), mapped here to the contiguous 1..80 label values of the HSNet
  label maps. Only 1-way episodes are accepted.

Both layouts are parsed with :func:`ast.literal_eval` / :mod:`csv` only (nothing is executed).
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..data.datasets import (
    COCO_CLASSES,
    IGNORE,
    IMAGE_SUFFIXES,
    LAYOUTS,
    PASCAL_CLASSES,
    DatasetError,
    open_dataset,
    read_label,
    read_rgb,
)
from ..episode import Episode, Support

#: COCO category id (``instances_*.json``) of each of the 80 classes, in the contiguous order of
#: :data:`fssgui.data.datasets.COCO_CLASSES` (label value = position + 1).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
N_FOLDS = 4
CSV_HEADER_CLASS = "class"
CSV_HEADER_QUERY = "query"


@dataclass(frozen=True)
class EpisodeRow:
    """One fixed episode: its class (canonical name) and image ids, query first."""

    index: int
    class_name: str
    query: str
    supports: tuple[str, ...]

    @property
    def shots(self) -> int:
        return len(self.supports)


@dataclass
class LoadedEpisode:
    """An episode ready for the model, plus the query pixels to ignore (label 255) if any."""

    row: EpisodeRow
    episode: Episode
    ignore: Optional[np.ndarray]  # [H, W] bool at the query's resolution, or None


# ------------------------------------------------------------------------------------ CSV I/O
def episodes_csv_text(rows: Sequence[EpisodeRow]) -> str:
    """The ``fssgui`` CSV layout of ``rows`` (all rows must have the same number of shots)."""
    shots = {r.shots for r in rows}
    if len(shots) > 1:
        raise DatasetError(f"episodes with different numbers of shots ({sorted(shots)}) cannot share one CSV")
    k = shots.pop() if shots else 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["episode", CSV_HEADER_CLASS, CSV_HEADER_QUERY] + [f"support_{i + 1}" for i in range(k)])
    for row in rows:
        writer.writerow([row.index, row.class_name, row.query, *row.supports])
    return buffer.getvalue()


def episodes_digest(rows: Sequence[EpisodeRow]) -> str:
    """SHA-256 of the canonical CSV text: identifies an episode list in the settings hash."""
    return hashlib.sha256(episodes_csv_text(rows).encode("utf-8")).hexdigest()


def read_episode_csv(path: str | Path, layout: str) -> list[EpisodeRow]:
    """Read an episode CSV in the ``fssgui`` or the ``reference`` layout (see the module doc).

    Class cells are turned into canonical class names here (the folder name, the VOC name or the
    COCO name); images stay ids, resolved against the data root by :class:`EpisodeSource`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: episode CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as a text CSV ({exc})") from None
    try:
        records = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    except csv.Error as exc:  # a cell over the csv module's size limit, a stray quote...
        raise DatasetError(f"{path}: not a readable CSV ({exc})") from None
    if not records:
        raise DatasetError(f"{path}: the episode CSV is empty")
    header = [h.strip().lower() for h in records[0]]
    if header[:2] == ["image_ids", "classes"]:
        rows = _read_reference_rows(path, records[1:], layout)
    else:
        rows = _read_fssgui_rows(path, header, records[1:], layout)
    if not rows:
        raise DatasetError(f"{path}: the episode CSV has a header but no episodes")
    shots = {r.shots for r in rows}
    if len(shots) != 1:
        raise DatasetError(f"{path}: rows have different numbers of shots ({sorted(shots)})")
    return rows


def _read_fssgui_rows(path: Path, header: list[str], records: list[list[str]], layout: str) -> list[EpisodeRow]:
    offset = 1 if header and header[0] == "episode" else 0
    body = header[offset:]
    if body[:2] != [CSV_HEADER_CLASS, CSV_HEADER_QUERY] or len(body) < 3:
        raise DatasetError(
            f"{path}: unknown episode CSV header {','.join(header)!r}: expected "
            f"'[episode,]class,query,support_1,...,support_K' (fssgui) or 'image_ids,classes' (AffEx reference)"
        )
    rows: list[EpisodeRow] = []
    seen: set[int] = set()
    for line_no, record in enumerate(records, start=2):
        cells = [c.strip() for c in record]
        if len(cells) != len(header) or any(not c for c in cells):
            raise DatasetError(f"{path}:{line_no}: expected {len(header)} non-empty cells "
                               f"({', '.join(header)}), got {cells}")
        index = len(rows)
        if offset:
            if not _is_count(cells[0]):
                raise DatasetError(f"{path}:{line_no}: episode number {cells[0][:40]!r} is not an integer >= 0")
            index = int(cells[0])
        if index in seen:
            raise DatasetError(f"{path}:{line_no}: episode number {index} appears twice")
        seen.add(index)
        cells = cells[offset:]
        class_name = canonical_class(cells[0], layout, where=f"{path}:{line_no}")
        ids = [_image_id(cell, f"{path}:{line_no}") for cell in cells[1:]]
        rows.append(EpisodeRow(index, class_name, ids[0], tuple(ids[1:])))
    return rows


_NOT_IN_IDS = "/\\\x00" + (":" if os.name == "nt" else "")  # ":" names a drive on Windows


def _is_count(cell: str) -> bool:
    """An integer >= 0 written in ASCII digits, short enough to be an id (``int`` refuses some
    Unicode digits that ``str.isdigit`` accepts, and numbers over 4300 digits)."""
    return cell.isascii() and cell.isdigit() and len(cell) <= 18


def _image_id(cell: str, where: str) -> str:
    """An image id: a file name without extension, never a path (so a list cannot point outside
    the dataset folder)."""
    if not cell or cell in (".", "..") or any(c in cell for c in _NOT_IN_IDS):
        raise DatasetError(f"{where}: image id {cell[:60]!r} is not a file name (no folders, no '..')")
    return cell


def _literal(cell: str, where: str):
    try:
        return ast.literal_eval(cell)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
        raise DatasetError(f"{where}: cannot parse {cell[:60]!r} as a list literal ({exc})") from None


def _read_reference_rows(path: Path, records: list[list[str]], layout: str) -> list[EpisodeRow]:
    if layout not in ("pascal5i", "coco20i"):
        raise DatasetError(f"{path}: the AffEx reference CSV layout holds PASCAL or COCO ids; "
                           f"use --layout pascal5i or coco20i (not {layout})")
    rows = []
    for line_no, record in enumerate(records, start=2):
        where = f"{path}:{line_no}"
        if len(record) < 2:
            raise DatasetError(f"{where}: expected the two cells image_ids,classes")
        images = _literal(record[0], where)
        classes = _literal(record[1], where)
        if not (isinstance(images, list) and len(images) == 1 and isinstance(images[0], list)):
            raise DatasetError(f"{where}: image_ids must be [[query, shot_1, ...]] (one episode per row)")
        if not (isinstance(classes, list) and len(classes) == 1 and isinstance(classes[0], list)):
            raise DatasetError(f"{where}: classes must be [[[c], [c], ...]]")
        images, classes = images[0], classes[0]
        if len(images) < 2 or len(classes) != len(images):
            raise DatasetError(f"{where}: need a query and at least one shot, with one class list per image")
        query_classes = classes[0]
        if not isinstance(query_classes, list) or len(query_classes) != 1:
            raise DatasetError(f"{where}: only 1-way episodes are supported (query classes {query_classes!r})")
        class_id = query_classes[0]
        if type(class_id) is not int:
            raise DatasetError(f"{where}: the query's class {class_id!r} is not an integer")
        if layout == "pascal5i":
            if not 1 <= class_id <= len(PASCAL_CLASSES):
                raise DatasetError(f"{where}: PASCAL class {class_id} out of range 1..20")
            class_name = PASCAL_CLASSES[class_id - 1]
        else:
            if class_id not in COCO_CATEGORY_IDS:
                raise DatasetError(f"{where}: {class_id} is not a COCO category id")
            class_name = COCO_CLASSES[COCO_CATEGORY_IDS.index(class_id)]
        ids = []
        for item in images:
            if isinstance(item, (tuple, list)) and item:
                item = item[0]
            if isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, int) and item < 0):
                raise DatasetError(f"{where}: unexpected image id {str(item)[:60]!r}")
            ids.append(_image_id(str(item), where))
        rows.append(EpisodeRow(len(rows), class_name, ids[0], tuple(ids[1:])))
    return rows


def canonical_class(cell: str, layout: str, where: str = "") -> str:
    """A class cell (name or label value) -> the canonical class name of ``layout``."""
    names = {"pascal5i": PASCAL_CLASSES, "coco20i": COCO_CLASSES}.get(layout)
    if names is None:
        return cell  # folders: the class folder name, checked when the episode is resolved
    if _is_count(cell):
        value = int(cell)
        if not 1 <= value <= len(names):
            raise DatasetError(f"{where}: class value {value} out of range 1..{len(names)} for {layout}")
        return names[value - 1]
    if cell not in names:
        raise DatasetError(f"{where}: unknown {layout} class {cell!r}")
    return cell


# ------------------------------------------------------------------------------------ folds
def held_out_classes(layout: str, fold: int, class_names: Sequence[str]) -> set[str]:
    """The class names of ``fold``'s validation split (the rules of :mod:`fssgui.data.datasets`)."""
    if layout == "pascal5i":
        return {PASCAL_CLASSES[c - 1] for c in range(5 * fold + 1, 5 * fold + 6)}
    if layout == "coco20i":
        return {COCO_CLASSES[4 * k + fold] for k in range(20)}
    return {name for index, name in enumerate(sorted(class_names)) if index % N_FOLDS == fold}


# ---------------------------------------------------------------------------------- resolving
class EpisodeSource:
    """Resolves episode rows against one dataset root in one layout and loads them.

    ``folders``: ``ROOT[/val]/<class>/images/<id>.*`` with ``masks/<id>.png`` (any value > 0 is
    foreground). ``pascal5i``: ``JPEGImages/<id>.jpg``; label maps from ``SegmentationClass``
    (the VOC 2012 annotations the reference evaluation reads) when the file is there, else from
    ``SegmentationClassAug``. ``coco20i``: ``[COCO2014/]{val,train}2014/<id>.jpg`` with
    ``annotations/{val,train}2014/<id>.png`` (HSNet/DCAMA label maps, contiguous values 1..80).
    Label value 255 marks pixels the IoU ignores (when ``use_ignore``). ``split``: the sub-folder
    of a ``folders`` root with ``train/`` and ``val/`` (and the split :meth:`generate` draws from)."""

    def __init__(self, root: str | Path, layout: str, *, use_ignore: bool = True, split: str = "val"):
        if layout not in LAYOUTS:
            raise DatasetError(f"unknown dataset layout {layout!r} (use one of {', '.join(LAYOUTS)})")
        if split not in ("train", "val"):
            raise DatasetError(f"unknown split {split!r} (use train or val)")
        self.root = Path(root)
        self.layout = layout
        self.use_ignore = use_ignore
        self.split = split
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        if layout == "folders":
            base = self.root
            if (base / "train").is_dir() and (base / "val").is_dir():
                base = base / split
            self.base = base
            self.class_names = sorted(d.name for d in base.iterdir() if d.is_dir() and (d / "images").is_dir())
            if not self.class_names:
                raise DatasetError(f"{base}: not a 'folders' dataset (expected {base}/<class>/images/*.jpg|png "
                                   f"and {base}/<class>/masks/*.png)")
        elif layout == "pascal5i":
            self.base = self.root
            self.image_dir = self.root / "JPEGImages"
            self.label_dirs = [d for d in (self.root / "SegmentationClass", self.root / "SegmentationClassAug")
                               if d.is_dir()]
            if not self.image_dir.is_dir() or not self.label_dirs:
                raise DatasetError(f"{self.root}: not a 'pascal5i' dataset (expected {self.image_dir} and "
                                   f"{self.root / 'SegmentationClassAug'} or {self.root / 'SegmentationClass'})")
            self.class_names = list(PASCAL_CLASSES)
        else:
            base = self.root / "COCO2014" if (self.root / "COCO2014").is_dir() else self.root
            self.base = base
            self.splits = [s for s in ("val2014", "train2014")
                           if (base / s).is_dir() and (base / "annotations" / s).is_dir()]
            if not self.splits:
                raise DatasetError(f"{self.root}: not a 'coco20i' dataset (expected {base / 'val2014'}/*.jpg and "
                                   f"{base / 'annotations' / 'val2014'}/*.png, or the train2014 pair)")
            self.class_names = list(COCO_CLASSES)

    # -- generation
    def generate(self, count: int, shots: int, seed: int, fold: int = -1, split: Optional[str] = None
                 ) -> list[EpisodeRow]:
        """``count`` episodes drawn from ``split`` (default: this source's, ``val``) of ``fold``
        by :mod:`fssgui.data`."""
        dataset = open_dataset(self.root, self.layout, fold, split or self.split)
        rows = []
        for spec in dataset.episodes(count, shots, seed):
            samples = dataset.samples(spec.class_index)
            ids = [samples[spec.query].image.stem] + [samples[s].image.stem for s in spec.supports]
            rows.append(EpisodeRow(len(rows), dataset.classes[spec.class_index], ids[0], tuple(ids[1:])))
        return rows

    # -- resolution
    def label_value(self, class_name: str) -> Optional[int]:
        """The label-map value of a class (None for the binary masks of ``folders``)."""
        if self.layout == "folders":
            if class_name not in self.class_names:
                raise DatasetError(f"{self.base / class_name}: no such class folder (with images/) in the dataset")
            return None
        return self.class_names.index(class_name) + 1

    def paths(self, class_name: str, image_id: str) -> tuple[Path, Path]:
        """(image file, mask or label-map file) of one image id; a clear error when missing."""
        if self.layout == "folders":
            self.label_value(class_name)
            folder = self.base / class_name
            for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
                image = folder / "images" / f"{image_id}{suffix}"
                if image.is_file():
                    break
            else:
                raise DatasetError(f"{folder / 'images' / image_id}.jpg|png: image not found")
            mask = folder / "masks" / f"{image_id}.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing mask for image {image}")
            return image, mask
        if self.layout == "pascal5i":
            image = self.image_dir / f"{image_id}.jpg"
            if not image.is_file():
                raise DatasetError(f"{image}: image not found")
            for label_dir in self.label_dirs:
                label = label_dir / f"{image_id}.png"
                if label.is_file():
                    return image, label
            raise DatasetError(f"{self.label_dirs[0] / image_id}.png: label map not found "
                               f"(looked in {', '.join(d.name for d in self.label_dirs)})")
        stems = [image_id]
        if _is_count(image_id):
            stems += [f"COCO_{split}_{int(image_id):012d}" for split in self.splits] + [f"{int(image_id):012d}"]
        for split in self.splits:
            for stem in stems:
                image = self.base / split / f"{stem}.jpg"
                if image.is_file():
                    label = self.base / "annotations" / split / f"{stem}.png"
                    if not label.is_file():
                        raise DatasetError(f"{label}: missing label map for image {image}")
                    return image, label
        raise DatasetError(f"{self.base / self.splits[0] / image_id}.jpg: COCO image not found "
                           f"(looked in {', '.join(self.splits)})")

    def check(self, rows: Sequence[EpisodeRow]) -> None:
        """Resolve every file of every row now, so a wrong path fails before hours of work."""
        for row in rows:
            for image_id in (row.query, *row.supports):
                self.paths(row.class_name, image_id)

    def _read(self, class_name: str, image_id: str) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        image_path, mask_path = self.paths(class_name, image_id)
        image = read_rgb(image_path)
        raw = read_label(mask_path)
        if raw.shape[:2] != image.shape[:2]:
            raise DatasetError(f"{mask_path}: mask size {raw.shape[1]}x{raw.shape[0]} differs from its image "
                               f"{image_path} ({image.shape[1]}x{image.shape[0]})")
        value = self.label_value(class_name)
        if value is None:
            return image, raw > 0, None
        ignore = (raw == IGNORE) if self.use_ignore else None
        return image, raw == value, ignore

    def read_query(self, row: EpisodeRow) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """The row's query image, its class mask and its ignore pixels (None without any)."""
        return self._read(row.class_name, row.query)

    def load(self, row: EpisodeRow) -> LoadedEpisode:
        """The row as an :class:`~fssgui.episode.Episode` (query ground truth = the class mask)."""
        query_image, query_mask, ignore = self._read(row.class_name, row.query)
        supports = []
        for image_id in row.supports:
            image, mask, _ = self._read(row.class_name, image_id)
            supports.append(Support(image, mask))
        episode = Episode(query_image, supports, row.class_name, query_mask)
        if ignore is not None and not ignore.any():
            ignore = None
        return LoadedEpisode(row, episode, ignore)


def filter_fold(rows: Sequence[EpisodeRow], source: EpisodeSource, fold: Optional[int]) -> list[EpisodeRow]:
    """Keep the rows whose class is held out in ``fold`` (None or -1: keep all)."""
    if fold is None or fold < 0:
        return list(rows)
    if fold >= N_FOLDS:
        raise DatasetError(f"fold {fold} out of range (use -1 or 0..{N_FOLDS - 1})")
    keep = held_out_classes(source.layout, fold, source.class_names)
    return [r for r in rows if r.class_name in keep]
