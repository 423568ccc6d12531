"""Files brought into the window, dropped or chosen: an episode folder opens, a checkpoint is
selected, images become supports (with the mask of the same name beside them), a lone mask replaces
the selected support's mask, an image replaces the query. The rules are :func:`fssgui.drops.classify_drop`;
the images are read on the file pool."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..drops import classify_drop
from ..episode import Episode
from ..imaging import ImageError, load_mask, load_rgb
from .workers import JobHandle, WorkerPool

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp)"


def read_supports(ctx, pairs: list[tuple[Path, Optional[Path]]], lone_masks: list[Path]):
    """The images and masks of dropped supports, and lone masks: ``(supports, masks, errors)`` where
    a support is ``(image path, image, mask path, mask or None, note)``."""
    supports, masks, errors = [], [], []
    for image_path, mask_path in pairs:
        ctx.check()
        try:
            image = load_rgb(image_path)
            mask = load_mask(mask_path) if mask_path is not None else None
        except ImageError as exc:
            errors.append(str(exc))
            continue
        note = ""
        if mask is not None and mask.shape != image.shape[:2]:
            note = (f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path.name} is "
                    f"{image.shape[1]}x{image.shape[0]}; added the image with an empty mask")
            mask = None
        supports.append((image_path, image, mask_path, mask, note))
    for mask_path in lone_masks:
        try:
            masks.append((mask_path, load_mask(mask_path)))
        except ImageError as exc:
            errors.append(f"{mask_path}: {exc}")
    return supports, masks, errors


class FileDrops(QObject):
    """Dropped and chosen files of ``window`` (see the module docstring)."""

    def __init__(self, window, pool: WorkerPool) -> None:
        super().__init__(window)
        self.window = window
        self.pool = pool

    def handle_paths(self, paths: list[Path]) -> Optional[JobHandle]:
        """Dropped files. Returns the job reading the support images (None when there are none)."""
        w = self.window
        plan = classify_drop([Path(p) for p in paths])
        for path in plan.ignored:
            w.log(f"ignored {path}: not an image, mask, checkpoint or episode folder")
        if plan.episodes:
            if len(plan.episodes) > 1:
                w.log(f"several episodes dropped: opening {plan.episodes[0]} only")
            if w.confirm_discard():
                w.episode_io.open(plan.episodes[0])
        for checkpoint in plan.checkpoints[:1]:
            w.model_bar.set_checkpoint(checkpoint)
        if not (plan.supports or plan.lone_masks):
            return None
        if not w.has_episode():
            w.log_error("open an episode first: supports need a query (File ▸ Open, or drop an episode folder)")
            return None
        handle = self.pool.submit(read_supports, plan.supports, plan.lone_masks, description="reading dropped images")
        handle.finished.connect(self._add)
        handle.failed.connect(lambda message, trace: w.log_error(f"could not read the dropped files: {message}", trace))
        return handle

    def _add(self, read) -> None:
        w = self.window
        supports, masks, errors = read
        for error in errors:
            w.log_error(error)
        for image_path, image, mask_path, mask, note in supports:
            if note:
                w.log_error(note)
            index = w.support_panel.add(image, mask, image_path.name)
            what = f"mask {mask_path.name}" if mask is not None else "empty mask: brush it"
            w.log(f"support {index + 1} added from {image_path.name} ({what})")
        for mask_path, mask in masks:
            self.apply_mask(mask_path, mask)

    def apply_mask(self, mask_path: Path, mask) -> None:
        w = self.window
        index = w.support_panel.current_index()
        if index < 0:
            w.log_error(f"{mask_path}: select the support whose mask it replaces first")
            return
        try:
            w.support_panel.replace_mask(index, mask)
        except ValueError as exc:
            w.log_error(f"{mask_path}: {exc}")
            return
        w.log(f"support {index + 1}: mask replaced from {mask_path.name} (Ctrl+Z undoes)")

    def add_supports_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self.window, "Add support images (and their masks)",
                                                str(Path.home()), IMAGE_FILTER)
        if paths:
            self.handle_paths([Path(p) for p in paths])

    def mask_from_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Mask PNG for the selected support", str(Path.home()),
                                              "Masks (*.png *.bmp *.tif *.tiff)")
        if path:
            handle = self.pool.submit(read_supports, [], [Path(path)], description="reading the mask")
            handle.finished.connect(self._add)

    def replace_query_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Query image", str(Path.home()), IMAGE_FILTER)
        if path:
            self.replace_query(Path(path))

    def replace_query(self, path: Path) -> JobHandle:
        """A new query image: ground truth, region and prediction are cleared (they belonged to the old one)."""
        handle = self.pool.submit(lambda ctx: load_rgb(path), description=f"reading {path.name}")
        handle.finished.connect(self._replace_query)
        handle.failed.connect(lambda message, _trace: self.window.log_error(message))
        return handle

    def _replace_query(self, image) -> None:
        w = self.window
        supports = w.support_panel.supports() if w.support_panel.count() else []
        w.set_episode(Episode(image, supports, w.class_name, None, None, None, w.episode_notes), None, dirty=True)
        w.episode_io.schedule_autosave()
