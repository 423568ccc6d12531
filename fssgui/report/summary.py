"""What a report shows, as data: the inputs (:class:`ReportInputs`, one :class:`MethodResult` per
explanation) and :func:`build_summary`, the JSON-ready dict written as ``summary.json``. Every
number the HTML shows is addressed by its JSON pointer (:func:`json_pointer`) in that dict.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import __version__
from ..io import sha256_file
from ..metrics.causal import Curve

#: the file beside the report that holds every curve point (summary.json gives each curve's count)
CURVES_CSV = "curves.csv"

@dataclass
class MethodResult:
    """One explanation shown in the report."""

    name: str
    maps: list[np.ndarray]  # per support, float32 [Hs, Ws] at the support image's resolution
    signed: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    seconds: Optional[float] = None
    level_weights: Optional[np.ndarray] = None
    level_names: Optional[list[str]] = None
    levels_from: str = ""  # the method whose levels it took (``ExplanationResult.levels_from``)

    @property
    def zero_level(self) -> Optional[float]:
        value = self.params.get("zero_level")
        return float(value) if isinstance(value, (int, float)) else None


@dataclass
class ReportInputs:
    """Everything :func:`write_report` shows."""

    episode: Any  # fssgui.episode.Episode
    episode_path: str
    model_name: str
    model_description: str
    input_size: int
    device: str
    device_description: str
    prediction: np.ndarray  # [H, W] bool at the query's resolution
    region: np.ndarray  # [H, W] bool
    region_source: str
    methods: list[MethodResult]
    curves: list[Curve] = field(default_factory=list)
    checkpoint: Optional[str | Path] = None
    measure: str = "confidence"
    notes: list[str] = field(default_factory=list)
    created: Optional[str] = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    return str(value)


def build_summary(inputs: ReportInputs) -> dict[str, Any]:
    """The report's numbers (and the names that identify them) as a JSON-ready dict."""
    from ..imaging import foreground_iou

    ep = inputs.episode
    query_pixels = int(ep.query_image.shape[0] * ep.query_image.shape[1])
    checkpoint = None
    if inputs.checkpoint:
        path = Path(inputs.checkpoint)
        checkpoint = {"file": path.name, "sha256": sha256_file(path), "bytes": int(path.stat().st_size)}
    prediction = {
        "foreground_pixels": int(inputs.prediction.sum()),
        "foreground_percent": 100.0 * float(inputs.prediction.sum()) / query_pixels,
        "iou": None if ep.query_mask is None else float(foreground_iou(inputs.prediction, ep.query_mask)),
    }
    methods: dict[str, Any] = {}
    for m in inputs.methods:
        entry: dict[str, Any] = {"signed": bool(m.signed), "params": _json_safe(m.params)}
        if m.seconds is not None:
            entry["seconds"] = float(m.seconds)
        if m.levels_from:
            entry["levels_from"] = m.levels_from
        if m.level_weights is not None:
            weights = np.asarray(m.level_weights, np.float64).ravel()
            names = list(m.level_names) if m.level_names else [f"level {i}" for i in range(len(weights))]
            entry["level_weights"] = {"names": names, "values": [float(v) for v in weights]}
        methods[m.name] = entry
    curves: dict[str, dict[str, Any]] = {}
    for c in inputs.curves:
        curves.setdefault(c.method, {})[c.metric] = {
            "value_name": c.value_name(),
            "value": c.value,
            "complete": c.complete,
            "measure": c.measure,
            "params": _json_safe(c.params),
            "points": len(c.scores),
        }
    summary = {
        "format": "fssgui-report-1",
        "fssgui_version": __version__,
        "created": inputs.created or _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "episode": {
            "path": inputs.episode_path,
            "class_name": ep.class_name,
            "shots": ep.shots,
            "query_size": [int(ep.query_image.shape[1]), int(ep.query_image.shape[0])],
            "support_sizes": [[int(s.image.shape[1]), int(s.image.shape[0])] for s in ep.supports],
            "has_ground_truth": ep.query_mask is not None,
        },
        "model": {
            "name": inputs.model_name,
            "description": inputs.model_description,
            "input_size": int(inputs.input_size),
            "checkpoint": checkpoint,
        },
        "device": {"name": inputs.device, "description": inputs.device_description},
        "prediction": prediction,
        "region": {
            "source": inputs.region_source,
            "pixels": int(inputs.region.sum()),
            "percent": 100.0 * float(inputs.region.sum()) / query_pixels,
        },
        "methods": methods,
        "causal": {"measure": inputs.measure, "curves": curves, "points_file": CURVES_CSV},
        "notes": list(inputs.notes),
    }
    return _json_safe(summary)


# ----------------------------------------------------------------------------- JSON pointers
def json_pointer(*parts: Any) -> str:
    """RFC 6901 JSON pointer of a path in summary.json."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve_pointer(document: Any, pointer: str) -> Any:
    value = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def format_value(value: Any, digits: int = 4) -> str:
    """How the report prints a value (the tests read it back the same way)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


