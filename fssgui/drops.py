"""What dropped (or chosen) files are: episodes, checkpoints, support images and their masks.

No Qt. Rules:
* a folder holding ``episode.json``, or an ``episode.json`` file -> an episode to open;
* ``.pt .pth .ckpt .tar .bin .safetensors`` -> a checkpoint;
* image files: a file whose stem ends in ``_mask``/``-mask``/``_gt``/``_label`` (or which lies in
  a ``masks`` folder) is a mask; it is paired with the image of the same base name. Images
  without a mask become supports with an empty mask (brush it); masks without an image are
  returned apart (the window applies a lone mask to the selected support).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".tar", ".bin", ".safetensors"}
MASK_MARKERS = ("_mask", "-mask", "_gt", "-gt", "_label", "_labels", "_seg")


@dataclass
class DropPlan:
    episodes: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    supports: list[tuple[Path, Optional[Path]]] = field(default_factory=list)  # (image, mask or None)
    lone_masks: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.episodes or self.checkpoints or self.supports or self.lone_masks)


def _mask_base(path: Path) -> Optional[str]:
    stem = path.stem.lower()
    for marker in MASK_MARKERS:
        if stem.endswith(marker):
            return stem[: -len(marker)]
    if path.parent.name.lower() in ("masks", "mask", "labels", "gt"):
        return stem
    return None


def classify_drop(paths: list[Path]) -> DropPlan:
    plan = DropPlan()
    images: list[Path] = []
    masks: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            if (path / "episode.json").is_file():
                plan.episodes.append(path)
            else:
                plan.ignored.append(path)
        elif path.name == "episode.json":
            plan.episodes.append(path.parent)
        elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
            plan.checkpoints.append(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            base = _mask_base(path)
            if base is not None:
                masks[base] = path
            else:
                images.append(path)
        else:
            plan.ignored.append(path)
    used: set[str] = set()
    for image in images:
        base = image.stem.lower()
        mask = masks.get(base)
        if mask is None:  # look beside the image for a mask of the same name
            for marker in MASK_MARKERS[:3]:
                candidate = image.with_name(f"{image.stem}{marker}.png")
                if candidate.is_file():
                    mask = candidate
                    break
        if mask is not None and base in masks:
            used.add(base)
        plan.supports.append((image, mask))
    plan.lone_masks = [m for base, m in masks.items() if base not in used]
    return plan
