"""Exports and reports, without Qt (except :func:`write_pdf`, which imports Qt lazily).

What lives here:

* **Causal curves with their frames.** :func:`run_causal_curves` drives
  :func:`fssgui.explain.causal.causal_steps` for several methods and metrics and turns every step
  into a :class:`CausalFrame` (numpy only, so it can cross from the worker thread to the GUI):
  curve point *i* and frame *i* come from the same step object, so the images shown for a
  point are exactly the supports whose prediction gave that score. Frames are stored compactly
  (kept-pixel and prediction masks bit-packed, the probability as uint8) and rendered on demand
  with the shared :class:`FrameBase` (the episode as the model saw it).
* **Exports.** :func:`write_curves_csv`, :func:`write_frames_zip`, :func:`write_frames_folder`,
  :func:`frame_panels` / :func:`frame_composite` (full-resolution panels rendered from the data).
  Every write is atomic: files go through :func:`fssgui.imaging.write_bytes_atomic` (temporary
  file + rename), folders are built beside their target and renamed over it, so a failure leaves
  the previous file or folder untouched and no temporary files behind.
* **The report.** :func:`write_report` writes ``report.html`` (self-contained: images embedded as
  base64 PNG), ``report.pdf`` (Qt's QTextDocument printed by QPdfWriter, offscreen),
  ``summary.json`` (every number the report shows), the figure PNGs and ``curves.csv``. Every
  number in the HTML sits in an element whose ``data-key`` is the JSON pointer of that number in
  ``summary.json``, so the two cannot silently disagree (the tests parse the HTML and check).
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np

from . import __version__
from . import figures as F
from .errors import FssguiError
from .imaging import apply_colormap, mask_overlay, publish_permissions, resize_map, resize_mask
from .imaging import write_bytes_atomic

SUBSTRATE = "zero"  # the only substrate of the reference metric (spec affex.md §3)

METRIC_TITLES = {"iauc": "IAUC", "dauc": "DAUC", "iauc@p": "IAUC@p", "miou-loss@p": "mIoULoss@p"}
MEASURE_TITLES = {"confidence": "confidence", "miou": "mIoU"}


class ExportError(FssguiError):
    """An export or report file could not be written."""


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


@dataclass
class FrameBase:
    """What all frames of a run share: the episode at full resolution and as the model saw it."""

    query_image: np.ndarray  # [H, W, 3] uint8, original resolution
    support_images: list[np.ndarray]  # per support [Hs, Ws, 3] uint8, original resolution
    model_support_masks: np.ndarray  # [K, S, S] bool: the support masks at the model size
    substrate_colour: np.ndarray  # [3] uint8: a removed pixel (zero in normalised space)
    input_size: int

    @property
    def shots(self) -> int:
        return len(self.support_images)


@dataclass
class CausalFrame:
    """One step of one curve: ``score`` is curve point ``index`` of ``(method, metric)``.

    ``kept``: the support pixels (at the model size S) that still hold their original value
    (inserted so far for insertion, not yet deleted for deletion); ``prediction`` and
    ``probability``: the query prediction made on exactly those supports."""

    method: str
    metric: str
    index: int
    state: int
    pixels: int
    fraction: float
    score: float
    shape: tuple[int, int, int]  # (K, S, S)
    kept_bits: np.ndarray
    prediction_bits: np.ndarray
    probability_u8: np.ndarray  # [S, S] uint8 (display only; ``score`` is exact)

    @classmethod
    def pack(cls, method: str, metric: str, index: int, state: int, pixels: int, fraction: float, score: float,
             kept: np.ndarray, prediction: np.ndarray, probability: np.ndarray) -> "CausalFrame":
        kept = np.asarray(kept, bool)
        return cls(method, metric, int(index), int(state), int(pixels), float(fraction), float(score),
                   tuple(int(s) for s in kept.shape), np.packbits(kept.ravel()),
                   np.packbits(np.asarray(prediction, bool).ravel()),
                   np.clip(np.asarray(probability, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8))

    @classmethod
    def from_step(cls, method: str, metric: str, step) -> "CausalFrame":
        """The frame of a :class:`fssgui.metrics.causal.CausalStep` (tensors brought to numpy)."""
        return cls.pack(method, metric, step.index, step.state, step.pixels, step.fraction, step.score,
                        step.kept.cpu().numpy(), step.prediction_mask.cpu().numpy(),
                        step.foreground_probability.float().cpu().numpy())

    def kept(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.kept_bits, count=n).astype(bool).reshape(self.shape)

    def prediction(self) -> np.ndarray:
        s = self.shape[1:]
        return np.unpackbits(self.prediction_bits, count=s[0] * s[1]).astype(bool).reshape(s)

    def probability(self) -> np.ndarray:
        return self.probability_u8.astype(np.float32) / 255.0


def denormalise(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float ``[..., 3, H, W]`` (tensor or array) -> RGB uint8 ``[..., H, W, 3]``."""
    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    array = np.moveaxis(array, -3, -1)
    rgb = (array * np.asarray(std, np.float32) + np.asarray(mean, np.float32)) * 255.0
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def frame_base(episode, batch, entry) -> FrameBase:
    """The :class:`FrameBase` of an episode and its model tensors (``batch``, B = 1)."""
    masks = batch.support_masks[0].detach().cpu().numpy() > 0.5
    substrate = denormalise(np.zeros((3, 1, 1), np.float32), entry.mean, entry.std)[0, 0]
    return FrameBase(episode.query_image, [s.image for s in episode.supports], masks, substrate,
                     int(entry.input_size))


def curve_settings(metric: str, measure: str, steps: Optional[int], percentage: Optional[float]) -> dict[str, Any]:
    """The reference settings of a metric (mode, steps, percentage, skip_empty, loss); a
    ``percentage`` given for IAUC/DAUC truncates the curve to the top p of the pixels."""
    from .explain.causal import metric_settings

    settings = metric_settings(metric, measure, steps, percentage)
    if percentage is not None and metric in ("iauc", "dauc"):
        settings["percentage"] = percentage  # a truncated curve: IAUC/DAUC over the top p only
    return settings


def curve_state_count(metric: str, measure: str, shots: int, size: int, steps: Optional[int] = None,
                      percentage: Optional[float] = None) -> int:
    """How many points a curve will have (for progress)."""
    from .explain.causal import step_boundaries

    s = curve_settings(metric, measure, steps, percentage)
    bounds = step_boundaries(shots * size * size, s["steps"], s["percentage"], s["loss"])
    return len(bounds) - (1 if s["skip_empty"] else 0)


def curve_value(scores: Sequence[float], loss: bool) -> float:
    """The reference value of a finished curve: trapezoid AUC, or ``score(all) - score(top p)``."""
    from .explain.causal import trapezoid_auc

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

    from .explain.causal import causal_steps, rank_pixels

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


# ================================================================================ frame panels
PANEL_QUERY_PREDICTION = "query_prediction"
PANEL_PROBABILITY = "foreground_probability"


def support_panel_names(shots: int) -> list[str]:
    names = []
    for k in range(shots):
        names += [f"support_{k + 1}", f"support_{k + 1}_mask"]
    return names


def panel_names(shots: int) -> list[str]:
    return support_panel_names(shots) + [PANEL_QUERY_PREDICTION, PANEL_PROBABILITY]


def panel_title(name: str) -> str:
    if name == PANEL_QUERY_PREDICTION:
        return "Query prediction"
    if name == PANEL_PROBABILITY:
        return "Foreground probability"
    parts = name.split("_")
    k = parts[1]
    return f"Support {k} mask" if name.endswith("_mask") else f"Support {k} (perturbed)"


def frame_panels(base: FrameBase, frame: CausalFrame) -> dict[str, np.ndarray]:
    """Every panel of a frame as RGB uint8 at full resolution, rendered from the data.

    Perturbed support ``k``: the original full-resolution image where its model-size pixel is
    kept, the substrate colour (what a zeroed normalised pixel is) elsewhere; its mask: the model's
    mask with the removed pixels cleared (nearest upsampling); the query prediction (red) over
    the query; the foreground probability (inferno, 0..1) at the query's resolution."""
    kept = frame.kept()
    panels: dict[str, np.ndarray] = {}
    for k, image in enumerate(base.support_images):
        size = image.shape[:2]
        kept_k = resize_mask(kept[k], size)
        perturbed = np.where(kept_k[..., None], image, base.substrate_colour[None, None, :]).astype(np.uint8)
        panels[f"support_{k + 1}"] = perturbed
        panels[f"support_{k + 1}_mask"] = F.as_rgb(resize_mask(base.model_support_masks[k] & kept[k], size))
    query_size = base.query_image.shape[:2]
    panels[PANEL_QUERY_PREDICTION] = mask_overlay(base.query_image, resize_mask(frame.prediction(), query_size),
                                                  F.PREDICTION_COLOUR)
    probability = np.clip(resize_map(frame.probability(), query_size), 0.0, 1.0)
    panels[PANEL_PROBABILITY] = apply_colormap(probability, "inferno", 0.0, 1.0)
    return panels


def frame_title(frame: CausalFrame, count: Optional[int] = None, measure: str = "") -> str:
    verb = "deleted" if frame.metric == "dauc" else "inserted"
    of = f"/{count}" if count else ""
    what = MEASURE_TITLES.get(measure, "score") if measure else "score"
    return (f"{frame.method} - {METRIC_TITLES.get(frame.metric, frame.metric)} point {frame.index + 1}{of}: "
            f"{100.0 * frame.fraction:.1f}% of support pixels {verb}, {what} {frame.score:.4f}")


def frame_composite(base: FrameBase, frame: CausalFrame, *, title: str = "", tile: int = 220,
                    scale: float = 1.0) -> np.ndarray:
    """The composite figure of one frame (labels and a probability colorbar)."""
    panels = frame_panels(base, frame)
    images = [panels[f"support_{k + 1}"] for k in range(base.shots)]
    masks = [panels[f"support_{k + 1}_mask"][..., 0] > 127 for k in range(base.shots)]
    return F.frame_figure(images, masks, base.query_image, resize_mask(frame.prediction(), base.query_image.shape[:2]),
                          frame.probability(), title=title, tile=tile, scale=scale)


# ===================================================================================== writers
def encode_png(image: np.ndarray) -> bytes:
    image = F.as_rgb(image)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ExportError("could not encode a PNG image")
    return data.tobytes()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB/grey/bool image as PNG, atomically."""
    path = Path(path)
    write_bytes_atomic(path, encode_png(image))
    return path


CSV_COLUMNS = ("method", "metric", "measure", "steps", "percentage", "substrate", "skip_empty", "index", "fraction",
               "score", "value_name", "value", "complete")


def curves_csv_text(curves: Iterable[CausalCurve]) -> str:
    """The curves in long format: one row per point, with the curve's parameters and value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in curves:
        p = c.params.get("percentage")
        for i, (x, y) in enumerate(zip(c.fractions, c.scores)):
            writer.writerow([c.method, c.metric, c.measure, c.params.get("steps", ""), "" if p is None else repr(p),
                             c.params.get("substrate", SUBSTRATE), int(bool(c.params.get("skip_empty"))), i, repr(x),
                             repr(y), c.value_name(), "" if c.value is None else repr(c.value), int(c.complete)])
    return buffer.getvalue()


def write_curves_csv(path: str | Path, curves: Iterable[CausalCurve]) -> Path:
    path = Path(path)
    write_bytes_atomic(path, curves_csv_text(curves).encode("utf-8"))
    return path


def _safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    return keep.replace("@", "at") or "x"


def _frame_files(base: FrameBase, frames: Sequence[CausalFrame], counts: Mapping[tuple[str, str], int],
                 measure: str, composite: bool) -> Iterable[tuple[str, bytes]]:
    """(relative path, PNG bytes) of every panel of every frame, then ``index.csv``."""
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(["method", "metric", "index", "state", "pixels", "fraction", "score", "files"])
    for frame in frames:
        folder = f"{_safe_name(frame.method)}/{_safe_name(frame.metric)}"
        stem = f"{folder}/step_{frame.index:03d}"
        names = []
        for name, image in frame_panels(base, frame).items():
            names.append(f"{stem}_{name}.png")
            yield names[-1], encode_png(image)
        if composite:
            names.append(f"{stem}_figure.png")
            title = frame_title(frame, counts.get((frame.method, frame.metric)), measure)
            yield names[-1], encode_png(frame_composite(base, frame, title=title))
        writer.writerow([frame.method, frame.metric, frame.index, frame.state, frame.pixels, repr(frame.fraction),
                         repr(frame.score), " ".join(names)])
    yield "index.csv", index.getvalue().encode("utf-8")


def write_frames_zip(path: str | Path, base: FrameBase, frames: Sequence[CausalFrame], *, measure: str = "",
                     composite: bool = True) -> Path:
    """Every frame's panels (and composite) as PNGs in one ZIP, with ``index.csv``. Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = _frame_counts(frames)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, data in _frame_files(base, frames, counts, measure, composite):
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        publish_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def write_frames_folder(folder: str | Path, base: FrameBase, frames: Sequence[CausalFrame], *, measure: str = "",
                        composite: bool = True) -> Path:
    """Every frame's panels as PNGs under ``folder`` (built beside it, then swapped in)."""
    folder = Path(folder)
    counts = _frame_counts(frames)

    def fill(tmp: Path) -> None:
        for name, data in _frame_files(base, frames, counts, measure, composite):
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        publish_permissions(tmp, directory=True)

    replace_folder_atomic(folder, fill)
    return folder


def _frame_counts(frames: Sequence[CausalFrame]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for f in frames:
        counts[(f.method, f.metric)] = max(counts.get((f.method, f.metric), 0), f.index + 1)
    return counts


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def replace_folder_atomic(folder: Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(tmp)`` beside ``folder`` and rename it into place; on any error
    the temporary folder is removed and an existing ``folder`` is left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=str(folder.parent)))
    try:
        fill(tmp)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=str(folder.parent)))
            os.rmdir(old)
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ====================================================================================== report
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
    curves: list[CausalCurve] = field(default_factory=list)
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
    from .imaging import foreground_iou

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
            "fractions": list(map(float, c.fractions)),
            "scores": list(map(float, c.scores)),
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
        "causal": {"measure": inputs.measure, "curves": curves},
        "notes": list(inputs.notes),
    }
    return _json_safe(summary)


# ------------------------------------------------------------------------------------ figures
def report_figures(inputs: ReportInputs, summary: Mapping[str, Any], scale: float = 2.0) -> dict[str, np.ndarray]:
    """The report's figures, by file name: the episode with every method's maps, one curve plot
    per metric (methods overlaid, AUC in the legend) and the level weights of each method."""
    ep = inputs.episode
    figures: dict[str, np.ndarray] = {}
    rows = [F.MapRow(m.name, m.maps, m.signed, m.zero_level) for m in inputs.methods]
    iou = summary["prediction"]["iou"]
    figures["figure_episode.png"] = F.episode_figure(
        ep.query_image, [s.image for s in ep.supports], [s.mask for s in ep.supports], rows,
        prediction=inputs.prediction, region=inputs.region, region_label=inputs.region_source,
        ground_truth=ep.query_mask, iou=iou, tile=200, scale=scale,
    )
    for metric in _ordered_metrics(inputs.curves):
        curves = [c for c in inputs.curves if c.metric == metric]
        series = []
        for i, c in enumerate(curves):
            label = c.method + (f" ({c.value_name()} {c.value:.4f})" if c.value is not None else " (incomplete)")
            series.append(F.Series(label, c.fractions, c.scores, F.palette_colour(_method_index(inputs, c.method, i))))
        first = curves[0]
        verb = "deleted" if first.mode == "deletion" else "inserted"
        ylabel = "confidence over R" if first.measure == "confidence" else "foreground IoU"
        figures[f"figure_curves_{_safe_name(metric)}.png"] = F.line_plot(
            series, title=f"{first.title}: {first.describe()}", xlabel=f"fraction of support pixels {verb}",
            ylabel=ylabel, scale=scale, width=560, height=360,
        )
    for i, m in enumerate(inputs.methods):
        weights = summary["methods"][m.name].get("level_weights")
        if weights:
            figures[f"figure_level_weights_{_safe_name(m.name)}.png"] = F.bar_chart(
                weights["names"], weights["values"], title=f"Level weights: {m.name}", ylabel="weight",
                colour=F.palette_colour(i), scale=scale, width=560, height=220,
            )
    return figures


def _method_index(inputs: ReportInputs, method: str, fallback: int) -> int:
    names = [m.name for m in inputs.methods]
    return names.index(method) if method in names else fallback


def _ordered_metrics(curves: Sequence[CausalCurve]) -> list[str]:
    seen: list[str] = []
    for c in curves:
        if c.metric not in seen:
            seen.append(c.metric)
    return seen


# --------------------------------------------------------------------------------------- HTML
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


class _Html:
    """A tiny HTML builder; :meth:`num` tags a value with its JSON pointer in summary.json."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    @staticmethod
    def esc(text: Any) -> str:
        return html.escape(str(text), quote=True)

    @staticmethod
    def num(summary: Mapping[str, Any], *path: Any, digits: int = 4) -> str:
        pointer = json_pointer(*path)
        value = resolve_pointer(summary, pointer)
        return f'<span class="v" data-key="{html.escape(pointer, quote=True)}">{html.escape(format_value(value, digits))}</span>'

    def text(self) -> str:
        return "".join(self.parts)


_CSS = """
body { font-family: 'Helvetica Neue', Arial, sans-serif; font-size: 10pt; color: #222; max-width: 1100px;
       margin: 24px auto; padding: 0 16px; }
h1 { font-size: 17pt; margin-bottom: 2px; }
h2 { font-size: 13pt; border-bottom: 1px solid #bbb; padding-bottom: 2px; margin-top: 22px; }
h3 { font-size: 11pt; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 6px 0 10px 0; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.n, th.n { text-align: right; }
.sub { color: #666; }
.mono { font-family: 'DejaVu Sans Mono', Consolas, monospace; font-size: 8.5pt; }
div.fig { margin: 8px 0 2px 0; }
p.cap { color: #444; font-size: 9pt; margin: 0 0 14px 0; }
img { max-width: 100%; }
"""


def render_html(summary: Mapping[str, Any], figures: Mapping[str, tuple[str, int]], *, for_pdf: bool = False) -> str:
    """The report as HTML. ``figures`` maps a figure's file name to ``(src, display width px)``:
    a ``data:`` URL for the self-contained file, a resource name for the PDF."""
    h = _Html()
    s = summary
    ep, model = s["episode"], s["model"]
    name = Path(ep["path"]).name or ep["path"]
    h.add("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">")
    h.add(f"<title>fssgui report: {h.esc(name)}</title>")
    if not for_pdf:
        h.add(f"<style>{_CSS}</style>")
    h.add("</head><body>")
    h.add(f"<h1>fssgui report: {h.esc(name)}</h1>")
    h.add(f'<p class="sub">Created {h.esc(s["created"])} with fssgui {h.esc(s["fssgui_version"])}.</p>')

    # ---------------------------------------------------------------------------- setup
    h.add("<h2>1. Setup</h2><table>")

    def row(label: str, cell: str) -> None:
        h.add(f"<tr><th>{h.esc(label)}</th><td>{cell}</td></tr>")

    row("Episode", f'<span class="mono">{h.esc(ep["path"])}</span>')
    row("Class", h.esc(ep["class_name"] or "(unnamed)"))
    row("Shots (K)", h.num(s, "episode", "shots"))
    row("Query size", f'{h.num(s, "episode", "query_size", 0)} x {h.num(s, "episode", "query_size", 1)} px')
    sizes = ", ".join(f'{h.num(s, "episode", "support_sizes", k, 0)} x {h.num(s, "episode", "support_sizes", k, 1)}'
                      for k in range(len(ep["support_sizes"])))
    row("Support sizes", sizes + " px")
    row("Ground truth", h.num(s, "episode", "has_ground_truth"))
    row("Model", f'{h.esc(model["name"])} <span class="sub">({h.esc(model["description"])})</span>')
    row("Model input size S", h.num(s, "model", "input_size") + " px")
    if model["checkpoint"]:
        row("Checkpoint", f'<span class="mono">{h.esc(model["checkpoint"]["file"])}</span> '
                          f'({h.num(s, "model", "checkpoint", "bytes")} bytes)')
        row("Checkpoint SHA-256", f'<span class="mono">{h.esc(model["checkpoint"]["sha256"])}</span>')
    else:
        row("Checkpoint", "none (built-in weights)")
    row("Device", f'{h.esc(s["device"]["name"])} <span class="sub">({h.esc(s["device"]["description"])})</span>')
    h.add("</table>")

    # ----------------------------------------------------------------------- prediction
    pred, region = s["prediction"], s["region"]
    h.add("<h2>2. Prediction and region R</h2><table>")
    row("Predicted foreground", f'{h.num(s, "prediction", "foreground_percent", digits=2)}% of the query '
                                f'({h.num(s, "prediction", "foreground_pixels")} px)')
    row("IoU with ground truth", h.num(s, "prediction", "iou") if pred["iou"] is not None
        else "n/a (no ground truth)")
    row("Region R", f'{h.esc(region["source"])}: {h.num(s, "region", "pixels")} px '
                    f'({h.num(s, "region", "percent", digits=2)}% of the query)')
    h.add("</table>")

    # ----------------------------------------------------------------------- attributions
    h.add("<h2>3. Attribution maps</h2>")
    _figure(h, figures, "figure_episode.png",
            "Query with its prediction (red), region R (yellow) and ground truth (blue); supports with their masks "
            "(green); one row per method: the map over each support (mask outlined in white), one colour scale "
            "per row. Signed maps use a diverging scale centred on 'no evidence'.")
    h.add("<table><tr><th>Method</th><th>Signed</th><th>Parameters</th><th class=\"n\">Time (s)</th></tr>")
    for method, info in s["methods"].items():
        params = ", ".join(_param_html(h, s, method, k, v) for k, v in info["params"].items())
        seconds = h.num(s, "methods", method, "seconds", digits=2) if "seconds" in info else "n/a"
        h.add(f"<tr><td>{h.esc(method)}</td><td>{h.num(s, 'methods', method, 'signed')}</td>"
              f"<td>{params or '(defaults)'}</td><td class=\"n\">{seconds}</td></tr>")
    h.add("</table>")

    # ---------------------------------------------------------------------- level weights
    weighted = [m for m, info in s["methods"].items() if info.get("level_weights")]
    h.add("<h2>4. Level weights</h2>")
    if not weighted:
        h.add("<p>None of the methods weighs matching levels (only AffEx does, with feature-ablation weights).</p>")
    for method in weighted:
        weights = s["methods"][method]["level_weights"]
        h.add(f"<h3>{h.esc(method)}</h3>")
        _figure(h, figures, f"figure_level_weights_{_safe_name(method)}.png",
                "Feature-ablation weight of each matching level (they sum to 1).")
        h.add("<table><tr><th>Level</th><th class=\"n\">Weight</th></tr>" + "".join(
            f"<tr><td>{h.esc(n)}</td><td class=\"n\">{h.num(s, 'methods', method, 'level_weights', 'values', i)}</td></tr>"
            for i, n in enumerate(weights["names"])) + "</table>")

    # ---------------------------------------------------------------------- causal metrics
    curves = s["causal"]["curves"]
    h.add("<h2>5. Causal metrics</h2>")
    if not curves:
        h.add("<p>No causal metric was computed.</p>")
    else:
        metrics: list[str] = []
        for per_method in curves.values():
            metrics += [m for m in per_method if m not in metrics]
        h.add("<p>Insertion (IAUC) restores the highest-ranked support pixels, starting from supports whose "
              "pixels and masks are all removed; deletion (DAUC) removes them from the original supports. Pixels "
              "are ranked once, globally over all supports; a removed pixel is zero in normalised space (the "
              "mean colour) and is cleared from the mask; the query is never changed. AUC: trapezoid rule on a "
              "uniform grid over [0, 1]. Higher IAUC and lower DAUC mean a more faithful map.</p>")
        h.add("<table><tr><th>Method</th>" + "".join(f"<th class=\"n\">{h.esc(METRIC_TITLES.get(m, m))}</th>"
                                                       for m in metrics) + "</tr>")
        for method, per_method in curves.items():
            cells = []
            for metric in metrics:
                if metric in per_method:
                    cells.append(f"<td class=\"n\">{h.num(s, 'causal', 'curves', method, metric, 'value')}</td>")
                else:
                    cells.append("<td class=\"n\">-</td>")
            h.add(f"<tr><td>{h.esc(method)}</td>{''.join(cells)}</tr>")
        h.add("</table>")
        h.add("<table><tr><th>Method</th><th>Metric</th><th>Value</th><th class=\"n\">Steps</th><th>Measure</th>"
              "<th>Substrate</th><th class=\"n\">p</th><th>State 0 skipped</th><th class=\"n\">Class scored</th>"
              "<th class=\"n\">States per pass</th></tr>")
        for method, per_method in curves.items():
            for metric, c in per_method.items():
                p = c["params"].get("percentage")
                pcell = h.num(s, "causal", "curves", method, metric, "params", "percentage") if p is not None else "1 (all)"
                h.add(f"<tr><td>{h.esc(method)}</td><td>{h.esc(METRIC_TITLES.get(metric, metric))}</td>"
                      f"<td>{h.esc(c['value_name'])}</td>"
                      f"<td class=\"n\">{h.num(s, 'causal', 'curves', method, metric, 'params', 'steps')}</td>"
                      f"<td>{h.esc(MEASURE_TITLES.get(c['measure'], c['measure']))}</td>"
                      f"<td>{h.esc(c['params'].get('substrate', SUBSTRATE))}</td><td class=\"n\">{pcell}</td>"
                      f"<td>{h.num(s, 'causal', 'curves', method, metric, 'params', 'skip_empty')}</td>"
                      f"<td class=\"n\">{_optional_num(h, s, c, method, metric, 'target_class')}</td>"
                      f"<td class=\"n\">{_optional_num(h, s, c, method, metric, 'batch_size')}</td></tr>")
        h.add("</table>")
        for metric in metrics:
            _figure(h, figures, f"figure_curves_{_safe_name(metric)}.png",
                    f"{METRIC_TITLES.get(metric, metric)} curves; the legend gives each method's value.")
        h.add("<h3>Curve points</h3>")
        for metric in metrics:
            methods = [m for m, per in curves.items() if metric in per]
            longest = max(methods, key=lambda m: len(curves[m][metric]["scores"]))
            h.add(f"<p><b>{h.esc(METRIC_TITLES.get(metric, metric))}</b></p>")
            h.add("<table><tr><th class=\"n\">Point</th>" + "".join(
                f"<th class=\"n\">{h.esc(m)}: fraction</th><th class=\"n\">{h.esc(m)}: score</th>" for m in methods)
                + "</tr>")
            for i in range(len(curves[longest][metric]["scores"])):
                cells = []
                for m in methods:
                    if i < len(curves[m][metric]["scores"]):
                        cells.append(f"<td class=\"n\">{h.num(s, 'causal', 'curves', m, metric, 'fractions', i)}</td>"
                                     f"<td class=\"n\">{h.num(s, 'causal', 'curves', m, metric, 'scores', i)}</td>")
                    else:
                        cells.append("<td></td><td></td>")
                h.add(f"<tr><td class=\"n\">{i}</td>{''.join(cells)}</tr>")
            h.add("</table>")
    if s.get("notes"):
        h.add("<h2>Notes</h2><ul>" + "".join(f"<li>{h.esc(n)}</li>" for n in s["notes"]) + "</ul>")
    h.add("</body></html>\n")
    return h.text()


def _optional_num(h: _Html, s: Mapping[str, Any], curve: Mapping[str, Any], method: str, metric: str,
                  key: str) -> str:
    """A curve parameter's number, or "-" when the curve has none (the mIoU measure scores no class)."""
    if curve["params"].get(key) is None:
        return "-"
    return h.num(s, "causal", "curves", method, metric, "params", key)


def _param_html(h: _Html, s: Mapping[str, Any], method: str, key: str, value: Any) -> str:
    if isinstance(value, list):
        items = ", ".join(h.num(s, "methods", method, "params", key, i) if not isinstance(v, (dict, list))
                          else h.esc(json.dumps(v)) for i, v in enumerate(value))
        return f"{h.esc(key)} = [{items}]"
    if isinstance(value, dict):
        return f"{h.esc(key)} = {h.esc(json.dumps(value))}"
    return f"{h.esc(key)} = {h.num(s, 'methods', method, 'params', key)}"


def _figure(h: _Html, figures: Mapping[str, tuple[str, int]], name: str, caption: str) -> None:
    if name not in figures:
        return
    src, width = figures[name]
    h.add(f'<div class="fig"><img src="{h.esc(src)}" width="{int(width)}" alt="{h.esc(name)}"></div>'
          f'<p class="cap">{h.esc(caption)} <span class="mono">({h.esc(name)})</span></p>')


# ---------------------------------------------------------------------------------------- PDF
def _ensure_gui_application():
    """A Qt application for fonts (offscreen when there is no display); reuses an existing one."""
    from PySide6.QtCore import QCoreApplication

    app = QCoreApplication.instance()
    if app is not None:
        return app
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name != "nt":
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # A QApplication (not only a QGuiApplication), so widgets can still be created later in the
    # same process (the GUI, or tests) - Qt allows one application object per process.
    from PySide6.QtWidgets import QApplication

    return QApplication(["fssgui-report"])


PDF_TEXT_WIDTH_PX = 720  # HTML layout width of the PDF's text column
#: a figure may break across pages only in a band of background rows at least this high (layout px)
PDF_FIGURE_BREAK_GAP_PX = 6
#: and only into pieces at least this high (layout px): a row title never sits alone at a page end
PDF_FIGURE_MIN_PIECE_PX = 90


def figure_pieces(image: np.ndarray, min_gap: int, min_piece: int = 1) -> list[tuple[int, int]]:
    """Row ranges ``[(top, bottom), ...]`` that cut ``image`` ``[H, W, C]`` into horizontal pieces
    at the middle of each band of at least ``min_gap`` rows of its background colour (the colour
    of the top-left pixel, when the whole first row has it). Pieces cover the image in order;
    pieces lower than ``min_piece`` rows are merged into the next one. No background: one piece.

    Why: Qt's HTML layout never splits an image across pages; an image higher than the space left
    on a page moves to the next page whole and leaves that space empty. Cut at the white gaps
    between the figure's rows, a tall figure flows on like a table does."""
    height = int(image.shape[0])
    pixels = image.reshape(height, image.shape[1], -1)
    background = pixels[0, 0]
    plain = np.all(pixels == background, axis=(1, 2))
    if height == 0 or not plain[0]:
        return [(0, height)]
    cuts: list[int] = []
    row = 0
    while row < height:
        if not plain[row]:
            row += 1
            continue
        end = row
        while end < height and plain[end]:
            end += 1
        if row > 0 and end < height and end - row >= min_gap:  # inner bands only
            cuts.append((row + end) // 2)
        row = end
    pieces: list[tuple[int, int]] = []
    top = 0
    for cut in cuts + [height]:
        if cut - top >= min_piece or cut == height:
            pieces.append((top, cut))
            top = cut
    if len(pieces) > 1 and pieces[-1][1] - pieces[-1][0] < min_piece:  # a short last piece joins the one before
        last = pieces.pop()
        pieces[-1] = (pieces[-1][0], last[1])
    return pieces


def _pdf_page_layout():
    from PySide6.QtCore import QMarginsF
    from PySide6.QtGui import QPageLayout, QPageSize

    return QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                       QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)


def _qimage_rgb_array(image) -> np.ndarray:
    """A QImage's pixels as ``[H, W, 3]`` uint8 (a copy)."""
    from PySide6.QtGui import QImage

    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = rgb.height(), rgb.width(), rgb.bytesPerLine()
    data = np.frombuffer(rgb.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return data[:, : w * 3].reshape(h, w, 3).copy()


_IMG_TAG = re.compile(r'<img src="([^"]*)" width="(\d+)"([^>]*)>')


def pdf_document(html_text: str, images: Mapping[str, bytes]):
    """The QTextDocument that :func:`pdf_bytes` prints: ``html_text`` laid out in a column
    :data:`PDF_TEXT_WIDTH_PX` wide, paginated like the A4 page (height in the document's
    ``pageSize()``), its ``<img src>`` naming keys of ``images`` (PNG bytes).

    Every figure is cut into pieces by :func:`figure_pieces` (one ``<img>`` per piece, one per
    line), so a page break can fall between the rows of a figure instead of pushing the whole
    figure to the next page; a figure whose largest piece is higher than a page is shown smaller."""
    _ensure_gui_application()
    from PySide6.QtCore import QSizeF, QUrl
    from PySide6.QtGui import QImage, QTextDocument

    document = QTextDocument()
    document.setDocumentMargin(0)
    document.setDefaultStyleSheet(_PDF_CSS)
    font = document.defaultFont()
    font.setFamily("DejaVu Sans")
    font.setPointSizeF(7.5)
    document.setDefaultFont(font)
    rect = _pdf_page_layout().paintRectPixels(300)
    page_height = PDF_TEXT_WIDTH_PX * rect.height() / rect.width()
    decoded = {}
    for name, png in images.items():
        image = QImage()
        if not image.loadFromData(png, "PNG"):
            raise ExportError(f"report.pdf: could not decode figure {name}")
        decoded[name] = image
        document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), image)

    def pieces_html(match: "re.Match[str]") -> str:
        name, width, rest = html.unescape(match.group(1)), int(match.group(2)), match.group(3)
        image = decoded.get(name)
        if image is None or image.width() == 0:
            return match.group(0)
        scale = width / image.width()  # layout px per image px
        pieces = figure_pieces(_qimage_rgb_array(image), max(1, math.ceil(PDF_FIGURE_BREAK_GAP_PX / scale)),
                               max(1, math.ceil(PDF_FIGURE_MIN_PIECE_PX / scale)))
        tallest = max(bottom - top for top, bottom in pieces) * scale
        if tallest > 0.97 * page_height:
            width = max(1, int(width * 0.97 * page_height / tallest))
        if len(pieces) == 1:
            return f'<img src="{match.group(1)}" width="{width}"{rest}>'
        tags = []
        for i, (top, bottom) in enumerate(pieces):
            piece = f"{name}#piece{i}"
            document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(piece),
                                 image.copy(0, top, image.width(), bottom - top))
            tags.append(f'<img src="{html.escape(piece, quote=True)}" width="{width}"{rest}>')
        return "<br>".join(tags)

    document.setHtml(_IMG_TAG.sub(pieces_html, html_text))
    # Lay the text out in a column PDF_TEXT_WIDTH_PX wide, then scale the page to the paper.
    document.setPageSize(QSizeF(PDF_TEXT_WIDTH_PX, page_height))
    return document


def pdf_bytes(html_text: str, images: Mapping[str, bytes], title: str = "fssgui report") -> bytes:
    """Print ``html_text`` (its ``<img src>`` naming keys of ``images``: PNG bytes) to an A4 PDF."""
    document = pdf_document(html_text, images)
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QPdfWriter

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buffer)
    writer.setTitle(title)
    writer.setCreator(f"fssgui {__version__}")
    writer.setResolution(300)
    writer.setPageLayout(_pdf_page_layout())
    document.print_(writer)
    buffer.close()
    result = bytes(data.data())
    if not result.startswith(b"%PDF"):
        raise ExportError("report.pdf: Qt produced no PDF data")
    return result


_PDF_CSS = """
h1 { font-size: 14pt; } h2 { font-size: 11pt; margin-top: 14px; } h3 { font-size: 9pt; }
th { background-color: #eeeeee; }
.sub { color: #666666; } .mono { font-family: 'DejaVu Sans Mono'; font-size: 6.5pt; }
p.cap { color: #444444; }
"""


def write_pdf(path: str | Path, html_text: str, images: Mapping[str, bytes], title: str = "fssgui report") -> Path:
    path = Path(path)
    write_bytes_atomic(path, pdf_bytes(html_text, images, title))
    return path


def _pdf_html(html_text: str) -> str:
    # QTextDocument understands a subset of HTML: tables need explicit borders and padding.
    html_text = html_text.replace('<td class="n">', '<td class="n" align="right">')
    html_text = html_text.replace('<th class="n">', '<th class="n" align="right">')
    return html_text.replace("<table>", '<table border="1" cellspacing="0" cellpadding="2" '
                                        'style="border-color:#bbbbbb; border-style:solid;">')


# ------------------------------------------------------------------------------------- writing
@dataclass
class ReportFiles:
    folder: Path
    html: Path
    pdf: Optional[Path]
    summary: Path
    curves_csv: Optional[Path]
    figures: list[Path]


def write_report(out: str | Path, inputs: ReportInputs, *, pdf: bool = True, scale: float = 2.0) -> ReportFiles:
    """Write the report files into ``out`` (created if needed); every file is written atomically.

    Figures are rendered at ``scale`` (2 = twice the displayed size, for print) and embedded in
    the HTML at their display width."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(inputs)
    figures = report_figures(inputs, summary, scale)
    encoded = {name: encode_png(image) for name, image in figures.items()}
    figure_paths = []
    for name, data in encoded.items():
        write_bytes_atomic(out / name, data)
        figure_paths.append(out / name)
    curves_path = None
    if inputs.curves:
        curves_path = write_curves_csv(out / "curves.csv", inputs.curves)
    summary_path = out / "summary.json"
    write_bytes_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))

    def width(name: str, limit: int) -> int:
        return int(min(limit, figures[name].shape[1] / scale))

    embedded = {name: (f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}", width(name, 1060))
                for name, data in encoded.items()}
    html_text = render_html(summary, embedded)
    html_path = out / "report.html"
    write_bytes_atomic(html_path, html_text.encode("utf-8"))
    pdf_path = None
    if pdf:
        named = {name: (name, width(name, PDF_TEXT_WIDTH_PX)) for name in encoded}
        pdf_path = write_pdf(out / "report.pdf", _pdf_html(render_html(summary, named, for_pdf=True)), encoded,
                             title=f"fssgui report: {Path(inputs.episode_path).name}")
    return ReportFiles(out, html_path, pdf_path, summary_path, curves_path, figure_paths)
