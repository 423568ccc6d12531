"""The report as HTML (:func:`render_html`), from the summary alone: every number sits in an
element whose ``data-key`` is its JSON pointer in ``summary.json``, so the page and the file
cannot silently disagree. The same HTML, with figure names instead of ``data:`` URLs, is what
:mod:`fssgui.report.pdf` prints.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping

from .. import look
from ..metrics.causal import MEASURE_TITLES, METRIC_TITLES, SUBSTRATE
from .figures import curves_figure_name, episode_figure_name, level_weights_figure_name
from .summary import format_value, json_pointer, resolve_pointer


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
    names = look.COLOUR_NAMES
    _figure(h, figures, episode_figure_name(),
            f"Query with its prediction ({names['prediction']} outline), region R ({names['region']}) and ground "
            f"truth ({names['truth']} outline). One row per support: the support with its mask ({names['support']}), "
            "then one column per method: its map over the support (mask outlined in white) with the method's colour "
            f"scale under the column (one scale for all supports, the lowest and highest {look.CLIP_PERCENT:g}% of "
            "the values clipped). Signed maps use a diverging scale centred on 'no evidence'; the colours are the "
            "app's.")
    h.add("<table><tr><th>Method</th><th>Signed</th><th>Parameters</th><th class=\"n\">Time (s)</th></tr>")
    for method, info in s["methods"].items():
        params = ", ".join(_param_html(h, s, method, k, v) for k, v in info["params"].items())
        seconds = h.num(s, "methods", method, "seconds", digits=2) if "seconds" in info else "n/a"
        if info.get("levels_from"):
            seconds += f" (levels of {h.num(s, 'methods', method, 'levels_from')})"
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
        _figure(h, figures, level_weights_figure_name(method),
                "Feature-ablation weight of each matching level (they sum to 1).")
        names = weights["names"]
        rows = math.ceil(len(names) / 2)  # two levels per table row: half the height

        def cells(i: int) -> str:
            if i >= len(names):
                return "<td></td><td></td>"
            return (f"<td>{h.esc(names[i])}</td>"
                    f"<td class=\"n\">{h.num(s, 'methods', method, 'level_weights', 'values', i)}</td>")

        header = "<th>Level</th><th class=\"n\">Weight</th>" * (2 if len(names) > 1 else 1)
        h.add(f"<table><tr>{header}</tr>" + "".join(
            f"<tr>{cells(r)}{cells(r + rows) if len(names) > 1 else ''}</tr>" for r in range(rows)) + "</table>")

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
              "<th class=\"n\">States per pass</th><th class=\"n\">Points</th></tr>")
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
                      f"<td class=\"n\">{_optional_num(h, s, c, method, metric, 'batch_size')}</td>"
                      f"<td class=\"n\">{h.num(s, 'causal', 'curves', method, metric, 'points')}</td></tr>")
        h.add("</table>")
        h.add(f"<p>The points of every curve (fraction of support pixels, score) are in "
              f"<span class=\"mono\">{h.esc(s['causal']['points_file'])}</span> beside this report.</p>")
        for pair in range(0, len(metrics), 2):
            shown = metrics[pair : pair + 2]
            titles = " and ".join(METRIC_TITLES.get(m, m) for m in shown)
            _figure(h, figures, [curves_figure_name(m) for m in shown],
                    f"{titles} curves; the legend gives each method's value.")
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


def _figure(h: _Html, figures: Mapping[str, tuple[str, int]], names: str | list[str], caption: str) -> None:
    """One figure, or several side by side (marked ``class="whole"``: the PDF keeps them whole,
    on one line), with their caption."""
    names = [n for n in ([names] if isinstance(names, str) else names) if n in figures]
    if not names:
        return
    whole = ' class="whole"' if len(names) > 1 else ""
    images = " ".join(f'<img src="{h.esc(figures[n][0])}" width="{int(figures[n][1])}" alt="{h.esc(n)}"{whole}>'
                      for n in names)
    files = ", ".join(h.esc(n) for n in names)
    h.add(f'<div class="fig">{images}</div><p class="cap">{h.esc(caption)} <span class="mono">({files})</span></p>')
