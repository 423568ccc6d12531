"""Batched causal metrics against sequential forwards, measured in one run.

    python bench/causal.py [--model matcher-effnet] [--shots 1] [--steps 75] [--batch-size 8]
                           [--sequential N] [--device cpu]

* batched: ``run_causal_metric`` IAUC then DAUC (mIoU measure, skip_empty: 75 states each), with the
  query's features computed once per metric and ``--batch-size`` states per forward;
* sequential: the reference's cost, one full ``model.predict`` (query + supports) per state:
  2 x steps forwards. ``--sequential N`` times only N of them and scales to 2 x steps (stated in
  the output); 0 = all.
Goal (issue 10): batched / sequential <= 0.3.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build, centre_region, machine, synthetic_batch  # noqa: E402


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

    model = build(args.model, args.device, args.random_weights)
    size = int(model.entry.input_size)
    batch = synthetic_batch(size, args.shots, args.device)
    region = centre_region(size, args.device)
    attribution = torch.rand(args.shots, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        gt = model.predict(batch).logits[0].argmax(0)
    print(f"# bench/causal.py: model {args.model}, S={size}, K={args.shots}, {args.steps} steps, "
          f"batch size {args.batch_size}, device {args.device}")
    print(f"# machine: {machine()}")

    sync()
    start = time.perf_counter()
    for metric in ("iauc", "dauc"):
        result = run_causal_metric(model, batch, attribution, region, metric, "miou", steps=args.steps, gt=gt,
                                   batch_size=args.batch_size)
        assert len(result.scores) == args.steps
    sync()
    batched = time.perf_counter() - start

    total = 2 * args.steps
    count = total if args.sequential <= 0 else min(args.sequential, total)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(count):
            model.predict(batch)
    sync()
    sequential = (time.perf_counter() - start) * total / count
    note = "" if count == total else f" (timed {count} forwards, scaled to {total})"
    print(f"batched IAUC+DAUC: {batched:.2f} s; {total} sequential forwards: {sequential:.2f} s{note}")
    print(f"ratio batched/sequential = {batched / sequential:.3f}")


if __name__ == "__main__":
    main()
