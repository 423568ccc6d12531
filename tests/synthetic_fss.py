"""A tiny synthetic few-shot segmentation dataset in the ``folders`` layout (made in tmp by tests).

Every class is a shape type drawn with its own texture (stripe orientation and period) and its
own hue; backgrounds are random low-contrast noise textures. Each image holds two objects of two
different classes, so it is written under both class folders, with the mask of that class's
object each time (the object drawn second may occlude the first; masks follow what is visible).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SHAPES = ("disk", "square", "triangle", "cross", "ring", "diamond", "bar", "star")


def _shape_mask(shape: str, size: int, cx: int, cy: int, r: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if shape == "disk":
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif shape == "square":
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    elif shape == "cross":
        t = max(2, r // 3)
        cv2.rectangle(mask, (cx - r, cy - t), (cx + r, cy + t), 1, -1)
        cv2.rectangle(mask, (cx - t, cy - r), (cx + t, cy + r), 1, -1)
    elif shape == "ring":
        cv2.circle(mask, (cx, cy), r, 1, -1)
        cv2.circle(mask, (cx, cy), max(1, r // 2), 0, -1)
    elif shape == "diamond":
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    elif shape == "bar":
        cv2.rectangle(mask, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 1, -1)
    elif shape == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r, r // 2)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    else:
        raise ValueError(shape)
    return mask


def _texture(size: int, class_index: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """RGB float texture of one class: oriented stripes in the class's hue."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi * class_index / n_classes
    period = 4.0 + 2.0 * (class_index % 3)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    hue = 180.0 * class_index / n_classes + rng.uniform(-6, 6)
    hsv = np.zeros((size, size, 3), np.uint8)
    hsv[..., 0] = np.uint8(hue % 180)
    hsv[..., 1] = 200
    hsv[..., 2] = np.uint8(90 + 150 * stripes)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 1, (size // 4 + 1, size // 4 + 1, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(60, 160, 3).astype(np.float32)
    return np.clip(base + 25 * noise, 0, 255)


def make_synthetic_fss(root: str | Path, *, n_classes: int = 4, images_per_class: int = 12, size: int = 96,
                       seed: int = 0, splits: tuple[str, ...] = ()) -> Path:
    """Write the dataset under ``root`` and return it.

    ``splits=()`` writes ``root/<class>/...``; ``splits=("train", "val")`` writes an independent
    set of images under ``root/train/<class>`` and ``root/val/<class>`` (same classes).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if n_classes > len(SHAPES):
        raise ValueError(f"at most {len(SHAPES)} classes")
    names = [f"{i:02d}_{SHAPES[i]}" for i in range(n_classes)]
    for split in splits or ("",):
        base = root / split if split else root
        for name in names:
            (base / name / "images").mkdir(parents=True, exist_ok=True)
            (base / name / "masks").mkdir(parents=True, exist_ok=True)
        counts = [0] * n_classes
        serial = 0
        while min(counts) < images_per_class:
            first = int(np.argmin(counts))
            second = int(rng.choice([c for c in range(n_classes) if c != first]))
            image = _background(size, rng)
            masks = {}
            r = size // 4
            # two objects in opposite halves (little occlusion)
            left_right = rng.random() < 0.5
            for j, c in enumerate((first, second)):
                half = (j == 0) == left_right
                cx = int(rng.integers(r + 2, size // 2 - 2) + (size // 2 if half else 0))
                cx = min(cx, size - r - 2)
                cy = int(rng.integers(r + 2, size - r - 2))
                radius = int(r * rng.uniform(0.8, 1.1))
                m = _shape_mask(SHAPES[c], size, cx, cy, radius).astype(bool)
                tex = _texture(size, c, n_classes, rng)
                image[m] = tex[m]
                for other in masks.values():
                    other[m] = False
                masks[c] = m
            stem = f"img{serial:04d}"
            serial += 1
            rgb = np.clip(image, 0, 255).astype(np.uint8)
            for c, m in masks.items():
                if m.sum() < 4:
                    continue
                cdir = base / names[c]
                cv2.imwrite(str(cdir / "images" / f"{stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                cv2.imwrite(str(cdir / "masks" / f"{stem}.png"), m.astype(np.uint8) * 255)
                counts[c] += 1
    return root
