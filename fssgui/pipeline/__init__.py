"""THE chain every front-end calls: model cache -> predict -> region R -> explain -> causal metric.

* :mod:`.models`: :class:`ModelSpec`, :class:`ModelCache`, :func:`load_model` (one device rule);
* :mod:`.run`: :class:`EpisodeRun`, the steps for one episode, each computed once;
* :mod:`.regions`: R and the ground truth at the model size (one rule, one resize);
* :mod:`.curves`: several causal curves of one episode with progress;
* :mod:`.results`: the typed, numpy-only results (they carry the parameters that produced them).

Qt-free, and torch-free until a step runs: :class:`EpisodeRun` (torch) is imported on first use,
so the window, which imports this package for its names and results, paints before torch is loaded.
The app's jobs, the playback tab, and the ``predict``/``explain``/``causal``/``report``/
``evaluate`` commands call this and repeat none of it.
"""
from .models import DeviceInfo, LoadedModel, ModelCache, ModelSpec, device_info, load_model
from .regions import (
    BRUSHED,
    EPISODE,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    GROUND_TRUTH,
    PREDICTION,
    REGION_SOURCES,
    Region,
    region_title,
)
from .results import ExplanationResult, PredictionResult, input_key

__all__ = [
    "BRUSHED", "EPISODE", "FALSE_NEGATIVE", "FALSE_POSITIVE", "GROUND_TRUTH", "PREDICTION", "REGION_SOURCES",
    "DeviceInfo", "EpisodeRun",
    "ExplanationResult", "LoadedModel", "ModelCache", "ModelSpec", "PredictionResult", "Region", "device_info",
    "input_key", "load_model", "region_title",
]


def __getattr__(name: str):
    if name == "EpisodeRun":  # torch: imported when first asked for (see the module docstring)
        from .run import EpisodeRun

        return EpisodeRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
