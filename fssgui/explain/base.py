"""The explainer interface: one call shape for AffEx and every baseline (captum style).

``explainer.explain(model, batch, region, prediction=None, progress=None, cancelled=None)``
returns an :class:`Attribution` whose ``maps`` are ``[K, S, S]`` float32 at the model's input
size S (callers resize to each support image's size). ``batch`` holds one episode (B = 1);
``region`` is a ``[S, S]`` bool tensor (the query pixels to explain). ``progress(fraction)``
and ``cancelled() -> bool`` are optional hooks for the GUI worker (checked between steps).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor

from ..errors import CancelledFn, ProgressFn


@dataclass
class Attribution:
    maps: Tensor  # [K, S, S] float32
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    signed: bool = False  # True when maps carry a meaningful sign (display with a diverging map)
    level_maps: Optional[Tensor] = None  # [L, K, E, E] per-level maps (AffEx)
    level_weights: Optional[Tensor] = None  # [L] level weights as applied to level_maps (AffEx)
    level_names: Optional[list[str]] = None
    #: the forward the explainer ran itself when the caller passed no prediction (AffEx on a model
    #: that streams its scores: it holds no scores), for callers that also need its logits
    prediction: Optional[Any] = None


class Explainer:
    """Base class; subclasses set ``name`` and implement :meth:`explain`."""

    name: str = ""
    signed: bool = False
    needs_matching: bool = False  # True when the model must expose matching scores
    #: True when, given no prediction, it runs the forward itself streaming the scores (on models
    #: with ``streams_scores``) and returns that forward in ``Attribution.prediction``
    streams: bool = False

    def explain(
        self,
        model,
        batch,
        region: Tensor,
        *,
        prediction=None,
        progress: ProgressFn = None,
        cancelled: CancelledFn = None,
    ) -> Attribution:  # pragma: no cover - interface
        raise NotImplementedError
