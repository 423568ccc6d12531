"""Playback frames rendered and exported: the panels of one causal-metric step (what the playback
tab shows and what is written), the composite figure of a step, every frame as PNGs in a ZIP or a
folder, and the curves as CSV. Every write is atomic (:mod:`fssgui.io`).
"""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from .. import io as fio
from .. import look
from ..imaging import resize_map, resize_mask
from . import drawing as D
from ..metrics.causal import MEASURE_TITLES, METRIC_TITLES, SUBSTRATE, Curve
from .figures import frame_figure, safe_name
from .frames import CausalFrame, FrameBase

# ------------------------------------------------------------------------------------ panels
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
    mask with the removed pixels cleared (nearest upsampling); the query prediction outlined over
    the query; the foreground probability (0..1) at the query's resolution, in the look of
    :mod:`fssgui.look`."""
    kept = frame.kept()
    panels: dict[str, np.ndarray] = {}
    for k, image in enumerate(base.support_images):
        size = image.shape[:2]
        kept_k = resize_mask(kept[k], size)
        perturbed = np.where(kept_k[..., None], image, base.substrate_colour[None, None, :]).astype(np.uint8)
        panels[f"support_{k + 1}"] = perturbed
        panels[f"support_{k + 1}_mask"] = D.as_rgb(resize_mask(base.model_support_masks[k] & kept[k], size))
    query_size = base.query_image.shape[:2]
    panels[PANEL_QUERY_PREDICTION] = look.outline(base.query_image, resize_mask(frame.prediction(), query_size),
                                                  look.PREDICTION_COLOUR)
    probability = np.clip(resize_map(frame.probability(), query_size), 0.0, 1.0)
    panels[PANEL_PROBABILITY] = look.apply_colormap(probability, look.PROBABILITY_COLORMAP, 0.0, 1.0)
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
    return frame_figure(images, masks, base.query_image, resize_mask(frame.prediction(), base.query_image.shape[:2]),
                        frame.probability(), title=title, tile=tile, scale=scale)


CSV_COLUMNS = ("method", "metric", "measure", "steps", "percentage", "substrate", "skip_empty", "index", "fraction",
               "score", "value_name", "value", "complete")


def curves_csv_text(curves: Iterable[Curve]) -> str:
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


def write_curves_csv(path: str | Path, curves: Iterable[Curve]) -> Path:
    return fio.write_bytes_atomic(path, curves_csv_text(curves).encode("utf-8"))


def _frame_files(base: FrameBase, frames: Sequence[CausalFrame], counts: Mapping[tuple[str, str], int],
                 measure: str, composite: bool) -> Iterable[tuple[str, bytes]]:
    """(relative path, PNG bytes) of every panel of every frame, then ``index.csv``."""
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(["method", "metric", "index", "state", "pixels", "fraction", "score", "files"])
    for frame in frames:
        folder = f"{safe_name(frame.method)}/{safe_name(frame.metric)}"
        stem = f"{folder}/step_{frame.index:03d}"
        names = []
        for name, image in frame_panels(base, frame).items():
            names.append(f"{stem}_{name}.png")
            yield names[-1], fio.encode_png(image)
        if composite:
            names.append(f"{stem}_figure.png")
            title = frame_title(frame, counts.get((frame.method, frame.metric)), measure)
            yield names[-1], fio.encode_png(frame_composite(base, frame, title=title))
        writer.writerow([frame.method, frame.metric, frame.index, frame.state, frame.pixels, repr(frame.fraction),
                         repr(frame.score), " ".join(names)])
    yield "index.csv", index.getvalue().encode("utf-8")


def write_frames_zip(path: str | Path, base: FrameBase, frames: Sequence[CausalFrame], *, measure: str = "",
                     composite: bool = True) -> Path:
    """Every frame's panels (and composite) as PNGs in one ZIP, with ``index.csv``. Atomic."""
    counts = _frame_counts(frames)
    with fio.atomic_file(path) as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in _frame_files(base, frames, counts, measure, composite):
                archive.writestr(name, data)
    return Path(path)


def write_frames_folder(folder: str | Path, base: FrameBase, frames: Sequence[CausalFrame], *, measure: str = "",
                        composite: bool = True) -> Path:
    """Every frame's panels as PNGs under ``folder`` (built beside it, then swapped in)."""
    counts = _frame_counts(frames)

    def fill(tmp: Path) -> None:
        for name, data in _frame_files(base, frames, counts, measure, composite):
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    return fio.replace_folder_atomic(folder, fill)


def _frame_counts(frames: Sequence[CausalFrame]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for f in frames:
        counts[(f.method, f.metric)] = max(counts.get((f.method, f.metric), 0), f.index + 1)
    return counts


