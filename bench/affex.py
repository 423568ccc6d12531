"""AffEx cost relative to a forward pass: time and peak memory ratios, measured in one run on the
same model and episode.

    python bench/affex.py [--model matcher-effnet] [--random-weights] [--shots 1 5] [--size E]
                          [--device cpu] [--repeats 3]

Rows per K:
* ``forward``: ``model.predict(batch)`` (what a plain prediction costs);
* ``forward+scores``: ``predict(with_scores=True)`` (the forward AffEx needs);
* ``affex``: ``AffinityExplainer().explain(model, batch, R)`` end to end (its own forward with
  scores, the level maps, the feature-ablation head passes, the aggregation);
* ``affex|pred``: ``explain`` given the prediction (what the GUI pays after a prediction).
Ratios are against ``forward``. Goals (issue 10): affex time <= 1.5x, affex peak memory <= 1.3x.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build, centre_region, machine, measure, synthetic_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="matcher-effnet")
    parser.add_argument("--random-weights", action="store_true", help="build without a checkpoint (DCAMA etc.)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--size", type=int, default=None, help="explanation size E (default: input size)")
    parser.add_argument("--variant", default="signed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from fssgui.explain.affex import AffinityExplainer

    model = build(args.model, args.device, args.random_weights)
    size = int(model.entry.input_size)
    region = centre_region(size, args.device)
    explainer = AffinityExplainer(variant=args.variant, size=args.size)
    print(f"# bench/affex.py: model {args.model}, S={size}, E={args.size or size}, variant {args.variant}, "
          f"device {args.device}, median of {args.repeats}")
    print(f"# machine: {machine()}")
    print(f"{'K':>2} {'what':<15} {'time s':>8} {'peak MiB':>9} {'time x':>7} {'mem x':>6}")
    for shots in args.shots:
        batch = synthetic_batch(size, shots, args.device)
        with torch.no_grad():
            model.predict(batch)  # warm-up
            prediction = model.predict(batch, with_scores=True)
        rows = {}
        with torch.no_grad():
            rows["forward"] = measure(lambda: model.predict(batch), args.device, args.repeats)
            rows["forward+scores"] = measure(lambda: model.predict(batch, with_scores=True), args.device, args.repeats)
        rows["affex"] = measure(lambda: explainer.explain(model, batch, region), args.device, args.repeats)
        rows["affex|pred"] = measure(
            lambda: explainer.explain(model, batch, region, prediction=prediction), args.device, args.repeats
        )
        base_t, base_m = rows["forward"]
        for name, (t, m) in rows.items():
            print(f"{shots:>2} {name:<15} {t:>8.3f} {m:>9.1f} {t / base_t:>7.2f} {m / max(base_m, 1e-9):>6.2f}")
        del prediction


if __name__ == "__main__":
    main()
