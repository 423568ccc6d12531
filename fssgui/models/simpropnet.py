"""SimPropNet (Gairola et al., IJCAI 2020), re-implemented from the paper; no official code exists.

The model matches query features against masked-average *prototypes* of the support (no
pixel-to-pixel affinity), so it exposes no matching scores; its exact attribution is the
"prototype-share" explainer in :mod:`fssgui.explain.simpropnet_share`.

Architecture (paper, CANet-based) with every choice the paper leaves open marked OPEN:

* Input: ``input_size`` x ``input_size`` (default 321, CANet's size; OPEN: the paper gives no
  size), ImageNet mean/std (OPEN). Tests use small sizes (e.g. 97).
* Encoder: torchvision ResNet-50, frozen (BatchNorm in eval mode, no gradients to its
  parameters). "Three layers" read as CANet: layer2 (512 ch) and layer3 (1024 ch, stride
  replaced by dilation 2) concatenated -> 1536 ch at 1/8 resolution (OPEN: exact layers).
* Adapter (trainable, shared by support and query): 3x3 conv dilation 2, 1536 -> 256, ReLU,
  Dropout2d(``adapter_dropout`` = 0.5) (OPEN: CANet's dropout is kept; short CPU runs set it to
  0: measured 0.59 against 0.35 val IoU after 300 steps on the synthetic data).
* FBAF: Z_f = MAP(F_s, M_s), Z_b = MAP(F_s, 1 - M_s) with the mask resized bilinearly
  (align_corners=True) to the feature size; MAP(F, M) = sum(F*M) / (sum(M) + 1e-5).
  C(F, Z) = (1 + cos(F, Z)) / 2 with cos = <F, Z> / (max(|F|, 1e-8) max(|Z|, 1e-8));
  A_f = C_f / (C_f + C_b), A_b = C_b / (C_f + C_b), computed for the query and for the support.
* Fusion: G0 = [F; tile(Z_f)] (512 ch); G1 = ReLU(IN(conv3x3(G0) + G0));
  G2 = ReLU(IN(conv3x3([G1; IN(A_f); IN(A_b)]) + G1)); G = ReLU(IN(conv3x3(G2) + G2)).
  OPEN and chosen here: A_f and A_b enter the convolution standardised per image (non-affine
  instance norm). A_f = C_f / (C_f + C_b) varies only by about +-0.01 around 0.5 across an image
  when the features are not yet discriminative, two channels next to 2 x 256 channels of unit
  scale, so the matching signal was invisible to the fusion conv: measured on the synthetic test
  data (65 px, 300 AdamW steps, lr 1e-3, head-only on cached backbone features), val IoU 0.16 with
  raw A_f against 0.37 standardised. (The tiled Z_f is spatially constant, so apart from the
  zero-padded border the first instance norm removes it: A_f/A_b are the fusion's main route
  for the support.) The attribution (prototype-share) is of cos(F_q, Z_f)
  and does not depend on this choice.
  OPEN and chosen here: the fusion width is 512 (the residual in the paper's equations implies
  the width of G0), InstanceNorm is affine, and a ReLU follows each InstanceNorm (the paper
  writes no activation).
* Decoder (shared by query and support predictions): CANet-style ASPP without normalisation
  (global-pool branch, 1x1, 3x3 at dilations 6/12/18, each 256 ch + ReLU, concatenated and
  projected by a 1x1 conv to 256 + ReLU), then a 3x3 conv 256 + ReLU and a linear 1x1 conv to 2
  channels (background, foreground) at 1/8 resolution, upsampled bilinearly (align_corners=True)
  to the input size. OPEN: CANet's iterative optimisation module (IOM, history mask) is NOT used.
* k-shot: Z_f and Z_b are the means over shots of the per-shot prototypes (paper).

Training (see :meth:`SimPropNet.training_loss`): cross-entropy on the query prediction plus
cross-entropy on the support prediction (dual prediction, the support decoded with the same
prototypes), and input channel averaging (ICA): with probability p the query image's RGB
channels are replaced by their mean (on un-normalised intensities). OPEN: p starts at
``ica_probability`` (0.25) and decays linearly to 0 over the training run. Default optimiser:
SGD, lr 0.0025, momentum 0.9, weight decay 5e-4 (CANet's values; OPEN). ``foreground_weight``
(default 1, the paper's plain cross-entropy) weights the foreground class in both terms; 3 gets
short runs off the all-background plateau at once (objects cover about 10 % of the pixels).

Without ImageNet weights (none can be downloaded here), see :mod:`fssgui.train`: the frozen
random-init backbone's BatchNorm statistics are re-estimated on training images
(:meth:`SimPropNet.calibrate_backbone`), which on the synthetic data doubled the validation IoU
reached in 300 steps (0.59 against 0.30). ``train_backbone=True`` (``fssgui train
--train-backbone``) fine-tunes the backbone too, at ``backbone_lr_scale`` (0.1) times the
learning rate, with BatchNorm statistics kept frozen; on the shared 2-core CPU it did not finish
100 steps in 10 minutes (against about 50 s frozen), so it is meant for GPUs and is not tested
for learning here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EpisodeTensors, FSSModel, Prediction, expand_query_batch, resize_masks
from .normalisation import IMAGENET_MEAN, IMAGENET_STD
from .resnet_features import build_resnet50, freeze, load_backbone_weights, recalibrate_batchnorm, unfreeze

COS_EPS = 1e-8
MAP_EPS = 1e-5


def cosine_map(features: Tensor, prototype: Tensor) -> Tensor:
    """cos(F, Z) per position: ``features [N, C, h, w]``, ``prototype [N, C]`` -> ``[N, h, w]``.

    ``<f, Z> / (max(|f|, 1e-8) * max(|Z|, 1e-8))``; the prototype-share attribution relies on
    exactly this formula.
    """
    dot = torch.einsum("nchw,nc->nhw", features, prototype)
    f_norm = features.norm(dim=1).clamp_min(COS_EPS)
    z_norm = prototype.norm(dim=1).clamp_min(COS_EPS)[:, None, None]
    return dot / (f_norm * z_norm)


class ASPP(nn.Module):
    """CANet-style atrous spatial pyramid pooling (no normalisation layers)."""

    def __init__(self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.pool_branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1),
                                         nn.ReLU(inplace=True))
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))]
            + [nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r), nn.ReLU(inplace=True))
               for r in rates]
        )
        self.project = nn.Sequential(nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1),
                                     nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool_branch(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))


@dataclass
class PrototypeTerms:
    """What the prototype-share attribution needs from one forward (B = 1 episode)."""

    query_features: Tensor  # [B, C, h, w]
    support_features: Tensor  # [B, K, C, h, w]
    support_masks_small: Tensor  # [B, K, h, w] masks at feature size (bilinear, align_corners=True)
    prototype_fg: Tensor  # [B, C]
    prototype_bg: Tensor  # [B, C]
    cos_fg: Tensor  # [B, h, w] cos(F_q, Z_f)


class SimPropNet(FSSModel):
    """SimPropNet adapter (see the module docstring for the architecture and the open choices)."""

    is_matching = False

    def __init__(self, input_size: int = 321, *, backbone_weights: Optional[str | Path] = None,
                 ica_probability: float = 0.25, feature_channels: int = 256, decoder_channels: int = 256,
                 train_backbone: bool = False, backbone_lr_scale: float = 0.1, adapter_dropout: float = 0.5,
                 foreground_weight: float = 1.0):
        """``feature_channels`` (256, the paper's adapter width; the fusion width is twice it) and
        ``decoder_channels`` (256, ASPP and classifier width) are parameters only so that CPU tests
        can build a narrow model; the registry model uses the defaults."""
        super().__init__()
        self.input_size = int(input_size)
        self.ica_probability = float(ica_probability)
        self.feature_channels = int(feature_channels)
        self.fusion_channels = 2 * self.feature_channels
        self.backbone = build_resnet50(dilate_layer3=True, keep=("layer1", "layer2", "layer3"))
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        self.train_backbone = bool(train_backbone)
        self.backbone_lr_scale = float(backbone_lr_scale)
        if self.train_backbone:
            unfreeze(self.backbone)
        else:
            freeze(self.backbone)
        c, g = self.feature_channels, self.fusion_channels
        self.foreground_weight = float(foreground_weight)
        self.adapter = nn.Sequential(nn.Conv2d(512 + 1024, c, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
                                     nn.Dropout2d(float(adapter_dropout)))
        self.fusion0 = nn.Conv2d(g, g, 3, padding=1)
        self.norm0 = nn.InstanceNorm2d(g, affine=True)
        self.fusion1 = nn.Conv2d(g + 2, g, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(g, affine=True)
        self.fusion2 = nn.Conv2d(g, g, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(g, affine=True)
        d = int(decoder_channels)
        self.aspp = ASPP(g, d)
        self.classifier = nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(d, 2, 1))

    # ---------------------------------------------------------------- pieces
    def train(self, mode: bool = True) -> "SimPropNet":
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics stay the ImageNet/checkpoint ones
        return self

    def calibrate_backbone(self, images: Iterable[Tensor]) -> int:
        """Re-estimate the backbone's BatchNorm statistics on ``images`` (batches ``[N, 3, S, S]``);
        see :func:`~fssgui.models.resnet_features.recalibrate_batchnorm`. Returns the image count."""
        return recalibrate_batchnorm(self.backbone, self.backbone_features, images)

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: the head at ``lr``; with ``train_backbone`` the backbone at
        ``lr * backbone_lr_scale``."""
        head = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        groups = [{"params": head, "lr": lr}]
        if self.train_backbone:
            groups.append({"params": [p for p in self.backbone.parameters() if p.requires_grad],
                           "lr": lr * self.backbone_lr_scale})
        return groups

    def backbone_features(self, images: Tensor) -> Tensor:
        """``[N, 3, S, S]`` -> cat(layer2, layer3) ``[N, 1536, S/8, S/8]``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        x = b.layer1(x)
        l2 = b.layer2(x)
        l3 = b.layer3(l2)
        return torch.cat([l2, l3], dim=1)

    def features(self, images: Tensor, *, backbone_grad: bool = True) -> Tensor:
        """Adapter features ``[N, 256, h, w]`` (shared by query and support)."""
        if backbone_grad:
            raw = self.backbone_features(images)
        else:
            with torch.no_grad():
                raw = self.backbone_features(images)
        return self.adapter(raw)

    def prototypes(self, support_features: Tensor, support_masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``support_features [B, K, C, h, w]``, ``support_masks [B, K, S, S]`` ->
        (Z_f [B, C], Z_b [B, C], masks at feature size [B, K, h, w]); shots averaged."""
        h, w = support_features.shape[-2:]
        small = resize_masks(support_masks, (h, w)).to(support_features.dtype)  # [B, K, h, w]
        m = small.unsqueeze(2)
        z_f = (support_features * m).sum((3, 4)) / (m.sum((3, 4)) + MAP_EPS)  # [B, K, C]
        z_b = (support_features * (1 - m)).sum((3, 4)) / ((1 - m).sum((3, 4)) + MAP_EPS)
        return z_f.mean(1), z_b.mean(1), small

    def fuse(self, features: Tensor, z_f: Tensor, z_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """FBAF: ``features [N, C, h, w]``, prototypes ``[N, C]`` -> (G, A_f, cos_f)."""
        cos_f = cosine_map(features, z_f)
        cos_b = cosine_map(features, z_b)
        c_f = (1 + cos_f) / 2
        c_b = (1 + cos_b) / 2
        total = (c_f + c_b).clamp_min(1e-6)
        a_f = (c_f / total).unsqueeze(1)
        a_b = (c_b / total).unsqueeze(1)
        g0 = torch.cat([features, z_f[:, :, None, None].expand_as(features)], dim=1)
        g1 = F.relu(self.norm0(self.fusion0(g0) + g0))
        # A_f, A_b enter the convolution standardised per image (see the module docstring)
        affinity = F.instance_norm(torch.cat([a_f, a_b], dim=1))
        g2 = F.relu(self.norm1(self.fusion1(torch.cat([g1, affinity], dim=1)) + g1))
        g = F.relu(self.norm2(self.fusion2(g2) + g2))
        return g, a_f, cos_f

    def decode(self, g: Tensor, size: tuple[int, int]) -> Tensor:
        logits = self.classifier(self.aspp(g))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    # ---------------------------------------------------------------- interface
    def encode_query(self, query: Tensor) -> Tensor:
        return self.features(query)

    def prototype_terms(self, batch: EpisodeTensors, query_features: Any = None) -> PrototypeTerms:
        b, k = batch.supports.shape[:2]
        f_q = expand_query_batch(query_features, b) if query_features is not None else self.features(batch.query)
        f_s = self.features(batch.supports.flatten(0, 1))
        f_s = f_s.view(b, k, *f_s.shape[1:])
        z_f, z_b, small = self.prototypes(f_s, batch.support_masks)
        return PrototypeTerms(f_q, f_s, small, z_f, z_b, cosine_map(f_q, z_f))

    def predict(self, batch: EpisodeTensors, *, with_scores: bool = False, query_features: Any = None) -> Prediction:
        terms = self.prototype_terms(batch, query_features)
        g, a_f, cos_f = self.fuse(terms.query_features, terms.prototype_fg, terms.prototype_bg)
        logits = self.decode(g, tuple(batch.query.shape[-2:]))
        extras = {"fg_affinity": a_f[:, 0], "cos_fg": cos_f, "prototype_terms": terms}
        return Prediction(logits=logits, extras=extras)

    def training_loss(self, batch: EpisodeTensors, query_mask: Tensor, progress: float,
                      generator: Optional[torch.Generator] = None) -> tuple[Tensor, dict[str, float]]:
        """Loss of one training batch (model in train mode). ``query_mask [B, S, S]`` long with
        255 = ignore; ``progress`` in [0, 1] is the fraction of the run done (ICA decay)."""
        query = batch.query
        p = self.ica_probability * max(0.0, 1.0 - progress)
        if p > 0:
            pick = torch.rand(query.shape[0], generator=generator) < p
            if bool(pick.any()):
                query = channel_average(query, pick.to(query.device))
        b, k = batch.supports.shape[:2]
        f_q = self.features(query, backbone_grad=self.train_backbone)
        f_s = self.features(batch.supports.flatten(0, 1), backbone_grad=self.train_backbone)
        f_s5 = f_s.view(b, k, *f_s.shape[1:])
        z_f, z_b, _ = self.prototypes(f_s5, batch.support_masks)
        size = tuple(query.shape[-2:])
        g_q, _, _ = self.fuse(f_q, z_f, z_b)
        weight = query.new_tensor([1.0, self.foreground_weight]) if self.foreground_weight != 1.0 else None
        loss_q = F.cross_entropy(self.decode(g_q, size), query_mask, weight=weight, ignore_index=255)
        g_s, _, _ = self.fuse(f_s, z_f.repeat_interleave(k, 0), z_b.repeat_interleave(k, 0))
        loss_s = F.cross_entropy(self.decode(g_s, size), batch.support_masks.flatten(0, 1).long(), weight=weight)
        loss = loss_q + loss_s
        return loss, {"loss": float(loss.detach()), "query_ce": float(loss_q.detach()),
                      "support_ce": float(loss_s.detach()), "ica_p": p}


def channel_average(images: Tensor, pick: Tensor,
                    mean: tuple[float, float, float] = IMAGENET_MEAN,
                    std: tuple[float, float, float] = IMAGENET_STD) -> Tensor:
    """ICA: replace the RGB channels of the picked images ``[N, 3, S, S]`` by their mean
    (computed on un-normalised intensities, then normalised again)."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    rgb = images * s + m
    gray = rgb.mean(1, keepdim=True).expand_as(rgb)
    averaged = (gray - m) / s
    return torch.where(pick.view(-1, 1, 1, 1), averaged, images)


def build_simpropnet(input_size: int = 321, backbone_weights: Optional[str | Path] = None,
                     **options: Any) -> SimPropNet:
    return SimPropNet(input_size, backbone_weights=backbone_weights, **options)
