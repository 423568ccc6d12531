"""ScaleProtoSeg's datasets: class names, input policy and default size (torch-free: the registry
entries and the Prototypes tab read them before torch is imported)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ModelError

# ------------------------------------------------------------------------------ class names
# Model class k is dataset label k + 1 (label 0 is void). Names follow the official
# ``segmentation/constants.py`` (Pascal background shown as "background"; its prototype folder
# is "__background__").

PASCAL_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)

#: folder names the official push uses where they differ from the display names
PROTOTYPE_FOLDER_ALIASES = {("pascal", "background"): "__background__"}

#: ASPP dilation of each scale (paper "Scale s+1" = code scale s)
SCALE_DILATIONS: tuple[int, ...] = (6, 12, 18, 24)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    msc_scales: tuple[float, ...]  # input pyramid (Pascal) or () for a single pass
    resize: str  # "square" (Pascal 513x513), "native" (Cityscapes), "shorter" (ADE shorter side)
    default_size: Optional[int]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "pascal": DatasetInfo("pascal", PASCAL_CLASSES, (0.5, 0.75), "square", 513, "Pascal VOC 2012 (21 classes)"),
    "cityscapes": DatasetInfo("cityscapes", CITYSCAPES_CLASSES, (), "native", None, "Cityscapes (19 classes)"),
    "ade": DatasetInfo("ade", ADE20K_CLASSES, (), "shorter", 512, "ADE20K SceneParsing (150 classes)"),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ModelError(f"unknown ScaleProtoSeg dataset {name!r} (known: {', '.join(DATASETS)})") from None


def dataset_for_num_classes(num_classes: int) -> Optional[str]:
    for info in DATASETS.values():
        if len(info.classes) == num_classes:
            return info.name
    return None
