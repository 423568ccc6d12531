"""Causal metrics: insertion / deletion curves (IAUC, DAUC, IAUC@p, mIoULoss@p) as a step generator.

One generator, :func:`causal_steps`, wrapped by the one runner :class:`CausalRun` (which fills a
:class:`Curve`), drives the batch number and the GUI playback alike: every :class:`CausalStep`
carries the curve point *and* the perturbed supports the model saw for that point, with the
prediction made on exactly those supports (the reference app pairs each frame with the previous
step's prediction; here they cannot drift apart).

Reference semantics (those of the official AffinityExplainer ``FSSCausalMetric``):

* Ranking: one global ``torch.sort(descending=True)`` over the flattened ``[K, S, S]`` attribution
  (fp32), across all supports.
* Zero substrate: a removed pixel has its support image value set to 0 in normalised space (all
  channels) **and** its support-mask value set to 0. The query is never touched.
* Insertion starts from all-zero supports and restores the top-ranked pixels; deletion starts from
  the original supports and zeroes them. State i has ``floor(N' * i / T)`` pixels moved,
  i = 0..T, with ``N' = K*S*S`` or ``int(K*S*S*percentage)``.
* ``skip_empty`` drops state 0 (not evaluated, not on the curve), in both modes.
* Scores: ``confidence`` = mean over R of the softmax probability of the class that wins on the
  unperturbed episode (``argmax_c mean_R softmax(logits)_c``, normally the foreground);
  ``miou`` = foreground IoU of the argmax prediction against the ground truth over the whole image
  (0 when both are empty, as torchmetrics' zero_division=0; ``ignore_index`` pixels excluded).
* AUC: the trapezoid rule on a uniform grid normalised to [0, 1]:
  ``(sum(y) - y0/2 - y_last/2) / (n - 1)``.
* mIoULoss@p: insertion with one step to ``p`` plus a final state with everything inserted;
  the value is ``score(all) - score(top p)`` (signed).

Steps are evaluated in batches; the query's backbone features are computed once with
``model.encode_query`` and reused (``predict(query_features=...)``). Callers running several curves
on one episode pass ``query_features`` and the unperturbed ``reference_logits`` in, so neither is
recomputed per curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

from ..errors import CancelledFn, ExplainError, check_cancelled

if TYPE_CHECKING:  # torch is imported where it is used: the window imports this module (titles, curves)
    import torch
    from torch import Tensor

METRICS = ("iauc", "dauc", "iauc@p", "miou-loss@p")
MEASURES = ("confidence", "miou")
IGNORE_INDEX = -100
SUBSTRATE = "zero"  # the only substrate of the reference metric: 0 in normalised space, mask 0
METRIC_TITLES = {"iauc": "IAUC", "dauc": "DAUC", "iauc@p": "IAUC@p", "miou-loss@p": "mIoULoss@p"}
MEASURE_TITLES = {"confidence": "confidence", "miou": "mIoU"}


@dataclass
class CausalStep:
    """One state of an insertion/deletion curve (tensors are on the model's device)."""

    index: int  # position on the curve (0-based, after skip_empty)
    state: int  # state number i of the reference (0 = nothing moved)
    pixels: int  # support pixels moved so far (inserted or deleted)
    fraction: float  # pixels / (K*S*S)
    score: float
    supports: Tensor  # [K, 3, S, S] perturbed support images (normalised)
    support_masks: Tensor  # [K, S, S] perturbed support masks
    kept: Tensor  # [K, S, S] bool: support pixels holding their original value in this state
    logits: Tensor  # [2, S, S] query prediction on these supports
    foreground_probability: Tensor  # [S, S]

    @property
    def prediction_mask(self) -> Tensor:
        from ..models.base import foreground_mask

        return foreground_mask(self.logits, dim=0)


@dataclass
class Curve:
    """One insertion/deletion curve of one attribution: its points, its value (the AUC, or the
    loss for mIoULoss@p; None while incomplete) and every parameter that produced them."""

    metric: str
    measure: str
    method: str = ""
    fractions: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    value: Optional[float] = None
    params: dict = field(default_factory=dict)
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


def trapezoid_auc(scores: list[float] | Tensor) -> float:
    """The reference AUC: trapezoid rule on a uniform grid over [0, 1]."""
    import torch

    y = torch.as_tensor(scores, dtype=torch.float64).flatten()
    n = y.numel()
    if n == 0:
        return float("nan")
    if n == 1:
        return float(y[0])
    return float((y.sum() - y[0] / 2 - y[-1] / 2) / (n - 1))


def step_boundaries(total: int, steps: int, percentage: Optional[float] = None, loss: bool = False) -> list[int]:
    """Pixels moved at each state: ``floor(N' * i / T)``, i = 0..T (+ ``total`` when ``loss``)."""
    if steps < 1:
        raise ExplainError(f"the number of steps must be at least 1, got {steps}")
    limit = total if percentage is None else int(total * percentage)
    if percentage is not None and not 0.0 < percentage <= 1.0:
        raise ExplainError(f"percentage must be in (0, 1], got {percentage}")
    bounds = [limit * i // steps for i in range(steps + 1)]
    if loss and bounds[-1] != total:
        bounds.append(total)
    return bounds


def foreground_iou(logits: Tensor, gt: Tensor) -> Tensor:
    """Per-item foreground IoU ``[N]`` of argmax(logits ``[N, 2, S, S]``) vs gt ``[S, S]`` (long,
    1 = foreground, IGNORE_INDEX excluded); 0 when the union is empty (torchmetrics' convention)."""
    from ..models.base import foreground_mask

    return mask_iou(foreground_mask(logits, dim=1), gt)


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-item foreground IoU ``[N]`` of predicted masks ``[N, S, S]`` (bool) vs gt, as
    :func:`foreground_iou`."""
    import torch

    valid = gt != IGNORE_INDEX
    truth = (gt == 1) & valid
    pred = pred & valid
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def rank_pixels(attribution: Tensor) -> Tensor:
    """``rank[k, y, x]``: position of each support pixel in the global descending sort (fp32)."""
    import torch

    flat = attribution.detach().float().flatten()
    order = torch.sort(flat, descending=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.view(attribution.shape)


def perturbed_supports(
    supports: Tensor, masks: Tensor, rank: Tensor, pixels: Tensor, insertion: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """States for a batch of pixel counts ``pixels`` ``[N]``: the zero-substrate support images
    ``[N, K, 3, S, S]`` and masks ``[N, K, S, S]``, and the kept pixels ``[N, K, S, S]`` bool."""
    keep = kept_pixels(rank, pixels, insertion)
    keep_f = keep.to(supports.dtype)
    return supports[None] * keep_f[:, :, None], masks[None] * keep_f, keep


def kept_pixels(rank: Tensor, pixels: Tensor, insertion: bool) -> Tensor:
    """``[N, K, S, S]`` bool: the support pixels that hold their original value in each state
    (the ``pixels`` top-ranked ones inserted so far, or all but them for deletion)."""
    moved = rank[None] < pixels.view(-1, 1, 1, 1)
    return moved if insertion else ~moved


def reference_target_class(model, batch, region: Tensor, query_features=None, logits: Optional[Tensor] = None) -> int:
    """The class the confidence measure scores: ``argmax_c mean_R softmax(logits)_c`` unperturbed.

    ``logits``: the unperturbed prediction's logits ``[1, C, S, S]`` when the caller has them
    (then no forward pass is run)."""
    import torch

    if logits is None:
        with torch.no_grad():
            logits = model.predict(batch, query_features=query_features).logits
    probs = torch.softmax(logits[0].float(), dim=0)[:, region.to(logits.device).bool()].mean(-1)
    return int(probs.argmax())


def causal_steps(
    model,
    batch,
    attribution: Tensor,
    region: Tensor,
    *,
    mode: str = "insertion",
    measure: str = "confidence",
    steps: int = 75,
    percentage: Optional[float] = None,
    skip_empty: bool = False,
    loss: bool = False,
    gt: Optional[Tensor] = None,
    batch_size: int = 8,
    target_class: Optional[int] = None,
    query_features=None,
    reference_logits: Optional[Tensor] = None,
    cancelled: CancelledFn = None,
) -> Iterator[CausalStep]:
    """Yield the states of an insertion (``mode="insertion"``) or deletion curve in order.

    ``batch``: one episode (B = 1); ``attribution``: ``[K, S, S]`` at the model size; ``region``:
    ``[S, S]`` bool (confidence measure); ``gt``: ``[S, S]`` (bool or long, miou measure).
    ``batch_size`` states are evaluated per forward pass. ``target_class``: the class scored by the
    confidence measure; ``None`` = the reference rule (the class winning over R unperturbed).
    ``query_features`` (``model.encode_query(batch.query)``) and ``reference_logits`` (the
    unperturbed prediction's logits) let a caller that runs several curves on one episode compute
    them once; when omitted they are computed here."""
    import torch

    if mode not in ("insertion", "deletion"):
        raise ExplainError(f"unknown causal mode {mode!r} (insertion or deletion)")
    if measure not in MEASURES:
        raise ExplainError(f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    if batch.batch_size != 1:
        raise ExplainError(f"causal metrics run on one episode at a time (got a batch of {batch.batch_size})")
    supports = batch.supports[0]
    masks = batch.support_masks[0].to(supports.dtype)
    device = supports.device
    shots, _, size, _ = supports.shape
    if tuple(attribution.shape) != (shots, size, size):
        raise ExplainError(
            f"attribution of shape {tuple(attribution.shape)} does not fit {shots} support(s) at {size}x{size}"
        )
    region = region.to(device).bool()
    if measure == "confidence" and not region.any():
        raise ExplainError("the region R is empty: the confidence measure needs at least one query pixel")
    if measure == "miou":
        if gt is None:
            raise ExplainError("the miou measure needs a ground truth mask of the query")
        gt = gt.to(device).long()
    total = shots * size * size
    bounds = step_boundaries(total, steps, percentage, loss)
    states = list(range(len(bounds)))
    if skip_empty:
        states = states[1:]
    rank = rank_pixels(attribution.to(device))

    with torch.no_grad():
        if query_features is None:
            query_features = model.encode_query(batch.query)
        if measure == "confidence" and target_class is None:
            target_class = reference_target_class(model, batch, region, query_features, reference_logits)
        for start in range(0, len(states), max(1, batch_size)):
            check_cancelled(cancelled)
            chunk = states[start : start + max(1, batch_size)]
            pixels = torch.tensor([bounds[i] for i in chunk], device=device)
            state_supports, state_masks, keep = perturbed_supports(supports, masks, rank, pixels, mode == "insertion")
            n = len(chunk)
            episode = type(batch)(batch.query.expand(n, -1, -1, -1), state_supports, state_masks)
            logits = model.predict(episode, query_features=query_features).logits.float()
            probability = torch.softmax(logits, dim=1)
            if measure == "confidence":
                values = probability[:, target_class][:, region].mean(-1)
            else:
                values = foreground_iou(logits, gt)
            for j, state in enumerate(chunk):
                yield CausalStep(
                    index=start + j,
                    state=state,
                    pixels=bounds[state],
                    fraction=bounds[state] / total,
                    score=float(values[j]),
                    supports=state_supports[j],
                    support_masks=state_masks[j],
                    kept=keep[j],
                    logits=logits[j],
                    foreground_probability=probability[j, 1],
                )


def metric_settings(metric: str, measure: str, steps: Optional[int] = None,
                    percentage: Optional[float] = None, skip_empty: Optional[bool] = None) -> dict:
    """The configuration of a named metric (mode, steps, percentage, skip_empty, loss).

    ``iauc``/``dauc``: 75 steps over every support pixel, state 0 skipped for the miou measure (the
    paper's configs); a ``percentage`` truncates the curve to the top p of the pixels.
    ``iauc@p``: 5 steps over the top p (default 0.01), state 0 kept. ``miou-loss@p``: one step to
    the top p (default 0.01) plus the state with every pixel inserted. ``skip_empty`` overrides
    the default of the metric."""
    if metric not in METRICS:
        raise ExplainError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if measure not in MEASURES:
        raise ExplainError(f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    if steps is not None and steps < 1:
        raise ExplainError(f"the number of steps must be at least 1, got {steps}")
    if percentage is not None and not 0.0 < percentage <= 1.0:
        raise ExplainError(f"percentage must be in (0, 1], got {percentage}")
    if metric in ("iauc", "dauc"):
        settings = {"mode": "insertion" if metric == "iauc" else "deletion", "steps": 75, "percentage": None,
                    "skip_empty": measure == "miou", "loss": False}
    elif metric == "iauc@p":
        settings = {"mode": "insertion", "steps": 5, "percentage": 0.01, "skip_empty": False, "loss": False}
    else:  # miou-loss@p
        settings = {"mode": "insertion", "steps": 1, "percentage": 0.01, "skip_empty": True, "loss": True}
    if steps is not None:
        settings["steps"] = int(steps)
    if percentage is not None:
        settings["percentage"] = float(percentage)
    if skip_empty is not None:
        settings["skip_empty"] = bool(skip_empty)
    return settings


def curve_state_count(settings: dict, shots: int, size: int) -> int:
    """How many points a curve of ``settings`` (:func:`metric_settings`) has (for progress)."""
    bounds = step_boundaries(shots * size * size, settings["steps"], settings["percentage"], settings["loss"])
    return len(bounds) - (1 if settings["skip_empty"] else 0)


def curve_value(scores: list[float], loss: bool) -> float:
    """The reference value of a finished curve: the trapezoid AUC, or ``score(all) - score(top p)``
    for mIoULoss@p."""
    if loss:
        return float(scores[-1] - scores[-2]) if len(scores) >= 2 else float("nan")
    return trapezoid_auc(list(scores))


class CausalRun:
    """A curve being computed: iterate it for the :class:`CausalStep`\\ s (each is appended to
    :attr:`curve` before it is yielded); :attr:`curve` is complete, with its value, once the
    iteration ends. ``total`` is the number of points (for progress). The one runner of the causal
    metrics: the CLI, the report, the evaluation and the app's playback all iterate one."""

    def __init__(self, model, batch, attribution: Tensor, region: Tensor, metric: str, measure: str, *,
                 method: str = "", steps: Optional[int] = None, percentage: Optional[float] = None,
                 skip_empty: Optional[bool] = None, gt: Optional[Tensor] = None, batch_size: int = 1,
                 target_class: Optional[int] = None, query_features=None,
                 reference_logits: Optional[Tensor] = None, cancelled: CancelledFn = None,
                 params: Optional[dict] = None) -> None:
        self.settings = metric_settings(metric, measure, steps, percentage, skip_empty)
        if batch_size < 1:
            raise ExplainError(f"the batch size must be at least 1, got {batch_size}")
        if measure == "confidence" and target_class is None and region.bool().any():
            target_class = reference_target_class(model, batch, region, query_features, reference_logits)
        self.total = curve_state_count(self.settings, batch.shots, int(batch.supports.shape[-1]))
        self.curve = Curve(metric, measure, method, params=dict(
            self.settings, substrate=SUBSTRATE, ranking="global, descending, over all supports",
            batch_size=int(batch_size), target_class=target_class, **(params or {})))
        self._steps = causal_steps(model, batch, attribution, region, measure=measure, gt=gt,
                                   batch_size=batch_size, target_class=target_class,
                                   query_features=query_features, reference_logits=reference_logits,
                                   cancelled=cancelled, **self.settings)

    def __iter__(self) -> Iterator[CausalStep]:
        for step in self._steps:
            self.curve.fractions.append(float(step.fraction))
            self.curve.scores.append(float(step.score))
            yield step
        value = curve_value(self.curve.scores, bool(self.settings["loss"]))
        if math.isnan(value):
            raise ExplainError(f"{self.curve.metric}: the curve has too few points to compute a value")
        self.curve.value = value
        self.curve.complete = True

    def run(self) -> Curve:
        """Compute every point and return the finished curve."""
        for _ in self:
            pass
        return self.curve
