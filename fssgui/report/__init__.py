"""Reports and exports, without Qt (except the PDF, which imports Qt when it is made).

:func:`write_report` is the entry point: it writes ``report.html`` (self-contained: images
embedded as base64 PNG), ``report.pdf`` (Qt's QTextDocument printed by QPdfWriter, offscreen),
``summary.json`` (every number the report shows), the figure PNGs and ``curves.csv`` (every
point of every curve). Every number in the HTML sits in an element whose ``data-key`` is the JSON
pointer of that number in ``summary.json``, so the two cannot silently disagree. Every file is
written atomically (:mod:`fssgui.io`).

The modules, each read in one sitting:

* :mod:`.summary`: the inputs (:class:`ReportInputs`, :class:`MethodResult`) and ``summary.json``;
* :mod:`.html_page`: the HTML page; :mod:`.pdf`: the same page printed to A4;
* :mod:`.figures` (episode, curves, level weights, playback step), drawn with :mod:`.charts` and
  :mod:`.drawing`, in the look of :mod:`fssgui.look` (the app's colours and colour scales);
* :mod:`.frames`: causal-metric steps as data; :mod:`.playback`: their panels, figures and
  exports (ZIP, folder, ``curves.csv``).

Nothing here computes a number: the curves come from the pipeline (:mod:`fssgui.pipeline`, the
one causal runner of :mod:`fssgui.metrics.causal`); the report renders them.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ExportError
from ..io import encode_png, write_bytes_atomic
from .figures import report_figures
from .frames import CausalFrame, FrameBase, denormalise, frame_base
from .html_page import render_html
from .pdf import PDF_TEXT_WIDTH_PX, figure_pieces, pdf_bytes, pdf_document, pdf_html, write_pdf
from .playback import (
    frame_composite,
    frame_panels,
    frame_title,
    panel_names,
    panel_title,
    write_curves_csv,
    write_frames_folder,
    write_frames_zip,
)
from .summary import CURVES_CSV, MethodResult, ReportInputs, build_summary, json_pointer, resolve_pointer

__all__ = [
    "CURVES_CSV", "PDF_TEXT_WIDTH_PX", "CausalFrame", "ExportError", "FrameBase", "MethodResult", "ReportFiles",
    "ReportInputs", "build_summary", "denormalise", "figure_pieces", "frame_base", "frame_composite",
    "frame_panels", "frame_title", "json_pointer", "panel_names", "panel_title", "pdf_bytes", "pdf_document",
    "pdf_html", "render_html", "report_figures", "resolve_pointer", "write_curves_csv",
    "write_frames_folder", "write_frames_zip", "write_pdf", "write_report",
]

#: widest a figure is shown in the HTML page (layout px)
HTML_FIGURE_MAX_WIDTH_PX = 1060


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
    the HTML at their display width; the episode figure is as wide as the PDF's text column."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(inputs)
    figures = report_figures(inputs, summary, scale)
    encoded = {name: encode_png(image) for name, image in figures.items()}
    figure_paths = [write_bytes_atomic(out / name, data) for name, data in encoded.items()]
    curves_path = write_curves_csv(out / CURVES_CSV, inputs.curves) if inputs.curves else None
    summary_path = write_bytes_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))

    def width(name: str, limit: int) -> int:
        return int(min(limit, figures[name].shape[1] / scale))

    embedded = {name: (f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}",
                       width(name, HTML_FIGURE_MAX_WIDTH_PX)) for name, data in encoded.items()}
    html_path = write_bytes_atomic(out / "report.html", render_html(summary, embedded).encode("utf-8"))
    pdf_path = None
    if pdf:
        named = {name: (name, width(name, PDF_TEXT_WIDTH_PX)) for name in encoded}
        pdf_path = write_pdf(out / "report.pdf", pdf_html(render_html(summary, named, for_pdf=True)), encoded,
                             title=f"fssgui report: {Path(inputs.episode_path).name}")
    return ReportFiles(out, html_path, pdf_path, summary_path, curves_path, figure_paths)
