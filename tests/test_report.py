"""Exports and the report: atomic writes, files that read back, HTML numbers == summary.json, PDF."""
from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from html.parser import HTMLParser
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fssgui import io as fio
from fssgui import report as R
from fssgui.io import _umask
from fssgui.metrics.causal import curve_value
from fssgui.models.base import EpisodeTensors
from testkit import TINY_REPORT_SIZE as TINY_SIZE, TinyModel, make_episode, tiny_run, tiny_setup
from fssgui.models.registry import ModelEntry

@pytest.fixture(scope="module")
def computed():
    from fssgui.pipeline.curves import run_curves

    model, episode, batch, region, attributions = tiny_setup()
    run = tiny_run(model, episode)
    frames = []
    curves = run_curves(run, attributions, run.region("ground-truth"), metrics=("iauc", "dauc"), steps=6,
                        on_step=lambda curve, step: frames.append(R.CausalFrame.from_step(curve.method, curve.metric,
                                                                                          step)))
    return model, episode, batch, region, attributions, curves, frames


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------------- curves
def test_curves_match_the_causal_metric_and_frames_match_the_steps(computed):
    from fssgui.metrics.causal import CausalRun

    model, episode, batch, region, attributions, curves, frames = computed
    assert [(c.method, c.metric) for c in curves] == [("good", "iauc"), ("good", "dauc"), ("random", "iauc"),
                                                      ("random", "dauc")]
    for c in curves:
        reference = CausalRun(model, batch, attributions[c.method], region, c.metric, "confidence", steps=6).run()
        assert c.scores == pytest.approx(reference.scores)
        assert c.fractions == pytest.approx(reference.fractions)
        assert c.value == pytest.approx(reference.value)
        assert c.complete and len(c.scores) == 7
        mine = [f for f in frames if (f.method, f.metric) == c.key]
        assert [f.index for f in mine] == list(range(7))
        assert [f.score for f in mine] == c.scores and [f.fraction for f in mine] == c.fractions
    good = {c.metric: c.value for c in curves if c.method == "good"}
    rand = {c.metric: c.value for c in curves if c.method == "random"}
    assert good["iauc"] > rand["iauc"] and good["dauc"] < rand["dauc"]


def test_frame_state_is_the_state_that_gave_the_score(computed):
    """The frame's kept pixels are exactly the perturbed supports the model saw for that score."""
    from fssgui.metrics.causal import causal_steps

    model, episode, batch, region, attributions, curves, frames = computed
    for metric, mode in (("iauc", "insertion"), ("dauc", "deletion")):
        steps = list(causal_steps(model, batch, attributions["random"], region, mode=mode, steps=6))
        mine = [f for f in frames if (f.method, f.metric) == ("random", metric)]
        base = R.frame_base(episode, batch, model.entry)
        for step, frame in zip(steps, mine):
            kept = frame.kept()
            assert np.array_equal(kept[:, None].repeat(3, 1) * batch.supports[0].numpy(), step.supports.numpy())
            assert np.array_equal(base.model_support_masks & kept, step.support_masks.numpy() > 0.5)
            assert np.array_equal(frame.prediction(), step.prediction_mask.numpy())
            assert np.abs(frame.probability() - step.foreground_probability.numpy()).max() <= 0.5 / 255 + 1e-6
            # and the score is a function of those supports (the model's share of kept mask pixels)
            check = model.predict(EpisodeTensors(batch.query, step.supports[None], step.support_masks[None]))
            assert float(torch.softmax(check.logits, 1)[0, 1][region].mean()) == pytest.approx(frame.score, abs=1e-5)


def test_frame_panels_are_full_resolution(computed):
    model, episode, batch, region, attributions, curves, frames = computed
    base = R.frame_base(episode, batch, model.entry)
    panels = R.frame_panels(base, frames[0])
    assert list(panels) == R.panel_names(2)
    assert panels["support_1"].shape == episode.supports[0].image.shape
    assert panels["query_prediction"].shape == episode.query_image.shape
    # insertion state 0: every support pixel is the substrate colour and the mask is empty
    assert (panels["support_1"] == base.substrate_colour).all()
    assert panels["support_1_mask"].max() == 0
    last = [f for f in frames if (f.method, f.metric) == ("good", "iauc")][-1]
    full = R.frame_panels(base, last)
    assert np.array_equal(full["support_2"], episode.supports[1].image)
    figure = R.frame_composite(base, last, title="x")
    assert figure.ndim == 3 and figure.shape[1] > 4 * 100


# ------------------------------------------------------------------------------------ exports
def test_curves_csv_reads_back(computed, tmp_path):
    curves = computed[5]
    path = R.write_curves_csv(tmp_path / "curves.csv", curves)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == sum(len(c.scores) for c in curves)
    for c in curves:
        mine = [r for r in rows if (r["method"], r["metric"]) == c.key]
        assert [float(r["score"]) for r in mine] == c.scores
        assert [float(r["fraction"]) for r in mine] == c.fractions
        assert {float(r["value"]) for r in mine} == {c.value}
        assert {r["steps"] for r in mine} == {"6"} and {r["substrate"] for r in mine} == {"zero"}
    assert leftovers(tmp_path) == []


def test_frames_zip_and_folder(computed, tmp_path):
    model, episode, batch, region, attributions, curves, frames = computed
    base = R.frame_base(episode, batch, model.entry)
    some = frames[:7]
    path = R.write_frames_zip(tmp_path / "frames.zip", base, some, measure="confidence")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
        assert len(index) == 7
        for row in index:
            for name in row["files"].split():
                assert name in names
                image = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
                assert image is not None and image.size > 0
        assert "good/iauc/step_003_support_1.png" in names
        assert float(index[3]["score"]) == some[3].score
    folder = R.write_frames_folder(tmp_path / "frames", base, some, composite=False)
    assert (folder / "index.csv").is_file()
    assert len(list(folder.rglob("*.png"))) == 7 * len(R.panel_names(2))
    assert leftovers(tmp_path) == []


def test_failed_writes_leave_the_old_files(computed, tmp_path, monkeypatch):
    model, episode, batch, region, attributions, curves, frames = computed
    base = R.frame_base(episode, batch, model.entry)
    zip_path = tmp_path / "frames.zip"
    zip_path.write_bytes(b"old zip")
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    png = tmp_path / "panel.png"
    png.write_bytes(b"old png")
    real = fio.encode_png
    calls = {"n": 0}

    def failing(image):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full (simulated)")
        return real(image)

    monkeypatch.setattr(fio, "encode_png", failing)
    with pytest.raises(OSError):
        R.write_frames_zip(zip_path, base, frames)
    calls["n"] = 0
    with pytest.raises(OSError):
        R.write_frames_folder(folder, base, frames)
    calls["n"] = 10
    with pytest.raises(OSError):
        fio.save_png_atomic(png, np.zeros((4, 4, 3), np.uint8))
    assert zip_path.read_bytes() == b"old zip"
    assert sorted(p.name for p in folder.iterdir()) == ["old.txt"]
    assert png.read_bytes() == b"old png"
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(fio, "encode_png", real)
    fio.save_png_atomic(png, np.zeros((4, 5, 3), np.uint8))
    assert cv2.imread(str(png)).shape == (4, 5, 3)


# ------------------------------------------------------------------------------------- report
class _KeyedValues(HTMLParser):
    """Collects (data-key, text) of every tagged value and the <img> sources."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[str, str]] = []
        self.images: list[str] = []
        self._key = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "data-key" in attrs:
            self._key, self._text = attrs["data-key"], ""

    def handle_data(self, data):
        if self._key is not None:
            self._text += data

    def handle_endtag(self, tag):
        if self._key is not None and tag == "span":
            self.values.append((self._key, self._text))
            self._key = None


def _numeric_leaves(value, pointer=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numeric_leaves(v, pointer + "/" + str(k).replace("~", "~0").replace("/", "~1"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numeric_leaves(v, f"{pointer}/{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield pointer


def _check_shown(text: str, value) -> None:
    if isinstance(value, bool):
        assert text == ("yes" if value else "no")
    elif isinstance(value, int):
        assert int(text) == value
    elif isinstance(value, float):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-12, (text, value)
    elif value is None:
        assert text == "n/a"
    else:
        assert text == str(value)


@pytest.fixture(scope="module")
def report_inputs(computed, tmp_path_factory):
    model, episode, batch, region, attributions, curves, frames = computed
    checkpoint = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    checkpoint.write_bytes(b"not really a checkpoint, only hashed")
    rng = np.random.default_rng(1)
    methods = [
        R.MethodResult("good", [a.numpy() for a in attributions["good"]], signed=True,
                       params={"size": 16, "zero_level": 0.25, "mode": "paper"}, seconds=0.5,
                       level_weights=np.array([0.5, 0.3, 0.2]), level_names=["l0", "l1", "l2"]),
        R.MethodResult("random", [rng.random((24, 32)).astype(np.float32) for _ in range(2)], params={}),
    ]
    prediction = episode.query_mask.copy()
    prediction[:, :4] = True
    return R.ReportInputs(episode, "/data/episodes/disc-2shot", "tiny", "test model", TINY_SIZE, "cpu", "CPU",
                          prediction, episode.query_mask, "prediction", methods, curves, checkpoint=checkpoint)


@pytest.fixture(scope="module")
def written(report_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return R.write_report(out, report_inputs)


def test_report_files(written):
    out = written.folder
    names = sorted(p.name for p in out.iterdir())
    for name in ("report.html", "report.pdf", "summary.json", "curves.csv", "figure_episode.png",
                 "figure_curves_iauc.png", "figure_curves_dauc.png", "figure_level_weights_good.png"):
        assert name in names
    assert leftovers(out) == []
    mode = 0o666 & ~_umask()
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {mode}
    assert written.pdf.read_bytes().startswith(b"%PDF")
    assert written.pdf.stat().st_size > 10_000  # the figures are in it
    for path in written.figures:
        assert cv2.imread(str(path)) is not None


def test_report_html_numbers_are_the_summary_numbers(written, report_inputs):
    summary = json.loads(written.summary.read_text())
    parser = _KeyedValues()
    parser.feed(written.html.read_text())
    shown = dict(parser.values)
    assert len(parser.values) > 30
    for key, text in parser.values:
        _check_shown(text, R.resolve_pointer(summary, key))
    # every number in summary.json is shown
    assert set(_numeric_leaves(summary)) <= set(shown)
    # spot checks against the inputs themselves
    iou = float(np.logical_and(report_inputs.prediction, report_inputs.episode.query_mask).sum()
                / np.logical_or(report_inputs.prediction, report_inputs.episode.query_mask).sum())
    assert summary["prediction"]["iou"] == pytest.approx(iou)
    assert float(shown["/prediction/iou"]) == pytest.approx(iou, abs=5e-5)
    good_iauc = next(c for c in report_inputs.curves if c.key == ("good", "iauc"))
    assert float(shown["/causal/curves/good/iauc/value"]) == pytest.approx(good_iauc.value, abs=5e-5)
    assert summary["causal"]["curves"]["good"]["iauc"]["points"] == len(good_iauc.scores)
    assert summary["methods"]["good"]["level_weights"]["values"] == pytest.approx([0.5, 0.3, 0.2])
    import hashlib

    digest = hashlib.sha256(Path(report_inputs.checkpoint).read_bytes()).hexdigest()
    assert summary["model"]["checkpoint"] == {"file": "tiny.pt", "sha256": digest, "bytes": 36}
    assert digest in written.html.read_text()


def test_a_method_that_took_another_ones_levels_says_so(report_inputs):
    """An AffEx variant made from another variant's level maps and weights (no forward or ablation of
    its own) shows which one next to its time, in the summary and on the page."""
    import dataclasses

    good = report_inputs.methods[0]
    inputs = dataclasses.replace(report_inputs, methods=[good, dataclasses.replace(
        good, name="good-signed", seconds=0.01, levels_from="good")])
    summary = R.build_summary(inputs)
    assert summary["methods"]["good-signed"]["levels_from"] == "good"
    assert "levels_from" not in summary["methods"]["good"]
    parser = _KeyedValues()
    parser.feed(R.render_html(summary, {}))
    assert ("/methods/good-signed/levels_from", "good") in parser.values


def test_report_html_is_self_contained(written):
    parser = _KeyedValues()
    text = written.html.read_text()
    parser.feed(text)
    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        import base64

        data = base64.b64decode(src.split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    assert not re.search(r'(src|href)="(?!data:)', text)


def test_report_shows_curves_not_their_points(written, report_inputs):
    """The HTML (and so the PDF) shows each curve's value and plot; the points are in curves.csv."""
    text = written.html.read_text()
    summary = json.loads(written.summary.read_text())
    assert "Curve points" not in text and "curves.csv" in text
    parser = _KeyedValues()
    parser.feed(text)
    keys = [key for key, _ in parser.values]
    assert not [k for k in keys if "/fractions/" in k or "/scores/" in k]
    assert "/causal/curves/good/iauc/points" in keys
    points = sum(c["points"] for per in summary["causal"]["curves"].values() for c in per.values())
    assert points == sum(len(c.scores) for c in report_inputs.curves)
    assert len(list(csv.DictReader(written.curves_csv.open()))) == points


def test_report_without_ground_truth_or_curves(report_inputs, tmp_path):
    import dataclasses

    episode = report_inputs.episode.copy()
    episode.query_mask = None
    inputs = dataclasses.replace(report_inputs, episode=episode, curves=[], checkpoint=None)
    files = R.write_report(tmp_path, inputs, pdf=False)
    summary = json.loads(files.summary.read_text())
    assert summary["prediction"]["iou"] is None and summary["model"]["checkpoint"] is None
    text = files.html.read_text()
    assert "n/a (no ground truth)" in text and "No causal metric was computed" in text
    assert files.pdf is None and not (tmp_path / "report.pdf").exists() and files.curves_csv is None


# ------------------------------------------------------------------------------ PDF pages
def test_figure_pieces_cut_only_in_wide_background_bands():
    image = np.full((100, 20, 3), 255, np.uint8)
    image[5:30] = 0  # row 1
    image[32:50, 3] = 7  # row 2, 2 white rows above it: too thin a gap to break at
    image[60:90] = 128  # row 3, 10 white rows above it
    pieces = R.figure_pieces(image, min_gap=5)
    assert pieces == [(0, 55), (55, 100)]  # the middle of rows 50..59; top/bottom margins are no cuts
    assert R.figure_pieces(image, min_gap=2) == [(0, 31), (31, 55), (55, 100)]
    # a piece lower than min_piece joins the next one (a row title never ends a page alone)
    assert R.figure_pieces(image, min_gap=2, min_piece=40) == [(0, 55), (55, 100)]
    assert R.figure_pieces(image, min_gap=2, min_piece=60) == [(0, 100)]
    dark_top = image.copy()
    dark_top[0, 10] = 0  # no uniform first row: no known background, no cut
    assert R.figure_pieces(dark_top, min_gap=2) == [(0, 100)]


def _image_lines(document):
    """(image name, top, height) of every image in the laid-out document, in layout px."""
    layout = document.documentLayout()
    out = []
    block = document.begin()
    while block.isValid():
        top = layout.blockBoundingRect(block).top()
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.isValid() and fragment.charFormat().isImageFormat():
                image_format = fragment.charFormat().toImageFormat()
                line = block.layout().lineForTextPosition(fragment.position() - block.position())
                out.append((image_format.name(), top + line.y(), line.height()))
            it += 1
        block = block.next()
    return out


def test_pdf_first_figure_starts_on_page_one_and_flows_between_its_rows(report_inputs):
    """Qt's layout moves an image higher than the rest of the page to the next page whole: the
    tall episode figure (one row per method) used to leave most of page 1 empty."""
    import dataclasses

    rng = np.random.default_rng(5)
    extra = [R.MethodResult(f"extra{i}", [rng.random((24, 32)).astype(np.float32) for _ in range(2)])
             for i in range(4)]
    inputs = dataclasses.replace(report_inputs, methods=list(report_inputs.methods) + extra)
    summary = R.build_summary(inputs)
    figures = R.report_figures(inputs, summary, 2.0)
    encoded = {name: fio.encode_png(image) for name, image in figures.items()}
    named = {name: (name, int(min(R.PDF_TEXT_WIDTH_PX, figures[name].shape[1] / 2))) for name in encoded}
    html_text = R.pdf_html(R.render_html(summary, named, for_pdf=True))
    document = R.pdf_document(html_text, encoded)
    page = document.pageSize().height()
    lines = _image_lines(document)
    episode = [(name, top, height) for name, top, height in lines if name.startswith("figure_episode.png")]
    display_height = figures["figure_episode.png"].shape[0] * named["figure_episode.png"][1] / \
        figures["figure_episode.png"].shape[1]
    assert display_height > 0.6 * page  # taller than what is left of page 1 after the setup tables
    assert len(episode) > 2
    # the figure starts on page 1, right under the "3. Attribution maps" heading
    first_top = episode[0][1]
    assert first_top < page
    heading = document.find("3. Attribution maps")
    heading_bottom = document.documentLayout().blockBoundingRect(heading.block()).bottom()
    assert first_top - heading_bottom < 30
    # its pieces follow each other (a page break only between two pieces), and none is cut by a page end
    assert sum(h for _, _, h in episode) == pytest.approx(display_height, abs=6 * len(episode))
    def page_of(y: float) -> int:
        return int((y + 0.5) // page)  # Qt places a moved line at the page top up to float rounding

    for name, top, height in lines:
        assert page_of(top) == page_of(top + height - 1), name
    assert [page_of(top) for _, top, _ in episode] == sorted(page_of(top) for _, top, _ in episode)
    assert {page_of(top) for _, top, _ in episode} == {0, 1}
    assert R.pdf_bytes(html_text, encoded).startswith(b"%PDF")


# --------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_registered():
    from fssgui.models import registry

    registry.list_models()
    if "tiny-test" not in registry._REGISTRY:
        registry.register(ModelEntry("tiny-test", TinyModel, TINY_SIZE, needs_checkpoint=False,
                                     description="report test model", matching=False))
    return "tiny-test"


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory):
    from fssgui.episode import save_episode

    folder = tmp_path_factory.mktemp("episode") / "disc"
    save_episode(make_episode(shots=2, size=(24, 32), seed=4), folder)
    return folder


def test_cli_report(tiny_registered, episode_dir, tmp_path, capsys):
    from fssgui.cli import main

    out = tmp_path / "out"
    code = main(["report", str(episode_dir), "--model", tiny_registered, "--device", "cpu", "--methods",
                 "saliency,random", "--param", "random.seed=3", "--steps", "5", "--region", "ground-truth",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("report.html", "report.pdf", "summary.json", "curves.csv", "figure_episode.png",
                 "figure_curves_iauc.png", "figure_curves_dauc.png"):
        assert (out / name).is_file(), name
    assert (out / "report.pdf").read_bytes()[:4] == b"%PDF"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "tiny-test" and summary["model"]["checkpoint"] is None
    assert summary["device"]["name"] == "cpu" and summary["region"]["source"] == "ground-truth"
    assert summary["methods"]["random"]["params"]["seed"] == 3
    assert summary["prediction"]["iou"] is not None
    curves = summary["causal"]["curves"]
    assert sorted(curves) == ["random", "saliency"] and sorted(curves["saliency"]) == ["dauc", "iauc"]
    rows = list(csv.DictReader((out / "curves.csv").open()))
    for method, per_metric in curves.items():
        for metric, c in per_metric.items():
            assert c["points"] == 6 and c["params"]["steps"] == 5
            mine = [r for r in rows if (r["method"], r["metric"]) == (method, metric)]
            assert len(mine) == 6  # the points are in curves.csv, and they give the summary's value
            assert curve_value([float(r["score"]) for r in mine], loss=False) == pytest.approx(c["value"])
            assert f"{c['value']:.4f}" in printed
    # the numbers in the HTML are the summary's
    parser = _KeyedValues()
    parser.feed((out / "report.html").read_text())
    for key, text in parser.values:
        _check_shown(text, R.resolve_pointer(summary, key))


def test_cli_report_errors(tiny_registered, episode_dir, tmp_path, capsys):
    from fssgui.cli import main
    from fssgui.episode import load_episode, save_episode

    base = ["report", str(episode_dir), "--model", tiny_registered, "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(base + ["--methods", "saliency,nonsense"]) == 2
    assert "unknown method(s) nonsense" in capsys.readouterr().err
    assert main(base + ["--methods", "random", "--metrics", "iauc,auc"]) == 2
    assert "unknown metric(s) auc" in capsys.readouterr().err
    assert main(base + ["--methods", "random", "--param", "saliency.abs=true"]) == 2
    assert "not one of --methods" in capsys.readouterr().err
    assert main(base + ["--methods", "affex"]) == 2  # the tiny model has no matching scores
    assert "needs a matching model" in capsys.readouterr().err
    no_truth = load_episode(episode_dir)
    no_truth.query_mask = None
    save_episode(no_truth, tmp_path / "no_truth")
    args = ["report", str(tmp_path / "no_truth"), "--model", tiny_registered, "--device", "cpu", "--methods",
            "random", "--region", "ground-truth", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "no query ground truth" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.html").exists()


def test_report_core_imports_without_qt():
    import subprocess
    import sys

    code = ("import sys, fssgui.report, fssgui.report.figures, fssgui.look, fssgui.io, fssgui.commands.report; "
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'shiboken6', 'pyqtgraph'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_pdf_made_in_a_worker_thread_leaves_qt_silent():
    """The app writes reports from its worker pools (Python threads, no Qt event dispatcher): Qt's
    text layout warned there ("QBasicTimer::start: ...", three times per PDF with a figure) until the
    printing moved into a QThread of its own. A fresh process, as the app's."""
    import subprocess
    import sys

    code = """
import threading, cv2, numpy as np
from PySide6.QtCore import qInstallMessageHandler
from PySide6.QtWidgets import QApplication
app = QApplication([])
messages = []
qInstallMessageHandler(lambda mode, context, text: messages.append(text))
from fssgui.report.pdf import pdf_bytes
png = cv2.imencode(".png", np.zeros((200, 300, 3), np.uint8))[1].tobytes()
text = "<h1>t</h1>" + "<p>a paragraph of the report</p>" * 1500 + '<img src="a.png" width="300">'
out = []
thread = threading.Thread(target=lambda: out.extend(pdf_bytes(text, {"a.png": png}) for _ in range(2)))
thread.start()
thread.join(120)
assert len(out) == 2 and all(pdf.startswith(b"%PDF") for pdf in out)
print(len(messages), messages[:3])
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("0 "), done.stdout
