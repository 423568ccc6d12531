"""Batch evaluation: explain every fixed episode with every method and run the causal metrics.

Per episode (on this rank's device) the steps are those of every other front-end: the pipeline's
:class:`~fssgui.pipeline.EpisodeRun` (one forward, with matching scores when a method needs
them; R from its source, default the prediction; each method explained once; the one causal
runner with the metric's settings and, for the miou measure, the ground truth with label-255
pixels set to the ignore index). The prediction and R are computed once per episode and shared
by the methods; the attribution once per (episode, method) and shared by the metrics.

Every episode also gets a prediction row (:mod:`fssgui.evaluate.predictions`: IoU, FB-IoU,
foreground shares, errors, confidence, a thumbnail of the mask) from the same
:meth:`EpisodeRun.predicted`, once per episode whatever the methods. With no methods the run is a
prediction sweep (the triage panel's and ``fssgui triage``'s), with the same store, resume and
torchrun sharding; ``method_episodes`` limits the methods to some episodes (the worst N).

Reproducibility: explainers with a ``seed`` parameter get ``explainer_seed(--seed, episode)``
(stored in each row, so ``fssgui causal --seed`` reproduces the row) and the global torch /
numpy / random generators are reseeded with it before every explanation, so a result does not
depend on which rank ran the episode or in which order.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .. import __version__
from ..data.datasets import DatasetError
from ..errors import ExplainError, FssguiError
from ..io import sha256_file, write_bytes_atomic
from . import store
from .distributed import DistContext, DistributedError, init_from_env, rank_device, shard
from .episodes import (
    EpisodeRow,
    EpisodeSource,
    LoadedEpisode,
    episodes_csv_text,
    episodes_digest,
    filter_fold,
    read_episode_csv,
)
from .metrics import MetricSpec
from .predictions import ClassSummary, class_summary, mask_thumbnail, prediction_stats
from .table import build_table, results_csv, table_markdown, write_table

#: R of the explanations: the prediction, the ground truth or the prediction's largest error
REGIONS = ("prediction", "ground-truth", "false-positive", "false-negative")
Log = Callable[[str], None]
#: between episodes, the host memory that freed tensors left with the C allocator goes back to the
#: system at most this often, and once when the run ends (:func:`~fssgui.pipeline.models.release_freed_memory`;
#: after every episode it would cost a prediction sweep 15-25 % more CPU time)
RELEASE_MEMORY_EVERY_S = 30.0


def _stderr(message: str) -> None:
    print(f"fssgui: {message}", file=sys.stderr, flush=True)


@dataclass
class EvaluationConfig:
    model: str
    data: str
    layout: str
    episodes: str  # a CSV path, or a number of episodes to draw
    methods: list[str]
    metrics: list[MetricSpec]
    out: str
    checkpoint: Optional[str] = None
    fold: Optional[int] = None
    shots: Optional[int] = None
    seed: int = 0
    region: str = "prediction"
    size: Optional[int] = None  # AffEx explanation size E
    mode: Optional[str] = None  # AffEx mode
    use_ignore: bool = True
    batch_size: Optional[int] = None  # None: the device's choice (EpisodeRun.causal_batch_size)
    device: Optional[str] = None
    progress: bool = True
    dist_backend: str = "gloo"
    dist_timeout_hours: float = 72.0
    split: str = "val"  # the split episodes are drawn from (--episodes N)
    method_episodes: Optional[tuple[int, ...]] = None  # episodes the methods run on (None: all)


@dataclass
class RunHooks:
    """What an embedding front-end (the app's sweep job) plugs into a run.

    ``load_model(spec)``: the model (the app's resident model cache) instead of a fresh build;
    ``cancelled()``: checked before each episode and between the steps of its metrics;
    ``on_episode(done, total)``: once before the first episode, then after each episode of this
    rank's share (``done`` counts the episodes found finished too);
    ``on_explained(episode, method, explanation, curves)``: each explanation computed by this run,
    with its curves by metric name (a report's maps)."""

    load_model: Optional[Callable] = None
    cancelled: Optional[Callable[[], bool]] = None
    on_episode: Optional[Callable[[int, int], None]] = None
    on_explained: Optional[Callable] = None


@dataclass
class EvaluationSummary:
    out: Path
    rows: list[dict]
    table_files: list[Path]
    markdown: str
    duplicates: int = 0
    computed: int = 0  # (episode, method) results computed by this run on rank 0's view
    settings: dict = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)  # one prediction row per episode
    classes: Optional[ClassSummary] = None  # the per-class summary of the predictions


@dataclass
class EvaluationSetup:
    """A run's episodes and settings, checked against its folder (before any model is built)."""

    source: EpisodeSource
    rows: list[EpisodeRow]
    settings: dict  # the settings the folder holds (see store.folder_settings)
    digest: str  # their hash: the method rows' key
    prediction_digest: str  # the prediction rows' key
    info: dict
    done: set  # (episode, method) already in the folder
    predicted: set  # episodes with a prediction row in the folder


# ------------------------------------------------------------------------------------ helpers
def explainer_seed(seed: int, episode: int) -> int:
    """The explainer seed of one episode: independent of rank, order and the other episodes."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0] & 0x7FFFFFFF)


def explainer_params(method: str, config: EvaluationConfig, seed: int) -> dict:
    """The ``get_explainer`` parameters ``fssgui causal`` would get from the same options."""
    from ..explain.registry import AFFEX_NAMES, explainer_parameters

    params: dict = {}
    if method in AFFEX_NAMES:
        if config.size is not None:
            params["size"] = config.size
        if config.mode is not None:
            params["mode"] = config.mode
    if "seed" in explainer_parameters(method):
        params["seed"] = seed
    return params


def _read_episodes(config: EvaluationConfig, source: EpisodeSource) -> tuple[list[EpisodeRow], dict]:
    text = str(config.episodes).strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise DatasetError(f"--episodes {count}: need at least one episode")
        shots = 1 if config.shots is None else config.shots
        if shots < 1:
            raise DatasetError(f"--shots must be at least 1, got {shots}")
        fold = -1 if config.fold is None else config.fold
        rows = source.generate(count, shots, config.seed, fold, config.split)
        return rows, {"episodes_from": f"drawn: {count} episodes, seed {config.seed}, fold {fold}, "
                                       f"{config.split} split"}
    path = Path(text)
    rows = read_episode_csv(path, config.layout)
    shots = rows[0].shots
    if config.shots is not None and config.shots != shots:
        raise DatasetError(f"{path}: the episodes have {shots} shot(s) but --shots is {config.shots}")
    kept = filter_fold(rows, source, config.fold)
    if not kept:
        raise DatasetError(f"{path}: no episode of the CSV has a class of fold {config.fold}")
    return kept, {"episodes_from": f"{path.resolve()} ({len(kept)} of {len(rows)} rows)"}


def _checkpoint_identity(checkpoint: Optional[str]) -> Optional[str]:
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if not path.is_file():
        from ..errors import CheckpointError

        raise CheckpointError(f"{path}: checkpoint file not found")
    return sha256_file(path)


def prepare_evaluation(config: EvaluationConfig) -> EvaluationSetup:
    """Check the options, read the episode list, resolve its files and check the output folder
    (what a run does before it builds a model; ``fssgui triage`` and the app call it to know what
    a folder holds)."""
    from ..explain.registry import get_explainer

    if config.region not in REGIONS:
        raise ExplainError(f"unknown region {config.region!r} (use {' or '.join(REGIONS)})")
    if config.batch_size is not None and config.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {config.batch_size}")
    if len(set(config.methods)) != len(config.methods):
        raise ExplainError(f"a method is given twice in --methods {','.join(config.methods)}")
    if config.methods and not config.metrics:
        raise ExplainError("no metric given (--metrics) for the methods")
    for method in config.methods:
        get_explainer(method, **explainer_params(method, config, 0))  # unknown names/params fail here
    source = EpisodeSource(config.data, config.layout, use_ignore=config.use_ignore, split=config.split)
    rows, info = _read_episodes(config, source)
    source.check(rows)
    sweep = not config.methods
    settings = {
        "fssgui_version": __version__,
        "model": config.model,
        "checkpoint_sha256": _checkpoint_identity(config.checkpoint),
        "layout": config.layout,
        "fold": config.fold,
        "shots": rows[0].shots,
        "episode_count": len(rows),
        "episodes_sha256": episodes_digest(rows),
        "seed": config.seed,
        # a sweep (no methods) holds no metric, region or explainer setting
        "metrics": [] if sweep else [m.as_dict() for m in config.metrics],
        "region": "prediction" if sweep else config.region,
        "affex_size": None if sweep else config.size,
        "affex_mode": None if sweep else config.mode,
        "ignore_label_255": config.use_ignore,
    }
    digest = store.settings_hash(settings)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise store.ResultsError(f"{out}: exists and is not a folder")
    settings, digest = store.folder_settings(out, settings, digest, predictions_run=sweep)
    prediction_digest = store.prediction_settings_hash(settings)
    done = set() if sweep else {store.row_key(r) for r in store.read_all_rows(out, digest)}
    predicted = {int(r["episode"]) for r in store.read_all_rows(out, prediction_digest, store.PREDICTION_ROWS)}
    info.update({
        "data_root": str(Path(config.data).resolve()),
        "checkpoint": None if config.checkpoint is None else str(Path(config.checkpoint).resolve()),
        "excluded_from_hash": "methods, device, batch size, world size (they do not change the numbers "
                              "beyond floating-point noise)",
    })
    return EvaluationSetup(source, rows, settings, digest, prediction_digest, info, done, predicted)


# --------------------------------------------------------------------------------- one episode
def _row_base(row: EpisodeRow, digest: str, rank: int) -> dict:
    return {"settings": digest, "episode": row.index, "class": row.class_name, "query": row.query,
            "supports": list(row.supports), "rank": rank}


def prediction_row(run, loaded: LoadedEpisode, digest: str, rank: int = 0) -> dict:
    """The prediction row of one episode (see :mod:`fssgui.evaluate.predictions`) from the run's
    official prediction at the query's size."""
    result = run.predicted()
    episode = loaded.episode
    stats = prediction_stats(result.mask, result.probability, episode.query_mask, loaded.ignore,
                             [s.mask for s in episode.supports])
    row = _row_base(loaded.row, digest, rank)
    row.update(stats)
    row.update({"method": store.PREDICTION_METHOD, "query_size": list(episode.query_size),
                "thumbnail": mask_thumbnail(result.mask), "error": None, "seconds": round(result.seconds, 3)})
    return row


def evaluate_episode(
    loaded_model,
    loaded: LoadedEpisode,
    methods: Sequence[str],
    config: EvaluationConfig,
    digest: str,
    *,
    rank: int = 0,
    on_row: Optional[Callable[[dict], None]] = None,
    prediction_digest: Optional[str] = None,
    on_explained: Optional[Callable] = None,
    cancelled: Optional[Callable[[], bool]] = None,
) -> list[dict]:
    """Rows for ``methods`` on one episode (the pipeline's :class:`EpisodeRun`: one forward, R,
    each method explained once and its metrics run on that map); ``on_row(row)`` is called as each
    method finishes. ``loaded_model``: a :class:`fssgui.pipeline.LoadedModel`.

    With ``prediction_digest`` the episode's prediction row (keyed by that hash) comes first.
    ``on_explained(loaded, method, explanation, curves)`` sees each explanation and its curves
    (``{metric name: Curve}``); ``cancelled()`` is checked between the steps."""
    from ..explain.registry import get_explainer
    from ..metrics.causal import mask_iou
    from ..pipeline import EpisodeRun

    row_base = _row_base(loaded.row, digest, rank)
    seed = explainer_seed(config.seed, loaded.row.index)
    run = EpisodeRun(loaded_model, loaded.episode, ignore=loaded.ignore)
    explainers = {m: get_explainer(m, **explainer_params(m, config, seed)) for m in methods}
    prediction = run.prediction(with_scores=any(e.needs_matching for e in explainers.values()))
    rows = []
    if prediction_digest is not None:
        rows.append(prediction_row(run, loaded, prediction_digest, rank))
        if on_row is not None:
            on_row(rows[-1])
    if not explainers:
        return rows
    prediction_iou = None
    if loaded.episode.query_mask is not None:
        gt, _ = run.ground_truth()
        prediction_iou = float(mask_iou(prediction.mask(), gt)[0])
    episode_error = region = None
    try:
        region = run.region(config.region)
    except FssguiError as exc:
        episode_error = f"region R: {exc}"
    for method, explainer in explainers.items():
        method_started = time.perf_counter()
        values = {spec.name: math.nan for spec in config.metrics}
        errors = []
        curves = {}
        if episode_error is not None:
            errors.append(episode_error)
        else:
            try:
                explanation = run.explain(explainer, region=region, cancelled=cancelled)
            except FssguiError as exc:
                errors.append(f"{method}: {exc}")
                explanation = None
            if explanation is not None:
                for spec in config.metrics:
                    try:
                        curve = run.causal_metric(explanation, region, spec.metric, spec.measure, steps=spec.steps,
                                                  percentage=spec.percentage, batch_size=config.batch_size,
                                                  cancelled=cancelled)
                        values[spec.name] = float(curve.value)
                        curves[spec.name] = curve
                    except FssguiError as exc:
                        errors.append(f"{spec.name}: {exc}")
                if on_explained is not None:
                    on_explained(loaded, method, explanation, curves)
        row = dict(row_base)
        row.update({
            "method": method,
            "values": values,
            "prediction_iou": prediction_iou,
            "explainer_seed": seed if "seed" in explainer_params(method, config, seed) else None,
            "error": "; ".join(errors) if errors else None,
            "seconds": round(time.perf_counter() - method_started, 3),
        })
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def unreadable_episode_rows(row: EpisodeRow, methods: Sequence[str], config: EvaluationConfig, digest: str,
                            rank: int, message: str, prediction_digest: Optional[str] = None) -> list[dict]:
    """Failed rows for an episode whose files cannot be read (all values NaN); with
    ``prediction_digest`` a failed prediction row first."""
    error = f"episode data: {message}"
    rows = []
    if prediction_digest is not None:
        rows.append(dict(_row_base(row, prediction_digest, rank), method=store.PREDICTION_METHOD, values={},
                         error=error, seconds=0.0))
    return rows + [dict(
        _row_base(row, digest, rank), method=method, values={spec.name: math.nan for spec in config.metrics},
        prediction_iou=None, explainer_seed=None, error=error, seconds=0.0,
    ) for method in methods]


# ------------------------------------------------------------------------------------ the run
def run_evaluation(config: EvaluationConfig, log: Log = _stderr,
                   hooks: Optional[RunHooks] = None) -> Optional[EvaluationSummary]:
    """Run (or resume) the evaluation; under torchrun every rank calls this.

    Returns the summary on rank 0 and None on the other ranks."""
    ctx = init_from_env(config.dist_backend, config.dist_timeout_hours)
    try:
        return _run(config, ctx, log, hooks or RunHooks())
    finally:
        ctx.close()


def _pending(setup: EvaluationSetup, rows: Sequence[EpisodeRow], config: EvaluationConfig):
    """``(row, methods to run, prediction row needed)`` of the rows with something left to do."""
    wanted = None if config.method_episodes is None else set(config.method_episodes)
    pending = []
    for row in rows:
        methods = [m for m in config.methods
                   if (row.index, m) not in setup.done and (wanted is None or row.index in wanted)]
        needs_prediction = row.index not in setup.predicted
        if methods or needs_prediction:
            pending.append((row, methods, needs_prediction))
    return pending


def _run(config: EvaluationConfig, ctx: DistContext, log: Log, hooks: RunHooks) -> Optional[EvaluationSummary]:
    from ..errors import Cancelled
    from ..explain.registry import get_explainer
    from ..pipeline import ModelSpec, load_model
    from ..pipeline.models import release_freed_memory
    from ..pipeline.run import explainer_unavailable

    prefix = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""

    def say(message: str, everywhere: bool = False) -> None:
        if ctx.is_main or everywhere:
            log(prefix + message)

    error: Optional[BaseException] = None
    setup = None
    try:
        setup = prepare_evaluation(config)
    except FssguiError as exc:
        error = exc
    ctx.agree(error)
    assert setup is not None
    digests = ctx.all_gather(setup.digest)
    if len(set(digests)) != 1:
        raise DistributedError("the ranks disagree on the settings or the episode list (hashes "
                               + ", ".join(d[:12] for d in digests) + "); do all nodes see the same data?")
    out = Path(config.out)
    mine = shard(setup.rows, ctx.rank, ctx.world_size)
    pending = _pending(setup, mine, config)
    wanted = setup.rows if config.method_episodes is None else [
        r for r in setup.rows if r.index in set(config.method_episodes)]
    total = len(wanted) * len(config.methods)
    done_count = sum(1 for row in wanted for m in config.methods if (row.index, m) in setup.done)

    error = None
    model = device = None
    try:
        if hooks.load_model is None:
            device = rank_device(config.device, ctx)
            if config.device is None and device.type == "cpu" and ctx.is_main:
                log(prefix + "CUDA is not available: running on the CPU")
        if pending:  # a rank with nothing left to do (a finished run) builds no model
            if hooks.load_model is not None:
                model = hooks.load_model(ModelSpec(config.model, config.checkpoint, config.device))
                device = model.device
            else:
                model = load_model(ModelSpec(config.model, config.checkpoint, str(device)), log=lambda m: say(m))
            for method in config.methods:
                reason = explainer_unavailable(get_explainer(method, **explainer_params(method, config, 0)), model)
                if reason:
                    raise ExplainError(reason)
    except FssguiError as exc:
        error = exc
    ctx.agree(error)
    # the output folder is written only once the model loaded: a bad checkpoint leaves no folder
    # (whose settings would then refuse the rerun with a good one)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / "episodes.csv", episodes_csv_text(setup.rows).encode("utf-8"))
        info = dict(setup.info, world_size=ctx.world_size, methods=list(config.methods))
        stored = store.read_settings_file(out)
        if stored is not None and not config.methods and stored["hash"] == setup.digest:
            info["methods"] = stored.get("info", {}).get("methods", [])  # a sweep keeps the folder's methods
        store.write_settings_file(out, setup.settings, setup.digest, info)
    ctx.barrier()
    predicted = sum(1 for row in setup.rows if row.index in setup.predicted)
    say(f"{len(setup.rows)} episode(s) x {len(config.methods)} method(s) = {total} result(s); "
        f"{done_count} already in {out}" + (f", {predicted} episode(s) already predicted" if predicted else "")
        + f"; {config.model} on {device or 'no device (nothing to compute)'}"
        + (f"; {ctx.world_size} ranks" if ctx.distributed else ""))

    computed = 0
    with store.ResultWriter(store.rank_file(out, ctx.rank)) as writer, \
            store.ResultWriter(store.prediction_rank_file(out, ctx.rank)) as prediction_writer:
        from tqdm import tqdm

        def write(row: dict) -> None:
            (prediction_writer if row["method"] == store.PREDICTION_METHOD else writer).append(row)

        finished = len(mine) - len(pending)
        bar = tqdm(total=len(mine), initial=finished, unit="episode",
                   desc=f"evaluate{' rank 0/' + str(ctx.world_size) if ctx.distributed else ''}",
                   disable=not (config.progress and ctx.is_main), file=sys.stderr, dynamic_ncols=True)
        if hooks.on_episode is not None:
            hooks.on_episode(finished, len(mine))
        try:
            for row, methods, needs_prediction in pending:
                if hooks.cancelled is not None and hooks.cancelled():
                    raise Cancelled()
                prediction_digest = setup.prediction_digest if needs_prediction else None
                try:
                    loaded = setup.source.load(row)
                except FssguiError as exc:  # an unreadable image: recorded, the run goes on
                    rows = unreadable_episode_rows(row, methods, config, setup.digest, ctx.rank, str(exc),
                                                   prediction_digest)
                    for result in rows:
                        write(result)
                else:
                    rows = evaluate_episode(model, loaded, methods, config, setup.digest, rank=ctx.rank,
                                            on_row=write, prediction_digest=prediction_digest,
                                            on_explained=hooks.on_explained, cancelled=hooks.cancelled)
                computed += sum(1 for r in rows if r["method"] != store.PREDICTION_METHOD)
                failed = [r for r in rows if r["error"]]
                if failed:
                    bar.write(f"fssgui: {prefix}episode {row.index}: {failed[0]['error']}", file=sys.stderr)
                bar.update(1)
                finished += 1
                release_freed_memory(at_most_every=RELEASE_MEMORY_EVERY_S)
                if hooks.on_episode is not None:
                    hooks.on_episode(finished, len(mine))
        finally:
            bar.close()
            release_freed_memory()
    say(f"finished this rank's share ({computed} new result(s))", everywhere=ctx.distributed)

    ctx.barrier()
    own = (store.read_rows(store.rank_file(out, ctx.rank), setup.digest),
           store.read_rows(store.prediction_rank_file(out, ctx.rank), setup.prediction_digest))
    gathered = ctx.all_gather(own)
    if not ctx.is_main:
        return None
    return _write_outputs(config, setup, out, gathered[1:], computed, say)


def _write_outputs(config: EvaluationConfig, setup: EvaluationSetup, out: Path, others: list, computed: int,
                   say: Callable[[str], None]) -> EvaluationSummary:
    """Rank 0: merge every row, write the results, the predictions and their tables."""
    from .predictions import predictions_csv, summary_json, summary_markdown

    episodes = [row.index for row in setup.rows]
    # rank 0 reads every file it can see; the other ranks' rows also come over the process group,
    # so the merge works without a shared file system (rows seen twice are dropped as duplicates)
    predictions, _ = store.merge_rows(
        [store.read_all_rows(out, setup.prediction_digest, store.PREDICTION_ROWS), *(o[1] for o in others)],
        episodes, [store.PREDICTION_METHOD])
    write_bytes_atomic(out / "predictions.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n"
                                                          for r in predictions).encode("utf-8"))
    write_bytes_atomic(out / "predictions.csv", predictions_csv(predictions).encode("utf-8"))
    classes = class_summary(predictions)
    title = (f"{config.model} on {config.layout} ({Path(config.data).name}), {setup.settings['shots']}-shot, "
             f"{len(setup.rows)} episodes")
    miou_text = summary_markdown(classes, f"Prediction of {title}")
    write_bytes_atomic(out / "miou.md", miou_text.encode("utf-8"))
    write_bytes_atomic(out / "miou.json", (json.dumps(summary_json(classes), indent=2) + "\n").encode("utf-8"))
    files = [out / "miou.md", out / "miou.json"]
    merged, duplicates, markdown = [], 0, miou_text
    method_rows = [store.read_all_rows(out, setup.digest), *(o[0] for o in others)] if config.methods else []
    if config.methods and config.method_episodes is not None:
        present = {store.row_key(r) for rows in method_rows for r in rows}
        missing = sum(1 for e in episodes for m in config.methods if (e, m) not in present)
        if missing:
            say(f"the methods ran on {len(config.method_episodes)} chosen episode(s); {missing} result(s) of the "
                f"other episodes are missing, so {out / 'table.md'} is not written (fssgui evaluate completes it)")
            method_rows = []
    if method_rows:
        merged, duplicates = store.merge_rows(method_rows, episodes, config.methods)
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged)
        write_bytes_atomic(out / "results.jsonl", lines.encode("utf-8"))
        write_bytes_atomic(out / "results.csv", results_csv(merged, config.metrics).encode("utf-8"))
        table = build_table(merged, config.methods, config.metrics, title=f"{title}, R = {config.region}")
        files = write_table(out, table, setup.settings) + files
        failed = sum(table.failed.values())
        if failed:
            say(f"{failed} result(s) have no value (see the error column of {out / 'results.csv'})")
        markdown = table_markdown(table)
    failed = sum(1 for r in predictions if r.get("error"))
    if failed:
        say(f"{failed} episode(s) could not be predicted (see the error column of {out / 'predictions.csv'})")
    return EvaluationSummary(out, merged, files, markdown, duplicates, computed, setup.settings, predictions, classes)
