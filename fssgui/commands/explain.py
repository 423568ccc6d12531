"""`fssgui explain EPISODE [EPISODE ...] --model NAME [--checkpoint PATH] [--device cpu|cuda]
--method NAME[,NAME...] --region prediction|ground-truth|episode|PNG [--size E]
[--mode paper|reference] --out DIR`.

The model is loaded once; each episode is predicted once (with its matching scores) and explained
with every method asked for (``--method`` may be repeated or comma-separated). One episode with
one method writes straight into DIR; otherwise each explanation gets its own folder,
``DIR/<episode>/<method>/`` (``<episode>`` only with several episodes, ``<method>`` only with
several methods; episode folders of the same name are numbered), and ``DIR/explanations.json``
lists every run with its folder or its error. An episode that fails (unreadable, no region) is
reported there and the others go on; the command then exits 2 naming the failures.
``--size``/``--mode`` apply to the AffEx methods and ``--seed`` to the methods that take one.

Each explanation folder holds:

* ``attribution.npy``: float32 ``[K, H, W]`` at the support images' size (the model-size map
  resized bilinearly). When the supports differ in size, one ``attribution_<k>.npy`` ``[H_k, W_k]``
  per support instead.
* ``overlay_<k>.png``: the map over support k with its mask outlined, as the app draws it
  (:mod:`fssgui.look`: one colour scale for all supports, percentile-clipped; a signed map on a
  diverging scale centred at its zero level).
* ``explanation.json``: method, parameters, region, model and, for AffEx, the level names and
  weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..episode import Episode, load_episode
from ..errors import ExplainError, FssguiError
from ..io import save_npy_atomic, save_png_atomic, write_bytes_atomic
from ..look import heat_overlay, map_scale
from .common import add_model_arguments, load_model_from_args, log_stderr

_AFFEX_ONLY = ("size", "mode")


def add_explainer_arguments(parser, several_methods: bool = False) -> None:
    from ..explain.registry import EXPLAINER_NAMES

    if several_methods:
        parser.add_argument("--method", action="append", metavar="NAME[,NAME...]",
                            help="explainer(s), repeated or comma-separated (default affex); one of: "
                                 + ", ".join(EXPLAINER_NAMES))
    else:
        parser.add_argument("--method", default="affex", choices=EXPLAINER_NAMES, help="explainer (default affex)")
    parser.add_argument(
        "--region", default="prediction", metavar="prediction|ground-truth|episode|PNG",
        help="query region R to explain: the prediction (default), the ground truth, the episode's "
             "stored region, or a mask PNG (any size; resized to the query)",
    )
    parser.add_argument("--size", type=int, metavar="E", help="AffEx explanation size (default: model input size)")
    parser.add_argument("--mode", choices=("paper", "reference"), help="AffEx mode (default paper)")
    parser.add_argument("--seed", type=int, help="seed of the random/sampling explainers")


def requested_methods(args) -> list[str]:
    """The methods of ``--method`` (a name, or repeated / comma-separated names), in order, once each."""
    from ..explain.registry import EXPLAINER_NAMES

    given = args.method if isinstance(args.method, list) else [args.method or "affex"]
    methods: list[str] = []
    for part in ",".join(given).split(","):
        name = part.strip()
        if not name:
            continue
        if name not in EXPLAINER_NAMES:
            raise ExplainError(f"unknown method {name!r} (known: {', '.join(EXPLAINER_NAMES)})")
        if name not in methods:
            methods.append(name)
    return methods or ["affex"]


def build_explainer(args, method: str | None = None, *, strict: bool = True):
    """The explainer ``method`` (default ``args.method``) with the options that apply to it.
    ``strict``: an option that does not apply is an error (with several methods it is simply not
    passed to the ones it does not concern)."""
    from ..explain.registry import AFFEX_NAMES, explainer_parameters, get_explainer

    method = method or args.method
    params = {}
    if method in AFFEX_NAMES:
        if args.size is not None:
            params["size"] = args.size
        if args.mode is not None:
            params["mode"] = args.mode
    elif strict:
        given = [f"--{name}" for name in _AFFEX_ONLY if getattr(args, name) is not None]
        if given:
            raise ExplainError(f"{', '.join(given)}: valid only with the AffEx methods, not {method!r}")
    if args.seed is not None:
        if "seed" in explainer_parameters(method):
            params["seed"] = args.seed
        elif strict:
            raise ExplainError(f"--seed does not apply to {method!r}")
    return get_explainer(method, **params)


def build_explainers(args, methods: list[str]) -> list:
    """One explainer per method; ``--size``/``--mode``/``--seed`` must concern at least one."""
    if len(methods) == 1:
        return [build_explainer(args, methods[0])]
    from ..explain.registry import AFFEX_NAMES, explainer_parameters

    if not any(m in AFFEX_NAMES for m in methods):
        given = [f"--{name}" for name in _AFFEX_ONLY if getattr(args, name) is not None]
        if given:
            raise ExplainError(f"{', '.join(given)}: valid only with the AffEx methods, none of {', '.join(methods)}")
    if args.seed is not None and not any("seed" in explainer_parameters(m) for m in methods):
        raise ExplainError(f"--seed does not apply to any of {', '.join(methods)}")
    return [build_explainer(args, m, strict=False) for m in methods]


def write_attribution(out: Path, episode, result) -> list[Path]:
    """attribution.npy (or attribution_<k>.npy when support sizes differ) and overlay_<k>.png of an
    :class:`~fssgui.pipeline.ExplanationResult` (maps already at each support's resolution)."""
    resized = result.maps
    sizes = [m.shape for m in resized]
    written = []
    if len(set(sizes)) == 1:
        path = out / "attribution.npy"
        save_npy_atomic(path, np.stack(resized).astype(np.float32))
        written.append(path)
    else:
        for k, values in enumerate(resized):
            path = out / f"attribution_{k}.npy"
            save_npy_atomic(path, values.astype(np.float32))
            written.append(path)
    # one colour scale for all supports, drawn as the app draws it (fssgui.look)
    scale = map_scale(resized, result.signed, result.zero_level)
    for k, (support, values) in enumerate(zip(episode.supports, resized)):
        path = out / f"overlay_{k}.png"
        save_png_atomic(path, heat_overlay(support.image, values, scale, mask=support.mask))
        written.append(path)
    return written


def explanation_summary(result, episode_path) -> dict:
    """``explanation.json``: the explanation's own description, with the episode it explains."""
    return {**result.summary(), "episode": str(episode_path)}


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain predictions: which support pixels mattered")
    add_model_arguments(parser, several_episodes=True)
    add_explainer_arguments(parser, several_methods=True)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def episode_labels(paths: list[str]) -> list[str]:
    """Folder names for the episodes (the episode folder's name; repeated names numbered)."""
    labels: list[str] = []
    for path in paths:
        p = Path(path)
        name = (p.parent.name if p.name == "episode.json" else p.name) or "episode"
        label, count = name, 1
        while label in labels:
            count += 1
            label = f"{name}_{count}"
        labels.append(label)
    return labels


def run(args) -> int:
    from ..pipeline import EpisodeRun
    from ..pipeline.regions import canonical_source, check_region_source
    from ..pipeline.run import explainer_unavailable

    methods = requested_methods(args)
    explainers = build_explainers(args, methods)  # parameter errors before the (slow) model build
    region_source = canonical_source(args.region)
    check_region_source(region_source)
    episodes = list(args.episode) if isinstance(args.episode, list) else [args.episode]
    # a single bad episode is an error before the (slow) model build; several are loaded in turn
    sources: list = [load_episode(episodes[0])] if len(episodes) == 1 else list(episodes)
    loaded = load_model_from_args(args)
    for explainer in explainers:
        reason = explainer_unavailable(explainer, loaded)
        if reason:
            raise ExplainError(reason)
    out = Path(args.out)  # made when the first explanation is written: a failed run leaves no folder
    labels = episode_labels(episodes)
    several = len(episodes) > 1 or len(explainers) > 1
    runs: list[dict] = []  # one per (episode, method): its folder, or its error
    for episode_path, source, label in zip(episodes, sources, labels):
        try:
            episode = source if isinstance(source, Episode) else load_episode(source)
            run = EpisodeRun(loaded, episode)
            order = run.plan_methods(explainers, region_source)  # one forward for every method
            region = run.region(region_source)
        except FssguiError as exc:
            if not several:
                raise
            runs += [{"episode": str(episode_path), "method": m, "error": str(exc)} for m in methods]
            log_stderr(f"{episode_path}: skipped: {exc}")
            continue
        done: dict[int, dict] = {}  # listed in the methods' order, whatever order they ran in
        for index in order:
            method, explainer = methods[index], explainers[index]
            folder = out.joinpath(*([label] if len(episodes) > 1 else []), *([method] if len(methods) > 1 else []))
            try:
                result = run.explain(explainer, region=region)
            except FssguiError as exc:
                if not several:
                    raise
                done[index] = {"episode": str(episode_path), "method": method, "error": str(exc)}
                log_stderr(f"{episode_path}: {method} failed: {exc}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            written = write_attribution(folder, episode, result)
            summary = explanation_summary(result, episode_path)
            summary["files"] = [p.name for p in written]
            write_bytes_atomic(folder / "explanation.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
            done[index] = {"episode": str(episode_path), "method": method,
                           "folder": str(folder.relative_to(out)) if folder != out else "."}
            print(f"{written[0]}: {result.method} over {episode.shots} support(s), R = {result.region_source}")
        runs += [done[index] for index in sorted(done)]
        del run
    if several:
        index = {"model": args.model, "checkpoint": args.checkpoint, "region": region_source, "methods": methods,
                 "episodes": [str(e) for e in episodes], "runs": runs}
        write_bytes_atomic(out / "explanations.json", (json.dumps(index, indent=2) + "\n").encode("utf-8"))
    failed = [r for r in runs if "error" in r]
    if failed:
        first = failed[0]
        raise ExplainError(f"{len(failed)} of {len(runs)} explanations failed (listed in "
                           f"{out / 'explanations.json'}); first: {first['episode']} ({first['method']}): "
                           f"{first['error']}")
    return 0
