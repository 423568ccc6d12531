"""Baseline explainers with AffEx's call shape (the AffEx paper's baselines): captum Saliency, Integrated
Gradients, DeepLift, GradientShap; LIME adapted to few-shot segmentation; Gaussian Noise Mask;
Random.

**What is attributed.** The reference attributes the whole image tensor (query and supports) and
the support masks, then keeps only the support images' part. Here only the **support images** are
inputs: the query image and the support masks are held fixed (the query's backbone features are
computed once and reused), which is what the fssgui issue asks and what "which support pixels
mattered" means. The explained scalar is the reference's: the region-mean foreground logit
``mean_{q in R} logits[1, q]``.

**Reduction** (reference): the support image attribution ``[K, 3, S, S]`` is averaged over RGB
(signed) and min-max scaled globally over all shots, giving ``[K, S, S]`` in [0, 1].
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CancelledFn, ExplainError, ProgressFn, check_cancelled
from .base import Attribution, Explainer


# ------------------------------------------------------------------------------ the forward
class SupportForward(nn.Module):
    """``forward(supports [N, K, 3, S, S]) -> [N]`` region-mean foreground logit, with the query,
    support masks and region fixed. A module (holding the model as a child) so that DeepLift's
    module hooks reach the model's nonlinearities."""

    def __init__(self, model, batch, region: Tensor, cancelled: CancelledFn = None) -> None:
        super().__init__()
        self.model = model
        self.cancelled = cancelled  # checked before each forward (captum calls it once per batch of inputs)
        self.query = batch.query
        self.masks = batch.support_masks
        self.region = region.to(batch.query.device).bool()
        self.episode_type = type(batch)
        with torch.no_grad():
            self.query_features = model.encode_query(batch.query)

    def forward(self, supports: Tensor) -> Tensor:
        check_cancelled(self.cancelled)
        n = supports.shape[0]
        episode = self.episode_type(
            self.query.expand(n, -1, -1, -1), supports, self.masks.expand(n, *self.masks.shape[1:])
        )
        logits = self.model.predict(episode, query_features=self.query_features).logits
        return logits[:, 1][:, self.region].mean(-1)


def reduce_support_attribution(attribution: Tensor) -> Tensor:
    """``[K, 3, S, S]`` -> ``[K, S, S]``: signed mean over RGB, then global min-max."""
    from .affex import min_max_scale

    return min_max_scale(attribution.detach().float().mean(dim=1))


def _check_region(region: Tensor) -> None:
    if not region.bool().any():
        raise ExplainError("the region R to explain is empty (no query pixel selected)")


def _check_batch(batch) -> None:
    if batch.batch_size != 1:
        raise ExplainError(f"explainers take one episode at a time (got a batch of {batch.batch_size})")


# ------------------------------------------------------------------------------ captum family
class CaptumExplainer(Explainer):
    """Shared plumbing: build the support forward, run a captum method, reduce."""

    def _attribute(self, method, forward: SupportForward, supports: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    def explain(self, model, batch, region, *, prediction=None, progress: ProgressFn = None,
                cancelled: CancelledFn = None) -> Attribution:
        _check_batch(batch)
        _check_region(region)
        check_cancelled(cancelled)
        forward = SupportForward(model, batch, region, cancelled)
        was_training = model.training
        model.eval()
        try:
            supports = batch.supports.detach().clone().requires_grad_(True)
            raw = self._attribute(forward, supports)[0]
        finally:
            model.train(was_training)
        if progress is not None:
            progress(1.0)
        return Attribution(maps=reduce_support_attribution(raw), method=self.name, params=self.params())


class SaliencyExplainer(CaptumExplainer):
    """captum ``Saliency`` (abs=True: |d logit / d pixel|), one forward + backward."""

    name = "saliency"

    def _attribute(self, forward, supports):
        from captum.attr import Saliency

        return Saliency(forward).attribute(supports, abs=True)

    def params(self):
        return {"abs": True}


class IntegratedGradientsExplainer(CaptumExplainer):
    """captum ``IntegratedGradients`` from a zero baseline (the ImageNet-mean image),
    ``n_steps`` = 25 (reference), Gauss-Legendre; ``internal_batch_size`` path points per forward
    and backward (the same result for any value): by default 1 on the CPU (the reference's; as fast
    there, and a cancel waits for one point's forward and backward, not eight), 8 on an accelerator."""

    name = "integrated-gradients"
    #: path points per forward when the caller does not choose, on the CPU and on an accelerator
    DEFAULT_BATCH = {"cpu": 1, "accelerator": 8}

    def __init__(self, n_steps: int = 25, internal_batch_size: Optional[int] = None,
                 method: str = "gausslegendre") -> None:
        self.n_steps, self.method = int(n_steps), method
        self.internal_batch_size = None if internal_batch_size is None else int(internal_batch_size)
        self._used_batch = self.internal_batch_size

    def _attribute(self, forward, supports):
        from captum.attr import IntegratedGradients

        self._used_batch = self.internal_batch_size or self.DEFAULT_BATCH[
            "cpu" if supports.device.type == "cpu" else "accelerator"]
        return IntegratedGradients(forward).attribute(
            supports, baselines=torch.zeros_like(supports), n_steps=self.n_steps,
            method=self.method, internal_batch_size=self._used_batch,
        )

    def params(self):
        return {"n_steps": self.n_steps, "internal_batch_size": self._used_batch, "method": self.method}


def deeplift_unavailable_reason(model: nn.Module) -> str:
    """Why captum's DeepLift cannot explain ``model``, as far as its modules tell ("" when they do
    not rule it out): an activation module it has no rule for (it would be treated as linear, e.g.
    the matchers' ReLU6), or no nonlinearity module at all (functional calls, which its hooks do not
    see). A module called twice per forward is found only when DeepLift runs."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    supported = tuple(SUPPORTED_NON_LINEAR)
    modules = list(model.modules())
    unsupported = sorted({
        type(m).__name__ for m in modules
        if type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, supported)
        and not isinstance(m, nn.MultiheadAttention)
    })
    if unsupported:
        return (f"it uses activation modules captum's DeepLift has no rule for ({', '.join(unsupported)}); "
                "they would be treated as linear")
    if not any(isinstance(m, supported) for m in modules):
        return ("it has no nonlinearity modules (nn.ReLU, nn.Sigmoid, ...) for DeepLift's hooks; its "
                "nonlinearities are functional calls")
    return ""


class DeepLiftExplainer(CaptumExplainer):
    """captum ``DeepLift`` from a zero baseline (multiply_by_inputs). DeepLift rewrites the
    gradients of nonlinearity *modules* through hooks: a model whose nonlinearities are
    functional calls, or that calls one module twice per forward, cannot be explained by it."""

    name = "deeplift"

    def _attribute(self, forward, supports):
        from captum.attr import DeepLift

        reason = deeplift_unavailable_reason(forward.model)
        if reason:
            raise ExplainError(f"DeepLift cannot explain model {_name(forward.model)}: {reason}")
        try:
            with warnings.catch_warnings():  # captum's notice that it hooks the nonlinearities
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
                return DeepLift(forward).attribute(supports, baselines=torch.zeros_like(supports))
        except (AssertionError, RuntimeError) as exc:
            raise ExplainError(
                f"DeepLift cannot explain model {_name(forward.model)}: {str(exc).splitlines()[0][:300]} "
                "(DeepLift needs every nonlinearity to be an nn.Module called once per forward, not in place)"
            ) from None


class GradientShapExplainer(CaptumExplainer):
    """captum ``GradientShap`` with the reference's FSS baselines restricted to the supports
    (the query is fixed here): ``n_baselines`` (20) drawn with the reference weights from
    *support masked* (each support's dilated foreground filled with its mean background colour;
    weight .75 = the reference's both_masked .5 + support_masked .25), *unchanged supports*
    (.15, the reference's query_masked) and *supports swapped* (.1, shots 1 and 2 exchanged;
    needs K >= 2, else support masked). ``n_samples`` = 1 as in the reference."""

    name = "gradient-shap"

    def __init__(self, n_samples: int = 1, n_baselines: int = 20, stdevs: float = 0.0, seed: int = 0) -> None:
        self.n_samples, self.n_baselines, self.stdevs, self.seed = int(n_samples), int(n_baselines), stdevs, seed

    def _baselines(self, supports: Tensor, masks: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        dilated = torch.nn.functional.max_pool2d(masks[0][:, None].float(), 7, stride=1, padding=3)[:, 0] > 0
        original = supports[0].detach()
        background = (~dilated)[:, None].float()
        mean_bg = (original * background).sum((-2, -1)) / background.sum((-2, -1)).clamp(min=1)  # [K, 3]
        masked = torch.where(dilated[:, None], mean_bg[:, :, None, None], original)
        kinds = torch.multinomial(torch.tensor([0.75, 0.15, 0.10]), self.n_baselines, replacement=True,
                                  generator=generator)
        out = []
        for kind in kinds.tolist():
            if kind == 1:
                out.append(original)
            elif kind == 2 and original.shape[0] >= 2:
                swapped = original.clone()
                swapped[[0, 1]] = original[[1, 0]]
                out.append(swapped)
            else:
                out.append(masked)
        return torch.stack(out)

    def _attribute(self, forward, supports):
        from captum.attr import GradientShap

        baselines = self._baselines(supports, forward.masks)
        devices = [supports.device.index or 0] if supports.is_cuda else []
        numpy_state = np.random.get_state()
        try:  # captum draws baselines and path points from the global numpy and torch RNGs
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                np.random.seed(self.seed)
                return GradientShap(forward).attribute(supports, baselines=baselines, n_samples=self.n_samples,
                                                       stdevs=self.stdevs)
        finally:
            np.random.set_state(numpy_state)

    def params(self):
        return {"n_samples": self.n_samples, "n_baselines": self.n_baselines, "stdevs": self.stdevs, "seed": self.seed}


# ------------------------------------------------------------------------------------ LIME
class LimeExplainer(Explainer):
    """LIME for few-shot segmentation (reference ``FSSLime``, run through captum's ``LimeBase``).

    * Superpixels: ``skimage.segmentation.slic(n_segments, compactness=10, start_label=0)`` on
      each support image (normalised, HWC). Interpretable feature j switches superpixel j in
      **every** support at once (the reference shares ids across supports).
    * Samples: Bernoulli(0.5) vectors; when no foreground survives in any support, one random
      superpixel overlapping a support mask is switched on. Switched-off superpixels are zeroed in
      image and mask; a support whose mask becomes empty is dropped from the episode.
    * Kernel: ``exp(-D^2 / kernel_width^2)``, ``D = a (1 - mean_i cos(x_i, x'_i)) +
      (1 - a) mean_i(foreground fraction removed_i)`` (dropped supports: cos 0, fraction 1).
    * Surrogate: Lasso(alpha 0.01) or Ridge(alpha 1.0); coefficients painted onto the pixels and
      min-max scaled.

    Defaults are the reference code's (80 segments, Lasso, width 1.0, a = 0.2, 25 samples);
    the preset ``lime-best`` is the paper's best setting (160 segments, Ridge, width 0.5, a = 0.2).
    """

    name = "lime"

    def __init__(self, n_segments: int = 80, model_type: str = "lasso", kernel_width: float = 1.0,
                 image_weight: float = 0.2, n_samples: int = 25, perturbations_per_eval: int = 4,
                 seed: int = 0, name: Optional[str] = None) -> None:
        if model_type not in ("lasso", "ridge"):
            raise ExplainError(f"LIME model_type must be lasso or ridge, got {model_type!r}")
        self.n_segments, self.model_type = int(n_segments), model_type
        self.kernel_width, self.image_weight = float(kernel_width), float(image_weight)
        self.n_samples, self.perturbations_per_eval, self.seed = int(n_samples), int(perturbations_per_eval), seed
        if name:
            self.name = name

    def params(self) -> dict:
        return {"n_segments": self.n_segments, "model_type": self.model_type, "kernel_width": self.kernel_width,
                "image_weight": self.image_weight, "n_samples": self.n_samples, "seed": self.seed}

    def segments(self, supports: Tensor) -> Tensor:
        """``[K, S, S]`` long superpixel ids of each support."""
        from skimage.segmentation import slic

        out = []
        for image in supports.detach().cpu().float():
            hwc = image.permute(1, 2, 0).numpy().astype(np.float64)
            out.append(torch.from_numpy(slic(hwc, n_segments=self.n_segments, compactness=10, start_label=0,
                                             channel_axis=-1).astype(np.int64)))
        return torch.stack(out)

    def explain(self, model, batch, region, *, prediction=None, progress: ProgressFn = None,
                cancelled: CancelledFn = None) -> Attribution:
        from captum._utils.models.linear_model import SkLearnLasso, SkLearnRidge
        from captum.attr import LimeBase

        _check_batch(batch)
        _check_region(region)
        device = batch.supports.device
        forward = SupportForward(model, batch, region, cancelled)
        supports, masks = batch.supports[0], batch.support_masks[0].float()
        segments = self.segments(supports).to(device)  # [K, S, S]
        features = int(segments.max()) + 1
        onehot = torch.nn.functional.one_hot(segments, features).float()  # [K, S, S, F]
        energy = torch.einsum("kchw,khwf->kf", supports.float() ** 2, onehot)  # per-segment sum of x^2
        fg = torch.einsum("khw,khwf->kf", masks, onehot)  # per-segment foreground pixels
        fg_features = (fg.sum(0) > 0).nonzero().flatten()
        generator = torch.Generator().manual_seed(self.seed)
        done = [0]

        def perturb(inputs, **kwargs):
            sample = (torch.rand(features, generator=generator) < 0.5).float().to(device)
            if float((fg * sample).sum()) == 0:
                pick = fg_features[torch.randint(len(fg_features), (1,), generator=generator)]
                sample[pick] = 1.0
            return sample[None]

        def from_interp(sample, inputs, **kwargs):
            return sample

        def similarity(inputs, sample, interp, **kwargs):
            kept_fg = fg @ sample[0]  # [K]
            alive = kept_fg > 0
            cos = torch.sqrt((energy @ sample[0]) / energy.sum(1).clamp(min=1e-12))
            removed = 1.0 - kept_fg / fg.sum(1).clamp(min=1e-12)
            cos = torch.where(alive, cos, torch.zeros_like(cos))
            removed = torch.where(alive, removed, torch.ones_like(removed))
            d = self.image_weight * (1.0 - cos.mean()) + (1.0 - self.image_weight) * removed.mean()
            return torch.exp(-(d**2) / self.kernel_width**2)

        def forward_func(samples: Tensor) -> Tensor:
            check_cancelled(cancelled)
            outputs = []
            for sample in samples:
                keep = onehot @ sample  # [K, S, S] (1 where the superpixel is on)
                kept_masks = masks * keep
                alive = kept_masks.flatten(1).sum(1) > 0
                episode = type(batch)(batch.query, (supports * keep[:, None])[alive][None], kept_masks[alive][None])
                logits = model.predict(episode, query_features=forward.query_features).logits
                outputs.append(logits[0, 1][forward.region].mean())
                done[0] += 1
                if progress is not None:
                    progress(min(1.0, done[0] / self.n_samples))
            return torch.stack(outputs)

        surrogate = SkLearnLasso(alpha=0.01) if self.model_type == "lasso" else SkLearnRidge(alpha=1.0)
        lime = LimeBase(forward_func, surrogate, similarity_func=similarity, perturb_func=perturb,
                        perturb_interpretable_space=True, from_interp_rep_transform=from_interp,
                        to_interp_rep_transform=None)
        with torch.no_grad():
            coefficients = lime.attribute(supports[None], n_samples=self.n_samples,
                                          perturbations_per_eval=self.perturbations_per_eval)
        coefficients = coefficients.flatten().to(device).float()
        painted = coefficients[segments]  # [K, S, S]
        from .affex import min_max_scale

        return Attribution(maps=min_max_scale(painted), method=self.name, params=self.params())


# ---------------------------------------------------------------------------------- trivial
class GaussianNoiseMaskExplainer(Explainer):
    """The support foreground mask plus N(0, 0.01^2) noise, min-max scaled with the 99th
    percentile as the maximum and clipped to [0, 1] (the top ~1% tie at 1)."""

    name = "gaussian-noise-mask"

    def __init__(self, sigma: float = 0.01, quantile: float = 0.99, seed: Optional[int] = None) -> None:
        self.sigma, self.quantile, self.seed = sigma, quantile, seed

    def explain(self, model, batch, region, *, prediction=None, progress=None, cancelled=None) -> Attribution:
        _check_batch(batch)
        masks = batch.support_masks[0].float()
        generator = torch.Generator(device=masks.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        noisy = masks + self.sigma * torch.randn(masks.shape, generator=generator, device=masks.device)
        lo = noisy.min()
        hi = torch.quantile(noisy.flatten().double(), self.quantile).float()
        maps = ((noisy - lo) / (hi - lo)).clamp(0.0, 1.0) if bool(hi > lo) else torch.zeros_like(noisy)
        return Attribution(maps=maps, method=self.name,
                           params={"sigma": self.sigma, "quantile": self.quantile, "seed": self.seed})


class RandomExplainer(Explainer):
    """Uniform noise on [0, 1) per support pixel (no normalisation), the reference's ``random``."""

    name = "random"

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed

    def explain(self, model, batch, region, *, prediction=None, progress=None, cancelled=None) -> Attribution:
        _check_batch(batch)
        masks = batch.support_masks[0]
        generator = torch.Generator(device=masks.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        maps = torch.rand(masks.shape, generator=generator, device=masks.device)
        return Attribution(maps=maps, method=self.name, params={"seed": self.seed})


def _name(model) -> str:
    entry = getattr(model, "entry", None)
    return repr(entry.name) if entry is not None else type(model).__name__
