"""One episode of a results folder opened for diagnosis: read from the dataset (query, supports,
their masks, the ground truth), predicted by the pipeline, and R preset to the prediction's largest
error (:data:`~fssgui.pipeline.regions.FALSE_POSITIVE` or :data:`~fssgui.pipeline.regions.FALSE_NEGATIVE`,
the region rule of :mod:`fssgui.pipeline.regions`, ignore pixels excluded). Qt-free: the app runs
:func:`open_for_diagnosis` on its worker and shows the episode in the workspace; ``Save as episode
folder`` writes it with :func:`save_for_diagnosis` in the standard episode format.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..episode import Episode, save_episode
from ..errors import ExplainError
from ..evaluate.episodes import EpisodeSource
from ..pipeline import EpisodeRun, PredictionResult
from ..pipeline.regions import ERROR_SOURCES, region_title
from .results import FailureRecord, TriageResults


@dataclass
class Diagnosis:
    """An episode ready for the workspace: ``episode.region`` is R (None when the prediction has no
    error of the asked kind: ``note`` says so)."""

    record: FailureRecord
    episode: Episode
    error_kind: str
    note: str
    prediction: PredictionResult

    @property
    def region(self) -> Optional[np.ndarray]:
        return self.episode.region


def episode_source(results: TriageResults, data_root: Optional[str] = None) -> EpisodeSource:
    """The dataset of a results folder (its own data root unless ``data_root`` is given)."""
    root = data_root or results.data_root
    if not root:
        raise ExplainError(f"{results.folder}: the folder does not say where its dataset is; open the dataset")
    return EpisodeSource(root, results.layout, use_ignore=bool(results.settings.get("ignore_label_255", True)))


def open_for_diagnosis(loaded_model, source: EpisodeSource, record: FailureRecord, error_kind: str) -> Diagnosis:
    """The episode of ``record`` from ``source``, predicted by ``loaded_model``, with R = its
    largest ``error_kind`` region."""
    if error_kind not in ERROR_SOURCES:
        raise ValueError(f"unknown error kind {error_kind!r} (use {' or '.join(ERROR_SOURCES)})")
    loaded = source.load(record.row)
    run = EpisodeRun(loaded_model, loaded.episode, ignore=loaded.ignore)
    episode = dataclasses.replace(loaded.episode, notes=_notes(source, record))
    try:
        region = run.region(error_kind)
    except ExplainError as exc:
        note = f"episode {record.episode}: {exc}; R is left to you"
    else:
        episode.region = region.image
        note = (f"episode {record.episode} ({record.class_name}): R = {region_title(error_kind)}, "
                f"{int(region.image.sum()):,} px")
    return Diagnosis(record, episode, error_kind, note, run.predicted())


def _notes(source: EpisodeSource, record: FailureRecord) -> str:
    """The episode's provenance, kept as its NOTES.md when it is saved."""
    row = record.row
    iou = record.value("iou")
    return (f"# Episode {row.index} of {source.root} ({source.layout})\n\n"
            f"class {row.class_name}; query {row.query}; supports {', '.join(row.supports)}"
            + (f"; foreground IoU {iou:.4f}" if iou is not None else "") + "\n")


def save_for_diagnosis(diagnosis: Diagnosis, folder: str | Path) -> Path:
    """Write the episode (with R when there is one) as an episode folder; returns its episode.json."""
    return save_episode(diagnosis.episode, folder)
