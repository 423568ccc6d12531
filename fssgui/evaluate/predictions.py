"""What a sweep stores per episode about the prediction itself (the failure table's columns), and
the per-class summary of those rows computed the way the FSS papers report it. No Qt, no torch.

Every statistic compares the pipeline's official prediction at the query's resolution
(:meth:`fssgui.pipeline.EpisodeRun.predicted`) with the query's ground truth, over the *valid*
pixels (the dataset's ignore pixels, label 255, are left out of every count):

* ``iou``: foreground IoU (:func:`fssgui.imaging.foreground_iou`; 1 when both are empty);
* ``fb_iou``: the mean of the foreground and the background IoU of this episode;
* ``predicted_share`` / ``true_share``: predicted / true foreground pixels over the valid pixels;
* ``false_positive_share`` / ``false_negative_share``: predicted-but-not-true / true-but-missed
  pixels over the valid pixels (the two errors of :func:`fssgui.pipeline.regions.error_pixels`);
* ``confidence``: the mean probability the model gives its own label (the foreground probability
  on predicted foreground, one minus it elsewhere), over the valid pixels;
* ``support_share_min``: the smallest foreground share of a support mask (a tiny support mask is
  a common cause of failure).

The row also keeps the pixel counts (``counts``: intersection and union of background and
foreground, valid pixels) so that :func:`class_summary` can aggregate the paper's way: the IoU of a
class is its summed intersection over its summed union across its episodes (not a mean of
per-episode IoUs), mIoU the mean over classes, FB-IoU the mean of the background and foreground
IoU summed over every episode. A small picture of the predicted mask (``thumbnail``, a PNG in
base64, at most :data:`THUMBNAIL_SIDE` pixels a side) lets a table draw the prediction of
thousands of episodes without predicting them again.
"""
from __future__ import annotations

import base64
import csv
import io
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from ..imaging import foreground_iou, resize_mask
from ..io import encode_png

#: bump when a statistic changes meaning: stored rows of another version are computed again
STATS_VERSION = 1
#: longest side of the stored prediction thumbnail (pixels)
THUMBNAIL_SIDE = 96
#: a support mask below this share of its image counts as "tiny" (the failure table's filter)
TINY_SUPPORT_SHARE = 0.01


@dataclass(frozen=True)
class StatColumn:
    """One statistic: its key in a row's ``values``, its title, and which direction is worse."""

    key: str
    title: str
    worse_when_low: bool  # True: a low value is a failure (IoU); False: a high value is (errors)


STAT_COLUMNS = (
    StatColumn("iou", "IoU", True),
    StatColumn("fb_iou", "FB-IoU", True),
    StatColumn("predicted_share", "predicted fg", False),
    StatColumn("true_share", "true fg", False),
    StatColumn("false_positive_share", "false pos.", False),
    StatColumn("false_negative_share", "false neg.", False),
    StatColumn("confidence", "confidence", True),
    StatColumn("support_share_min", "smallest support", True),
)
STAT_KEYS = tuple(c.key for c in STAT_COLUMNS)


def column(key: str) -> StatColumn:
    for c in STAT_COLUMNS:
        if c.key == key:
            return c
    raise ValueError(f"unknown statistic {key!r} (known: {', '.join(STAT_KEYS)})")


# ------------------------------------------------------------------------------ one episode
def prediction_stats(mask: np.ndarray, probability: np.ndarray, truth: Optional[np.ndarray],
                     ignore: Optional[np.ndarray], support_masks: Sequence[np.ndarray]) -> dict:
    """The statistics of one prediction (see the module docstring): ``{"values": {...},
    "counts": {...}, "support_shares": [...]}``. ``mask`` and ``probability``: the official
    prediction at the query's resolution; ``truth``: the query's ground truth (None: the
    ground-truth statistics are None); ``ignore``: pixels left out (None: none)."""
    mask = np.asarray(mask, bool)
    valid = np.ones(mask.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
    n_valid = int(valid.sum())
    pred = mask & valid
    own_label = np.where(mask, probability, 1.0 - probability)[valid]
    shares = [float(np.asarray(m, bool).mean()) for m in support_masks]
    values = {key: None for key in STAT_KEYS}
    values["predicted_share"] = _share(int(pred.sum()), n_valid)
    values["confidence"] = float(own_label.mean()) if own_label.size else None
    values["support_share_min"] = min(shares) if shares else None
    counts = {"valid": n_valid, "predicted": int(pred.sum())}
    if truth is not None:
        true = np.asarray(truth, bool) & valid
        inter_fg = int((pred & true).sum())
        union_fg = int((pred | true).sum())
        inter_bg = int((valid & ~pred & ~true).sum())
        union_bg = int((valid & ~(pred & true)).sum())
        values.update(
            iou=foreground_iou(pred, true),
            true_share=_share(int(true.sum()), n_valid),
            false_positive_share=_share(int((pred & ~true).sum()), n_valid),
            false_negative_share=_share(int((true & ~pred).sum()), n_valid),
        )
        background_iou = foreground_iou(valid & ~pred, valid & ~true)
        values["fb_iou"] = 0.5 * (values["iou"] + background_iou)
        counts.update(inter=[inter_bg, inter_fg], union=[union_bg, union_fg], true=int(true.sum()))
    return {"values": values, "counts": counts, "support_shares": shares}


def _share(part: int, whole: int) -> Optional[float]:
    return part / whole if whole else None


def empty_prediction(values: dict) -> bool:
    """No predicted foreground pixel (outside the ignore pixels)."""
    return values.get("predicted_share") == 0.0


def tiny_support(values: dict, threshold: float = TINY_SUPPORT_SHARE) -> bool:
    share = values.get("support_share_min")
    return share is not None and share < threshold


# ------------------------------------------------------------------------------ thumbnails
def mask_thumbnail(mask: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """``mask`` (bool ``[H, W]``) shrunk (nearest) to at most ``side`` pixels a side, as a
    base64 PNG."""
    h, w = mask.shape
    scale = min(1.0, side / max(h, w))
    small = resize_mask(mask, (max(1, round(h * scale)), max(1, round(w * scale))))
    return base64.b64encode(encode_png(small)).decode("ascii")


def thumbnail_mask(text: str) -> Optional[np.ndarray]:
    """The bool mask of :func:`mask_thumbnail`'s text (None when it cannot be decoded)."""
    try:
        data = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
    except (ValueError, TypeError):
        return None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    return None if image is None else image > 127


# ------------------------------------------------------------------------- the paper's summary
@dataclass
class ClassSummary:
    """Per-class foreground IoU, mIoU and FB-IoU of a set of prediction rows (x 100)."""

    classes: list[str]
    iou: dict[str, Optional[float]]  # class -> summed-intersection / summed-union x 100
    episodes: dict[str, int]
    miou: Optional[float]
    fb_iou: Optional[float]
    failed: int = 0  # rows without statistics (unreadable episodes)
    mean_episode_iou: Optional[float] = None  # the plain mean of per-episode IoUs x 100, for reference
    notes: list[str] = field(default_factory=list)


def class_summary(rows: Sequence[dict]) -> ClassSummary:
    """The paper's way (see the module docstring) over prediction rows with ground-truth counts."""
    inter: dict[str, np.ndarray] = {}
    union: dict[str, np.ndarray] = {}
    episodes: dict[str, int] = {}
    ious = []
    failed = 0
    for row in rows:
        counts = row.get("counts") or {}
        if row.get("error") or "inter" not in counts:
            failed += 1
            continue
        name = str(row.get("class", ""))
        inter[name] = inter.get(name, np.zeros(2)) + np.asarray(counts["inter"], np.float64)
        union[name] = union.get(name, np.zeros(2)) + np.asarray(counts["union"], np.float64)
        episodes[name] = episodes.get(name, 0) + 1
        ious.append(float(row["values"]["iou"]))
    classes = sorted(episodes)
    per_class = {c: 100.0 * inter[c][1] / max(union[c][1], 1.0) for c in classes}
    if classes:
        total_inter = sum(inter.values())
        total_union = sum(union.values())
        fb = 100.0 * float(np.mean(total_inter / np.maximum(total_union, 1.0)))
        miou = float(np.mean(list(per_class.values())))
    else:
        fb = miou = None
    return ClassSummary(classes, per_class, episodes, miou, fb, failed,
                        100.0 * math.fsum(ious) / len(ious) if ious else None)


def summary_markdown(summary: ClassSummary, title: str = "", digits: int = 2) -> str:
    lines = [title, ""] if title else []
    lines += ["| Class | IoU ↑ | Episodes |", "|:---|---:|---:|"]
    for name in summary.classes:
        lines.append(f"| {name} | {summary.iou[name]:.{digits}f} | {summary.episodes[name]} |")
    fmt = (lambda v: "n/a" if v is None else f"{v:.{digits}f}")
    lines += ["", f"mIoU {fmt(summary.miou)} · FB-IoU {fmt(summary.fb_iou)} over "
                  f"{sum(summary.episodes.values())} episodes"
              + (f" ({summary.failed} without a prediction)" if summary.failed else ""),
              "", "IoU per class = summed intersection / summed union over its episodes (x 100); mIoU = mean over "
                  "classes; FB-IoU = mean of background and foreground IoU over all episodes; label-255 pixels "
                  "ignored.", ""]
    return "\n".join(lines)


def summary_json(summary: ClassSummary) -> dict:
    return {"classes": summary.classes, "iou_x100": summary.iou, "episodes": summary.episodes,
            "miou_x100": summary.miou, "fb_iou_x100": summary.fb_iou, "failed": summary.failed,
            "mean_episode_iou_x100": summary.mean_episode_iou}


def predictions_csv(rows: Sequence[dict]) -> str:
    """One line per episode: the failure table's columns (raw shares, not percentages)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["episode", "class", "query", "supports", *STAT_KEYS, "empty_prediction", "error"])
    for row in rows:
        values = row.get("values") or {}
        cells = ["" if values.get(k) is None else repr(float(values[k])) for k in STAT_KEYS]
        writer.writerow([row["episode"], row.get("class", ""), row.get("query", ""),
                         " ".join(row.get("supports", [])), *cells,
                         "" if row.get("error") else int(empty_prediction(values)), row.get("error") or ""])
    return buffer.getvalue()
