"""The push's projection metadata: where each prototype was projected in the training set.

The official push writes ``<run>/prototypes/``: ``bbNone.npy`` (per prototype before
de-duplication: image index, h0, h1, w0, w1, class), ``bb-receptive_fieldNone.npy`` (the feature
cell in pixels), ``unique_prototypes.json`` (the kept original indices) and, per class folder,
``prototype-img_scale_{s}_{p}*.png``; ``all_images.json`` gives the train image ids. Everything
here only reads those files; a missing piece is reported in a one-line note, never invented.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..models.scaleprotoseg_datasets import PROTOTYPE_FOLDER_ALIASES


@dataclass
class ProjectionInfo:
    """Where the push projected one prototype: its training image and the boxes on it."""

    original_index: int  # index before de-duplication (file names, rows of bbNone.npy)
    image_index: int  # index into the train split of all_images.json
    image_id: Optional[str]
    box: tuple[int, int, int, int]  # h_start, h_end, w_start, w_end (high-activation crop)
    receptive_box: Optional[tuple[int, int, int, int]]  # the feature cell in pixels
    patch_path: Optional[Path] = None  # prototype-img_scale_{s}_{p}.png (the crop)
    original_with_box_path: Optional[Path] = None  # the training image with the box drawn

    def to_json(self) -> dict[str, Any]:
        return {
            "original_index": self.original_index,
            "image_index": self.image_index,
            "image_id": self.image_id,
            "box_hhww": list(self.box),
            "receptive_box_hhww": list(self.receptive_box) if self.receptive_box else None,
            "patch": str(self.patch_path) if self.patch_path else None,
            "original_with_box": str(self.original_with_box_path) if self.original_with_box_path else None,
        }


@dataclass
class ProjectionMetadata:
    """The push output folder ``<run>/prototypes/`` (``bbNone.npy``, ``bb-receptive_fieldNone.npy``,
    ``unique_prototypes.json``, ``<class name>/prototype-img_scale_{s}_{p}*.png``) and, if found,
    ``all_images.json`` for the train image ids."""

    folder: Path
    boxes: np.ndarray  # [P_before_dedup, 6]: image index, h0, h1, w0, w1, class
    receptive_boxes: Optional[np.ndarray]
    unique: Optional[list[int]]  # kept original indices (model index i -> unique[i])
    image_ids: Optional[list[str]]
    num_scales: int = 4

    @classmethod
    def find(cls, checkpoint: Optional[Path], folder: Optional[Path] = None, num_scales: int = 4
             ) -> tuple[Optional["ProjectionMetadata"], str]:
        """Look in ``folder`` if given, else ``<ckpt dir>/prototypes`` and ``<ckpt dir>/../prototypes``.
        Returns ``(metadata or None, a one-line note saying what was found)``."""
        candidates = [Path(folder)] if folder else []
        if checkpoint is not None and not folder:
            parent = Path(checkpoint).resolve().parent
            candidates += [parent / "prototypes", parent.parent / "prototypes"]
        for candidate in candidates:
            boxes_file = candidate / "bbNone.npy"
            if boxes_file.is_file():
                try:
                    boxes = np.load(boxes_file, allow_pickle=False)
                    rf_file = candidate / "bb-receptive_fieldNone.npy"
                    receptive = np.load(rf_file, allow_pickle=False) if rf_file.is_file() else None
                except ValueError as exc:
                    return None, f"projection metadata unreadable: {boxes_file}: {exc}"
                if boxes.ndim != 2 or boxes.shape[1] < 5:
                    return None, f"projection metadata unreadable: {boxes_file} has shape {boxes.shape}"
                unique = None
                unique_file = candidate / "unique_prototypes.json"
                if unique_file.is_file():
                    unique = [int(i) for i in json.loads(unique_file.read_text())]
                image_ids = None
                for images_file in (candidate / "all_images.json", candidate.parent / "all_images.json"):
                    if images_file.is_file():
                        split = json.loads(images_file.read_text())
                        if isinstance(split, dict) and isinstance(split.get("train"), list):
                            image_ids = [str(i) for i in split["train"]]
                        break
                note = f"projection metadata: {candidate}" + ("" if image_ids else " (no all_images.json: no image ids)")
                return cls(candidate, boxes, receptive, unique, image_ids, num_scales), note
        where = ", ".join(str(c) for c in candidates) or "nowhere (no checkpoint path)"
        return None, f"projection metadata absent (no bbNone.npy in {where})"

    def info(self, prototype_index: int, class_folder: str) -> Optional[ProjectionInfo]:
        original = self.unique[prototype_index] if self.unique is not None else prototype_index
        if self.unique is not None and prototype_index >= len(self.unique):
            return None
        if original >= len(self.boxes):
            return None
        row = [int(v) for v in self.boxes[original]]
        if row[0] < 0:
            return None
        receptive = None
        if self.receptive_boxes is not None and original < len(self.receptive_boxes):
            receptive = tuple(int(v) for v in self.receptive_boxes[original][1:5])
        scale = original // max(1, len(self.boxes) // self.num_scales)
        stem = self.folder / class_folder / f"prototype-img_scale_{scale}_{original}"

        def existing(suffix: str) -> Optional[Path]:
            path = Path(str(stem) + suffix)
            return path if path.is_file() else None

        image_id = self.image_ids[row[0]] if self.image_ids and 0 <= row[0] < len(self.image_ids) else None
        return ProjectionInfo(
            original_index=original,
            image_index=row[0],
            image_id=image_id,
            box=(row[1], row[2], row[3], row[4]),
            receptive_box=receptive,
            patch_path=existing(".png"),
            original_with_box_path=existing("-original_with_box.png"),
        )

    def class_info(self, prototype_index: int, dataset: str, class_name: str) -> Optional[ProjectionInfo]:
        """:meth:`info` with the push's folder name of ``class_name`` (it differs from the shown
        name for Pascal's background)."""
        return self.info(prototype_index, PROTOTYPE_FOLDER_ALIASES.get((dataset, class_name), class_name))
