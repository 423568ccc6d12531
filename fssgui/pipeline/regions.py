"""The query region R to explain, and the query ground truth, at the model's input size S.

One rule for every front-end:

* ``prediction``: the model's official predicted foreground (:meth:`Prediction.mask`: the argmax,
  or DMTNet's K-shot vote), at S for the explainers and metrics and at the query's size for display.
* ``false-positive`` / ``false-negative``: the largest connected error of the official prediction
  against the query's ground truth (:func:`largest_error_region`: 8-connected pixels predicted
  foreground outside the ground truth, or ground-truth pixels the prediction missed; the dataset's
  ignore pixels are never an error), at the query's resolution: where a triage starts to ask why.
* ``ground-truth``, ``episode`` (the region stored in the episode), ``brushed`` (a mask the user
  drew) and a mask PNG: a mask at the query's resolution (a PNG of another size is first resized to
  the query, nearest), brought to S by :func:`region_from_mask` (nearest; a region that nearest
  sampling would lose keeps every model pixel it overlaps, so a single pixel is enough).

Explainers resize R to their explanation size themselves (AffEx: nearest, as the reference).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from ..errors import ExplainError
from ..imaging import load_mask, resize_mask

if TYPE_CHECKING:  # torch is imported where it is used: the window imports this module before torch
    import torch
    from torch import Tensor

PREDICTION = "prediction"
GROUND_TRUTH = "ground-truth"
EPISODE = "episode"
BRUSHED = "brushed"
FALSE_POSITIVE = "false-positive"
FALSE_NEGATIVE = "false-negative"
#: the error regions of the prediction against the ground truth
ERROR_SOURCES = (FALSE_POSITIVE, FALSE_NEGATIVE)
#: the named sources; any other source is the path of a mask PNG
REGION_SOURCES = (PREDICTION, GROUND_TRUTH, EPISODE, BRUSHED, FALSE_POSITIVE, FALSE_NEGATIVE)
REGION_TITLES = {PREDICTION: "prediction", GROUND_TRUTH: "ground truth", EPISODE: "stored in the episode",
                 BRUSHED: "brushed", FALSE_POSITIVE: "largest false positive",
                 FALSE_NEGATIVE: "largest false negative"}


_ALIASES = {"gt": GROUND_TRUTH, "ground truth": GROUND_TRUTH, "ground_truth": GROUND_TRUTH,
            "fp": FALSE_POSITIVE, "fn": FALSE_NEGATIVE}


def canonical_source(source: str) -> str:
    """The one spelling of a source ("gt" and "ground truth" are "ground-truth")."""
    return _ALIASES.get(source.strip().lower(), source) if isinstance(source, str) else source


def needs_prediction(source: str) -> bool:
    """Whether R from ``source`` (canonical) is derived from the model's prediction."""
    return source == PREDICTION or source in ERROR_SOURCES


def region_title(source: str) -> str:
    """How a region source is shown to a person ("ground truth", "brushed", a file name)."""
    return REGION_TITLES.get(source, Path(source).name)


@dataclass(frozen=True)
class Region:
    """R as explained and scored: ``model`` ``[S, S]`` bool (what explainers and metrics use) and
    ``image`` ``[H, W]`` bool at the query's resolution (what a person sees), with its source."""

    source: str
    image: np.ndarray
    model: np.ndarray

    @property
    def title(self) -> str:
        return region_title(self.source)

    def tensor(self, device: torch.device | str = "cpu") -> Tensor:
        import torch

        return torch.from_numpy(self.model).to(device)


def check_region_source(source: str) -> None:
    """A named source, or the path of an existing PNG (checked before any slow work)."""
    if canonical_source(source) in REGION_SOURCES:
        return
    path = Path(source)
    if not path.is_file():
        raise ExplainError(f"{source}: region file not found (or use {', '.join(REGION_SOURCES[:3])})")


def region_from_mask(mask: np.ndarray, size: int, what: str = "region") -> np.ndarray:
    """A bool mask at any resolution (usually the query image's) -> ``[size, size]`` bool (nearest).

    A region that nearest sampling would lose (a tiny brushed dot) keeps every model pixel it
    overlaps, so a single user pixel still gives a non-empty R."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ExplainError(f"{what}: a region must be a 2-D mask, got shape {mask.shape}")
    if not mask.any():
        raise ExplainError(f"{what} is empty (no pixel selected)")
    out = resize_mask(mask, (size, size))
    if not out.any():
        ys, xs = np.nonzero(mask)
        out = np.zeros((size, size), dtype=bool)
        out[(ys * size) // mask.shape[0], (xs * size) // mask.shape[1]] = True
    return out


def region_from_user_mask(source: str, mask: np.ndarray, query_size: tuple[int, int], size: int,
                          what: str) -> Region:
    """R from a mask the user gave (ground truth, stored, brushed, PNG), at any resolution."""
    mask = np.asarray(mask).astype(bool)
    image = mask if mask.shape == tuple(query_size) else resize_mask(mask, query_size)
    return Region(source, image, region_from_mask(mask, size, what))


def region_from_prediction(model_mask: np.ndarray, image_mask: np.ndarray) -> Region:
    """R = the model's official prediction (``model_mask`` at S, ``image_mask`` at the query size)."""
    if not np.any(model_mask):
        raise ExplainError(
            "the model predicts no foreground on this query, so R = prediction is empty: "
            "choose R = ground truth or brush a region"
        )
    return Region(PREDICTION, np.asarray(image_mask, bool), np.asarray(model_mask, bool))


def error_pixels(prediction: np.ndarray, truth: np.ndarray, ignore: Optional[np.ndarray], kind: str) -> np.ndarray:
    """``[H, W]`` bool: pixels of the ``kind`` error (``false-positive``: predicted foreground
    outside the ground truth; ``false-negative``: ground truth the prediction missed), never an
    ignore pixel. All three masks share the query's resolution."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if kind == FALSE_POSITIVE:
        wrong = prediction & ~truth
    elif kind == FALSE_NEGATIVE:
        wrong = truth & ~prediction
    else:
        raise ValueError(f"unknown error kind {kind!r} (use {' or '.join(ERROR_SOURCES)})")
    if ignore is not None:
        wrong &= ~np.asarray(ignore, bool)
    return wrong


def largest_error_region(prediction: np.ndarray, truth: np.ndarray, ignore: Optional[np.ndarray],
                         kind: str) -> np.ndarray:
    """The largest 8-connected component of :func:`error_pixels` (``[H, W]`` bool; ties: the
    component met first in row order). Raises :class:`ExplainError` when there is no such error."""
    wrong = error_pixels(prediction, truth, ignore, kind)
    if not wrong.any():
        raise ExplainError(f"the prediction has no {kind} pixel on this query (ignore pixels excluded)")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(wrong.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
    return labels == largest


def ground_truth_at_size(query_mask: Optional[np.ndarray], size: int,
                         ignore: Optional[np.ndarray] = None) -> Optional[Tensor]:
    """The query ground truth as a ``[size, size]`` long tensor (1 = foreground; pixels of
    ``ignore`` set to the metrics' ignore index), or None without a ground truth."""
    if query_mask is None:
        return None
    import torch

    from ..metrics.causal import IGNORE_INDEX

    gt = torch.from_numpy(resize_mask(np.asarray(query_mask, bool), (size, size))).long()
    if ignore is not None:
        gt[torch.from_numpy(resize_mask(np.asarray(ignore, bool), (size, size)))] = IGNORE_INDEX
    return gt


def user_mask(source: str, episode, brushed: Optional[np.ndarray] = None) -> tuple[np.ndarray, str]:
    """The mask behind a non-prediction source and how to name it in a message."""
    where = str(episode.folder) if getattr(episode, "folder", None) is not None else "episode"
    if source == GROUND_TRUTH:
        if episode is None or episode.query_mask is None:
            raise ExplainError(f"{where}: the episode has no query ground truth for R = ground truth")
        return episode.query_mask, "the query ground truth"
    if source == EPISODE:
        if episode is None or episode.region is None:
            raise ExplainError(f"{where}: the episode stores no region")
        return episode.region, "the episode's region"
    if source == BRUSHED:
        if brushed is None or not np.any(brushed):
            raise ExplainError("the region R to explain is empty: brush it on the query")
        return brushed, "the brushed region"
    check_region_source(source)
    return load_mask(source), str(source)
