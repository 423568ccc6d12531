"""Which explainers a front-end offers for a model, and building one from a name and parameters.

* :func:`available_explainers`: the registry's names (:mod:`fssgui.explain.registry`);
* :func:`make_explainer`: an explainer by name, from extra ``factories`` (tests, plug-ins) or the registry;
* :func:`explainer_unavailable_reason`: why an explainer cannot explain a registry entry's model,
  known without building the model (the app greys it out with this reason);
* :func:`parse_params`: ``"size=96, mode='reference'"`` as typed in the app's parameter field.

No Qt, no model: these answer from the registries alone.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Optional

ExplainerFactory = Callable[..., Any]


def available_explainers() -> list[str]:
    """Names from ``fssgui.explain.registry`` (empty when it cannot be imported)."""
    try:
        from ..explain.registry import EXPLAINER_NAMES
    except ImportError:
        return []
    return list(EXPLAINER_NAMES)


def make_explainer(name: str, params: dict[str, Any], factories: Optional[dict[str, ExplainerFactory]] = None):
    """An explainer by name: from ``factories`` (tests, plug-ins) or ``fssgui.explain.registry``."""
    if factories and name in factories:
        explainer = factories[name](**params)
        explainer.name = explainer.name or name
        return explainer
    from .run import make_explainer as from_registry

    return from_registry(name, params)


def explainer_summary(name: str, factories: Optional[dict[str, ExplainerFactory]] = None) -> str:
    """``"name: first paragraph of its docstring"`` (the picker's tooltip)."""
    if factories and name in factories:
        doc = getattr(factories[name], "__doc__", "") or ""
    else:
        try:
            from ..explain.registry import explainer_doc

            doc = explainer_doc(name)
        except Exception:  # noqa: BLE001 - an explainer that cannot be described still has a name
            doc = ""
    first = " ".join(doc.strip().split("\n\n")[0].split()) if doc.strip() else ""
    return f"{name}: {first}" if first else name


def explainer_parameter_names(name: str, factories: Optional[dict[str, ExplainerFactory]] = None) -> list[str]:
    """The keyword parameters explainer ``name`` accepts (empty for extra factories or on error)."""
    if not name or (factories and name in factories):
        return []
    try:
        from ..explain.registry import explainer_parameters

        return list(explainer_parameters(name))
    except Exception:  # noqa: BLE001 - the field still works without the hint
        return []


def model_specific_explainers() -> dict[str, tuple[str, ...]]:
    """Explainers that only some models support: ``{explainer: (model names that list it)}``.

    A model entry lists them in ``extra["explainers"]`` (SimPropNet: "prototype-share")."""
    from ..models.registry import list_models

    owners: dict[str, list[str]] = {}
    for entry in list_models():
        for name in entry.extra.get("explainers", ()) or ():
            owners.setdefault(str(name), []).append(entry.name)
    return {name: tuple(models) for name, models in owners.items()}


def explainer_needs_matching(name: str, factories: Optional[dict[str, ExplainerFactory]] = None) -> bool:
    """Whether explainer ``name`` needs matching scores (AffEx), without running anything (a
    registry explainer is not even imported; one of ``factories`` is built to ask it)."""
    from ..explain import registry

    if not (factories and name in factories) and name in registry.EXPLAINER_NAMES:
        return registry.explainer_needs_matching(name)
    try:
        explainer = make_explainer(name, {}, factories)
    except Exception:  # noqa: BLE001 - an explainer that cannot be built: its own error shows at run time
        return False
    return bool(getattr(explainer, "needs_matching", False))


def explainer_unavailable_reason(
    name: str,
    entry: Any,
    factories: Optional[dict[str, ExplainerFactory]] = None,
    specific: Optional[dict[str, tuple[str, ...]]] = None,
) -> str:
    """Why explainer ``name`` cannot explain the model of registry ``entry`` ("" when it can).

    * AffEx variants (``needs_matching``) need a model that exposes matching scores
      (``entry.matching``);
    * a model-specific explainer (listed in some entry's ``extra["explainers"]``) works only for
      the models that list it;
    * the others (captum baselines, LIME, noise, random) perturb the supports and work for every
      few-shot model.
    """
    if entry is None:
        return ""
    specific = model_specific_explainers() if specific is None else specific
    if name in specific and entry.name not in specific[name]:
        return (f"{name} is specific to {', '.join(specific[name])}: it decomposes that architecture's "
                f"prototype similarity, which {entry.name} does not have")
    if not getattr(entry, "matching", True) and explainer_needs_matching(name, factories):
        return (f"{name} needs a matching model (attention / correlation scores between query and support "
                f"pixels); {entry.name} exposes none")
    return ""


def built_model_unavailable(model: Any) -> dict[str, str]:
    """The explainers that the built ``model`` rules out, beyond its entry's rules
    (:func:`explainer_unavailable_reason`): ``{name: reason}``. DeepLift, from the model's
    activation modules (the built-in matchers' ReLU6 has no DeepLift rule)."""
    from ..explain.baselines import deeplift_unavailable_reason

    reason = deeplift_unavailable_reason(model)
    return {"deeplift": reason} if reason else {}


def parse_params(text: str) -> dict[str, Any]:
    """``"size=96, mode='reference'"`` -> ``{"size": 96, "mode": "reference"}`` (values as Python literals,
    bare words as strings)."""
    params: dict[str, Any] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise ValueError(f"parameter {part!r} is not of the form name=value")
        key, value = (s.strip() for s in part.split("=", 1))
        if not key.isidentifier():
            raise ValueError(f"{key!r} is not a parameter name")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params
