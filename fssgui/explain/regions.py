"""The query region R to explain, as a ``[S, S]`` bool tensor at the model's input size S.

R comes from the model's prediction (its argmax foreground), the episode's ground truth, the
episode's own stored region, or any user mask (a PNG, a brushed array; one pixel is enough).
Explainers resize R to their explanation size themselves (AffEx: nearest, as the reference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import ExplainError
from ..imaging import load_mask, resize_mask

REGION_SOURCES = ("prediction", "ground-truth", "episode")


def region_from_prediction(prediction) -> Tensor:
    """The predicted foreground (argmax of the logits) of the first episode, ``[S, S]`` bool."""
    region = prediction.logits[0].argmax(dim=0) == 1
    if not region.any():
        raise ExplainError(
            "the model predicts no foreground on this query, so R = prediction is empty: "
            "choose R = ground truth or brush a region"
        )
    return region


def region_from_mask(mask: np.ndarray, size: int, what: str = "region") -> Tensor:
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
    return torch.from_numpy(out)


def region_from_png(path: str | Path, size: int) -> Tensor:
    """A mask PNG (0 = outside, 255 or 1 = inside) at any size -> ``[size, size]`` bool."""
    return region_from_mask(load_mask(path), size, what=str(path))


def resolve_region(source: str, episode, size: int, prediction=None) -> Tensor:
    """``source`` = 'prediction' | 'ground-truth' | 'episode' (its stored region) | a PNG path."""
    if source == "prediction":
        if prediction is None:
            raise ExplainError("R = prediction needs the model's prediction")
        return region_from_prediction(prediction)
    if source in ("ground-truth", "gt"):
        if episode.query_mask is None:
            raise ExplainError(f"{_where(episode)}: the episode has no query ground truth for R = ground truth")
        return region_from_mask(episode.query_mask, size, "the query ground truth")
    if source == "episode":
        if episode.region is None:
            raise ExplainError(f"{_where(episode)}: the episode stores no region")
        return region_from_mask(episode.region, size, "the episode's region")
    path = Path(source)
    if path.suffix.lower() != ".png" and not path.exists():
        raise ExplainError(
            f"unknown region {source!r}: use prediction, ground-truth, episode or the path of a mask PNG"
        )
    return region_from_png(path, size)


def ground_truth_at_size(episode, size: int) -> Optional[Tensor]:
    """The query ground truth as a ``[size, size]`` long tensor (1 = foreground), or None."""
    if episode.query_mask is None:
        return None
    return torch.from_numpy(resize_mask(episode.query_mask, (size, size))).long()


def _where(episode) -> str:
    return str(episode.folder) if getattr(episode, "folder", None) is not None else "episode"
