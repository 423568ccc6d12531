"""What the playback tab exports, written from a frozen snapshot of what it shows (no widgets).

The tab takes a :class:`PlaybackSnapshot` on the GUI thread (references to its data, nothing
rendered) and the writers below run on a worker thread: any panel of the shown frame as a
full-resolution PNG, the frame as a labelled figure, the curves as CSV or a plot PNG, every frame
as a folder or a ZIP, the attribution figure, and the HTML + PDF report. Every file is written
atomically (:mod:`fssgui.io`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import look
from . import report as R
from .io import save_png_atomic
from .report import charts
from .report import figures as F
from .metrics.causal import METRIC_TITLES, SUBSTRATE, Curve, metric_settings
from .pipeline.playback import MethodInput, RunStart


@dataclass(frozen=True)
class PlaybackSnapshot:
    """The playback tab's data at one moment (see the module docstring)."""

    episode: Any  # the Episode of the context (None before one is set)
    spec: Any  # ModelSpec
    region: Any  # R given with the context (bool [H, W] or None)
    region_source: str
    methods: dict[str, MethodInput]
    start: Optional[RunStart]
    frames: dict[tuple[str, str], list]  # (method, metric) -> CausalFrame list, in step order
    curves: dict[tuple[str, str], Curve]  # finished curves
    run_params: dict[str, Any]
    frame: Any = None  # the CausalFrame shown (None: no frame)
    frame_title: str = ""
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # method -> figure colour

    # ------------------------------------------------------------------ what there is
    def all_frames(self) -> list:
        return [f for key in self.frames for f in self.frames[key]]

    def export_curves(self) -> list[Curve]:
        """Finished curves, and the computed part of unfinished ones (``complete`` False, no value)."""
        out = []
        for key, frames in self.frames.items():
            curve = self.curves.get(key)
            if curve is None:
                method, metric = key
                measure = self.run_params.get("measure", "confidence")
                params = dict(metric_settings(metric, measure, self.run_params.get("steps"),
                                              self.run_params.get("percentage")), substrate=SUBSTRATE)
                curve = Curve(metric, measure, method, [f.fraction for f in frames], [f.score for f in frames],
                              None, params, False)
            out.append(curve)
        return out

    def _need_frame(self):
        if self.frame is None or self.start is None:
            raise R.ExportError("no frame is shown: run the metrics first")
        return self.frame

    # ------------------------------------------------------------------ writers
    def panel_png(self, name: str, path: str | Path) -> Path:
        """One panel of the shown frame at full resolution (rendered from the data)."""
        return save_png_atomic(path, R.frame_panels(self.start.base, self._need_frame())[name])

    def frame_figure(self, path: str | Path, scale: float = 2.0) -> Path:
        frame = self._need_frame()
        return save_png_atomic(path, R.frame_composite(self.start.base, frame, title=self.frame_title, scale=scale))

    def curves_csv(self, path: str | Path) -> Path:
        return R.write_curves_csv(path, self.export_curves())

    def curves_png(self, path: str | Path, metric: str, scale: float = 2.0) -> Path:
        curves = [c for c in self.export_curves() if c.metric == metric]
        if not curves:
            raise R.ExportError(f"no {METRIC_TITLES.get(metric, metric)} curve to export")
        frame = self.frame
        marker = (frame.fraction, frame.score) if frame is not None and frame.metric == metric else None
        series = [charts.Series(legend_text(c.method, c if c.complete else None), c.fractions, c.scores,
                                self.colours.get(c.method, look.palette_colour(0))) for c in curves]
        verb = "deleted" if metric == "dauc" else "inserted"
        image = charts.line_plot(series, title=f"{METRIC_TITLES[metric]}: {curves[0].describe()}",
                                 xlabel=f"fraction of support pixels {verb}",
                                 ylabel="confidence over R" if curves[0].measure == "confidence" else "foreground IoU",
                                 marker=marker, scale=scale)
        return save_png_atomic(path, image)

    def frames_files(self, path: str | Path) -> Path:
        """Every frame: a ZIP when ``path`` ends in .zip, otherwise a folder."""
        if self.start is None or not self.frames:
            raise R.ExportError("no frames to export: run the metrics first")
        measure = self.run_params.get("measure", "")
        if str(path).lower().endswith(".zip"):
            return R.write_frames_zip(path, self.start.base, self.all_frames(), measure=measure)
        return R.write_frames_folder(path, self.start.base, self.all_frames(), measure=measure)

    def attribution_figure(self, path: str | Path, scale: float = 2.0) -> Path:
        if self.episode is None or not self.methods:
            raise R.ExportError("no attribution maps to export")
        ep = self.episode
        sizes = [s.image.shape[:2] for s in ep.supports]
        rows = [F.MapRow(name, m.support_maps(sizes), m.signed,
                         m.params.get("zero_level") if isinstance(m.params.get("zero_level"), (int, float)) else None)
                for name, m in self.methods.items()]
        prediction = self.start.prediction if self.start is not None else None
        iou = None
        if prediction is not None and ep.query_mask is not None:
            from .imaging import foreground_iou

            iou = foreground_iou(prediction, ep.query_mask)
        region = self.start.region if self.start is not None else self.region
        image = F.episode_figure(ep.query_image, [s.image for s in ep.supports], [s.mask for s in ep.supports], rows,
                                 prediction=prediction, region=region, region_label=self.region_source,
                                 ground_truth=ep.query_mask, iou=iou, scale=scale, tile=200,
                                 width=R.PDF_TEXT_WIDTH_PX)
        return save_png_atomic(path, image)

    def report_inputs(self) -> R.ReportInputs:
        if self.episode is None or self.start is None:
            raise R.ExportError("run the metrics first: the report needs the prediction and the curves")
        sizes = [s.image.shape[:2] for s in self.episode.supports]
        methods = [R.MethodResult(name, m.support_maps(sizes), m.signed, m.params, m.seconds, m.level_weights,
                                  m.level_names) for name, m in self.methods.items()]
        folder = getattr(self.episode, "folder", None)
        start = self.start
        return R.ReportInputs(
            self.episode, str(folder) if folder else "(unsaved episode)", self.spec.name,
            start.model_description, start.input_size, start.device,
            "GPU" if start.device.startswith("cuda") else "CPU", start.prediction, start.region,
            self.region_source, methods, self.export_curves(), checkpoint=self.spec.checkpoint,
            measure=self.run_params.get("measure", "confidence"),
            notes=["Maps computed in the window; for ranking they were resized from the supports' resolution to "
                   "the model's input size."],
        )

    def report(self, folder: str | Path, pdf: bool = True) -> R.ReportFiles:
        return R.write_report(folder, self.report_inputs(), pdf=pdf)


def legend_text(method: str, curve: Optional[Curve]) -> str:
    """A curve's legend entry: the method, and its value once the curve is complete."""
    if curve is not None and curve.value is not None:
        return f"{method} ({curve.value_name()} {curve.value:.4f})"
    return method
