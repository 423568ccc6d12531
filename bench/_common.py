"""Shared helpers of the benchmarks: a synthetic episode, model building, interleaved timing and
peak-memory measurements.

Peak memory
-----------
* CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the call.
* CPU (primary): :func:`tensor_peak_mib`, the peak of the bytes held by PyTorch's CPU allocator
  during the call, above what was held before it. It replays the allocation and free events that
  ``torch.profiler`` records with ``profile_memory=True`` in time order (live bytes, running
  maximum). Only tensors allocated during the call count, so it isolates the computation from the
  model weights, the inputs, Python objects and the C allocator's caching, and it is exact and
  repeatable (the same call gives the same figure under any machine load). It does not see
  memory that bypasses PyTorch's allocator (e.g. oneDNN's internal workspaces, if any).
* CPU (cross-check, optional): :func:`rss_peak_in_subprocess`, the growth of the resident set of
  a **fresh** process during the one call (``/proc/self/clear_refs`` resets the high-water mark,
  ``VmHWM`` minus ``VmRSS`` before the call), with glibc's mmap threshold fixed so that large
  buffers go back to the system when freed. It includes everything the process touches, so it is
  higher and noisier than the allocator figure.

Timing
------
:func:`interleaved_medians` runs the functions round-robin (forward, affex, forward, affex, ...),
so that all of them see the same machine load on average, and returns each one's median of both
the wall time and the process CPU time (``time.process_time``, all threads). On a CPU shared with
other jobs the wall time of one call varies by 3-5x from run to run (the process waits for a core,
and with several threads every parallel region waits for its slowest thread), while the CPU time
counts only the work done. With one thread (``--threads 1``, the benchmarks' CPU default) the CPU
time is the work of the call and hardly depends on the load, so the CPU ratios are the robust
figures there; the wall ratios are printed too.
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(name: str, device: str, random_weights: bool):
    """The registered model ``name``; ``random_weights`` builds it without a checkpoint (random
    init: timings and memory do not depend on the weights)."""
    from fssgui.models.registry import build_model, get_entry

    if random_weights:
        entry = get_entry(name)
        torch.manual_seed(0)
        model = entry.builder()
        model.entry = entry
        return model.to(device).eval()
    return build_model(name, device=device)


def parameter_mib(model: torch.nn.Module) -> float:
    """Weights and buffers of a model, MiB (what a CUDA ``max_memory_allocated`` also counts)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def synthetic_batch(size: int, shots: int, device: str, seed: int = 0):
    """Noise images with a bright disc; the disc is the support masks' foreground."""
    from fssgui.models.base import EpisodeTensors

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")

    def picture(cy, cx, r):
        img = torch.randn(3, size, size, generator=g) * 0.5
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[:, disc] = torch.tensor([1.5, 0.8, -0.8])[:, None]
        return img, disc.float()

    query, _ = picture(size // 2, size // 2, size // 4)
    supports, masks = zip(*[picture(size // 3 + 7 * k, size // 2 - 5 * k, size // 5) for k in range(shots)])
    return EpisodeTensors(query[None], torch.stack(supports)[None], torch.stack(masks)[None]).to(device)


def centred_square(size: int, side: int, device: str) -> torch.Tensor:
    """R ``[S, S]`` bool: the centred square of ``side`` pixels (clamped to 1..S)."""
    side = max(1, min(size, int(side)))
    start = (size - side) // 2
    region = torch.zeros(size, size, dtype=torch.bool, device=device)
    region[start : start + side, start : start + side] = True
    return region


def centre_region(size: int, device: str, fraction: float = 0.25) -> torch.Tensor:
    """The centred square covering ``fraction`` of the query (0.25: the S/2 square)."""
    return centred_square(size, round(size * fraction**0.5), device)


def autocast(device: str, enabled: bool):
    """``torch.autocast`` for ``device`` (float16 on CUDA, bfloat16 elsewhere) when ``enabled``,
    else a context that does nothing (the benchmarks' ``--amp``)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16)


# ------------------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def set_cpu_threads(threads: int) -> None:
    """``threads`` > 0: use that many intra-op threads (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def timed(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call (after a garbage collection; CUDA
    synchronised)."""
    gc.collect()
    _sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    del result
    return seconds, cpu_seconds


class Timing:
    """Samples of one function: wall and CPU seconds per call, and their medians."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], device: str, rounds: int, log: Callable[[str], None] = print
) -> dict[str, Timing]:
    """``{name: Timing}``, the functions run round-robin ``rounds`` times."""
    timings = {name: Timing() for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            wall, cpu = timed(fn, device)
            timings[name].wall.append(wall)
            timings[name].cpu.append(cpu)
        log(f"#   round {r + 1}/{rounds} (wall/cpu s): "
            + ", ".join(f"{n} {t.wall[-1]:.2f}/{t.cpu[-1]:.2f}" for n, t in timings.items()))
    return timings


# ------------------------------------------------------------------------------------- memory
def tensor_peak_mib(fn: Callable[[], object], device: str = "cpu") -> float:
    """Peak extra memory of one call, MiB: PyTorch allocator bytes above those held before it.

    CPU: replayed from ``torch.profiler`` memory events (see the module docstring); CUDA:
    ``max_memory_allocated``."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        del result
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        result = fn()
        del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        live += event.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def rss_peak_mib(fn: Callable[[], object]) -> float:
    """Growth of this process's resident set during one call, MiB (Linux; run it in a fresh
    process, see :func:`rss_peak_in_subprocess`)."""
    from fssgui.pipeline.models import release_freed_memory

    gc.collect()
    release_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    base = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - base) / 1024


def rss_peak_in_subprocess(script: Path, args: list[str]) -> float:
    """Run ``script args`` in a fresh interpreter (it prints the MiB figure on its last line) with
    glibc's mmap threshold fixed at 128 KiB, so large freed buffers leave the resident set."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ machine
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{date}; {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.1f}")


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
