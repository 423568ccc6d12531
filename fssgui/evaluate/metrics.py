"""Table metric names -> the settings of :func:`fssgui.metrics.causal.metric_settings`.

Names (the paper's columns):

* ``iauc-miou``, ``dauc-miou``, ``iauc-conf``, ``dauc-conf``: insertion / deletion AUC with the
  mIoU or the confidence measure over ``--steps`` steps (default 75; the miou measure drops
  state 0, as ``fssgui causal --metric iauc --measure miou`` does).
* ``iauc-conf@p`` (and ``iauc-miou@p``): insertion of the top ``p`` share of the support pixels
  in ``--p-steps`` steps (default 5, the paper's IAUC_Conf@0.01), state 0 kept.
* ``miou-loss@p``: IoU with every support pixel minus IoU with only the top ``p`` inserted.

Each maps to exactly one ``fssgui causal --metric M --measure X [--steps N] [--percentage p]``
call; :attr:`MetricSpec.causal_arguments` gives those arguments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import FssguiError

_PLAIN = re.compile(r"^(iauc|dauc)-(miou|conf)$")
_AT_P = re.compile(r"^iauc-(miou|conf)@([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")
_LOSS = re.compile(r"^miou-loss@([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")
MEASURE_NAMES = {"miou": "miou", "conf": "confidence"}
#: better direction of each metric kind, for the table header
HIGHER_IS_BETTER = {"iauc": True, "dauc": False, "iauc@p": True, "miou-loss@p": False}
EXAMPLES = "iauc-miou, dauc-miou, iauc-conf, dauc-conf, iauc-conf@0.01, miou-loss@0.01, miou-loss@0.05"


class MetricNameError(FssguiError):
    """A metric name of ``--metrics`` is not one of the known forms."""


@dataclass(frozen=True)
class MetricSpec:
    name: str  # canonical table column name
    metric: str  # fssgui.explain.causal METRICS entry
    measure: str  # "miou" | "confidence"
    steps: Optional[int]  # None = the metric's default number of steps
    percentage: Optional[float]

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    def causal_arguments(self) -> list[str]:
        """The equivalent ``fssgui causal`` options."""
        args = ["--metric", self.metric, "--measure", self.measure]
        if self.steps is not None:
            args += ["--steps", str(self.steps)]
        if self.percentage is not None:
            args += ["--percentage", repr(self.percentage)]
        return args

    def as_dict(self) -> dict:
        return {"name": self.name, "metric": self.metric, "measure": self.measure,
                "steps": self.steps, "percentage": self.percentage}


def _percentage(text: str, name: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise MetricNameError(f"metric {name!r}: p must be in (0, 1], got {value}")
    return value


def parse_metric(name: str, steps: Optional[int] = None, p_steps: Optional[int] = None) -> MetricSpec:
    text = name.strip().lower()
    match = _PLAIN.match(text)
    if match:
        kind, measure = match.groups()
        return MetricSpec(text, kind, MEASURE_NAMES[measure], steps, None)
    match = _AT_P.match(text)
    if match:
        measure, p = match.groups()
        return MetricSpec(text, "iauc@p", MEASURE_NAMES[measure], p_steps, _percentage(p, name))
    match = _LOSS.match(text)
    if match:
        return MetricSpec(text, "miou-loss@p", "miou", None, _percentage(match.group(1), name))
    raise MetricNameError(f"unknown metric {name!r} (known forms: {EXAMPLES})")


def parse_metrics(names: Sequence[str], steps: Optional[int] = None, p_steps: Optional[int] = None) -> list[MetricSpec]:
    specs = [parse_metric(n, steps, p_steps) for n in names if n.strip()]
    if not specs:
        raise MetricNameError("no metric given (--metrics)")
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise MetricNameError(f"metric {spec.name!r} given twice")
        seen.add(spec.name)
    return specs
