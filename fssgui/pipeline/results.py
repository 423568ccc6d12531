"""What the pipeline returns: plain dataclasses of numpy arrays (never tensors), so a result can
cross from a worker thread to the GUI, be written by a command or rendered by a report unchanged.
Each carries every parameter that produced it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .regions import Region


@dataclass
class BuiltRestrictions:
    """The explainers that a built model itself rules out (``jobs.built_restrictions``), ``{explainer:
    reason}``: its registry entry cannot tell."""

    name: str
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass
class PredictionResult:
    """The model's prediction on the query, at the query's resolution (and the model size S)."""

    model: str
    checkpoint: Optional[str]
    device: str
    input_size: int
    logits: np.ndarray  # [2, H, W] float32: background and foreground logits at the query's size
    probability: np.ndarray  # [H, W] float32: softmax foreground probability of those logits
    mask: np.ndarray  # [H, W] bool: the model's official predicted foreground at the query's size
    model_mask: np.ndarray  # [S, S] bool: the same at the model size
    seconds: float
    input_key: str


@dataclass
class ExplanationResult:
    """One explanation of R: per-support maps at the supports' resolution for display and export,
    and the model-size maps the causal metrics rank."""

    method: str
    params: dict[str, Any]
    signed: bool
    maps: list[np.ndarray]  # per support: [Hs, Ws] float32 at the support image's resolution
    model_maps: np.ndarray  # [K, S, S] float32, as the explainer returned them
    region_info: Region
    prediction: PredictionResult
    model: str
    checkpoint: Optional[str]
    device: str
    seconds: float
    input_key: str
    level_maps: Optional[np.ndarray] = None  # [L, K, E, E]
    level_weights: Optional[np.ndarray] = None  # [L]
    level_names: Optional[list[str]] = None
    label: str = ""  # filled by the window: "#3 affex-signed, R = prediction"
    notes: list[str] = field(default_factory=list)
    #: the method whose level maps and weights this explanation took (another AffEx variant of the
    #: same R: no forward or ablation of its own, ``seconds`` is only its aggregation); "" otherwise
    levels_from: str = ""

    @property
    def region(self) -> np.ndarray:
        """R at the query's resolution."""
        return self.region_info.image

    @property
    def region_source(self) -> str:
        return self.region_info.source

    @property
    def zero_level(self) -> Optional[float]:
        """Where "no affinity" lands on a signed map (its diverging colour map is centred there)."""
        return self.params.get("zero_level") if self.signed else None

    def summary(self) -> dict[str, Any]:
        """The JSON description of the explanation (``explanation.json``)."""
        summary = {"method": self.method, "params": self.params, "signed": self.signed, "model": self.model,
                   "checkpoint": self.checkpoint, "region": self.region_source}
        if self.level_weights is not None:
            summary["level_names"] = self.level_names
            summary["level_weights"] = [float(w) for w in self.level_weights]
        if self.levels_from:
            summary["levels_from"] = self.levels_from
        return summary


def input_key(episode, region: Optional[np.ndarray] = None, *extra: Any) -> str:
    """A short hash of everything a result depends on (images, masks, region, names, params)."""
    digest = hashlib.sha1()

    def add(array: Optional[np.ndarray]) -> None:
        if array is None:
            digest.update(b"none")
            return
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())

    add(episode.query_image)
    for support in episode.supports:
        add(support.image)
        add(support.mask.astype(bool))
    add(None if region is None else region.astype(bool))
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:16]
