"""Batch evaluation: explain every fixed episode with every method and run the causal metrics.

Per episode (on this rank's device) the steps are those of every other front-end: the pipeline's
:class:`~fssgui.pipeline.EpisodeRun` (one forward, with matching scores when a method needs
them; R from its source, default the prediction; each method explained once; the one causal
runner with the metric's settings and, for the miou measure, the ground truth with label-255
pixels set to the ignore index). The prediction and R are computed once per episode and shared
by the methods; the attribution once per (episode, method) and shared by the metrics.

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
from .table import build_table, results_csv, table_markdown, write_table

REGIONS = ("prediction", "ground-truth")
Log = Callable[[str], None]


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
    batch_size: int = 8
    device: Optional[str] = None
    progress: bool = True
    dist_backend: str = "gloo"
    dist_timeout_hours: float = 72.0


@dataclass
class EvaluationSummary:
    out: Path
    rows: list[dict]
    table_files: list[Path]
    markdown: str
    duplicates: int = 0
    computed: int = 0  # (episode, method) results computed by this run on rank 0's view
    settings: dict = field(default_factory=dict)


@dataclass
class _Setup:
    source: EpisodeSource
    rows: list[EpisodeRow]
    settings: dict
    digest: str
    info: dict
    done: set


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
        rows = source.generate(count, shots, config.seed, fold)
        return rows, {"episodes_from": f"drawn: {count} episodes, seed {config.seed}, fold {fold}, val split"}
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


def _setup(config: EvaluationConfig) -> _Setup:
    from ..explain.registry import get_explainer

    if config.region not in REGIONS:
        raise ExplainError(f"unknown region {config.region!r} (use {' or '.join(REGIONS)})")
    if config.batch_size < 1:
        raise ExplainError(f"--batch-size must be at least 1, got {config.batch_size}")
    if not config.methods:
        raise ExplainError("no method given (--methods)")
    if len(set(config.methods)) != len(config.methods):
        raise ExplainError(f"a method is given twice in --methods {','.join(config.methods)}")
    for method in config.methods:
        get_explainer(method, **explainer_params(method, config, 0))  # unknown names/params fail here
    source = EpisodeSource(config.data, config.layout, use_ignore=config.use_ignore)
    rows, info = _read_episodes(config, source)
    source.check(rows)
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
        "metrics": [m.as_dict() for m in config.metrics],
        "region": config.region,
        "affex_size": config.size,
        "affex_mode": config.mode,
        "ignore_label_255": config.use_ignore,
    }
    digest = store.settings_hash(settings)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise store.ResultsError(f"{out}: exists and is not a folder")
    store.check_settings_file(out, settings, digest)
    done = {store.row_key(r) for r in store.read_all_rows(out, digest)}
    info.update({
        "data_root": str(Path(config.data).resolve()),
        "checkpoint": None if config.checkpoint is None else str(Path(config.checkpoint).resolve()),
        "excluded_from_hash": "methods, device, batch size, world size (they do not change the numbers "
                              "beyond floating-point noise)",
    })
    return _Setup(source, rows, settings, digest, info, done)


# --------------------------------------------------------------------------------- one episode
def evaluate_episode(
    loaded_model,
    loaded: LoadedEpisode,
    methods: Sequence[str],
    config: EvaluationConfig,
    digest: str,
    *,
    rank: int = 0,
    on_row: Optional[Callable[[dict], None]] = None,
) -> list[dict]:
    """Rows for ``methods`` on one episode (the pipeline's :class:`EpisodeRun`: one forward, R,
    each method explained once and its metrics run on that map); ``on_row(row)`` is called as each
    method finishes. ``loaded_model``: a :class:`fssgui.pipeline.LoadedModel`."""
    from ..explain.registry import get_explainer
    from ..metrics.causal import mask_iou
    from ..pipeline import EpisodeRun

    row_base = {
        "settings": digest,
        "episode": loaded.row.index,
        "class": loaded.row.class_name,
        "query": loaded.row.query,
        "supports": list(loaded.row.supports),
        "rank": rank,
    }
    seed = explainer_seed(config.seed, loaded.row.index)
    run = EpisodeRun(loaded_model, loaded.episode, ignore=loaded.ignore)
    explainers = {m: get_explainer(m, **explainer_params(m, config, seed)) for m in methods}
    prediction = run.prediction(with_scores=any(e.needs_matching for e in explainers.values()))
    prediction_iou = None
    if loaded.episode.query_mask is not None:
        gt, _ = run.ground_truth()
        prediction_iou = float(mask_iou(prediction.mask(), gt)[0])
    episode_error = region = None
    try:
        region = run.region(config.region)
    except FssguiError as exc:
        episode_error = f"region R: {exc}"
    rows = []
    for method, explainer in explainers.items():
        method_started = time.perf_counter()
        values = {spec.name: math.nan for spec in config.metrics}
        errors = []
        if episode_error is not None:
            errors.append(episode_error)
        else:
            try:
                explanation = run.explain(explainer, region=region)
            except FssguiError as exc:
                errors.append(f"{method}: {exc}")
                explanation = None
            if explanation is not None:
                for spec in config.metrics:
                    try:
                        curve = run.causal_metric(explanation, region, spec.metric, spec.measure, steps=spec.steps,
                                                  percentage=spec.percentage, batch_size=config.batch_size)
                        values[spec.name] = float(curve.value)
                    except FssguiError as exc:
                        errors.append(f"{spec.name}: {exc}")
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
                            rank: int, message: str) -> list[dict]:
    """Failed rows for an episode whose files cannot be read (all values NaN)."""
    return [{
        "settings": digest, "episode": row.index, "class": row.class_name, "query": row.query,
        "supports": list(row.supports), "rank": rank, "method": method,
        "values": {spec.name: math.nan for spec in config.metrics}, "prediction_iou": None,
        "explainer_seed": None, "error": f"episode data: {message}", "seconds": 0.0,
    } for method in methods]


# ------------------------------------------------------------------------------------ the run
def run_evaluation(config: EvaluationConfig, log: Log = _stderr) -> Optional[EvaluationSummary]:
    """Run (or resume) the evaluation; under torchrun every rank calls this.

    Returns the summary on rank 0 and None on the other ranks."""
    ctx = init_from_env(config.dist_backend, config.dist_timeout_hours)
    try:
        return _run(config, ctx, log)
    finally:
        ctx.close()


def _run(config: EvaluationConfig, ctx: DistContext, log: Log) -> Optional[EvaluationSummary]:
    from ..explain.registry import get_explainer
    from ..pipeline import ModelSpec, load_model
    from ..pipeline.run import explainer_unavailable

    prefix = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.distributed else ""

    def say(message: str, everywhere: bool = False) -> None:
        if ctx.is_main or everywhere:
            log(prefix + message)

    error: Optional[BaseException] = None
    setup = None
    try:
        setup = _setup(config)
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
    pending = [(row, [m for m in config.methods if (row.index, m) not in setup.done]) for row in mine]
    pending = [(row, methods) for row, methods in pending if methods]
    total = len(setup.rows) * len(config.methods)
    done_count = sum(1 for row in setup.rows for m in config.methods if (row.index, m) in setup.done)

    error = None
    model = device = None
    try:
        device = rank_device(config.device, ctx)
        if config.device is None and device.type == "cpu" and ctx.is_main:
            log(prefix + "CUDA is not available: running on the CPU")
        if pending:  # a rank with nothing left to do (a finished run) builds no model
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
        store.write_settings_file(out, setup.settings, setup.digest, info)
    ctx.barrier()
    say(f"{len(setup.rows)} episode(s) x {len(config.methods)} method(s) = {total} result(s); "
        f"{done_count} already in {out}; {config.model} on {device}"
        + (f"; {ctx.world_size} ranks" if ctx.distributed else ""))

    computed = 0
    with store.ResultWriter(store.rank_file(out, ctx.rank)) as writer:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), initial=len(mine) - len(pending), unit="episode",
                   desc=f"evaluate{' rank 0/' + str(ctx.world_size) if ctx.distributed else ''}",
                   disable=not (config.progress and ctx.is_main), file=sys.stderr, dynamic_ncols=True)
        try:
            for row, methods in pending:
                try:
                    loaded = setup.source.load(row)
                except FssguiError as exc:  # an unreadable image: recorded, the run goes on
                    rows = unreadable_episode_rows(row, methods, config, setup.digest, ctx.rank, str(exc))
                    for result in rows:
                        writer.append(result)
                else:
                    rows = evaluate_episode(model, loaded, methods, config, setup.digest,
                                            rank=ctx.rank, on_row=writer.append)
                computed += len(rows)
                failed = [r for r in rows if r["error"]]
                if failed:
                    bar.write(f"fssgui: {prefix}episode {row.index}: {failed[0]['error']}", file=sys.stderr)
                bar.update(1)
        finally:
            bar.close()
    say(f"finished this rank's share ({computed} new result(s))", everywhere=ctx.distributed)

    ctx.barrier()
    own_rows = store.read_rows(store.rank_file(out, ctx.rank), setup.digest)
    gathered = ctx.all_gather(own_rows)
    if not ctx.is_main:
        return None
    episodes = [row.index for row in setup.rows]
    # rank 0 reads every file it can see; the other ranks' rows also come over the process group,
    # so the merge works without a shared file system (rows seen twice are dropped as duplicates)
    merged, duplicates = store.merge_rows([store.read_all_rows(out, setup.digest), *gathered[1:]],
                                          episodes, config.methods)
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged)
    write_bytes_atomic(out / "results.jsonl", lines.encode("utf-8"))
    write_bytes_atomic(out / "results.csv", results_csv(merged, config.metrics).encode("utf-8"))
    title = (f"{config.model} on {config.layout} ({Path(config.data).name}), "
             f"{setup.settings['shots']}-shot, {len(setup.rows)} episodes, R = {config.region}")
    table = build_table(merged, config.methods, config.metrics, title=title)
    files = write_table(out, table, setup.settings)
    failed = sum(table.failed.values())
    if failed:
        say(f"{failed} result(s) have no value (see the error column of {out / 'results.csv'})")
    return EvaluationSummary(out, merged, files, table_markdown(table), duplicates, computed, setup.settings)
