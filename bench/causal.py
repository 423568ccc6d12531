"""Batched causal metrics against sequential forwards, measured in one run, interleaved.

    python bench/causal.py [--model matcher-effnet] [--random-weights] [--shots 1] [--steps 75]
                           [--batch-size 8] [--sequential N] [--device cpu]

* batched: IAUC then DAUC with ``run_causal_metric`` (mIoU measure, skip_empty: ``steps`` states
  each), ``--batch-size`` states per forward, the query's features encoded **once** for both
  metrics and passed in (``query_features=``), as the evaluate and report code now do;
* sequential: the reference's cost, one full ``model.predict`` (query + supports encoded again)
  per state, on that state's perturbed supports: 2 x steps forwards.

The two are interleaved at the finest grain: every time the batched run yields a state (through
``on_step``), the sequential forward of that state runs and is timed separately; the batched time
is the wall time of the metric runs minus the time spent in those sequential forwards. So both
see the same machine load. ``--sequential N`` runs a sequential forward only for every
(2*steps/N)-th state and scales the sum to 2 x steps (said in the output); 0 = all of them.
Goal (issue 10): batched / sequential <= 0.3.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build, centre_region, load_average, machine, synthetic_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="matcher-effnet")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=0, help="time only N sequential forwards and scale")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from fssgui.explain.causal import run_causal_metric
    from fssgui.models.base import EpisodeTensors

    model = build(args.model, args.device, args.random_weights)
    size = int(model.entry.input_size)
    batch = synthetic_batch(size, args.shots, args.device)
    region = centre_region(size, args.device)
    attribution = torch.rand(args.shots, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    total = 2 * args.steps
    every = 1 if args.sequential <= 0 else max(1, total // min(args.sequential, total))
    print(f"# bench/causal.py: model {args.model}{' (random weights)' if args.random_weights else ''}, S={size}, "
          f"K={args.shots}, {args.steps} steps, batch size {args.batch_size}, device {args.device}")
    print(f"# machine: {machine()}", flush=True)

    with torch.no_grad():  # warm-up: the sequential shape and both batched shapes
        gt = model.predict(batch).logits[0].argmax(0)
        features = model.encode_query(batch.query)
        for n in sorted({args.batch_size, args.steps % args.batch_size} - {0}):
            episode = EpisodeTensors(batch.query.expand(n, -1, -1, -1), batch.supports.expand(n, -1, -1, -1, -1),
                                     batch.support_masks.expand(n, -1, -1, -1))
            model.predict(episode, query_features=features)
        del features

    sequential_seconds: list[float] = []
    state_count = [0]

    def sequential_forward(step) -> None:
        """The reference's forward of this state: query and perturbed supports, from scratch."""
        state_count[0] += 1
        if (state_count[0] - 1) % every:
            return
        episode = EpisodeTensors(batch.query, step.supports[None], step.support_masks[None])
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            model.predict(episode)
        sync()
        sequential_seconds.append(time.perf_counter() - start)

    sync()
    start = time.perf_counter()
    with torch.no_grad():
        features = model.encode_query(batch.query)  # once for both metrics (counted in batched)
    for metric in ("iauc", "dauc"):
        result = run_causal_metric(model, batch, attribution, region, metric, "miou", steps=args.steps, gt=gt,
                                   batch_size=args.batch_size, query_features=features,
                                   on_step=sequential_forward)
        assert len(result.scores) == args.steps
        print(f"# {metric}: {result.value:.4f} ({len(result.scores)} states)", flush=True)
    sync()
    wall = time.perf_counter() - start
    timed = len(sequential_seconds)
    batched = wall - sum(sequential_seconds)
    sequential = sum(sequential_seconds) * total / timed
    batched_forwards = 2 * -(-args.steps // args.batch_size)
    note = "all timed" if timed == total else f"{timed} timed, scaled to {total}"
    print(f"batched IAUC+DAUC: {batched:.2f} s ({batched_forwards} batched forwards + 1 query encoding)")
    print(f"{total} sequential forwards: {sequential:.2f} s ({note}; median {sorted(sequential_seconds)[timed // 2]:.2f} s "
          f"each, min {min(sequential_seconds):.2f}, max {max(sequential_seconds):.2f})")
    print(f"ratio batched/sequential = {batched / sequential:.3f}")
    print(f"# load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
