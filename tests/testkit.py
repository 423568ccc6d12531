"""What the tests share, without Qt: the one synthetic episode builder, two stand-in models and test
explainers.

* :func:`make_episode` / :func:`write_episode`: bright discs on dark noise (the discs are the
  foreground of every image);
* :class:`TinyMatcher` (registered as ``gui-test-tiny``): a real matching model (cosine matching of
  pooled colours at two levels, softmax attention over the support mask, a head that averages the
  levels), so the real AffEx explainers run on it in milliseconds;
* :class:`TinyModel`: a non-matching model whose confidence follows the share of support-mask
  pixels present (insertion raises it, deletion lowers it), counting its forwards; with
  :func:`tiny_setup` (an episode and two attributions) for the causal metrics, reports and playback;
* test explainers: fast, slow (cancellable), failing, out of memory.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fssgui.episode import Episode, Support, episode_to_tensors, save_episode
from fssgui.errors import check_cancelled
from fssgui.explain.base import Attribution, Explainer
from fssgui.models.base import EpisodeTensors, FSSModel, Prediction, resize_masks
from fssgui.models.registry import ModelEntry, get_entry, list_models, register


def register_at_size(base: str, name: str, size: int, description: str) -> str:
    """Registry model ``base`` registered again as ``name`` at a ``size``-pixel input (the same
    network; fewer pixels keep the tests short), once per process."""
    if name not in {entry.name for entry in list_models()}:
        register(dataclasses.replace(get_entry(base), name=name, input_size=size, description=description))
    return name

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


def make_episode(shots: int = 1, size=(60, 80), seed: int = 0, with_truth: bool = True) -> Episode:
    """Bright discs on dark noise; the discs are the foreground of every image (and the query's
    ground truth unless ``with_truth`` is False)."""
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


def write_episode(folder: Path, **kwargs) -> Path:
    save_episode(make_episode(**kwargs), folder)
    return folder


# ------------------------------------------------------------------ the non-matching stand-in
TINY_REPORT_SIZE = 16


class TinyModel(FSSModel):
    """A deterministic few-shot 'model' in microseconds: the foreground logit at each query pixel
    grows with the share of support-mask pixels still present and with the query's brightness,
    so insertion raises the confidence and deletion lowers it."""

    def __init__(self) -> None:
        super().__init__()
        self.entry = ModelEntry("tiny", TinyModel, TINY_REPORT_SIZE, needs_checkpoint=False, description="test model",
                                matching=False)
        self.forwards = 0

    def encode_query(self, query):
        return query.mean(1)  # [1, S, S]

    def predict(self, batch: EpisodeTensors, *, with_scores: bool = False, query_features=None) -> Prediction:
        self.forwards += 1
        q = batch.query.mean(1) if query_features is None else query_features.expand(batch.batch_size, -1, -1)
        kept = batch.support_masks.flatten(1).mean(1)  # [B]
        # the support images count too (inside their masks), so gradient explainers see something
        seen = (batch.supports.mean(2) * batch.support_masks).flatten(1).mean(1)
        foreground = 30.0 * kept[:, None, None] - 1.0 + 0.8 * q + 2.0 * seen[:, None, None]
        logits = torch.stack([torch.zeros_like(foreground), foreground], dim=1)
        return Prediction(logits=logits)


def tiny_run(model, episode):
    """The pipeline's run of ``episode`` on the tiny model."""
    from fssgui.pipeline import EpisodeRun, LoadedModel, ModelSpec

    return EpisodeRun(LoadedModel(ModelSpec("tiny", None, "cpu"), model, torch.device("cpu")), episode)


def tiny_setup(shots: int = 2, seed: int = 0):
    """(model, episode, batch, region at S, attributions at S) for a small synthetic episode."""
    from fssgui.pipeline.regions import region_from_mask

    model = TinyModel().eval()
    episode = make_episode(shots=shots, size=(24, 32), seed=seed)
    batch = episode_to_tensors(episode, model.entry)
    region = torch.from_numpy(region_from_mask(episode.query_mask, TINY_REPORT_SIZE))
    generator = torch.Generator().manual_seed(seed)
    masks = batch.support_masks[0]
    attributions = {
        "good": masks + 0.1 * torch.rand(masks.shape, generator=generator),  # mask pixels first
        "random": torch.rand(masks.shape, generator=generator),
    }
    return model, episode, batch, region, attributions
