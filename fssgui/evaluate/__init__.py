"""Batch evaluation (``fssgui evaluate``): fixed episode lists, causal metrics for many methods,
resumable per-episode results, torch.distributed sharding and the paper-style table. No Qt."""
from .episodes import EpisodeRow, EpisodeSource, read_episode_csv  # noqa: F401
from .metrics import MetricSpec, parse_metrics  # noqa: F401
from .runner import EvaluationConfig, EvaluationSummary, run_evaluation  # noqa: F401
