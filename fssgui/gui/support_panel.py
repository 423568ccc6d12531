"""The support-set panel: thumbnails (mask tinted), add / remove / reorder, and the mask editor.

The panel owns the supports being edited: each is an image and an
:class:`~fssgui.editing.EditableMask` (with its own undo history). Reordering is by drag
in the list or the ↑/↓ buttons; files dropped on the list become supports (see
:func:`fssgui.drops.classify_drop`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..episode import Support
from ..imaging import resize_image, resize_mask
from ..look import SUPPORT_MASK_COLOUR, tint
from .canvas import ImageCanvas, rgb_to_qimage
from ..editing import EditableMask

THUMB = 88


@dataclass
class SupportItem:
    image: np.ndarray
    mask: EditableMask
    name: str = ""

    def __post_init__(self) -> None:
        # One private copy here; afterwards the image is never edited in place, so jobs and
        # results share it instead of copying it (a read-only flag would make torch.from_numpy warn).
        self.image = np.array(self.image, dtype=np.uint8, copy=True, order="C")

    def to_support(self) -> Support:
        return Support(self.image, self.mask.as_bool())


def thumbnail(image: np.ndarray, mask: np.ndarray, size: int = THUMB) -> QPixmap:
    """A small RGB thumbnail with the mask tinted (resized first, so it is cheap for big images)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    small = resize_image(image, (th, tw))
    small_mask = resize_mask(mask, (th, tw))
    return QPixmap.fromImage(rgb_to_qimage(tint(small, small_mask, SUPPORT_MASK_COLOUR)))


class _SupportList(QListWidget):
    """The thumbnail list: internal drag reorders; external file drops are forwarded."""

    filesDropped = Signal(list)
    reordered = Signal(list)  # new order as old indices

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setAcceptDrops(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSpacing(2)
        self.setUniformItemSizes(True)
        self.setWordWrap(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            return
        super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            return
        super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
            event.acceptProposedAction()
            self.filesDropped.emit(paths)
            return
        before = [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]
        super().dropEvent(event)
        after = [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]
        if after != before:
            self.reordered.emit(after)


class SupportPanel(QWidget):
    """Thumbnails of the K supports, their buttons, and a canvas editing the selected mask."""

    supportsChanged = Signal()  # added / removed / reordered
    maskEdited = Signal(int)  # a stroke (or undo) changed support i's mask
    currentChanged = Signal(int)
    filesDropped = Signal(list)
    addRequested = Signal()
    maskFromFileRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.items: list[SupportItem] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.header = QLabel()
        layout.addWidget(self.header)
        splitter = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        self.list = _SupportList(self)
        self.list.setToolTip("Drag to reorder; drop images, masks or episode folders here")
        top_layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        self.add_button = self._button("Add…", "Add support images (their masks are found by name, else start empty)")
        self.remove_button = self._button("Remove", "Remove the selected support")
        self.up_button = self._button("↑", "Move the selected support up")
        self.down_button = self._button("↓", "Move the selected support down")
        self.mask_button = self._button("Mask…", "Replace the selected support's mask from a PNG file")
        for b in (self.add_button, self.remove_button, self.up_button, self.down_button, self.mask_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        top_layout.addLayout(buttons)
        splitter.addWidget(top)
        self.canvas = ImageCanvas(self, editable=True)
        self.canvas.set_placeholder("select a support to edit its mask")
        splitter.addWidget(self.canvas)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([330, 480])
        layout.addWidget(splitter, 1)
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.list.filesDropped.connect(self.filesDropped)
        self.list.reordered.connect(self._on_reordered)
        self.add_button.clicked.connect(self.addRequested)
        self.remove_button.clicked.connect(lambda: self.remove(self.current_index()))
        self.up_button.clicked.connect(lambda: self.move(self.current_index(), -1))
        self.down_button.clicked.connect(lambda: self.move(self.current_index(), +1))
        self.mask_button.clicked.connect(self.maskFromFileRequested)
        self.canvas.strokeFinished.connect(lambda _: self.mask_changed(self.current_index()))
        self._update_header()

    def _button(self, text: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tip)
        return button

    # ------------------------------------------------------------------------------ content
    def set_supports(self, supports: list[Support], names: Optional[list[str]] = None) -> None:
        self.canvas.set_mask(None)
        self.items = [
            SupportItem(s.image, EditableMask(s.mask), (names[i] if names else "")) for i, s in enumerate(supports)
        ]
        self._rebuild(select=0 if self.items else -1)

    def supports(self) -> list[Support]:
        return [item.to_support() for item in self.items]

    def count(self) -> int:
        return len(self.items)

    def current_index(self) -> int:
        return self.list.currentRow()

    def select(self, index: int) -> None:
        if 0 <= index < len(self.items):
            self.list.setCurrentRow(index)

    def add(self, image: np.ndarray, mask: Optional[np.ndarray] = None, name: str = "") -> int:
        if mask is None:
            mask = np.zeros(image.shape[:2], dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
        self.items.append(SupportItem(image, EditableMask(mask), name))
        self._rebuild(select=len(self.items) - 1)
        self.supportsChanged.emit()
        return len(self.items) - 1

    def remove(self, index: int) -> None:
        if not 0 <= index < len(self.items):
            return
        if self.canvas.mask is self.items[index].mask:
            self.canvas.set_mask(None)
        del self.items[index]
        self._rebuild(select=min(index, len(self.items) - 1))
        self.supportsChanged.emit()

    def move(self, index: int, delta: int) -> None:
        target = index + delta
        if not (0 <= index < len(self.items) and 0 <= target < len(self.items)):
            return
        self.items[index], self.items[target] = self.items[target], self.items[index]
        self._rebuild(select=target)
        self.supportsChanged.emit()

    def replace_mask(self, index: int, mask: np.ndarray) -> None:
        """Replace support ``index``'s mask (undoable in its editor)."""
        item = self.items[index]
        if mask.shape != item.mask.shape:
            h, w = item.mask.shape
            raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but support {index + 1} is {w}x{h}")
        if item.mask.replace(mask, "mask from file") is not None:
            self.mask_changed(index)

    def _on_reordered(self, order: list[int]) -> None:
        self.items = [self.items[i] for i in order]
        self._rebuild(select=self.list.currentRow())
        self.supportsChanged.emit()

    def mask_changed(self, index: int) -> None:
        """Support ``index``'s mask changed (a stroke, undo, a mask file): its thumbnail, ``maskEdited``."""
        if 0 <= index < len(self.items):
            self.refresh_thumbnail(index)
            self.maskEdited.emit(index)

    # ------------------------------------------------------------------------------ views
    def _rebuild(self, select: int = -1) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for i, item in enumerate(self.items):
            entry = QListWidgetItem(self._item_text(i))
            entry.setData(Qt.ItemDataRole.UserRole, i)
            entry.setIcon(QIcon(thumbnail(item.image, item.mask.data)))
            entry.setSizeHint(QSize(THUMB + 150, THUMB + 8))
            self.list.addItem(entry)
        self.list.blockSignals(False)
        self._update_header()
        if 0 <= select < len(self.items):
            self.list.setCurrentRow(select)
            self._on_row_changed(select)
        else:
            self._on_row_changed(-1)

    def _item_text(self, index: int) -> str:
        item = self.items[index]
        h, w = item.image.shape[:2]
        fg = item.mask.count() / float(h * w) * 100
        mask_text = "⚠ empty mask" if fg == 0 else f"mask {fg:.1f}%"
        name = f"\n{item.name}" if item.name else ""
        return f"Support {index + 1}\n{w}×{h} · {mask_text}{name}"

    def refresh_thumbnail(self, index: int) -> None:
        entry = self.list.item(index)
        if entry is None:
            return
        item = self.items[index]
        entry.setIcon(QIcon(thumbnail(item.image, item.mask.data)))
        entry.setText(self._item_text(index))
        self._update_header()

    def _update_header(self) -> None:
        k = len(self.items)
        empty = sum(1 for item in self.items if item.mask.count() == 0)
        text = f"<b>Support set</b> &nbsp;K = {k}"
        if empty:
            text += f" &nbsp;<span style='color:#d9822b'>⚠ {empty} empty mask{'s' if empty > 1 else ''}</span>"
        self.header.setText(text)
        has = k > 0
        self.remove_button.setEnabled(has)
        self.mask_button.setEnabled(has)
        self.up_button.setEnabled(k > 1)
        self.down_button.setEnabled(k > 1)

    def _on_row_changed(self, row: int) -> None:
        if 0 <= row < len(self.items):
            item = self.items[row]
            same_size = self.canvas.image_size == item.image.shape[:2]
            self.canvas.set_image(item.image, fit=not same_size or not self.canvas.has_image())
            self.canvas.set_mask(item.mask, SUPPORT_MASK_COLOUR)
            self.canvas.set_title(f"Support {row + 1} mask", "brush: B · eraser: E · undo: Ctrl+Z")
        else:
            self.canvas.set_mask(None)
            self.canvas.set_image(None)
            self.canvas.set_title("")
        self.currentChanged.emit(row)
