"""Out-of-memory recovery: a job that exhausts the device's memory, then normal jobs in the same
process, which must succeed with the same results as before the failure.

    python bench/oom_check.py [--device cuda] [--model dcama-resnet50] [--input-size S]

* Reference: a normal forward and Signed AffEx on one synthetic episode (K = 1).
* The exhausting job: on CUDA the same model on a batch of episodes sized so that the first
  convolution's output alone exceeds the device's total memory (``torch.cuda.OutOfMemoryError`` is
  expected); on the CPU, where there is no device memory to exhaust safely on a shared machine, an
  allocation larger than the machine's memory (the allocator's ``RuntimeError`` is expected).
  Anything else, or no failure at all, fails the check.
* Recovery: ``torch.cuda.empty_cache()``, then the normal forward and AffEx again: they must run
  and equal the reference (same kernels, so bitwise or within 1e-5); memory held afterwards is
  compared with before the failure.

Prints one line per stage and ``oom check passed`` (exit 0) or ``oom check FAILED: ...`` (exit 1).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build, centre_region, machine, synthetic_batch  # noqa: E402


def _held_mib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return (f"allocated {torch.cuda.memory_allocated(device) / 2**20:.0f} MiB, "
            f"reserved {torch.cuda.memory_reserved(device) / 2**20:.0f} MiB")


def _normal_job(model, batch, region):
    from fssgui.explain.affex import AffinityExplainer

    with torch.no_grad():
        logits = model.predict(batch).logits
    maps = AffinityExplainer(variant="signed").explain(model, batch, region).maps
    return logits, maps


def _exhausting_job(model, batch, device: torch.device) -> BaseException:
    """Run a job that cannot fit; return the exception it raised."""
    from fssgui.models.base import EpisodeTensors

    try:
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            size = batch.query.shape[-1]
            # the first convolution alone (64 channels at S/2) would need more than the whole device
            episodes = int(total // (64 * (size // 2) ** 2 * 4)) + 1
            huge = EpisodeTensors(batch.query.expand(episodes, -1, -1, -1),
                                  batch.supports.expand(episodes, -1, -1, -1, -1),
                                  batch.support_masks.expand(episodes, -1, -1, -1))
            print(f"exhausting job: {episodes} episodes in one forward", flush=True)
            with torch.no_grad():
                model.predict(huge)
        else:
            print("exhausting job: one allocation of 2**60 bytes (CPU)", flush=True)
            torch.empty(2**60, dtype=torch.uint8)
    except BaseException as exc:  # noqa: BLE001 - the failure is the point
        return exc
    raise AssertionError("the exhausting job did not fail")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="dcama-resnet50")
    parser.add_argument("--input-size", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# bench/oom_check.py: model {args.model} (random weights), device {device}")
    print(f"# machine: {machine()}", flush=True)
    model = build(args.model, args.device, random_weights=True)
    size = int(args.input_size or model.entry.input_size)
    batch = synthetic_batch(size, 1, args.device)
    region = centre_region(size, args.device)
    want_logits, want_maps = _normal_job(model, batch, region)
    print(f"reference job done; held: {_held_mib(device)}", flush=True)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

    start = time.perf_counter()
    exc = _exhausting_job(model, batch, device)
    expected = torch.cuda.OutOfMemoryError if device.type == "cuda" else RuntimeError
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    print(f"exhausting job failed after {time.perf_counter() - start:.2f} s with {type(exc).__name__}: {first_line}")
    if not isinstance(exc, expected):
        print(f"oom check FAILED: expected {expected.__name__}, got {type(exc).__name__}")
        return 1
    del exc
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        print(f"after empty_cache: {_held_mib(device)}; free {free / 2**30:.1f} of {total / 2**30:.1f} GiB")

    start = time.perf_counter()
    logits, maps = _normal_job(model, batch, region)
    print(f"normal job after the failure: {time.perf_counter() - start:.2f} s; held: {_held_mib(device)}")
    logit_diff = float((logits - want_logits).abs().max())
    map_diff = float((maps - want_maps).abs().max())
    print(f"same results as before the failure: logits max |diff| {logit_diff:.2e}, AffEx max |diff| {map_diff:.2e}")
    if not (logit_diff <= 1e-5 and map_diff <= 1e-5):
        print("oom check FAILED: the results changed after the failure")
        return 1
    if device.type == "cuda":
        leaked = torch.cuda.memory_allocated(device) - before
        print(f"memory held after recovery vs before the failure: {leaked / 2**20:+.1f} MiB")
        if leaked > 64 * 2**20:
            print("oom check FAILED: the failed job left memory allocated")
            return 1
    print("oom check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
