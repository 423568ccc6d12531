"""I²R (Fu et al., arXiv 2507.05838), re-implemented from the paper and the structure of its public
code (forypipi/I2R, no licence: nothing is copied; no checkpoint is published, so users train it).

What is built (the meta branch, faithful to the code's structure)
-----------------------------------------------------------------
* Input ``input_size`` x ``input_size`` (paper 473), ImageNet mean/std. OPEN/deviation: the app
  resizes images to the square (no long-side scaling + zero padding) and runs no test-time
  scale augmentation ({1, 0.8, 1.25} in the paper).
* Backbone: torchvision ResNet-50 (not dilated, as in the I²R code; BAM's deep-stem dilated
  ResNet is not used), frozen; layer2 512@S/8, layer3 1024@S/16, layer4 2048@S/32 and the
  ImageNet ``fc`` head (needed by the CAM).
* Meta features F = 1x1 conv(cat[layer3, layer2 resized to layer3's size]) -> 256, ReLU,
  Dropout2d(0.5); separate ``down_query`` / ``down_supp``.
* PMGM (CAM prior). The support class is o = argmax fc(avgpool(layer4(layer3 * mask))).
  XGradCAM at layer3 for o on the support and on the query: w_c = sum_ij A_cij / (sum A_c + eps)
  * dy_o/dA_cij, CAM = ReLU(sum_c w_c A_c), resized to the input size, min-max normalised per
  image and thresholded at ``cam_threshold`` (0.7) -> CAM+ (CAM- is its complement). Gradients
  are needed even at inference: the adapter enables them locally on a detached copy of layer3,
  so callers may run under ``torch.no_grad`` and input gradients (captum) are unaffected.
  Support regions A1 = M and CAM+, A2 = M and CAM-. Prototypes (masked means) of F: p (whole
  mask, detached as in the code), p1 (A1), p2 (A2); and of the support's layer4 computed on the
  *masked* layer3 (PFENet/BAM style): P1, P2, each plus a fixed offset (the code's
  ``cam_mask_init`` rows 0 and 2, an embedding that is never optimised; kept here as the buffer
  ``cam_prototype_offset``, zero-initialised, so the prior is the training-free PMGM unless a
  checkpoint sets it). Prior: cos(layer4_q * CAM+_q, P1) min-max normalised inside CAM+_q plus
  cos(layer4_q * CAM-_q, P2) min-max normalised inside CAM-_q, resized to F's size, averaged over
  shots, clamped to [0, 1]. The support gets its own prior the same way from its CAM.
* Decoder input: init_merge = 1x1 conv(cat[F, tile(p), p1 * CAM+ + p2 * CAM-, prior]) -> 256,
  ReLU, shared by query and support. As in the code, its input is detached in training
  (``detach_merge_input=True``), so ``down_query``/``down_supp`` receive no gradient and stay at
  their initialisation; set it False to train them. In eval mode the detach is skipped: it
  changes no value, and gradient-based explainers (captum) need the path to the input images.
* ``block_num`` = 6 decoder blocks; the first ``cross_num`` = 5 have cross-attention (code
  defaults; the paper's Table S1 prefers 5/4). Block i: query self-attention (SA), support SA,
  then the query cross-attends each shot's support tokens (Q, K, V = Linear(256),
  scores = Q K^T / 16, softmax over the support tokens, message LN(A V), out = x + message,
  out = out + MLP(out) with GELU, dropout 0.1, LayerNorm), the shots' outputs are averaged, and a
  residual conv block (BN-ReLU-3x3-BN-ReLU-1x1) follows. Auxiliary heads (BN-ReLU-1x1 -> 2) read
  the query after cross-attention and the support after SA in the first ``block_num - 1``
  blocks. Final heads ``query_classifier``/``support_classifier``: BN-ReLU-3x3-BN-ReLU-1x1 -> 2.
  As in the code, the support branch has no cross-attention and no residual conv block (the
  code defines ``S_block_res2_meta`` but never uses it; it is omitted).
* DICM (training only; it needs the query ground truth): for every support token j, take the
  query token i* with the highest score; when the (nearest-resized) labels of j and i* differ,
  the score (i*, j) is masked before the softmax. Deviations from the code, documented: the
  code adds its mask transposed (entry (j, i*)) and always masks entry (0, 0) through its
  scatter's default index; here the mask goes where the paper says, and a finite -1e4 replaces
  -inf (a row masked everywhere then keeps its softmax instead of giving NaN).
* Output: ``query_classifier`` logits at S/16, bilinearly upsampled (align_corners=True) to S.
* Optional BAM ensemble (``use_base_learner=True``, OFF by default and in the registry model):
  a PSPNet base learner (PPM bins 1/2/3/6 + classifier over ``base_classes + 1`` classes) on the
  query's layer4, the layer2 Gram-matrix distance, ``gram_merge`` and ``cls_merge`` 1x1 convs
  (initialised [1, 0]), combined as in BAM. The base learner must be pre-trained on the base
  classes (IIR-Pretrain) and loaded from a checkpoint: ``fssgui train`` does not train it. With K
  > 1 the shots' Gram distances are averaged uniformly (the code's ``kshot_rw`` is never
  optimised; its initial state is uniform).

Losses (code, all weights 1.0): aux1 = (CE(query) + mean_k CE(support_k)) / 2 on the final
heads, aux2 = (mean_i CE(query aux_i) + mean_{i,k} CE(support aux_i,k)) / 2, plus CE of the
ensemble output when the ensemble is on. Optimiser: SGD lr 0.05, momentum 0.9, weight decay
1e-4, poly decay 0.9 (code's PASCAL config).

Training-only options (not in the paper or the code): ``foreground_weight`` weighs the
foreground class in every cross-entropy term (default 1 = the code's losses), and
``feature_dropout`` is the Dropout2d rate after ``down_query``/``down_supp`` (default 0.5 = the
code's).

Without ImageNet weights :mod:`fssgui.train` re-estimates the frozen backbone's BatchNorm
statistics (:meth:`I2R.calibrate_backbone`, through layer4); the CAM then comes from the
backbone's random ``fc`` head, so the PMGM prior carries no class knowledge in that case.
Measured on the synthetic test data (4 classes, validation on held-out images of the same
classes, 65 px, 300 AdamW steps of batch 4, one CPU thread; untrained val mIoU 0.16, FB-IoU 0.09,
the model predicting nearly everything foreground):

* the code's settings (``detach_merge_input``, dropout 0.5, unweighted CE): on the
  all-background plateau for 200 steps (mIoU 0.00-0.02), then 0.14 after 300 at lr 1e-3 and 0.20
  at lr 3e-4: barely above the untrained model;
* ``foreground_weight=3``: 0.30;
* plus ``feature_dropout=0`` and ``detach_merge_input=False`` (``down_query``/``down_supp``
  train; with a random backbone their fixed random projection is all the decoder gets
  otherwise): 0.33 (FB-IoU 0.54) at lr 3e-4, 0.32 at lr 1e-3; at 97 px 0.36; a 4-block or
  3-block decoder does no better (0.36 at 97 px, 0.33 at 65 px).

The test suite trains with the last setting (tests/test_train.py). With an ImageNet backbone
(``--backbone-weights``) the code's settings are the ones to start from.

Matching scores for AffEx: the pre-softmax cross-attention scores of the ``cross_num`` blocks,
``[B, Hq*Wq, K*Hs*Ws]`` (shots concatenated on the support axis; in the model each shot has its
own softmax). ``head(keep)`` reruns the query decoder from the cached decoder inputs with block
j's cross-attention message LN(A V) multiplied by ``keep[:, j]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EpisodeTensors, FSSModel, Prediction, expand_query_batch
from .resnet_features import build_resnet50, freeze, load_backbone_weights, masked_average, recalibrate_batchnorm

DICM_MASK_VALUE = -1e4


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def region_minmax(values: Tensor, region: Tensor, eps: float = 1e-7) -> Tensor:
    """Min-max normalise ``values [N, h, w]`` inside ``region`` (bool-like ``[N, h, w]``); 0 outside."""
    inside = region > 0.5
    big = torch.finfo(values.dtype).max
    lo = torch.where(inside, values, torch.full_like(values, big)).flatten(1).min(1)[0]
    hi = torch.where(inside, values, torch.full_like(values, -big)).flatten(1).max(1)[0]
    has = inside.flatten(1).any(1)
    lo = torch.where(has, lo, torch.zeros_like(lo))[:, None, None]
    hi = torch.where(has, hi, torch.zeros_like(hi))[:, None, None]
    return torch.where(inside, (values - lo) / (hi - lo + eps), torch.zeros_like(values))


def cosine_to_prototype(features: Tensor, prototype: Tensor, eps: float = 1e-5) -> Tensor:
    """``features [N, C, h, w]``, ``prototype [N, C]`` -> cosine ``[N, h, w]`` (code's CossimCompute)."""
    f = features / (features.norm(dim=1, keepdim=True) + eps)
    p = prototype / (prototype.norm(dim=1, keepdim=True) + eps)
    return torch.einsum("nchw,nc->nhw", f, p)


class SelfAttention(nn.Module):
    """Single-head self-attention block over the h*w tokens (the code's ``SA``)."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.scale = channels ** -0.5
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.norm_attn = nn.LayerNorm(channels)
        self.norm_ffn = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(0.1)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels),
                                 nn.Dropout(0.1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        attn = torch.softmax(self.to_q(t) @ self.to_k(t).transpose(1, 2) * self.scale, dim=-1)
        out = self.norm_attn(self.dropout(attn @ self.to_v(t)) + t)
        out = self.norm_ffn(out + self.mlp(out))
        return out.transpose(1, 2).reshape(b, c, h, w)


class CrossAttention(nn.Module):
    """Query tokens attend one shot's support tokens (the code's ``CrossAttn``), with DICM."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.scale = channels ** -0.5
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(2 * channels, channels), nn.Dropout(0.1), nn.LayerNorm(channels))

    def scores(self, query: Tensor, support: Tensor) -> Tensor:
        """Pre-softmax scores ``[N, Nq, Ns]`` for ``[N, C, h, w]`` inputs."""
        q = self.to_q(query.flatten(2).transpose(1, 2))
        k = self.to_k(support.flatten(2).transpose(1, 2))
        return q @ k.transpose(1, 2) * self.scale

    def forward(self, query: Tensor, support: Tensor, *, support_labels: Optional[Tensor] = None,
                query_labels: Optional[Tensor] = None, keep: Optional[Tensor] = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (output ``[N, C, h, w]``, pre-softmax scores ``[N, Nq, Ns]``, masked fraction ``[N]``).

        ``query_labels``/``support_labels`` ``[N, h*w]`` (long 0/1) turn DICM masking on.
        ``keep`` ``[N]`` scales the attention message (feature ablation).
        """
        n, c, h, w = query.shape
        scores = self.scores(query, support)
        logits = scores
        masked_fraction = scores.new_zeros(n)
        if query_labels is not None and support_labels is not None:
            mask = dicm_mask(scores, query_labels, support_labels)
            masked_fraction = (mask != 0).flatten(1).float().mean(1)
            logits = scores + mask
        attn = torch.softmax(logits, dim=-1)
        v = self.to_v(support.flatten(2).transpose(1, 2))
        t = query.flatten(2).transpose(1, 2)
        message = self.norm(attn @ v)
        if keep is not None:
            message = message * keep.view(-1, 1, 1).to(message.dtype)
        out = message + t
        out = out + self.mlp(out)
        return out.transpose(1, 2).reshape(n, c, h, w), scores, masked_fraction


def dicm_mask(scores: Tensor, query_labels: Tensor, support_labels: Tensor) -> Tensor:
    """DICM: additive mask ``[N, Nq, Ns]``; for each support token j with i* = argmax_i
    scores[i, j], entry (i*, j) gets -1e4 when the labels of j and i* differ."""
    best_query = scores.argmax(dim=1)  # [N, Ns]
    label_at_best = query_labels.gather(1, best_query)  # [N, Ns]
    mismatch = label_at_best != support_labels
    values = torch.where(mismatch, torch.full_like(scores[:, 0], DICM_MASK_VALUE), torch.zeros_like(scores[:, 0]))
    mask = torch.zeros_like(scores)
    return mask.scatter(1, best_query.unsqueeze(1), values.unsqueeze(1))


def _conv_block(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1))


def _classifier(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.Conv2d(channels, 2, 1))


def _aux_head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, 2, 1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (bins 1, 2, 3, 6)."""

    def __init__(self, in_channels: int = 2048, reduction: int = 512, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduction, 1, bias=False),
                          nn.BatchNorm2d(reduction), nn.ReLU(inplace=True)) for b in bins])

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [resize_bilinear(s(x), size) for s in self.stages], dim=1)


def gram_matrix(features: Tensor) -> Tensor:
    f = features.flatten(2)
    norm = f.norm(dim=2, keepdim=True)
    return (f @ f.transpose(1, 2)) / (norm @ norm.transpose(1, 2) + 1e-7)


@dataclass
class DecoderInputs:
    """Cached inputs of the decoder (what ``head`` reruns from)."""

    query: Tensor  # [B, 256, h, w]
    supports: Tensor  # [B*K, 256, h, w]
    shots: int


class I2R(FSSModel):
    """I²R meta branch (+ optional BAM ensemble); see the module docstring."""

    is_matching = True
    channels = 256

    def __init__(self, input_size: int = 473, *, backbone_weights: Optional[str | Path] = None,
                 block_num: int = 6, cross_num: int = 5, cam_threshold: float = 0.7,
                 detach_merge_input: bool = True, use_base_learner: bool = False, base_classes: int = 15,
                 feature_dropout: float = 0.5, foreground_weight: float = 1.0):
        super().__init__()
        if not 1 <= cross_num <= block_num:
            raise ValueError("need 1 <= cross_num <= block_num")
        self.input_size = int(input_size)
        self.block_num, self.cross_num = block_num, cross_num
        self.cam_threshold = float(cam_threshold)
        self.detach_merge_input = detach_merge_input
        self.use_base_learner = use_base_learner
        self.foreground_weight = float(foreground_weight)
        self.backbone = build_resnet50()
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        freeze(self.backbone)
        c = self.channels
        self.down_query = nn.Sequential(nn.Conv2d(1536, c, 1, bias=False), nn.ReLU(inplace=True),
                                        nn.Dropout2d(float(feature_dropout)))
        self.down_supp = nn.Sequential(nn.Conv2d(1536, c, 1, bias=False), nn.ReLU(inplace=True),
                                       nn.Dropout2d(float(feature_dropout)))
        self.init_merge = nn.Sequential(nn.Conv2d(3 * c + 1, c, 1, bias=False), nn.ReLU(inplace=True))
        self.query_sa = nn.ModuleList([SelfAttention(c) for _ in range(block_num)])
        self.support_sa = nn.ModuleList([SelfAttention(c) for _ in range(block_num)])
        self.cross_attn = nn.ModuleList([CrossAttention(c) for _ in range(cross_num)])
        self.query_res = nn.ModuleList([_conv_block(c) for _ in range(block_num)])
        self.query_aux_heads = nn.ModuleList([_aux_head(c) for _ in range(block_num - 1)])
        self.support_aux_heads = nn.ModuleList([_aux_head(c) for _ in range(block_num - 1)])
        self.query_classifier = _classifier(c)
        self.support_classifier = _classifier(c)
        self.register_buffer("cam_prototype_offset", torch.zeros(2, 2048))
        if use_base_learner:
            self.base_ppm = PyramidPooling(2048, 512)
            self.base_cls = nn.Sequential(nn.Conv2d(4096, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512),
                                          nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(512, base_classes + 1, 1))
            freeze(self.base_ppm)
            freeze(self.base_cls)
            self.gram_merge = nn.Conv2d(2, 1, 1, bias=False)
            self.cls_merge = nn.Conv2d(2, 1, 1, bias=False)
            with torch.no_grad():
                self.gram_merge.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
                self.cls_merge.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))

    def train(self, mode: bool = True) -> "I2R":
        super().train(mode)
        self.backbone.eval()
        if self.use_base_learner:
            self.base_ppm.eval()
            self.base_cls.eval()
        return self

    def calibrate_backbone(self, images: Iterable[Tensor]) -> int:
        """Re-estimate the backbone's BatchNorm statistics (through layer4) on ``images``; see
        :func:`~fssgui.models.resnet_features.recalibrate_batchnorm`. Returns the image count."""
        return recalibrate_batchnorm(self.backbone, self.encode_query, images)

    # ------------------------------------------------------------ backbone and CAM
    def encode_query(self, query: Tensor) -> dict:
        b = self.backbone
        x = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(query)))))
        l2 = b.layer2(x)
        l3 = b.layer3(l2)
        return {"layer2": l2, "layer3": l3, "layer4": b.layer4(l3)}

    def _support_features(self, supports: Tensor, masks: Tensor) -> dict:
        b = self.backbone
        x = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(supports)))))
        l2 = b.layer2(x)
        l3 = b.layer3(l2)
        m3 = resize_bilinear(masks, l3.shape[-2:])
        l4_masked = b.layer4(l3 * m3)
        cls = b.fc(torch.flatten(b.avgpool(l4_masked), 1))
        return {"layer2": l2, "layer3": l3, "layer4_masked": l4_masked, "class": cls.argmax(1)}

    def xgradcam(self, layer3: Tensor, classes: Tensor, size: tuple[int, int]) -> Tensor:
        """Binary CAM+ ``[N, 1, S, S]`` of ``classes`` from layer3 features (gradients enabled locally)."""
        b = self.backbone
        with torch.enable_grad():
            a = layer3.detach().float().requires_grad_(True)
            with torch.autocast(device_type=a.device.type, enabled=False):
                logits = b.fc(torch.flatten(b.avgpool(b.layer4(a)), 1))
                score = logits.gather(1, classes.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, a)
        with torch.no_grad():
            a = a.detach()
            weights = (a / (a.sum((2, 3), keepdim=True) + 1e-7) * grad).sum((2, 3), keepdim=True)
            cam = F.relu((weights * a).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
            flat = cam.flatten(1)
            lo, hi = flat.min(1)[0].view(-1, 1, 1, 1), flat.max(1)[0].view(-1, 1, 1, 1)
            cam = (cam - lo) / (hi - lo + 1e-7)
            return (cam >= self.cam_threshold).to(layer3.dtype)

    def _prior(self, layer4: Tensor, cam: Tensor, p1: Tensor, p2: Tensor, size: tuple[int, int]) -> Tensor:
        """PMGM prior ``[N, 1, h, w]`` of features ``layer4`` with CAM+ ``cam`` (input size)."""
        cam4 = F.interpolate(cam, size=layer4.shape[-2:], mode="nearest")
        sim_pos = cosine_to_prototype(layer4 * cam4, p1)
        sim_neg = cosine_to_prototype(layer4 * (1 - cam4), p2)
        prior = region_minmax(sim_pos, cam4[:, 0]) + region_minmax(sim_neg, 1 - cam4[:, 0])
        return resize_bilinear(prior.unsqueeze(1), size)

    # ------------------------------------------------------------ meta branch
    def decoder_inputs(self, batch: EpisodeTensors, query_features: Optional[dict] = None) -> tuple[DecoderInputs, dict]:
        bsz, k = batch.supports.shape[:2]
        size = tuple(batch.query.shape[-2:])
        qf = expand_query_batch(query_features, bsz) if query_features is not None else self.encode_query(batch.query)
        s_masks = batch.support_masks.flatten(0, 1).unsqueeze(1).to(batch.query.dtype)  # [BK, 1, S, S]
        sf = self._support_features(batch.supports.flatten(0, 1), s_masks)
        h, w = qf["layer3"].shape[-2:]
        f_q = self.down_query(torch.cat([qf["layer3"], resize_bilinear(qf["layer2"], (h, w))], 1))  # [B, C, h, w]
        f_s = self.down_supp(torch.cat([sf["layer3"], resize_bilinear(sf["layer2"], (h, w))], 1))  # [BK, C, h, w]
        classes = sf["class"]  # [BK]
        cam_s = self.xgradcam(sf["layer3"], classes, size)  # [BK, 1, S, S]
        cam_q = self.xgradcam(qf["layer3"].repeat_interleave(k, 0), classes, size)  # [BK, 1, S, S] per shot class
        a1 = s_masks * cam_s
        a2 = s_masks * (1 - cam_s)
        p = masked_average(f_s, resize_bilinear(s_masks, (h, w))).detach()  # [BK, C]
        p1 = masked_average(f_s, resize_bilinear(a1, (h, w)))
        p2 = masked_average(f_s, resize_bilinear(a2, (h, w)))
        l4s = sf["layer4_masked"]
        with torch.no_grad():
            big1 = masked_average(l4s, resize_bilinear(a1, l4s.shape[-2:])) + self.cam_prototype_offset[0]
            big2 = masked_average(l4s, resize_bilinear(a2, l4s.shape[-2:])) + self.cam_prototype_offset[1]
            l4q = qf["layer4"].detach().repeat_interleave(k, 0)
            prior_q = self._prior(l4q, cam_q, big1, big2, (h, w)).view(bsz, k, 1, h, w).mean(1).clamp(0, 1)
            prior_s = self._prior(l4s.detach(), cam_s, big1, big2, (h, w))
        # shot-averaged prototypes (uniform shot weights) for the query
        pq = p.view(bsz, k, -1).mean(1)
        p1q = p1.view(bsz, k, -1).mean(1)
        p2q = p2.view(bsz, k, -1).mean(1)
        cam_q_small = resize_bilinear(cam_q, (h, w)).view(bsz, k, 1, h, w).mean(1)
        q_in = torch.cat([f_q, pq[:, :, None, None].expand_as(f_q),
                          p1q[:, :, None, None] * cam_q_small + p2q[:, :, None, None] * (1 - cam_q_small),
                          prior_q], 1)
        cam_s_small = resize_bilinear(cam_s, (h, w))
        s_in = torch.cat([f_s, p[:, :, None, None].expand_as(f_s),
                          p1[:, :, None, None] * cam_s_small + p2[:, :, None, None] * (1 - cam_s_small),
                          prior_s], 1)
        if self.detach_merge_input and self.training:
            q_in, s_in = q_in.detach(), s_in.detach()
        inputs = DecoderInputs(self.init_merge(q_in), self.init_merge(s_in), k)
        extras = {"prior": prior_q[:, 0], "query_cam": cam_q.view(bsz, k, *size), "support_cam": cam_s.view(bsz, k, *size),
                  "support_class": classes.view(bsz, k), "query_layer2": qf["layer2"], "support_layer2": sf["layer2"],
                  "query_layer4": qf["layer4"]}
        return inputs, extras

    def support_decoder(self, supports: Tensor) -> tuple[list[Tensor], Tensor]:
        """Support tokens after each block's SA (used as keys/values) and the final support logits."""
        states = []
        s = supports
        for i in range(self.block_num):
            s = self.support_sa[i](s)
            states.append(s)
        return states, self.support_classifier(s)

    def query_decoder(self, query: Tensor, support_states: list[Tensor], shots: int, *,
                      keep: Optional[Tensor] = None, query_labels: Optional[Tensor] = None,
                      support_labels: Optional[Tensor] = None) -> dict:
        """Runs the query branch; ``keep [B*K]``-broadcastable per cross block (``keep[j]``)."""
        bsz = query.shape[0]
        q = query
        scores_per_block, aux, masked = [], [], []
        for i in range(self.block_num):
            q_sa = self.query_sa[i](q)
            if i < self.cross_num:
                q_rep = q_sa.repeat_interleave(shots, 0)
                q_lab = None if query_labels is None else query_labels.repeat_interleave(shots, 0)
                out, scores, frac = self.cross_attn[i](
                    q_rep, support_states[i], query_labels=q_lab, support_labels=support_labels,
                    keep=None if keep is None else keep[i].expand(bsz * shots))
                q_mid = out.view(bsz, shots, *out.shape[1:]).mean(1)
                scores_per_block.append(scores)
                masked.append(frac.mean())
            else:
                q_mid = q_sa
            if i < self.block_num - 1:
                aux.append(self.query_aux_heads[i](q_mid))
            q = self.query_res[i](q_mid) + q_mid
        return {"logits": self.query_classifier(q), "scores": scores_per_block, "aux": aux, "masked": masked}

    def ensemble(self, meta_logits: Tensor, extras: dict, shots: int) -> Tensor:
        """BAM's base/meta ensemble (only with ``use_base_learner``)."""
        base = self.base_cls(self.base_ppm(extras["query_layer4"]))
        meta_soft, base_soft = meta_logits.softmax(1), base.softmax(1)
        g_q = gram_matrix(extras["query_layer2"]).repeat_interleave(shots, 0)
        g_s = gram_matrix(extras["support_layer2"])
        norm_max = float(g_q.shape[-1])  # |ones(C, C)|_F = C
        est = ((g_q - g_s).flatten(1).norm(dim=1) / norm_max).view(-1, shots).mean(1).view(-1, 1, 1, 1)
        est = est.expand_as(meta_soft[:, :1])
        bg = self.gram_merge(torch.cat([meta_soft[:, :1], est], 1))
        fg = self.gram_merge(torch.cat([meta_soft[:, 1:], est], 1))
        base_map = resize_bilinear(base_soft[:, 1:].sum(1, keepdim=True), bg.shape[-2:])
        return torch.cat([self.cls_merge(torch.cat([bg, base_map], 1)), fg], 1)

    # ------------------------------------------------------------ interface
    def predict(self, batch: EpisodeTensors, *, with_scores: bool = False, query_features: Any = None) -> Prediction:
        size = tuple(batch.query.shape[-2:])
        inputs, extras = self.decoder_inputs(batch, query_features)
        support_states, _ = self.support_decoder(inputs.supports)
        out = self.query_decoder(inputs.query, support_states, inputs.shots)

        def finish(meta_logits: Tensor) -> Tensor:
            logits = self.ensemble(meta_logits, extras, inputs.shots) if self.use_base_learner else meta_logits
            return resize_bilinear(logits, size)

        logits = finish(out["logits"])
        h, w = inputs.query.shape[-2:]
        bsz, k = batch.batch_size, inputs.shots
        prediction = Prediction(logits=logits, extras={"prior": extras["prior"], "query_cam": extras["query_cam"],
                                                       "support_cam": extras["support_cam"],
                                                       "support_class": extras["support_class"]})
        if with_scores:
            # [B*K, Nq, Ns] per block -> [B, Nq, K*Ns] (support axis ordered shot, row, col)
            prediction.matching_scores = [
                s.view(bsz, k, h * w, h * w).permute(0, 2, 1, 3).reshape(bsz, h * w, k * h * w)
                for s in out["scores"]]
            prediction.level_shapes = [(h, w)] * self.cross_num

            def head(keep: Tensor) -> Tensor:
                rows = []
                for row in keep.to(inputs.query.device, inputs.query.dtype):
                    rerun = self.query_decoder(inputs.query, support_states, k, keep=row.view(-1, 1))
                    rows.append(finish(rerun["logits"]))
                return torch.stack(rows)

            prediction.head = head
        return prediction

    def training_loss(self, batch: EpisodeTensors, query_mask: Tensor, progress: float,
                      generator: Optional[torch.Generator] = None) -> tuple[Tensor, dict[str, float]]:
        """The code's losses (see the module docstring); DICM masking uses ``query_mask``."""
        size = tuple(batch.query.shape[-2:])
        bsz, k = batch.supports.shape[:2]
        with torch.no_grad():
            query_features = self.encode_query(batch.query)
        inputs, extras = self.decoder_inputs(batch, query_features)
        h, w = inputs.query.shape[-2:]
        q_lab = F.interpolate(torch.where(query_mask == 255, 0, query_mask)[:, None].float(), size=(h, w),
                              mode="nearest").flatten(1).long()
        s_masks = batch.support_masks.flatten(0, 1)
        s_lab = F.interpolate(s_masks[:, None].float(), size=(h, w), mode="nearest").flatten(1).long()
        support_states, support_logits = self.support_decoder(inputs.supports)
        out = self.query_decoder(inputs.query, support_states, k, query_labels=q_lab, support_labels=s_lab)

        weight = (batch.query.new_tensor([1.0, self.foreground_weight]).float()
                  if self.foreground_weight != 1.0 else None)

        def ce(logits: Tensor, target: Tensor) -> Tensor:
            return F.cross_entropy(resize_bilinear(logits.float(), size), target, weight=weight, ignore_index=255)

        s_target = s_masks.long()
        aux1 = (ce(out["logits"], query_mask) + ce(support_logits, s_target)) / 2
        q_mid = torch.stack([ce(a, query_mask) for a in out["aux"]]).mean()
        s_mid = torch.stack([ce(self.support_aux_heads[i](support_states[i]), s_target)
                             for i in range(self.block_num - 1)]).mean()
        aux2 = (q_mid + s_mid) / 2
        loss = aux1 + aux2
        logs = {"aux1": float(aux1.detach()), "aux2": float(aux2.detach())}
        if self.use_base_learner:
            main = ce(self.ensemble(out["logits"], extras, k), query_mask)
            loss = loss + main
            logs["main"] = float(main.detach())
        logs["loss"] = float(loss.detach())
        logs["dicm_masked"] = float(torch.stack(out["masked"]).mean()) if out["masked"] else 0.0
        return loss, logs


def build_i2r(input_size: int = 473, backbone_weights: Optional[str | Path] = None, **options: Any) -> I2R:
    return I2R(input_size, backbone_weights=backbone_weights, **options)
