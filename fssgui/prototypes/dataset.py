"""The official data layout the push and the prototype analyses read (Qt-free).

``DATA/img_with_margin_0/<split>/<id>.png`` and ``DATA/all_images.json`` (``{split: [ids]}``):
the push's ``bbNone.npy`` column 0 indexes the ``train`` list. The Prototypes tab's detail pane
asks for this folder to show a prototype's training image and to search nearest patches.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ExplainError

#: the official folder of the images the push and the analyses read
IMAGE_FOLDER = "img_with_margin_0"
IMAGES_JSON = "all_images.json"

NO_DATASET_TEXT = (f"no dataset folder chosen: choose the folder that holds {IMAGE_FOLDER}/<split>/<id>.png "
                   f"and {IMAGES_JSON}")


@dataclass
class DatasetFolder:
    """The official data layout: ``root/img_with_margin_0/<split>/<id>.png`` and
    ``root/all_images.json`` = ``{split: [ids]}`` (optional: without it a split's images are
    the PNG files of its folder, sorted by name, and train image ids are unknown)."""

    root: Path
    image_lists: dict[str, list[str]]  # from all_images.json (empty without it)
    images_json: Optional[Path]
    note: str = ""

    @classmethod
    def open(cls, folder: str | Path) -> "DatasetFolder":
        """Read the layout under ``folder`` (``DATA``; ``DATA/img_with_margin_0`` is accepted too).
        Raises :class:`ExplainError` with a one-line message when it is not that layout."""
        root = Path(folder).expanduser()
        if root.name == IMAGE_FOLDER and not (root / IMAGE_FOLDER).is_dir():
            root = root.parent
        if not root.is_dir():
            raise ExplainError(f"{root}: dataset folder not found")
        if not (root / IMAGE_FOLDER).is_dir():
            raise ExplainError(f"{root}: no {IMAGE_FOLDER}/ folder (the official layout is "
                               f"DATA/{IMAGE_FOLDER}/<split>/<id>.png with DATA/{IMAGES_JSON})")
        image_lists: dict[str, list[str]] = {}
        images_json = root / IMAGES_JSON
        note = ""
        if images_json.is_file():
            try:
                raw = json.loads(images_json.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ExplainError(f"{images_json}: unreadable ({exc})") from exc
            if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
                raise ExplainError(f"{images_json}: expected {{split: [image ids]}}")
            image_lists = {str(k): [str(i) for i in v] for k, v in raw.items()}
        else:
            images_json = None
            note = f"no {IMAGES_JSON} in {root}: split images are the folder's PNG files, train ids unknown"
        return cls(root, image_lists, images_json, note)

    def split_folder(self, split: str) -> Path:
        return self.root / IMAGE_FOLDER / split

    def image_path(self, split: str, image_id: str) -> Path:
        return self.split_folder(split) / f"{image_id}.png"

    def splits(self) -> list[str]:
        """Splits with an image folder (those of all_images.json first, in its order)."""
        folders = sorted(p.name for p in (self.root / IMAGE_FOLDER).iterdir() if p.is_dir())
        return [s for s in self.image_lists if s in folders] + [s for s in folders if s not in self.image_lists]

    def image_ids(self, split: str) -> list[str]:
        """The split's image ids: all_images.json's order when it lists the split, else the
        folder's PNG files sorted by name."""
        if split in self.image_lists:
            return list(self.image_lists[split])
        folder = self.split_folder(split)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.png") if p.is_file())

    def train_id(self, image_index: int) -> Optional[str]:
        train = self.image_lists.get("train")
        if train is None or not 0 <= image_index < len(train):
            return None
        return train[image_index]
