"""Causal curves for the report and the playback tab: :func:`run_causal_curves` drives
:func:`fssgui.explain.causal.causal_steps` for several methods and metrics and turns every step
into a :class:`~fssgui.report.frames.CausalFrame` (numpy only, so it can cross from the worker
thread to the GUI): curve point *i* and frame *i* come from the same step object, so the images
shown for a point are exactly the supports whose prediction gave that score.

This module runs the metric; it is the one part of the report package that computes numbers
(to be replaced by the pipeline's causal runner).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from .frames import CausalFrame

SUBSTRATE = "zero"  # the only substrate of the reference metric (spec affex.md §3)

METRIC_TITLES = {"iauc": "IAUC", "dauc": "DAUC", "iauc@p": "IAUC@p", "miou-loss@p": "mIoULoss@p"}
MEASURE_TITLES = {"confidence": "confidence", "miou": "mIoU"}


# =============================================================================== causal curves
@dataclass
class CausalCurve:
    """One insertion/deletion curve of one method (``value``: the AUC, or the loss for mIoULoss@p;
    None while the curve is incomplete)."""

    method: str
    metric: str
    measure: str
    fractions: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    value: Optional[float] = None
    params: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.metric

    @property
    def title(self) -> str:
        return METRIC_TITLES.get(self.metric, self.metric)

    @property
    def mode(self) -> str:
        return self.params.get("mode", "deletion" if self.metric == "dauc" else "insertion")

    def describe(self) -> str:
        """The parameters that change the number (shown next to it): steps, measure, substrate, p."""
        p = self.params.get("percentage")
        text = (f"{self.params.get('steps', '?')} steps, {MEASURE_TITLES.get(self.measure, self.measure)}, "
                f"{self.params.get('substrate', SUBSTRATE)} substrate, p = {100.0 * (p or 1.0):g}%")
        if self.params.get("skip_empty"):
            text += ", state 0 skipped"
        return text

    def value_name(self) -> str:
        return "loss" if self.params.get("loss") else "AUC"



def curve_settings(metric: str, measure: str, steps: Optional[int], percentage: Optional[float]) -> dict[str, Any]:
    """The reference settings of a metric (mode, steps, percentage, skip_empty, loss); a
    ``percentage`` given for IAUC/DAUC truncates the curve to the top p of the pixels."""
    from ..explain.causal import metric_settings

    settings = metric_settings(metric, measure, steps, percentage)
    if percentage is not None and metric in ("iauc", "dauc"):
        settings["percentage"] = percentage  # a truncated curve: IAUC/DAUC over the top p only
    return settings


def curve_state_count(metric: str, measure: str, shots: int, size: int, steps: Optional[int] = None,
                      percentage: Optional[float] = None) -> int:
    """How many points a curve will have (for progress)."""
    from ..explain.causal import step_boundaries

    s = curve_settings(metric, measure, steps, percentage)
    bounds = step_boundaries(shots * size * size, s["steps"], s["percentage"], s["loss"])
    return len(bounds) - (1 if s["skip_empty"] else 0)


def curve_value(scores: Sequence[float], loss: bool) -> float:
    """The reference value of a finished curve: trapezoid AUC, or ``score(all) - score(top p)``."""
    from ..explain.causal import trapezoid_auc

    if loss:
        return float(scores[-1] - scores[-2]) if len(scores) >= 2 else float("nan")
    return float(trapezoid_auc(list(scores)))


def run_causal_curves(
    model,
    batch,
    attributions: Mapping[str, Any],
    region,
    *,
    metrics: Sequence[str] = ("iauc", "dauc"),
    measure: str = "confidence",
    steps: Optional[int] = None,
    percentage: Optional[float] = None,
    gt=None,
    batch_size: int = 8,
    cancelled: Optional[Callable[[], bool]] = None,
    on_frame: Optional[Callable[[CausalFrame], None]] = None,
    on_curve: Optional[Callable[[CausalCurve], None]] = None,
    on_progress: Optional[Callable[[float, str], None]] = None,
) -> list[CausalCurve]:
    """Every ``(method, metric)`` curve for the attributions ``{method: [K, S, S] tensor}``.

    ``on_frame`` receives a :class:`CausalFrame` per step as soon as it is computed (streaming);
    ``on_curve`` each finished curve; ``on_progress(fraction, message)`` the overall progress.
    ``cancelled()`` is checked between batches of steps (raises
    :class:`fssgui.explain.base.Cancelled`)."""
    import torch

    from ..explain.causal import causal_steps, rank_pixels

    shots, size = batch.shots, int(batch.supports.shape[-1])
    plan = [(method, metric) for method in attributions for metric in metrics]
    counts = [curve_state_count(metric, measure, shots, size, steps, percentage) for _, metric in plan]
    total, done = max(1, sum(counts)), 0
    curves = []
    # computed once for every curve of the episode: the query's features and the unperturbed logits
    # (the confidence measure's target class comes from them)
    with torch.no_grad():
        query_features = model.encode_query(batch.query) if plan else None
        reference_logits = (model.predict(batch, query_features=query_features).logits
                            if plan and measure == "confidence" else None)
    for (method, metric), count in zip(plan, counts):
        attribution = torch.as_tensor(attributions[method]).float()
        settings = curve_settings(metric, measure, steps, percentage)
        params = dict(settings, substrate=SUBSTRATE, ranking="global, descending, over all supports")
        curve = CausalCurve(method, metric, measure, params=params)
        # the same ranking, on the same device, as causal_steps computes (sort ties stay identical)
        rank = rank_pixels(attribution.to(batch.supports.device)).cpu().numpy() if on_frame is not None else None
        insertion = settings["mode"] == "insertion"
        for step in causal_steps(model, batch, attribution, region, measure=measure, gt=gt, batch_size=batch_size,
                                 query_features=query_features, reference_logits=reference_logits,
                                 cancelled=cancelled, **settings):
            curve.fractions.append(float(step.fraction))
            curve.scores.append(float(step.score))
            if on_frame is not None:
                moved = rank < step.pixels
                on_frame(CausalFrame.pack(
                    method, metric, step.index, step.state, step.pixels, step.fraction, step.score,
                    moved if insertion else ~moved,
                    step.prediction_mask.detach().cpu().numpy(),
                    step.foreground_probability.detach().float().cpu().numpy(),
                ))
            done += 1
            if on_progress is not None:
                on_progress(done / total, f"{method} {METRIC_TITLES.get(metric, metric)} step {step.index + 1}/{count}")
        curve.value = curve_value(curve.scores, bool(settings["loss"]))
        curve.complete = True
        curves.append(curve)
        if on_curve is not None:
            on_curve(curve)
    return curves


