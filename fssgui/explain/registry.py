"""Explainer names -> their classes and settings: ``get_explainer(name, **params)``; torch-free until one is built.

AffEx variants take ``size`` (E; None = the model's input size), ``mode`` ('paper' | 'reference'),
``use_softmax``, ``aggregation`` ('feature_ablation' | 'mean'). ``lime-best`` is the paper's best
LIME preset (160 segments, Ridge, kernel width 0.5, image weight 0.2); ``lime`` the reference
code's defaults.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExplainError
from ..models.registry import LazyCallable, lazy

if TYPE_CHECKING:
    from .base import Explainer


@dataclass(frozen=True)
class ExplainerSpec:
    """One explainer: its class (a :func:`~fssgui.models.registry.lazy` reference: listing the
    explainers imports no explainer module and no torch, so the window lists them before torch is
    loaded), the settings bound to it, and whether it needs a model's matching scores (the class's
    ``needs_matching``; a test checks that they agree)."""

    target: LazyCallable
    settings: dict[str, Any] = field(default_factory=dict)
    needs_matching: bool = False

    def explainer_class(self) -> type:
        return self.target.resolve()


def _affex(variant: str) -> ExplainerSpec:
    return ExplainerSpec(lazy("fssgui.explain.affex:AffinityExplainer"), {"variant": variant}, needs_matching=True)


def _baseline(name: str) -> ExplainerSpec:
    return ExplainerSpec(lazy(f"fssgui.explain.baselines:{name}"))


_SPECS: dict[str, ExplainerSpec] = {
    "affex": _affex("unmasked"),
    "affex-masked": _affex("masked"),
    "affex-signed": _affex("signed"),
    "saliency": _baseline("SaliencyExplainer"),
    "integrated-gradients": _baseline("IntegratedGradientsExplainer"),
    "deeplift": _baseline("DeepLiftExplainer"),
    "gradient-shap": _baseline("GradientShapExplainer"),
    "lime": _baseline("LimeExplainer"),
    # the paper's best LIME preset
    "lime-best": ExplainerSpec(lazy("fssgui.explain.baselines:LimeExplainer"), {
        "n_segments": 160, "model_type": "ridge", "kernel_width": 0.5, "image_weight": 0.2, "name": "lime-best"}),
    "gaussian-noise-mask": _baseline("GaussianNoiseMaskExplainer"),
    "random": _baseline("RandomExplainer"),
    # model-specific: SimPropNet's exact decomposition (its entry lists it in extra["explainers"])
    "prototype-share": ExplainerSpec(lazy("fssgui.explain.simpropnet_share:PrototypeShareExplainer")),
}

EXPLAINER_NAMES: tuple[str, ...] = tuple(_SPECS)
AFFEX_NAMES = tuple(name for name, spec in _SPECS.items() if spec.needs_matching)


def explainer_needs_matching(name: str) -> bool:
    """Whether explainer ``name`` needs matching scores (AffEx), without importing it."""
    return _spec(name).needs_matching


def explainer_parameters(name: str) -> list[str]:
    """The keyword parameters ``get_explainer(name, ...)`` accepts."""
    spec = _spec(name)
    names = [name for name, p in inspect.signature(spec.explainer_class().__init__).parameters.items()
             if name not in ("self", "variant", "name")
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return names


def explainer_doc(name: str) -> str:
    """The docstring of explainer ``name``'s class ("" when it has none)."""
    return _spec(name).explainer_class().__doc__ or ""


def get_explainer(name: str, **params) -> Explainer:
    """Build the explainer ``name``; unknown parameters are a user error naming the valid ones."""
    spec = _spec(name)
    allowed = set(explainer_parameters(name))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ExplainError(
            f"explainer {name!r} has no parameter(s) {', '.join(unknown)} (valid: {', '.join(sorted(allowed))})"
        )
    explainer = spec.target(**{**spec.settings, **params})
    explainer.name = name
    return explainer


def _spec(name: str) -> ExplainerSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ExplainError(f"unknown explainer {name!r} (known: {', '.join(EXPLAINER_NAMES)})") from None
