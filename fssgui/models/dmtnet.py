"""DMTNet (Chen et al., IJCAI 2024), re-implemented to load the official checkpoints.

State-dict keys follow the official ``DMTNetwork('resnet50')`` (``backbone.*`` = torchvision
ResNet-50 with its classifier, ``reference_layer{3,2,1,6,5,4}`` in that registration order,
``hpn_learner.*``), so a released checkpoint loads strictly. Behaviour follows the official
inference path (``testDDP.py``: ``model.eval()``), including its quirks:

* Features: ResNet-50 bottlenecks 4…16 (layer1 skipped), after the residual add and before the
  final ReLU.
* Support prototypes (global and on a 5×5 grid of ⌊H/4⌋ windows plus a border-aligned one),
  masks downsampled bilinearly with align_corners=True, sums divided by (mask sum + 1e-6).
* Query pseudo-mask: grid cosine similarities ×10, summed and divided by the *first* layer's
  window count, argmax; query prototypes from it.
* Transformation with the official swapped arguments: ``C = rownorm([p_b; p_f])``,
  ``C_q = rownorm([q_f; q_b])``, reference layers 1/2/3 (support) and 4/5/6 (query), weights
  only; ``P = (pinv(C) R)ᵀ``, ``P_q ← ½ P_q + ½ P``.
* Hypercorrelation: clamped cosine (L2 eps 1e-5), pyramids ``[l4, l3, l2]``, then the HSNet
  learner with center-pivot 4-D convolutions, 100² output resized to the input size
  (align_corners=True). The same learner on the bg-support correlation gives ``bg_logits``.
* K shots: one 1-shot pass per shot; the official prediction is the vote
  ``sum_k argmax_k / max(max vote, 1) >= 0.5``.

Deliberate differences (same mathematics, better numerics or speed):

* ``pinv`` is computed in float64 with a relative cut-off of 1e-6 (``torch.linalg.pinv``): the
  official fp32 ``torch.pinverse`` is ill-posed, and nondeterministic across thread counts and
  devices, when a pseudo-mask is all foreground or all background (an exact zero row in C_q).
* ``P`` has rank ≤ 2 (``P_q`` rank ≤ 4), so ``P·F = Rᵀ (pinv(C)ᵀ F)`` is evaluated in that
  factored form, and the correlation numerator as a rank-2 product; the C×C matrices are never
  formed.
* No pruning-index cache in the 4-D convolution (any input size works in one instance), and
  the input's device is used (the official code calls ``.cuda()``).

For K > 1, ``Prediction.logits`` is the **mean of the per-shot logits** (continuous and
differentiable, used by confidence metrics and gradient methods), while the official voted mask
is ``extras["vote_mask"]`` and is what ``Prediction.mask()`` returns. For K = 1 both are the
plain 1-shot logits / argmax.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CancelledFn, ModelError, check_cancelled
from .backbones import build_resnet, resnet_bottleneck_features
from .base import (
    EpisodeTensors, FSSModel, Prediction, ScoreSink, expand_query_batch, foreground_mask, resize_logits, resize_masks,
    score_chunk_rows,
)
from .hsnet_learner import HPNLearner, LearnerRun

FEATURE_IDS = tuple(range(3, 16))  # 0-based bottleneck indices 3..15 = official feat_ids 4..16
LAYER_GROUPS = (3, 6, 4)  # channels of the pyramids [l4, l3, l2]
GRID_NUM = 4
PINV_RTOL = 1e-6


# ----------------------------------------------------------------------------------------------
# DMTNet
# ----------------------------------------------------------------------------------------------


def _grid_indicator(size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[size, n]`` 0/1 matrix of the official grid windows along one axis."""
    win = size // GRID_NUM
    if win < 1:
        raise ModelError(f"DMTNet feature map {size} is too small for its {GRID_NUM}x{GRID_NUM} grid")
    starts = list(range(0, size - win + 1, win))
    if starts[-1] + win < size:
        starts.append(size - win)
    ind = torch.zeros(size, len(starts), device=device, dtype=dtype)
    for j, s in enumerate(starts):
        ind[s : s + win, j] = 1.0
    return ind


def _window_sums(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, nh·nw]`` sums over the grid windows (row-major windows)."""
    return torch.einsum("bcyx,yi,xj->bcij", x, rows, cols).flatten(2)


def _unit_rows(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Official row normalisation ``x / (||x|| + eps)`` over the last dim."""
    return x / ((x * x).sum(-1, keepdim=True).sqrt() + eps)


def _cosine_to_prototypes(feat: Tensor, protos: Tensor) -> Tensor:
    """``F.cosine_similarity`` of ``feat [B, C, h, w]`` with each of ``protos [B, G, C]`` -> ``[B, G, h, w]``."""
    eps = 1e-8
    fn = feat / feat.norm(dim=1, keepdim=True).clamp_min(eps)
    pn = protos / protos.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.einsum("bchw,bgc->bghw", fn, pn)


def robust_pinv(c: Tensor) -> Tensor:
    """Moore–Penrose pseudo-inverse of ``[B, 2, C]`` in float64, relative cut-off 1e-6."""
    return torch.linalg.pinv(c.double(), rtol=PINV_RTOL).to(c.dtype)


@dataclass
class ShotResult:
    """Everything one 1-shot pass computes (per episode of the batch)."""

    logits: Tensor  # [B, 2, S, S]
    bg_logits: Tensor  # [B, 2, S, S]
    corr: list[Tensor]  # [l4, l3, l2]: [B, n, ha, wa, hb, wb]
    bg_corr: list[Tensor]
    pseudo_similarity: list[Tensor]  # 13 x [B, 2, h, w] (bg, fg)
    learner: LearnerRun  # the HSNet learner's forward on corr (kept for the ablation reruns)
    bg_learner: LearnerRun  # ... on bg_corr
    transformed: Optional[dict[str, list[Tensor]]] = None  # 'query'/'support'/'bg_support' (diagnostics)
    extra: dict[str, Any] = field(default_factory=dict)


class VotedPrediction(Prediction):
    """A prediction whose :meth:`mask` is the official K-shot vote: at the model size
    ``extras["vote_mask"]``; at another size, the vote of the per-shot logits each resized to it
    (the official code resizes every shot's logits to the original size before voting)."""

    def mask(self, size: Optional[Sequence[int]] = None) -> Tensor:
        shot_logits = self.extras.get("shot_logits")
        if shot_logits is None or shot_logits.shape[0] == 1:
            return super().mask(size)
        if size is None or tuple(int(v) for v in size) == tuple(shot_logits.shape[-2:]):
            return self.extras["vote_mask"]
        return DMTNet.vote(resize_logits(shot_logits, size))


@dataclass
class DMTNetQueryFeatures:
    features: list[Optional[Tensor]]
    image_size: tuple[int, int]


class DMTNet(FSSModel):
    """DMTNet adapter (ResNet-50); its state dict is the official ``DMTNetwork``'s."""

    is_matching = True
    #: ``predict(..., score_sink=...)`` hands each level's scores over by chunks of query rows (base.py)
    streams_scores = True
    #: ``predict(..., with_scores=True, replay_scores=True)``: the scores are sums of the correlation
    #: pyramids the prediction holds anyway (for the ablation reruns): rebuilt when asked, not held
    replays_scores = True
    #: ablation reruns per learner call on an accelerator (rows that ablate the same pyramid group:
    #: at most 6); not measured on a GPU yet (bench/device_check.sh)
    ablation_chunk = 6
    computed_buffer_patterns: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.backbone = build_resnet("resnet50")
        # registration order = the official state-dict order
        self.reference_layer3 = nn.Linear(2048, 2)
        self.reference_layer2 = nn.Linear(1024, 2)
        self.reference_layer1 = nn.Linear(512, 2)
        self.reference_layer6 = nn.Linear(2048, 2)
        self.reference_layer5 = nn.Linear(1024, 2)
        self.reference_layer4 = nn.Linear(512, 2)
        self.hpn_learner = HPNLearner(LAYER_GROUPS)
        self.stack_ids = (3, 9, 13)
        #: diagnostics: keep the transformed feature maps in ``extras["shots"][k].transformed``
        self.keep_transformed = False
        self.requires_grad_(False)
        self.eval()

    # --- structure -------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return sum(LAYER_GROUPS)

    @staticmethod
    def level_layer(level: int) -> int:
        """Backbone layer index (0..12, official order) of AffEx level ``level`` ([l4, l3, l2] order)."""
        return (10, 11, 12, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3)[level]

    def _references(self, idx: int) -> tuple[Tensor, Tensor]:
        if idx <= 3:
            return self.reference_layer1.weight, self.reference_layer4.weight
        if idx <= 9:
            return self.reference_layer2.weight, self.reference_layer5.weight
        return self.reference_layer3.weight, self.reference_layer6.weight

    # --- backbone --------------------------------------------------------------------------
    def extract_features(self, images: Tensor) -> list[Tensor]:
        feats = resnet_bottleneck_features(self.backbone, images, FEATURE_IDS)
        return [f for f in feats[FEATURE_IDS[0] :] if f is not None]

    def encode_query(self, query: Tensor) -> DMTNetQueryFeatures:
        return DMTNetQueryFeatures(self.extract_features(query), tuple(query.shape[-2:]))

    # --- one shot ----------------------------------------------------------------------------
    def one_shot(
        self,
        query_feats: Sequence[Tensor],
        support_feats: Sequence[Tensor],
        support_mask: Tensor,
        size: Sequence[int],
        *,
        keep_transformed: bool = False,
    ) -> ShotResult:
        """The official 1-shot forward from backbone features (``support_mask [B, S, S]``)."""
        eps = 1e-6
        n_layers = len(query_feats)
        rows0 = _grid_indicator(query_feats[0].shape[-2], query_feats[0].device, query_feats[0].dtype)
        cols0 = _grid_indicator(query_feats[0].shape[-1], query_feats[0].device, query_feats[0].dtype)
        first_windows = float(rows0.shape[1] * cols0.shape[1])
        corrs: list[Tensor] = []
        bg_corrs: list[Tensor] = []
        psims: list[Tensor] = []
        transformed: dict[str, list[Tensor]] = {"query": [], "support": [], "bg_support": []}
        for idx in range(n_layers):
            fq, fs = query_feats[idx], support_feats[idx]
            b, c, h, w = fs.shape
            m = resize_masks(support_mask, (h, w)).unsqueeze(1).to(fs.dtype)  # [B, 1, h, w]
            bm = 1 - m
            fg = fs * m
            bgf = fs * bm
            # grid prototypes -> query pseudo-mask
            rows = _grid_indicator(h, fs.device, fs.dtype)
            cols = _grid_indicator(w, fs.device, fs.dtype)
            pf_grid = _window_sums(fg, rows, cols) / (_window_sums(m, rows, cols) + eps)  # [B, C, G]
            pb_grid = _window_sums(bgf, rows, cols) / (_window_sums(bm, rows, cols) + eps)
            sim_bg = _cosine_to_prototypes(fq, pb_grid.transpose(1, 2)).sum(1)
            sim_fg = _cosine_to_prototypes(fq, pf_grid.transpose(1, 2)).sum(1)
            psim = torch.stack([sim_bg, sim_fg], 1) * (10.0 / first_windows)
            psims.append(psim)
            pseudo = psim.argmax(dim=1, keepdim=True).to(fq.dtype)
            q_f = (fq * pseudo).sum((2, 3)) / (pseudo.sum((2, 3)) + eps)
            q_b = (fq * (1 - pseudo)).sum((2, 3)) / ((1 - pseudo).sum((2, 3)) + eps)
            p_f = fg.sum((2, 3)) / (m.sum((2, 3)) + eps)
            p_b = bgf.sum((2, 3)) / (bm.sum((2, 3)) + eps)
            # transformation (official swapped arguments: C_q = [q_f; q_b])
            basis = _unit_rows(torch.stack([p_b, p_f], 1))  # [B, 2, C]
            basis_q = _unit_rows(torch.stack([q_f, q_b], 1))
            ref, ref_q = self._references(idx)
            ref = _unit_rows(ref)  # [2, C]
            ref_q = _unit_rows(ref_q)
            coef = robust_pinv(basis).transpose(1, 2)  # pinv(C)ᵀ  [B, 2, C]
            coef_q = robust_pinv(basis_q).transpose(1, 2)
            fq_flat = fq.reshape(b, c, h * w)
            a_s = torch.matmul(coef, fg.reshape(b, c, h * w))  # [B, 2, N]
            a_b = torch.matmul(coef, bgf.reshape(b, c, h * w))
            a_q = torch.matmul(torch.cat([coef_q, coef], 1), fq_flat)  # [B, 4, N]
            both_refs = torch.cat([ref_q, ref], 0).t() * 0.5  # [C, 4]
            tq = torch.matmul(both_refs, a_q)  # P_q F_q  [B, C, N]
            ts = torch.matmul(ref.t(), a_s)  # P (F_s m)
            tb = torch.matmul(ref.t(), a_b)  # P (F_s (1 - m))
            if keep_transformed:
                transformed["query"].append(tq.view(b, c, h, w))
                transformed["support"].append(ts.view(b, c, h, w))
                transformed["bg_support"].append(tb.view(b, c, h, w))
            # clamped cosine; numerator (R tq)ᵀ a as a rank-2 product
            rq = torch.matmul(ref, tq) / (tq.norm(dim=1, keepdim=True) + 1e-5)  # [B, 2, Nq]
            a_s = a_s / (ts.norm(dim=1, keepdim=True) + 1e-5)
            a_b = a_b / (tb.norm(dim=1, keepdim=True) + 1e-5)
            rq_t = rq.transpose(1, 2)
            corrs.append(torch.matmul(rq_t, a_s).clamp_(min=0).view(b, h, w, h, w))
            bg_corrs.append(torch.matmul(rq_t, a_b).clamp_(min=0).view(b, h, w, h, w))
        corr = self._pyramid(corrs)
        bg_corr = self._pyramid(bg_corrs)
        learner = self.hpn_learner.run(corr)
        bg_learner = self.hpn_learner.run(bg_corr)
        logits = self._to_size(learner.raw, size)
        bg_logits = self._to_size(bg_learner.raw, size)
        return ShotResult(
            logits, bg_logits, corr, bg_corr, psims, learner, bg_learner,
            transformed if keep_transformed else None,
        )

    def _pyramid(self, corrs: list[Tensor]) -> list[Tensor]:
        """13 ``[B, ha, wa, hb, wb]`` -> ``[l4, l3, l2]`` ``[B, n, ha, wa, hb, wb]``.

        Stored query-major channels-last, ``[B, ha, wa, hb, wb, n]`` in memory (a permuted view is
        returned): the layout the first 4-D convolution's support-dims pass reads without a copy
        (``hsnet_learner``).
        """
        s = self.stack_ids
        groups = [corrs[-s[0] :], corrs[-s[1] : -s[0]], corrs[-s[2] : -s[1]]]
        return [torch.stack(g, dim=-1).permute(0, 5, 1, 2, 3, 4) for g in groups]

    @staticmethod
    def _to_size(logits: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=True)

    # --- predict -----------------------------------------------------------------------------
    def predict(
        self,
        batch: EpisodeTensors,
        *,
        with_scores: bool = False,
        query_features: Any = None,
        score_sink: Optional[ScoreSink] = None,
        replay_scores: bool = False,
    ) -> Prediction:
        """See the module docstring for ``logits`` at K > 1.

        ``matching_scores``: 13 levels ``[B, h·w, K·h·w]`` = corr + bg_corr of each pyramid channel,
        shots concatenated on the support axis, ordered [3 × 13², 6 × 25², 4 × 50²] (AffEx order).
        With ``score_sink`` (streaming, see ``base``) each level's scores are built after the
        forward by chunks of query rows, handed to the sink and dropped one at a time: only the
        correlation pyramids, which the ablation reruns need anyway, are held, never a level's sum
        (nor the shots joined). With ``replay_scores`` the same chunks are handed to any sink later,
        as often as asked (:attr:`Prediction.score_replay`), and no sum is held either.
        ``extras``: ``shot_logits`` / ``bg_logits`` ``[K, B, 2, S, S]``, ``vote_mask`` ``[B, S, S]``
        bool, ``pseudo_similarity`` / ``pseudo_masks`` (per shot, 13 maps in backbone order), and
        ``shots`` (the per-shot :class:`ShotResult`, with the correlation pyramids).
        """
        supports, masks = batch.supports, batch.support_masks
        b, k = supports.shape[:2]
        size = tuple(supports.shape[-2:])
        if query_features is None:
            qf = self.encode_query(batch.query)
        else:
            qf = query_features
            if tuple(qf.image_size) != size:
                raise ModelError(f"query features were computed at {qf.image_size}, supports are {size}")
        qfeats = expand_query_batch(list(qf.features), b)
        sfeats_all = self.extract_features(supports.flatten(0, 1))
        shots: list[ShotResult] = []
        for shot in range(k):
            sfeats = [f.view(b, k, *f.shape[1:])[:, shot] for f in sfeats_all]
            shots.append(self.one_shot(qfeats, sfeats, masks[:, shot], size, keep_transformed=self.keep_transformed))
        del sfeats_all
        shot_logits = torch.stack([s.logits for s in shots])  # [K, B, 2, S, S]
        bg_logits = torch.stack([s.bg_logits for s in shots])
        logits = shot_logits[0] if k == 1 else shot_logits.mean(0)
        vote_mask = self.vote(shot_logits)
        scores = None
        shapes = [tuple(int(v) for v in shots[0].corr[g].shape[2:4]) for g in range(3) for _ in range(LAYER_GROUPS[g])]
        groups_and_channels = [(g, j) for g in range(3) for j in range(LAYER_GROUPS[g])]

        def level_rows(g: int, j: int, start: int, rows: int) -> Tensor:
            """Query rows ``start .. start + rows - 1`` of level (g, j)'s scores: corr + bg_corr of
            each shot, the shots joined on the support axis."""
            parts = [s.corr[g][:, j].flatten(3).flatten(1, 2)[:, start : start + rows]
                     + s.bg_corr[g][:, j].flatten(3).flatten(1, 2)[:, start : start + rows] for s in shots]
            return parts[0] if k == 1 else torch.cat(parts, 2)

        def replay(sink: ScoreSink) -> None:
            """Every level's scores, by chunks of query rows."""
            for level, (g, j) in enumerate(groups_and_channels):
                h, w = shapes[level]
                rows = score_chunk_rows(k * h * w, b)
                for start in range(0, h * w, rows):
                    sink(level, (h, w), start, level_rows(g, j, start, rows))

        if score_sink is not None:
            replay(score_sink)
        elif with_scores and not replay_scores:
            scores = [level_rows(g, j, 0, h * w) for (g, j), (h, w) in zip(groups_and_channels, shapes)]

        def head(keep: Tensor) -> Tensor:
            outs = [self._learner_rerun(s, keep, size, bg=False) for s in shots]  # K x [N, B, 2, S, S]
            return outs[0] if k == 1 else torch.stack(outs).mean(0)

        extras = {
            "shot_logits": shot_logits,
            "bg_logits": bg_logits,
            "vote_mask": vote_mask,
            "pseudo_similarity": [s.pseudo_similarity for s in shots],
            "pseudo_masks": [[foreground_mask(p, 1) for p in s.pseudo_similarity] for s in shots],
            "shots": shots,
        }
        return VotedPrediction(
            logits=logits,
            matching_scores=scores,
            level_shapes=shapes,
            head=head,
            extras=extras,
            score_replay=replay if with_scores and replay_scores and score_sink is None else None,
        )

    @staticmethod
    def vote(shot_logits: Tensor) -> Tensor:
        """The official K-shot vote on ``[K, B, 2, S, S]`` -> ``[B, S, S]`` bool."""
        votes = foreground_mask(shot_logits, dim=2).sum(0)  # [B, S, S]: shots voting foreground
        max_vote = votes.flatten(1).max(dim=1).values.clamp_min(1).view(-1, 1, 1)
        return (votes.float() / max_vote) >= 0.5

    # --- head reruns ---------------------------------------------------------------------------
    def _learner_rerun(
        self, shot: ShotResult, keep: Tensor, size: Optional[Sequence[int]], *, bg: bool,
        cancelled: CancelledFn = None,
    ) -> Tensor:
        """HPN learner on the (bg_)corr pyramid with level j scaled by ``keep[:, j]``.

        Returns ``[N, B, 2, *size]`` (bilinear, align_corners=True from the 100² output; ``size``
        None keeps the raw output). Only what a scaled level reaches is recomputed
        (:meth:`HPNLearner.rerun`); one row per learner call on the CPU, ``ablation_chunk`` rows
        that scale the same groups per call on an accelerator.
        """
        run = shot.bg_learner if bg else shot.learner
        device = run.raw.device
        chunk = self.ablation_chunk_cpu if device.type == "cpu" else self.ablation_chunk
        out = self.hpn_learner.rerun(run, keep, chunk, cancelled)
        if size is not None:
            n, b = out.shape[:2]
            out = self._to_size(out.flatten(0, 1), size).view(n, b, 2, *size)
        return out

    # --- AffEx -----------------------------------------------------------------------------------
    def feature_ablation_weights(
        self,
        prediction: Prediction,
        region: Tensor,
        size: int,
        *,
        mode: str = "paper",
        cancelled: CancelledFn = None,
    ) -> Tensor:
        """AffEx feature-ablation weights ``[13]`` (sum 1), DMTNet variant.

        Per shot and level j: zero channel j of both corr and bg_corr, rerun the learner (fg and
        bg), resize its raw output to ``size`` (bilinear, align_corners=True) and take
        ``d = mean((|orig − new| + |bg_orig − bg_new|) / 2)`` over the batch, both logit channels
        and the pixels of ``region``; average d over shots and normalise to sum 1.
        ``mode="reference"`` compares every shot with the **last** shot's unablated output (the
        official AffEx loop); ``mode="paper"`` with each shot's own.
        """
        if mode not in ("paper", "reference"):
            raise ValueError(f"unknown mode {mode!r} (paper or reference)")
        shots: list[ShotResult] = prediction.extras["shots"]
        dev = shots[0].logits.device
        region = region.to(dev)
        target = (size, size)
        with torch.no_grad():
            per_shot = []
            for s in shots:
                fg_raw, bg_raw = self.ablation_outputs(s, cancelled)  # [L+1, B, 2, h, w] (raw learner output)
                fg = self._to_size(fg_raw.flatten(0, 1), target).view(*fg_raw.shape[:3], *target)[..., region]
                bg = self._to_size(bg_raw.flatten(0, 1), target).view(*bg_raw.shape[:3], *target)[..., region]
                per_shot.append((fg, bg))  # [L+1, B, 2, |R|]
            d = []
            last_fg, last_bg = per_shot[-1][0][0], per_shot[-1][1][0]
            for fg, bg in per_shot:
                ref_fg, ref_bg = (last_fg, last_bg) if mode == "reference" else (fg[0], bg[0])
                diff = ((ref_fg.unsqueeze(0) - fg[1:]).abs() + (ref_bg.unsqueeze(0) - bg[1:]).abs()) / 2
                d.append(diff.flatten(1).mean(1))  # [L]
            dist = torch.stack(d).mean(0)
        return dist / dist.sum()

    def ablation_outputs(self, shot: ShotResult, cancelled: CancelledFn = None) -> tuple[Tensor, Tensor]:
        """Raw learner outputs (fg, bg) ``[L+1, B, 2, h, w]`` for "nothing ablated" and each level
        zeroed in turn; computed once per shot and memoised (they do not depend on the region or
        the explanation size)."""
        cached = shot.extra.get("ablation_outputs")
        if cached is None:
            levels = self.num_levels
            dev, dtype = shot.logits.device, shot.logits.dtype
            keep = torch.ones(levels + 1, levels, device=dev, dtype=dtype)
            keep[1:] -= torch.eye(levels, device=dev, dtype=dtype)
            with torch.no_grad():
                cached = (
                    self._learner_rerun(shot, keep, None, bg=False, cancelled=cancelled),
                    self._learner_rerun(shot, keep, None, bg=True, cancelled=cancelled),
                )
            shot.extra["ablation_outputs"] = cached
        return cached
