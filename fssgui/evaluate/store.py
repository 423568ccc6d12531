"""The results store of one evaluation folder: settings, per-rank JSONL files, merging.

Layout of ``OUT/``::

    settings.json          every setting of the run, its hash and the hash of its prediction
                           settings (a rerun with other settings is refused)
    episodes.csv           the fixed episode list (fssgui CSV layout)
    results/rank-NNN.jsonl one line per finished (episode, method), appended, flushed and
                           fsynced by the process of rank NNN
    results/predictions-rank-NNN.jsonl
                           one line per predicted episode (the prediction's statistics, see
                           :mod:`fssgui.evaluate.predictions`), written the same way
    results.jsonl          after the run: every row once, sorted by episode then method
    results.csv            the same as a flat table (raw values, not x100)
    table.md/.csv/.json    the paper-style table (see :mod:`fssgui.evaluate.table`)
    predictions.jsonl/.csv after the run: every episode's prediction row once, in episode order
    miou.md/.json          the per-class IoU, mIoU and FB-IoU of the predictions, the paper's way

A row: ``{"settings": HASH, "episode": i, "method": m, "class": ..., "query": ..., "supports":
[...], "values": {metric: float|null}, "prediction_iou": float|null, "explainer_seed": int|null,
"error": str|null, "seconds": float, "rank": r}``. ``null`` values (JSON has no NaN) are episodes
where the metric could not be computed (``error`` says why); the table skips them (NaN-mean).

A prediction row has the same keys with ``"method": "(prediction)"``, ``"settings"`` the hash of
the prediction settings only (:func:`prediction_settings_hash`: model, checkpoint digest, layout,
shots, episode list, ignore pixels and the statistics' version), ``values`` the statistics,
``counts``, ``support_shares``, ``query_size`` and ``thumbnail``. Predictions do not depend on the
methods, metrics, region or seeds, so a predictions-only run (no methods: the triage sweep) may
add its rows to a folder of another evaluation of the same model, checkpoint and episodes; and a
folder that holds predictions only takes the method settings of the first run with methods.

Resuming: every process reads all ``results/*.jsonl`` it can see; rows of the current settings
mark their (episode, method) done. A crash can leave a half-written last line: it is dropped
when read, and cut off before the same process appends again. Rows whose settings hash differs
are refused (the folder holds results of another configuration).

Folders written before the prediction rows existed (``settings.json`` version 1) are read as
they are (their prediction hash follows from their settings) and get their prediction rows
when a run resumes them; a folder of a newer format is refused with a message.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import FssguiError
from ..io import write_bytes_atomic

SETTINGS_FILE = "settings.json"
RESULTS_DIR = "results"
FORMAT = "fssgui-evaluate"
VERSION = 2
#: the method name of prediction rows (no explainer has this name)
PREDICTION_METHOD = "(prediction)"
METHOD_ROWS = "rank-*.jsonl"
PREDICTION_ROWS = "predictions-rank-*.jsonl"
#: the settings a prediction depends on
PREDICTION_KEYS = ("model", "checkpoint_sha256", "layout", "shots", "episodes_sha256", "ignore_label_255")


class ResultsError(FssguiError):
    """The output folder holds results that cannot be used with this run."""


def settings_hash(settings: dict) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prediction_settings_hash(settings: dict) -> str:
    """The hash of the settings a prediction row depends on (:data:`PREDICTION_KEYS` and the
    statistics' version)."""
    from .predictions import STATS_VERSION

    subset = {key: settings.get(key) for key in PREDICTION_KEYS}
    subset["prediction_stats"] = STATS_VERSION
    return settings_hash(subset)


def predictions_only(settings: dict) -> bool:
    """Settings of a run without methods (the folder holds prediction rows only)."""
    return settings.get("metrics") == []


def read_settings_file(out: Path) -> Optional[dict]:
    """The ``settings.json`` document of ``out`` (None when there is none); its ``prediction_hash``
    is filled in for folders written before it existed."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("format", FORMAT) != FORMAT or not isinstance(stored["hash"], str):
            raise ValueError(f"format {stored.get('format')!r}")
        settings = stored.setdefault("settings", {})
        if not isinstance(settings, dict):
            raise TypeError("settings is not an object")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResultsError(f"{path}: not a readable fssgui evaluate settings file ({exc})") from None
    if int(stored.get("version", 1)) > VERSION:
        raise ResultsError(f"{path}: written by a newer fssgui (results format {stored['version']}, this one "
                           f"reads up to {VERSION}); update fssgui or use another folder")
    stored.setdefault("prediction_hash", prediction_settings_hash(settings))
    return stored


def folder_settings(out: Path, settings: dict, digest: str, predictions_run: bool = False) -> tuple[dict, str]:
    """The settings (and hash) ``out`` holds once a run with ``settings`` joins it; raise when the
    folder holds results the run cannot share.

    The run's own settings, unless the run has no methods (``predictions_run``) and the folder
    holds another evaluation of the same predictions: then the folder keeps its settings and the
    run adds prediction rows only. A folder that holds predictions only takes the settings of a
    run with methods."""
    stored = read_settings_file(out)
    if stored is None or stored["hash"] == digest:
        return settings, digest
    stored_settings = stored["settings"]
    if stored["prediction_hash"] == prediction_settings_hash(settings):
        if predictions_run:
            return stored_settings, stored["hash"]
        if predictions_only(stored_settings):
            return settings, digest
    keys = PREDICTION_KEYS if predictions_run else set(settings) | set(stored_settings)
    changed = sorted(k for k in keys if settings.get(k) != stored_settings.get(k))
    raise ResultsError(
        f"{out}: holds results of other settings (changed: {', '.join(changed) or 'unknown'}); "
        f"use another --out folder, or delete {out} to start again"
    )


def check_settings_file(out: Path, settings: dict, digest: str, predictions_run: bool = False) -> bool:
    """True when ``out/settings.json`` exists and the run can join it (see :func:`folder_settings`),
    False when there is none; raise when the folder holds results of other settings."""
    if read_settings_file(out) is None:
        return False
    folder_settings(out, settings, digest, predictions_run)
    return True


def write_settings_file(out: Path, settings: dict, digest: str, extra: Optional[dict] = None) -> None:
    document = {"format": FORMAT, "version": VERSION, "hash": digest,
                "prediction_hash": prediction_settings_hash(settings), "settings": settings}
    if extra:
        document["info"] = extra
    write_bytes_atomic(out / SETTINGS_FILE, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def rank_file(out: Path, rank: int) -> Path:
    return out / RESULTS_DIR / f"rank-{rank:03d}.jsonl"


def prediction_rank_file(out: Path, rank: int) -> Path:
    return out / RESULTS_DIR / f"predictions-rank-{rank:03d}.jsonl"


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_key(row: dict) -> tuple[int, str]:
    return int(row["episode"]), str(row["method"])


def read_rows(path: Path, digest: str) -> list[dict]:
    """Rows of one JSONL file; a half-written last line (no newline) is dropped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read ({exc})") from None
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: text after the last newline (partial or empty)
    rows = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = row_key(row)
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsError(f"{path}:{number}: not a results row ({exc}); the file is damaged") from None
        if row.get("settings") != digest:
            raise ResultsError(f"{path}:{number}: row of episode {key[0]} was computed with other settings "
                               f"(hash {str(row.get('settings'))[:12]}...); use another --out folder")
        rows.append(row)
    del tail  # an unterminated last line is an interrupted write: ignored
    return rows


def read_all_rows(out: Path, digest: str, pattern: str = METHOD_ROWS) -> list[dict]:
    """Rows of every ``results/<pattern>`` file under ``out`` (file name order, then line order):
    the method rows (:data:`METHOD_ROWS`) or the prediction rows (:data:`PREDICTION_ROWS`)."""
    folder = out / RESULTS_DIR
    if not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.glob(pattern)):
        rows.extend(read_rows(path, digest))
    return rows


class ResultWriter:
    """Appends rows to one rank's JSONL file; every row is flushed and fsynced before returning."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_partial_line()
        self._handle = open(path, "ab")

    def _cut_partial_line(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "r+b") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1  # keep everything up to the last newline
            if end != len(data):
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, row: dict) -> None:
        clean = dict(row)
        clean["values"] = {k: _finite_or_none(v) for k, v in row["values"].items()}
        if "prediction_iou" in clean:
            clean["prediction_iou"] = _finite_or_none(clean["prediction_iou"])
        line = json.dumps(clean, sort_keys=True, allow_nan=False) + "\n"
        self._handle.write(line.encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_rows(row_lists: Iterable[Sequence[dict]], episodes: Sequence[int],
               methods: Sequence[str]) -> tuple[list[dict], int]:
    """One row per (episode, method) of the run, ordered by episode list then method order.

    The first row seen for a key wins (later ones are duplicates, e.g. from an episode finished
    twice around a crash; they hold the same numbers). Raises when a key is missing (a gap).
    Returns (rows, number of duplicates dropped)."""
    wanted = {(int(e), m) for e in episodes for m in methods}
    chosen: dict[tuple[int, str], dict] = {}
    duplicates = 0
    for rows in row_lists:
        for row in rows:
            key = row_key(row)
            if key not in wanted:
                continue
            if key in chosen:
                duplicates += 1
                continue
            chosen[key] = row
    missing = [(e, m) for e in episodes for m in methods if (int(e), m) not in chosen]
    if missing:
        shown = ", ".join(f"episode {e} {m}" for e, m in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ResultsError(f"{len(missing)} result(s) missing after the run: {shown}{more}")
    ordered = [chosen[(int(e), m)] for e in episodes for m in methods]
    return ordered, duplicates
