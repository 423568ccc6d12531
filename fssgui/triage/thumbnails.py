"""The failure table's pictures of one episode (numpy, no Qt): the query, the query with the
stored prediction and the query with its ground truth (outlined as the canvas draws them,
:mod:`fssgui.look`), at most ``side`` pixels a side. The prediction comes from the sweep's stored thumbnail mask, so drawing a row predicts
nothing; the query and its ground truth are read from the dataset."""
from __future__ import annotations

import numpy as np

from ..evaluate.episodes import EpisodeSource
from ..evaluate.predictions import thumbnail_mask
from ..imaging import resize_image
from ..look import PREDICTION_COLOUR, TRUTH_COLOUR, outline
from .results import FailureRecord

QUERY, PREDICTION, TRUTH = "query", "prediction", "truth"
KINDS = (QUERY, PREDICTION, TRUTH)


def episode_thumbnails(source: EpisodeSource, record: FailureRecord, side: int = 64) -> dict[str, np.ndarray]:
    """``{kind: RGB uint8}`` for the kinds of :data:`KINDS` (no prediction picture before the
    episode is predicted)."""
    image, truth, _ignore = source.read_query(record.row)
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = resize_image(image, (max(1, round(h * scale)), max(1, round(w * scale))))
    pictures = {QUERY: small, TRUTH: outline(small, truth, TRUTH_COLOUR)}
    predicted = thumbnail_mask(record.thumbnail) if record.thumbnail else None
    if predicted is not None:
        pictures[PREDICTION] = outline(small, predicted, PREDICTION_COLOUR)
    return pictures
