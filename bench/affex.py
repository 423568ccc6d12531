"""AffEx cost relative to a forward pass: time and peak-memory ratios, measured in one run on the
same model and episode.

    python bench/affex.py [--model matcher-effnet] [--random-weights] [--shots 1 5] [--size E]
                          [--variant signed] [--device cpu] [--rounds 3] [--threads 1] [--rss]
                          [--region-fractions 0.01 0.25 0.5 1] [--region-side N] [--ablation-rows]
                          [--amp] [--input-size S]

R is a centred square covering each fraction of the query given by ``--region-fractions``
(default 0.25: the S/2 square), or the centred square of side N pixels at S with
``--region-side N``. With several fractions the R-dependent rows (``affex``, ``affex|pred``,
``ablation``, ``ablation(base)``) are repeated per R, named ``affex R=25%`` and so on; the
forward rows are shared. ``--amp`` runs every row under ``torch.autocast`` (float16 on CUDA,
bfloat16 on the CPU); ``--input-size`` overrides the model's input size S (quick checks of
models that take any square size).

Rows per K:
* ``forward``: ``model.predict(batch)`` (what a plain prediction costs; the ratios' reference);
* ``forward+scores``: ``predict(with_scores=True)`` (the forward AffEx needs when the model does
  not stream its scores; all L levels' score matrices are returned and held);
* ``forward+stream`` (models with ``streams_scores``, e.g. DCAMA): ``predict`` handing each level's
  scores (whole or by chunks of rows) to a sink that drops them (the forward AffEx runs on such a
  model: it reduces each chunk inside the sink, so no level's scores outlive the level);
* ``affex``: ``AffinityExplainer().explain(model, batch, R)`` end to end: its own forward with
  scores (streamed on a model with ``streams_scores``), the level maps, the feature-ablation head passes, the aggregation (the reference's
  "AffEx" figure, which also includes its forward);
* ``affex|pred``: ``explain`` given an existing prediction with scores (what the GUI pays after a
  prediction; its memory is on top of the held prediction);
* ``forward+replay`` (models with ``replays_scores``, e.g. DCAMA): ``predict(with_scores=True,
  replay_scores=True)``, which keeps per level the smaller of the projections and the scores;
* ``pred+affex``: R = the prediction as the pipeline runs it (``EpisodeRun``): the forward that keeps
  the scores (replayable where the model replays them, else held), then AffEx given it, one call: its
  peak is what explaining the prediction costs; ``pred(held)+affex`` the same with the scores held
  (models that replay: the path before replaying, for the comparison in one run);
* ``variant|levels``: another variant of the same R from these levels (``from_levels``: what the
  pipeline pays for the other variants of an explanation, see ``EpisodeRun.explain``);
* with ``--ablation-rows``: ``ablation`` = ``model.feature_ablation_weights`` alone (the part of
  ``affex|pred`` that reruns the head) and ``ablation(base)`` = the base class's
  ``FSSModel.feature_ablation_weights`` (L full head reruns) on the same prediction and R.

Time: one warm-up call of each, then ``--rounds`` interleaved rounds (forward, forward+scores,
affex, affex|pred, forward, ...); medians of the wall time and of the process CPU time (on a
loaded CPU, the CPU-time ratios at one thread are the robust ones, see ``_common.py``). Memory (CPU): the PyTorch allocator peak of one call
above what was held before it (see ``_common.py``), i.e. working memory without the weights;
``mem x +w`` adds the weights to both sides, as a CUDA ``max_memory_allocated`` would.
``--rss`` adds the resident-set growth of each call measured in a fresh process.
Goals (issue 10): affex time <= 1.5x forward, affex peak memory <= 1.3x forward.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    autocast,
    build,
    centre_region,
    centred_square,
    interleaved_medians,
    set_cpu_threads,
    load_average,
    machine,
    parameter_mib,
    rss_peak_in_subprocess,
    rss_peak_mib,
    synthetic_batch,
    tensor_peak_mib,
)

ROWS = ("forward", "forward+scores", "forward+stream", "forward+replay", "affex", "affex|pred", "pred+affex",
        "pred(held)+affex", "variant|levels")  # +stream, +replay, (held): models that stream / replay their scores
ABLATION_ROWS = ("ablation", "ablation(base)")  # with --ablation-rows


def _ablation_functions(model, region, size, prediction):
    """``--ablation-rows``: the feature-ablation weights alone, as the model computes them and as
    the base class's L full head reruns do (``FSSModel.feature_ablation_weights``)."""
    from fssgui.explain.affex import region_at_size
    from fssgui.models.base import FSSModel

    region_e = region_at_size(region, size)
    functions = {
        "ablation": lambda: model.feature_ablation_weights(prediction, region_e, size),
        "ablation(base)": lambda: FSSModel.feature_ablation_weights(model, prediction, region_e, size),
    }
    assert tuple(functions) == ABLATION_ROWS
    return functions


def _functions(model, batch, regions, explainer, prediction, ablation_size=None):
    """The rows for one K: the forward rows once, the R-dependent rows per region (``regions``:
    ``{suffix: R}``; suffix "" for a single R); ``ablation_size`` adds the ``--ablation-rows``."""
    def forward():
        with torch.no_grad():
            return model.predict(batch)

    def forward_scores():
        with torch.no_grad():
            return model.predict(batch, with_scores=True)

    def forward_stream():
        def drop(level, shape, start, scores):  # the sink: receives each level's scores (by rows), keeps nothing
            pass

        with torch.no_grad():
            return model.predict(batch, with_scores=True, score_sink=drop)

    replays = bool(getattr(model, "replays_scores", False))

    def forward_replay():
        with torch.no_grad():
            return model.predict(batch, with_scores=True, replay_scores=True)

    def predict_then_explain(region, replay):
        with torch.no_grad():
            kept = model.predict(batch, with_scores=True, **({"replay_scores": True} if replay else {}))
        return explainer.explain(model, batch, region, prediction=kept)

    functions = {"forward": forward, "forward+scores": forward_scores, "forward+stream": forward_stream,
                 "forward+replay": forward_replay}
    if not getattr(model, "streams_scores", False):
        del functions["forward+stream"]
    if not replays:
        del functions["forward+replay"]
    for suffix, region in regions.items():
        functions["affex" + suffix] = lambda region=region: explainer.explain(model, batch, region)
        functions["affex|pred" + suffix] = lambda region=region: explainer.explain(
            model, batch, region, prediction=prediction)
        functions["pred+affex" + suffix] = lambda region=region: predict_then_explain(region, replays)
        if replays:
            functions["pred(held)+affex" + suffix] = lambda region=region: predict_then_explain(region, False)
        levels = explainer.levels(model, batch, region, prediction=prediction)
        other = _other_variant(explainer)
        functions["variant|levels" + suffix] = lambda levels=levels: other.from_levels(
            levels.maps, levels.weights, levels.names, batch)
        if ablation_size is not None:
            for name, fn in _ablation_functions(model, region, ablation_size, prediction).items():
                functions[name + suffix] = fn
    assert all(name.split(" R=")[0] in ROWS + ABLATION_ROWS for name in functions)
    return functions


def _other_variant(explainer):
    """Another AffEx variant with the same levels (``variant|levels``: what switching costs)."""
    from fssgui.explain.affex import VARIANTS, AffinityExplainer

    variant = next(v for v in VARIANTS if v != explainer.variant)
    return AffinityExplainer(variant=variant, size=explainer.size, mode=explainer.mode,
                             use_softmax=explainer.use_softmax, aggregation=explainer.aggregation)


def _regions(args, size: int) -> dict[str, torch.Tensor]:
    """``{row suffix: R}`` at the input size S: the centred ``--region-side`` square, or a centred
    square covering each ``--region-fractions`` share of the query (suffix " R=25%"; none for a
    single R)."""
    if args.region_side is not None:
        return {"": centred_square(size, args.region_side, args.device)}
    fractions = args.region_fractions
    regions = {}
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise SystemExit(f"--region-fractions: {fraction} is not in (0, 1]")
        suffix = "" if len(fractions) == 1 else f" R={100 * fraction:g}%"
        regions[suffix] = centre_region(size, args.device, fraction)
    return regions


def _bbox(region: torch.Tensor) -> str:
    rows = torch.nonzero(region.any(1)).flatten()
    cols = torch.nonzero(region.any(0)).flatten()
    return f"rows {int(rows[0])}-{int(rows[-1])}, cols {int(cols[0])}-{int(cols[-1])}"


def _build(args):
    """The model and its input size S (``--input-size`` overrides the registry's)."""
    model = build(args.model, args.device, args.random_weights)
    return model, int(args.input_size or model.entry.input_size)


def _rss_child(args) -> None:
    """``--rss-child ROW K``: build, one warm-up call, then print the RSS growth of a second call."""
    from fssgui.explain.affex import AffinityExplainer

    row, shots = args.rss_child[0], int(args.rss_child[1])
    model, size = _build(args)
    batch = synthetic_batch(size, shots, args.device)
    with torch.no_grad():
        prediction = model.predict(batch, with_scores=True) if row.startswith(("affex|pred", *ABLATION_ROWS)) else None
    explainer = AffinityExplainer(variant=args.variant, size=args.size)
    fns = _functions(model, batch, _regions(args, size), explainer, prediction, args.size or size)
    fn = fns[row]
    fn()  # warm-up: one-time caches (oneDNN primitives, reordered weights) are not the call's cost
    print(rss_peak_mib(fn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="matcher-effnet")
    parser.add_argument("--random-weights", action="store_true", help="build without a checkpoint (DCAMA etc.)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--size", type=int, default=None, help="explanation size E (default: input size)")
    parser.add_argument("--input-size", type=int, default=None, help="input size S (default: the model's)")
    parser.add_argument("--variant", default="signed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="run every row under torch.autocast")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0 = torch's default)")
    parser.add_argument("--rss", action="store_true", help="also measure RSS growth in fresh processes (CPU)")
    parser.add_argument("--region-fractions", type=float, nargs="+", default=[0.25],
                        help="R = centred squares covering these shares of the query (default 0.25)")
    parser.add_argument("--region-side", type=int, default=None,
                        help="R = the centred square of this side in pixels at S (instead of the fractions)")
    parser.add_argument("--ablation-rows", action="store_true",
                        help="also time the feature-ablation weights alone (the model's and the base class's)")
    parser.add_argument("--rss-child", nargs=2, metavar=("ROW", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu":
        set_cpu_threads(args.threads)
    with autocast(args.device, args.amp):
        if args.rss_child:
            _rss_child(args)
        else:
            _measure(args)


def _measure(args) -> None:
    from fssgui.explain.affex import AffinityExplainer

    model, size = _build(args)
    weights = parameter_mib(model)
    regions = _regions(args, size)
    explainer = AffinityExplainer(variant=args.variant, size=args.size)
    described = "; ".join(f"R{suffix or ''} {int(r.sum())} px (bbox {_bbox(r)})" for suffix, r in regions.items())
    print(f"# bench/affex.py: model {args.model}{' (random weights)' if args.random_weights else ''}, S={size}, "
          f"E={args.size or size}, {described}, variant {args.variant}, device {args.device}"
          f"{' (autocast)' if args.amp else ''}, "
          f"median of {args.rounds} interleaved rounds; weights+buffers {weights:.1f} MiB")
    print(f"# machine: {machine()}", flush=True)
    results = []
    for shots in args.shots:
        batch = synthetic_batch(size, shots, args.device)
        with torch.no_grad():
            prediction = model.predict(batch, with_scores=True)
        fns = _functions(model, batch, regions, explainer, prediction,
                         (args.size or size) if args.ablation_rows else None)
        for fn in fns.values():  # warm-up (oneDNN primitives, caches)
            fn()
        memory = {name: tensor_peak_mib(fn, args.device) for name, fn in fns.items()}
        print(f"# K={shots}: allocator peaks (MiB) " + ", ".join(f"{n} {m:.1f}" for n, m in memory.items()),
              flush=True)
        times = interleaved_medians(fns, args.device, args.rounds, log=lambda s: print(s, flush=True))
        rss = {}
        if args.rss and args.device == "cpu":
            script = Path(__file__).resolve()
            common = ["--model", args.model, "--variant", args.variant, "--device", "cpu",
                      "--threads", str(args.threads), "--region-fractions", *map(str, args.region_fractions)]
            common += ["--random-weights"] if args.random_weights else []
            common += ["--size", str(args.size)] if args.size else []
            common += ["--input-size", str(args.input_size)] if args.input_size else []
            common += ["--region-side", str(args.region_side)] if args.region_side is not None else []
            common += ["--amp"] if args.amp else []
            for name in fns:
                rss[name] = rss_peak_in_subprocess(script, common + ["--rss-child", name, str(shots)])
        results.append((shots, times, memory, rss))
        rows = list(fns)
        print(f"# load average after K={shots}: {load_average()}", flush=True)

    width = max(15, *(len(name) for name in rows))
    header = (f"{'K':>2} {'what':<{width}} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'wall x':>7} {'cpu x':>6} "
              f"{'mem x':>6} {'mem x +w':>8}")
    if any(r[3] for r in results):
        header += f" {'RSS MiB':>8} {'RSS x':>6}"
    print(header)
    for shots, times, memory, rss in results:
        base, base_m = times["forward"], memory["forward"]
        for name in rows:
            t, m = times[name], memory[name]
            line = (f"{shots:>2} {name:<{width}} {t.wall_median:>8.3f} {t.cpu_median:>8.3f} {m:>9.1f} "
                    f"{t.wall_median / base.wall_median:>7.3f} {t.cpu_median / base.cpu_median:>6.3f} "
                    f"{m / max(base_m, 1e-9):>6.2f} {(m + weights) / (base_m + weights):>8.2f}")
            if rss:
                line += f" {rss[name]:>8.1f} {rss[name] / max(rss['forward'], 1e-9):>6.2f}"
            print(line)
        for name in rows:
            print(f"#   {shots} {name} samples wall " + " ".join(f"{v:.2f}" for v in times[name].wall)
                  + " | cpu " + " ".join(f"{v:.2f}" for v in times[name].cpu))


if __name__ == "__main__":
    main()
