"""Explainer names -> factories: ``get_explainer(name, **params)``.

AffEx variants take ``size`` (E; None = the model's input size), ``mode`` ('paper' | 'reference'),
``use_softmax``, ``aggregation`` ('feature_ablation' | 'mean'). ``lime-best`` is the paper's best
LIME preset (160 segments, Ridge, kernel width 0.5, image weight 0.2); ``lime`` the reference
code's defaults.
"""
from __future__ import annotations

import inspect
from typing import Callable

from ..errors import ExplainError
from .affex import AffinityExplainer
from .base import Explainer
from .baselines import (
    DeepLiftExplainer,
    GaussianNoiseMaskExplainer,
    GradientShapExplainer,
    IntegratedGradientsExplainer,
    LimeExplainer,
    RandomExplainer,
    SaliencyExplainer,
)
from .simpropnet_share import PrototypeShareExplainer


def _affex(variant: str) -> Callable[..., Explainer]:
    def build(**params) -> Explainer:
        return AffinityExplainer(variant=variant, **params)

    build.target = AffinityExplainer  # type: ignore[attr-defined]
    return build


def _lime_best(**params) -> Explainer:
    settings = {"n_segments": 160, "model_type": "ridge", "kernel_width": 0.5, "image_weight": 0.2,
                "name": "lime-best"}
    settings.update(params)
    return LimeExplainer(**settings)


_lime_best.target = LimeExplainer  # type: ignore[attr-defined]

_FACTORIES: dict[str, Callable[..., Explainer]] = {
    "affex": _affex("unmasked"),
    "affex-masked": _affex("masked"),
    "affex-signed": _affex("signed"),
    "saliency": SaliencyExplainer,
    "integrated-gradients": IntegratedGradientsExplainer,
    "deeplift": DeepLiftExplainer,
    "gradient-shap": GradientShapExplainer,
    "lime": LimeExplainer,
    "lime-best": _lime_best,
    "gaussian-noise-mask": GaussianNoiseMaskExplainer,
    "random": RandomExplainer,
    # model-specific: SimPropNet's exact decomposition (its entry lists it in extra["explainers"])
    "prototype-share": PrototypeShareExplainer,
}

EXPLAINER_NAMES: tuple[str, ...] = tuple(_FACTORIES)
AFFEX_NAMES = ("affex", "affex-masked", "affex-signed")


def explainer_parameters(name: str) -> list[str]:
    """The keyword parameters ``get_explainer(name, ...)`` accepts."""
    factory = _factory(name)
    target = getattr(factory, "target", factory)
    names = [name for name, p in inspect.signature(target.__init__).parameters.items()
             if name not in ("self", "variant", "name")
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    return names


def explainer_doc(name: str) -> str:
    """The docstring of explainer ``name``'s class ("" when it has none)."""
    factory = _factory(name)
    return getattr(getattr(factory, "target", factory), "__doc__", "") or ""


def get_explainer(name: str, **params) -> Explainer:
    """Build the explainer ``name``; unknown parameters are a user error naming the valid ones."""
    factory = _factory(name)
    allowed = set(explainer_parameters(name))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ExplainError(
            f"explainer {name!r} has no parameter(s) {', '.join(unknown)} (valid: {', '.join(sorted(allowed))})"
        )
    explainer = factory(**params)
    explainer.name = name
    return explainer


def _factory(name: str) -> Callable[..., Explainer]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise ExplainError(f"unknown explainer {name!r} (known: {', '.join(EXPLAINER_NAMES)})") from None
