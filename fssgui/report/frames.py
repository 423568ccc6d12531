"""The steps of a causal curve as data (numpy only, so they cross from the worker thread to the GUI).

A :class:`CausalFrame` is one step of one curve, stored compactly (kept-pixel and prediction
masks bit-packed, the probability as uint8); the :class:`FrameBase` holds what all frames of a
run share (the episode as the model saw it). :mod:`fssgui.report.playback` renders them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class FrameBase:
    """What all frames of a run share: the episode at full resolution and as the model saw it."""

    query_image: np.ndarray  # [H, W, 3] uint8, original resolution
    support_images: list[np.ndarray]  # per support [Hs, Ws, 3] uint8, original resolution
    model_support_masks: np.ndarray  # [K, S, S] bool: the support masks at the model size
    substrate_colour: np.ndarray  # [3] uint8: a removed pixel (zero in normalised space)
    input_size: int

    @property
    def shots(self) -> int:
        return len(self.support_images)


@dataclass
class CausalFrame:
    """One step of one curve: ``score`` is curve point ``index`` of ``(method, metric)``.

    ``kept``: the support pixels (at the model size S) that still hold their original value
    (inserted so far for insertion, not yet deleted for deletion); ``prediction`` and
    ``probability``: the query prediction made on exactly those supports."""

    method: str
    metric: str
    index: int
    state: int
    pixels: int
    fraction: float
    score: float
    shape: tuple[int, int, int]  # (K, S, S)
    kept_bits: np.ndarray
    prediction_bits: np.ndarray
    probability_u8: np.ndarray  # [S, S] uint8 (display only; ``score`` is exact)

    @classmethod
    def pack(cls, method: str, metric: str, index: int, state: int, pixels: int, fraction: float, score: float,
             kept: np.ndarray, prediction: np.ndarray, probability: np.ndarray) -> "CausalFrame":
        kept = np.asarray(kept, bool)
        return cls(method, metric, int(index), int(state), int(pixels), float(fraction), float(score),
                   tuple(int(s) for s in kept.shape), np.packbits(kept.ravel()),
                   np.packbits(np.asarray(prediction, bool).ravel()),
                   np.clip(np.asarray(probability, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8))

    @classmethod
    def from_step(cls, method: str, metric: str, step) -> "CausalFrame":
        """The frame of a :class:`fssgui.metrics.causal.CausalStep` (tensors brought to numpy)."""
        return cls.pack(method, metric, step.index, step.state, step.pixels, step.fraction, step.score,
                        step.kept.cpu().numpy(), step.prediction_mask.cpu().numpy(),
                        step.foreground_probability.float().cpu().numpy())

    def kept(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.kept_bits, count=n).astype(bool).reshape(self.shape)

    def prediction(self) -> np.ndarray:
        s = self.shape[1:]
        return np.unpackbits(self.prediction_bits, count=s[0] * s[1]).astype(bool).reshape(s)

    def probability(self) -> np.ndarray:
        return self.probability_u8.astype(np.float32) / 255.0


def denormalise(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float ``[..., 3, H, W]`` (tensor or array) -> RGB uint8 ``[..., H, W, 3]``."""
    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    array = np.moveaxis(array, -3, -1)
    rgb = (array * np.asarray(std, np.float32) + np.asarray(mean, np.float32)) * 255.0
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def frame_base(episode, batch, entry) -> FrameBase:
    """The :class:`FrameBase` of an episode and its model tensors (``batch``, B = 1)."""
    masks = batch.support_masks[0].detach().cpu().numpy() > 0.5
    substrate = denormalise(np.zeros((3, 1, 1), np.float32), entry.mean, entry.std)[0, 0]
    return FrameBase(episode.query_image, [s.image for s in episode.supports], masks, substrate,
                     int(entry.input_size))
