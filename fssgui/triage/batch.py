"""The worst N episodes of a dataset explained into one report (``fssgui triage`` and the dataset
panel's "Explain the worst N").

1. The sweep (:func:`~fssgui.triage.sweep.run_sweep`, ``fssgui evaluate``'s runner without methods)
   predicts every episode the results folder does not hold yet: a folder of ``fssgui evaluate``
   (or of an earlier sweep) is reused as it is.
2. The episodes are ranked by a failure statistic (a low IoU by default) and the N worst are run
   by the same runner with the method and the folder's metrics (``method_episodes``): their rows
   join the folder, and the explanations it computes (maps and curves) go to the report.
3. The worst episodes whose rows the folder already held are run once more through the runner's
   per-episode step (:func:`~fssgui.evaluate.runner.evaluate_episode`) for their maps and curves;
   the report's numbers stay the folder's (a recomputed value that differs is noted).
4. :func:`~fssgui.triage.report.write_triage_report` writes the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from ..errors import ExplainError, FssguiError
from ..evaluate.predictions import column
from ..evaluate.runner import evaluate_episode, prepare_evaluation
from ..pipeline import ModelCache
from .report import ReportPage, TriageReportFiles, write_triage_report
from .results import rank
from .sweep import SweepRequest, evaluation_config, run_sweep

Progress = Optional[Callable[[float, str], None]]


@dataclass(frozen=True)
class BatchRequest:
    """Explain the ``worst`` episodes of ``sweep`` (its ``method`` and ``metrics``), ranked by the
    statistic ``rank_by``, into the report folder ``out``."""

    sweep: SweepRequest
    worst: int
    out: str
    rank_by: str = "iou"
    pdf: bool = True


@dataclass
class BatchResult:
    files: TriageReportFiles
    episodes: list[int]  # worst first
    computed: list[int]  # episodes whose method rows this run added to the results folder


def _phase(progress: Progress, start: float, width: float, label: str) -> Progress:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + width * fraction, f"{label}: {message}")


def explain_worst(request: BatchRequest, *, load_model: Optional[Callable] = None, progress: Progress = None,
                  cancelled: Optional[Callable[[], bool]] = None,
                  log: Optional[Callable[[str], None]] = None) -> BatchResult:
    """See the module docstring. ``load_model(spec)``: the app's model cache (default: one cache
    for the whole batch, so the model is built once)."""
    import torch

    from .. import report as R
    from ..models.registry import get_entry
    from ..pipeline.models import device_description

    sweep = request.sweep
    if not sweep.method:
        raise ExplainError("no method to explain the worst episodes with")
    if request.worst < 1:
        raise ExplainError(f"--worst must be at least 1, got {request.worst}")
    column(request.rank_by)  # an unknown statistic fails before any work
    log = log or (lambda _m: None)
    if load_model is None:
        cache = ModelCache()
        load_model = lambda spec: cache.get(spec, log)  # noqa: E731
    prepare_evaluation(evaluation_config(sweep))  # the folder must take the method's rows: fail now, not later

    results = run_sweep(replace(sweep, method=None, metrics=()), load_model=load_model, cancelled=cancelled,
                        log=log, progress=_phase(progress, 0.0, 0.3, "sweep"))
    worst = rank(results.records, request.rank_by, request.worst)
    if not worst:
        raise ExplainError(f"{results.folder}: no predicted episode has a {request.rank_by} value to rank")
    log(f"the {len(worst)} worst episode(s) by {request.rank_by}: {', '.join(str(r.episode) for r in worst)}")

    explained: dict[int, tuple] = {}

    def keep(loaded, method, explanation, curves) -> None:
        explained[loaded.row.index] = (loaded, explanation, curves)

    chosen = tuple(r.episode for r in worst)
    results = run_sweep(sweep, load_model=load_model, cancelled=cancelled, log=log, method_episodes=chosen,
                        on_explained=keep, progress=_phase(progress, 0.3, 0.5, f"explaining the {len(worst)} worst"))
    computed = sorted(explained)
    stored = [r for r in worst if r.episode not in explained]
    if stored:
        config = evaluation_config(sweep)
        setup = prepare_evaluation(config)
        model = load_model(sweep.spec)
        for i, record in enumerate(stored):
            if progress is not None:
                progress(0.8 + 0.1 * i / len(stored), f"maps of episode {record.episode} (results already stored)")
            try:
                loaded = setup.source.load(record.row)
            except FssguiError as exc:
                log(f"episode {record.episode}: {exc}")
                continue
            evaluate_episode(model, loaded, [sweep.method], config, setup.digest, on_explained=keep,
                             cancelled=cancelled)

    pages = []
    for record in (results.record(r.episode) for r in worst):
        if record.episode not in explained:  # R or the explanation failed: the page says why
            pages.append(ReportPage(record, None, sweep.method))
            continue
        loaded, explanation, curves = explained[record.episode]
        notes = _value_notes(record, sweep.method, curves)
        if loaded.ignore is not None:
            notes.append("The front table leaves the dataset's label-255 pixels out of the IoU; this page's "
                         "prediction IoU counts them as background.")
        device = torch.device(explanation.device)
        inputs = R.ReportInputs(
            episode=loaded.episode,
            episode_path=f"{Path(sweep.dataset.root).name} episode {record.episode} (query {record.row.query})",
            model_name=explanation.model, model_description=get_entry(explanation.model).description or "",
            input_size=explanation.prediction.input_size, device=str(device),
            device_description=device_description(device),
            prediction=explanation.prediction.mask, region=explanation.region, region_source=explanation.region_source,
            methods=[R.MethodResult(sweep.method, explanation.maps, explanation.signed, explanation.params,
                                    explanation.seconds, explanation.level_weights, explanation.level_names)],
            curves=list(curves.values()), checkpoint=sweep.spec.checkpoint,
            measure=next(iter(curves.values())).measure if curves else "confidence",
        )
        pages.append(ReportPage(record, inputs, sweep.method, notes))
    if progress is not None:
        progress(0.9, "writing the report")
    title_column = column(request.rank_by)
    files = write_triage_report(
        request.out, pages, title=f"fssgui triage: {sweep.spec.name} on {Path(sweep.dataset.root).name}",
        setup={"data": str(Path(sweep.dataset.root).resolve()), "layout": sweep.dataset.layout,
               "model": sweep.spec.name, "checkpoint": sweep.spec.checkpoint or "none (built-in weights)",
               "checkpoint SHA-256": results.settings.get("checkpoint_sha256"),
               "episodes": len(results.records), "shots": results.settings.get("shots"),
               "results folder": str(Path(sweep.out).resolve())},
        ranking={"key": request.rank_by, "title": title_column.title, "method": sweep.method,
                 "region": sweep.region, "count": len(pages),
                 "order": "lowest first" if title_column.worse_when_low else "highest first"},
        classes=results.classes, metric_names=[m.name for m in sweep.metrics], pdf=request.pdf)
    if progress is not None:
        progress(1.0, f"report written: {files.html}")
    return BatchResult(files, [p.record.episode for p in pages], computed)


def _value_notes(record, method: str, curves: dict) -> list[str]:
    """A recomputed curve whose value differs from the stored one (it should not: same seed)."""
    notes = []
    stored = record.metrics.get(method, {})
    for name, curve in curves.items():
        value = stored.get(name)
        if value is not None and curve.value is not None and not math.isclose(value, curve.value, abs_tol=1e-6):
            notes.append(f"{name}: the curve shown was recomputed ({curve.value:.6f}); the results folder holds "
                         f"{value:.6f}, the value in the table.")
    return notes
