"""Batched causal metrics against sequential forwards, measured in one run, interleaved.

    python bench/causal.py [--model matcher-effnet] [--random-weights] [--shots 1] [--steps 75]
                           [--batch-size N] [--sequential N] [--device cpu] [--threads 1] [--amp]
                           [--input-size S]

* batched: IAUC then DAUC with the pipeline's runner (``fssgui.metrics.causal.CausalRun``) (mIoU measure, skip_empty: ``steps`` states
  each), ``--batch-size`` states per forward (default: ``default_causal_batch_size``, the
  device's choice: 1 on the CPU, from the free memory on CUDA), the query's features encoded **once** for both
  metrics and passed in (``query_features=``), as the evaluate and report code now do;
* sequential: the reference's cost, one full ``model.predict`` (query + supports encoded again)
  per state, on that state's perturbed supports: 2 x steps forwards.

The two are interleaved at the finest grain: every time the batched run yields a state (through
``on_step``), the sequential forward of that state runs and is timed separately; the batched time
is the wall time of the metric runs minus the time spent in those sequential forwards. So both
see the same machine load. Wall and process CPU time are both reported; on a loaded CPU the
CPU-time ratio at one thread (``--threads 1``, the CPU default) is the robust one (see
``_common.py``). ``--sequential N`` runs a sequential forward only for every
(2*steps/N)-th state and scales the sum to 2 x steps (said in the output); 0 = all of them.
Goals (issue 20): batched / sequential <= 0.6 on the CPU (K = 1), <= 0.3 on a GPU. ``--amp``
runs both under ``torch.autocast``; ``--input-size`` overrides S (quick checks).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    autocast, build, centre_region, load_average, machine, set_cpu_threads, synthetic_batch,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="matcher-effnet")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--batch-size", type=int, default=None, help="states per forward (default: the device's)")
    parser.add_argument("--sequential", type=int, default=0, help="time only N sequential forwards and scale")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0 = torch's default)")
    parser.add_argument("--amp", action="store_true", help="run under torch.autocast")
    parser.add_argument("--input-size", type=int, default=None, help="input size S (default: the model's)")
    args = parser.parse_args()
    if args.device == "cpu":
        set_cpu_threads(args.threads)
    with autocast(args.device, args.amp):
        _measure(args)


def _measure(args) -> None:
    from fssgui.metrics.causal import CausalRun
    from fssgui.models.base import EpisodeTensors, default_causal_batch_size

    model = build(args.model, args.device, args.random_weights)
    size = int(args.input_size or model.entry.input_size)
    batch = synthetic_batch(size, args.shots, args.device)
    chosen = args.batch_size is None
    if chosen:
        args.batch_size = default_causal_batch_size(model, batch)
    region = centre_region(size, args.device)
    attribution = torch.rand(args.shots, size, size, generator=torch.Generator().manual_seed(0)).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    total = 2 * args.steps
    every = 1 if args.sequential <= 0 else max(1, total // min(args.sequential, total))
    print(f"# bench/causal.py: model {args.model}{' (random weights)' if args.random_weights else ''}, S={size}, "
          f"K={args.shots}, {args.steps} steps, batch size {args.batch_size}"
          f"{' (default_causal_batch_size)' if chosen else ''}, device {args.device}{' (autocast)' if args.amp else ''}")
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
    sequential_cpu: list[float] = []
    state_count = [0]

    def sequential_forward(step) -> None:
        """The reference's forward of this state: query and perturbed supports, from scratch."""
        state_count[0] += 1
        if (state_count[0] - 1) % every:
            return
        episode = EpisodeTensors(batch.query, step.supports[None], step.support_masks[None])
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model.predict(episode)
        sync()
        sequential_seconds.append(time.perf_counter() - start)
        sequential_cpu.append(time.process_time() - start_cpu)

    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        features = model.encode_query(batch.query)  # once for both metrics (counted in batched)
    for metric in ("iauc", "dauc"):
        result = CausalRun(model, batch, attribution, region, metric, "miou", steps=args.steps, gt=gt,
                           batch_size=args.batch_size, query_features=features)
        for step in result:
            sequential_forward(step)
        result = result.curve
        assert len(result.scores) == args.steps
        print(f"# {metric}: {result.value:.4f} ({len(result.scores)} states)", flush=True)
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    timed = len(sequential_seconds)
    batched_forwards = 2 * -(-args.steps // args.batch_size)
    note = "all timed" if timed == total else f"{timed} timed, scaled to {total}"
    print(f"# {timed} sequential forwards timed ({note}); {batched_forwards} batched forwards + 1 query encoding")
    for label, whole, parts in (("wall", wall, sequential_seconds), ("cpu", cpu, sequential_cpu)):
        batched = whole - sum(parts)
        sequential = sum(parts) * total / timed
        print(f"{label}: batched IAUC+DAUC {batched:.2f} s; {total} sequential forwards {sequential:.2f} s "
              f"(per forward: median {sorted(parts)[timed // 2]:.2f}, min {min(parts):.2f}, max {max(parts):.2f}); "
              f"ratio batched/sequential = {batched / sequential:.3f}")
    print(f"# load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
