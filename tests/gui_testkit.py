"""Helpers for the GUI tests: a tiny matching model, test explainers, a small episode on disk.

The tiny model is a real matching model (cosine matching of pooled colours at two levels, softmax
attention over the support mask, a head that averages the levels), so the real AffEx explainers
run on it in milliseconds. It is registered once as ``gui-test-tiny``.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fssgui.episode import Episode, Support, save_episode
from fssgui.explain.base import Attribution, Explainer, check_cancelled
from fssgui.models.base import FSSModel, Prediction, resize_masks
from fssgui.models.registry import ModelEntry, get_entry, register

TINY_MODEL = "gui-test-tiny"
TINY_SIZE = 32


class TinyMatcher(FSSModel):
    """Two matching levels (8x8 and 4x4 grids of pooled, normalised colours)."""

    is_matching = True
    GRIDS = (8, 4)
    TAU = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # so .to(device) has a tensor

    def _features(self, images: Tensor) -> list[Tensor]:
        return [F.normalize(F.adaptive_avg_pool2d(images, g) + 0.1, dim=1) for g in self.GRIDS]

    def predict(self, batch, *, with_scores: bool = False, query_features=None) -> Prediction:
        b, k = batch.supports.shape[:2]
        size = batch.query.shape[-2:]
        qfeats = self._features(batch.query)
        sfeats = self._features(batch.supports.flatten(0, 1))
        coarse, scores, shapes = [], [], []
        for qf, sf in zip(qfeats, sfeats):
            c, h, w = sf.shape[1:]
            q = qf.flatten(2).transpose(1, 2)
            s = sf.view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)
            score = self.TAU * torch.bmm(q, s.transpose(1, 2))
            m = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w, 1)
            coarse.append(torch.bmm(torch.softmax(score, dim=-1), m).view(b, 1, h, w))
            scores.append(score)
            shapes.append((h, w))
        up = torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in coarse], dim=1)
        levels = up.shape[1]

        def logits_of(p: Tensor) -> Tensor:
            p = p.clamp(1e-4, 1 - 1e-4)
            return torch.stack([torch.log1p(-p), torch.log(p)], dim=-3)

        def head(keep: Tensor) -> Tensor:
            return logits_of(torch.einsum("nl,blhw->nbhw", keep.to(up), up) / levels)

        logits = logits_of(up.mean(dim=1))
        if not with_scores:
            return Prediction(logits=logits)
        return Prediction(logits=logits, matching_scores=scores, level_shapes=shapes, head=head,
                          extras={"level_names": ["grid 8x8", "grid 4x4"]})


def register_tiny_model() -> str:
    try:
        get_entry(TINY_MODEL)
    except Exception:
        register(ModelEntry(name=TINY_MODEL, builder=TinyMatcher, input_size=TINY_SIZE, needs_checkpoint=False,
                            description="GUI test model"))
    return TINY_MODEL


class MaskExplainer(Explainer):
    """Fast: the attribution of each shot is its support mask times (shot + 1); 4 progress steps."""

    name = "test-mask"

    def explain(self, model, batch, region, *, prediction=None, progress=None, cancelled=None) -> Attribution:
        maps = []
        for i in range(batch.shots):
            check_cancelled(cancelled)
            maps.append(batch.support_masks[0, i].float() * (i + 1))
            if progress:
                progress((i + 1) / batch.shots)
        return Attribution(maps=torch.stack(maps), method=self.name, params={"region_px": int(region.sum())})


class SlowExplainer(Explainer):
    """``steps`` steps of ``delay`` seconds, checking ``cancelled()`` between them."""

    name = "test-slow"
    started = threading.Event()

    def __init__(self, steps: int = 20, delay: float = 0.05) -> None:
        self.steps, self.delay = steps, delay

    def explain(self, model, batch, region, *, prediction=None, progress=None, cancelled=None) -> Attribution:
        SlowExplainer.started.set()
        for i in range(self.steps):
            check_cancelled(cancelled)
            time.sleep(self.delay)
            if progress:
                progress((i + 1) / self.steps)
        return Attribution(maps=batch.support_masks[0].float(), method=self.name)


class FailingExplainer(Explainer):
    name = "test-fail"

    def explain(self, model, batch, region, **kwargs) -> Attribution:
        raise RuntimeError("deliberate failure inside the explainer")


class OOMExplainer(Explainer):
    name = "test-oom"

    def explain(self, model, batch, region, **kwargs) -> Attribution:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


TEST_EXPLAINERS = {
    "test-mask": MaskExplainer,
    "test-slow": SlowExplainer,
    "test-fail": FailingExplainer,
    "test-oom": OOMExplainer,
}


def make_gui_episode(shots: int = 2, size=(48, 64), seed: int = 0, with_truth: bool = True) -> Episode:
    """Bright discs on dark noise; the discs are the foreground of every image."""
    rng = np.random.default_rng(seed)
    h, w = size

    def picture(cy, cx, r):
        image = rng.integers(0, 70, size=(h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[:h, :w]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image[mask] = (230, 190, 40)
        return image, mask

    query, query_mask = picture(h // 2, w // 2, min(h, w) // 4)
    supports = [Support(*picture(h // 3 + 2 * i, w // 3 + 3 * i, min(h, w) // 5)) for i in range(shots)]
    return Episode(query, supports, "disc", query_mask=query_mask if with_truth else None)


def write_gui_episode(folder: Path, **kwargs) -> Path:
    save_episode(make_gui_episode(**kwargs), folder)
    return folder


# ------------------------------------------------------------------ synthesized mouse input
from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def _view_pos(view: ImageCanvas, x: float, y: float) -> QPointF:
    return QPointF(view.mapFromScene(QPointF(x, y)))


def _mouse(view, kind, pos: QPointF, button, buttons, modifiers=Qt.KeyboardModifier.NoModifier):
    event = QMouseEvent(kind, pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), button, buttons, modifiers)
    QApplication.sendEvent(view.viewport(), event)


def drag(view: ImageCanvas, points, button=Qt.MouseButton.LeftButton):
    """Press at the first image point, move through the others, release at the last."""
    positions = [_view_pos(view, x, y) for x, y in points]
    _mouse(view, QEvent.Type.MouseButtonPress, positions[0], button, button)
    for pos in positions[1:]:
        _mouse(view, QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, button)
    _mouse(view, QEvent.Type.MouseButtonRelease, positions[-1], button, Qt.MouseButton.NoButton)
