"""Forward time and peak memory of the few-shot models at K = 1 and K = 5.

Usage (from the repository root)::

    python bench/forward.py                                  # all models, K = 1 and 5, auto device
    python bench/forward.py --models dcama-resnet50 dmtnet --shots 1 --repeats 2 --device cpu
    python bench/forward.py --device cuda --scores           # also return the matching scores
    python bench/forward.py --device cuda --amp              # under torch.autocast (float16)
    python bench/forward.py --models dmtnet --input-size 136 # another input size (quick checks)

The models are built with random weights (no checkpoint is needed to time them) and run under
``torch.no_grad()`` on one episode (batch 1) at each model's input size. One warm-up forward is
excluded from the timing (the median of ``--repeats`` runs is printed).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus the memory held before the
forwards (weights and inputs). On CPU each (model, K) runs in a fresh subprocess and the figure is
the growth of the process's maximum RSS (``resource.getrusage``, Linux) from just before the first
forward to the end: the working memory of a forward, weights excluded. (``tracemalloc`` is not
used: it does not see PyTorch's tensor allocations.)
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fssgui.models import get_entry  # noqa: E402
from fssgui.models.base import EpisodeTensors  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import autocast  # noqa: E402

DEFAULT_MODELS = ["dcama-resnet50", "dcama-resnet101", "dcama-swin", "dmtnet"]


def _episode(size: int, shots: int, device: torch.device) -> EpisodeTensors:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(1, shots, size, size)
    masks[..., size // 4 : 3 * size // 4, size // 5 : 4 * size // 5] = 1
    return EpisodeTensors(
        torch.randn(1, 3, size, size, generator=g), torch.randn(1, shots, 3, size, size, generator=g), masks
    ).to(device)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def bench(name: str, shots: int, device: torch.device, repeats: int, scores: bool, input_size: int | None = None,
          amp: bool = False) -> tuple[float, float]:
    """Median forward seconds and peak MiB of one (model, K) in this process."""
    entry = get_entry(name)
    model = entry.builder().to(device).eval()
    batch = _episode(input_size or entry.input_size, shots, device)
    with torch.no_grad(), autocast(str(device), amp):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            rss0 = _rss_mib()
        model.predict(batch, with_scores=scores)  # warm-up (counted in the CPU RSS peak)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred = model.predict(batch, with_scores=scores)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            del pred
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peak = _rss_mib() - rss0
    return statistics.median(times), peak


def bench_in_subprocess(name: str, shots: int, repeats: int, scores: bool, input_size: int | None = None,
                        amp: bool = False) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--one", name, str(shots), "--repeats", str(repeats), "--device", "cpu"]
    if scores:
        cmd.append("--scores")
    if input_size:
        cmd += ["--input-size", str(input_size)]
    if amp:
        cmd.append("--amp")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    seconds, peak = (float(v) for v in out.split())
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--scores", action="store_true", help="also compute the matching scores")
    parser.add_argument("--amp", action="store_true", help="run under torch.autocast (float16 on CUDA, bfloat16 on the CPU)")
    parser.add_argument("--input-size", type=int, default=None, help="input size S (default: each model's)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "K"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.one:
        seconds, peak = bench(args.one[0], int(args.one[1]), torch.device("cpu"), args.repeats, args.scores,
                              args.input_size, args.amp)
        print(f"{seconds} {peak}")
        return 0
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {label}; torch {torch.__version__}; repeats {args.repeats}; scores {args.scores}; "
          f"amp {args.amp}; input size {args.input_size or 'the model default'}")
    print(f"{'model':<18}{'K':>3}{'forward s':>12}{'peak MiB':>12}")
    for name in args.models:
        for k in args.shots:
            if device.type == "cpu":
                seconds, peak = bench_in_subprocess(name, k, args.repeats, args.scores, args.input_size, args.amp)
            else:
                seconds, peak = bench(name, k, device, args.repeats, args.scores, args.input_size, args.amp)
            print(f"{name:<18}{k:>3}{seconds:>12.3f}{peak:>12.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
