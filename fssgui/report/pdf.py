"""The report as an A4 PDF: Qt's QTextDocument lays out the report's HTML (:func:`pdf_html`) and
QPdfWriter prints it, offscreen. Qt is imported only when a PDF is made, so the rest of the report
package imports without Qt.

Qt's layout never splits an image across pages, so :func:`pdf_document` cuts every figure at the
white bands between its rows (:func:`figure_pieces`) and lets the pieces flow like table rows.
"""
from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import __version__
from ..errors import ExportError
from ..io import write_bytes_atomic

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
        if image is None or image.width() == 0 or 'class="whole"' in rest:  # figures side by side stay whole
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
    """Print ``html_text`` (its ``<img src>`` naming keys of ``images``: PNG bytes) to an A4 PDF.

    Qt's text layout starts timers, which need the thread's Qt event dispatcher: a thread Qt did not
    start (the app's worker pools are Python threads) has none, and Qt then warns on the terminal
    three times per report; the printing runs in a short-lived QThread there."""
    _ensure_gui_application()
    from PySide6.QtCore import QThread

    if QThread.currentThread().eventDispatcher() is not None:
        return _print_pdf(html_text, images, title)
    outcome: dict = {}

    class Printer(QThread):
        def run(self) -> None:
            try:
                outcome["pdf"] = _print_pdf(html_text, images, title)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                outcome["error"] = exc

    printer = Printer()
    printer.start()
    printer.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["pdf"]


def _print_pdf(html_text: str, images: Mapping[str, bytes], title: str) -> bytes:
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
    return write_bytes_atomic(path, pdf_bytes(html_text, images, title))


def pdf_html(html_text: str) -> str:
    """The report's HTML in the subset of HTML that QTextDocument lays out (table borders and
    padding spelled out)."""
    # QTextDocument understands a subset of HTML: tables need explicit borders and padding.
    html_text = html_text.replace('<td class="n">', '<td class="n" align="right">')
    html_text = html_text.replace('<th class="n">', '<th class="n" align="right">')
    return html_text.replace("<table>", '<table border="1" cellspacing="0" cellpadding="2" '
                                        'style="border-color:#bbbbbb; border-style:solid;">')
