"""One report for the worst N episodes of a sweep: a front page (the setup, the per-class IoU of the
whole sweep, the table of the N episodes with their failure statistics and metric values) and a
page per episode (query, prediction, R, ground truth, per-support maps, curves: the single-episode
report of :mod:`fssgui.report`).

This module only composes the :mod:`fssgui.report` package (:func:`~fssgui.report.build_summary`,
:func:`~fssgui.report.report_figures`, :func:`~fssgui.report.render_html`,
:func:`~fssgui.report.pdf_html`, :func:`~fssgui.report.pdf_bytes`, its HTML builder); no number is
computed here.
As in that report, every number of the HTML is tagged with its JSON pointer in ``summary.json``
(the per-episode pages' pointers are prefixed with ``/episodes/<i>/report``).

Files: ``report.html`` (self-contained), ``report.pdf``, ``summary.json``, ``worst.csv`` (the
front table) and ``episode_<n>/`` (the page's figures and ``curves.csv``).
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import __version__
from .. import report as R
from ..evaluate.predictions import STAT_COLUMNS, ClassSummary, summary_json
from ..io import encode_png, write_bytes_atomic
from ..report.html_page import _Html
from ..report.summary import _json_safe, format_value
from .results import FailureRecord

_BODY = re.compile(r"<body>(.*)</body>", re.S)
_H1 = re.compile(r"<h1>.*?</h1>\s*(<p class=\"sub\">Created .*?</p>)?", re.S)


@dataclass
class ReportPage:
    """One of the worst episodes: its failure record (statistics and metric values from the results
    store: the numbers of ``fssgui evaluate``) and the single-episode report's inputs."""

    record: FailureRecord
    inputs: Optional[R.ReportInputs]  # None: the episode could not be explained (the record says why)
    method: str
    notes: list[str] = field(default_factory=list)


@dataclass
class TriageReportFiles:
    folder: Path
    html: Path
    pdf: Optional[Path]
    summary: Path
    table: Path
    figures: list[Path]


def _episode_entry(rank: int, page: ReportPage, metric_names: Sequence[str]) -> dict[str, Any]:
    record = page.record
    return {
        "rank": rank,
        "episode": record.episode,
        "class": record.class_name,
        "query": record.row.query,
        "supports": list(record.row.supports),
        "stats": {c.key: record.value(c.key) for c in STAT_COLUMNS},
        "method": page.method,
        "metrics": {name: record.metrics.get(page.method, {}).get(name) for name in metric_names},
        "metric_error": record.metric_errors.get(page.method),
        "notes": list(page.notes),
    }


def build_triage_summary(pages: Sequence[ReportPage], *, title: str, setup: dict, ranking: dict,
                         classes: ClassSummary, metric_names: Sequence[str]) -> dict[str, Any]:
    """The report's numbers as a JSON-ready dict (``episodes[i].report`` is the page's own
    :func:`fssgui.report.build_summary`)."""
    episodes = []
    for rank, page in enumerate(pages, start=1):
        entry = _episode_entry(rank, page, metric_names)
        entry["report"] = None if page.inputs is None else R.build_summary(page.inputs)
        episodes.append(entry)
    return _json_safe({
        "format": "fssgui-triage-report-1",
        "fssgui_version": __version__,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "title": title,
        "setup": setup,
        "ranking": ranking,
        "classes": summary_json(classes),
        "metric_names": list(metric_names),
        "episodes": episodes,
    })


def _front_html(s: dict) -> str:
    h = _Html()
    h.add(f"<h1>{h.esc(s['title'])}</h1>")
    h.add(f'<p class="sub">Created {h.esc(s["created"])} with fssgui {h.esc(s["fssgui_version"])}.</p>')
    h.add("<h2>Setup</h2><table>")
    for key, value in s["setup"].items():
        h.add(f"<tr><th>{h.esc(key)}</th><td>{h.esc(format_value(value))}</td></tr>")
    h.add("</table>")
    c = s["classes"]
    h.add("<h2>Prediction over the swept episodes</h2>")
    h.add(f"<p>mIoU {h.num(s, 'classes', 'miou_x100', digits=2)} · "
          f"FB-IoU {h.num(s, 'classes', 'fb_iou_x100', digits=2)}"
          f" (x 100; the IoU of a class is its summed intersection over its summed union; label-255 pixels "
          f"ignored).</p>")
    h.add('<table><tr><th>Class</th><th class="n">IoU</th><th class="n">Episodes</th></tr>')
    for name in c["classes"]:
        h.add(f"<tr><td>{h.esc(name)}</td><td class=\"n\">{h.num(s, 'classes', 'iou_x100', name, digits=2)}</td>"
              f"<td class=\"n\">{h.num(s, 'classes', 'episodes', name)}</td></tr>")
    h.add("</table>")
    r = s["ranking"]
    h.add(f"<h2>The {len(s['episodes'])} worst episodes by {h.esc(r['title'])}</h2>")
    h.add(f"<p>Explained with {h.esc(r['method'])}, R = {h.esc(r['region'])}. Metric values are those of the "
          f"results folder (the numbers of fssgui evaluate).</p>")
    header = ["#", "Episode", "Class"] + [c.title for c in STAT_COLUMNS] + list(s["metric_names"])
    h.add("<table><tr>" + "".join(f'<th class="n">{h.esc(t)}</th>' if i != 2 else f"<th>{h.esc(t)}</th>"
                                  for i, t in enumerate(header)) + "</tr>")
    for i, e in enumerate(s["episodes"]):
        cells = [f'<td class="n">{h.num(s, "episodes", i, "rank")}</td>',
                 f'<td class="n"><a href="#episode-{e["episode"]}">{h.num(s, "episodes", i, "episode")}</a></td>',
                 f"<td>{h.esc(e['class'])}</td>"]
        cells += [f'<td class="n">{h.num(s, "episodes", i, "stats", col.key, digits=3)}</td>' for col in STAT_COLUMNS]
        cells += [f'<td class="n">{h.num(s, "episodes", i, "metrics", name)}</td>' for name in s["metric_names"]]
        h.add("<tr>" + "".join(cells) + "</tr>")
    h.add("</table>")
    return h.text()


def _page_html(s: dict, index: int, figures: dict[str, tuple[str, int]]) -> tuple[str, str]:
    """The single-episode report's ``<head>`` and its body, re-keyed under ``/episodes/index/report``
    and headed by the episode's rank."""
    e = s["episodes"][index]
    iou = e["stats"].get("iou")
    heading = (f'<h1 id="episode-{e["episode"]}" style="page-break-before: always">#{e["rank"]} · episode '
               f'{e["episode"]} · {_Html.esc(e["class"])}'
               + (f" · IoU {iou:.3f}" if iou is not None else "") + "</h1>")
    if e["report"] is None:
        reason = e["metric_error"] or "no explanation"
        return "", (f"{heading}<p>Query {_Html.esc(e['query'])}, supports {_Html.esc(', '.join(e['supports']))}"
                    f": not explained ({_Html.esc(reason)}).</p>")
    document = R.render_html(e["report"], figures)
    head = document.split("<body>", 1)[0]
    body = _BODY.search(document).group(1)
    body = body.replace('data-key="/', f'data-key="/episodes/{index}/report/')
    body = _H1.sub(lambda _m: heading, body, count=1)
    if e["notes"]:
        body += "<ul>" + "".join(f"<li>{_Html.esc(n)}</li>" for n in e["notes"]) + "</ul>"
    return head, body


def worst_csv(s: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "episode", "class", "query", "supports"] + [c.key for c in STAT_COLUMNS]
                    + list(s["metric_names"]) + ["method"])
    for e in s["episodes"]:
        writer.writerow([e["rank"], e["episode"], e["class"], e["query"], " ".join(e["supports"])]
                        + ["" if e["stats"][c.key] is None else repr(e["stats"][c.key]) for c in STAT_COLUMNS]
                        + ["" if e["metrics"][n] is None else repr(e["metrics"][n]) for n in s["metric_names"]]
                        + [e["method"]])
    return buffer.getvalue()


def write_triage_report(out: str | Path, pages: Sequence[ReportPage], *, title: str, setup: dict, ranking: dict,
                        classes: ClassSummary, metric_names: Sequence[str], pdf: bool = True,
                        scale: float = 2.0) -> TriageReportFiles:
    """Write the report of ``pages`` (worst first) into ``out``; every file atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_triage_summary(pages, title=title, setup=setup, ranking=ranking, classes=classes,
                                   metric_names=metric_names)
    html_parts, pdf_parts, images, figure_paths = [], [], {}, []
    head = ""
    for index, page in enumerate(pages):
        embedded, named = {}, {}
        if page.inputs is None:
            html_parts.append(_page_html(summary, index, embedded)[1])
            pdf_parts.append(html_parts[-1])
            continue
        folder = out / f"episode_{page.record.episode}"
        folder.mkdir(exist_ok=True)
        figures = R.report_figures(page.inputs, summary["episodes"][index]["report"], scale)
        for name, image in figures.items():
            data = encode_png(image)
            write_bytes_atomic(folder / name, data)
            figure_paths.append(folder / name)
            width = int(image.shape[1] / scale)
            embedded[name] = (f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}",
                              min(width, R.HTML_FIGURE_MAX_WIDTH_PX))
            key = f"episode_{page.record.episode}/{name}"
            named[name] = (key, min(width, R.PDF_TEXT_WIDTH_PX))
            images[key] = data
        if page.inputs.curves:
            R.write_curves_csv(folder / "curves.csv", page.inputs.curves)
        page_head, body = _page_html(summary, index, embedded)
        head = head or page_head
        html_parts.append(body)
        pdf_parts.append(_page_html(summary, index, named)[1])
    front = _front_html(summary)
    head = re.sub(r"<title>.*?</title>", f"<title>{_Html.esc(title)}</title>", head, count=1) if head else (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_Html.esc(title)}</title></head>')
    html_text = head + "<body>" + front + "".join(html_parts) + "</body></html>\n"
    html_path = out / "report.html"
    write_bytes_atomic(html_path, html_text.encode("utf-8"))
    summary_path = out / "summary.json"
    write_bytes_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    table_path = out / "worst.csv"
    write_bytes_atomic(table_path, worst_csv(summary).encode("utf-8"))
    pdf_path = None
    if pdf:
        pdf_html = R.pdf_html("<html><body>" + front + "".join(pdf_parts) + "</body></html>")
        pdf_path = out / "report.pdf"
        write_bytes_atomic(pdf_path, R.pdf_bytes(pdf_html, images, title))
    return TriageReportFiles(out, html_path, pdf_path, summary_path, table_path, figure_paths)
