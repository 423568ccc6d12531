"""Shared helpers of the benchmarks: a synthetic episode, model building, timing and CPU/GPU peak memory."""
from __future__ import annotations

import ctypes
import gc
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def build(name: str, device: str, random_weights: bool):
    from fssgui.models.registry import build_model, get_entry

    if random_weights:
        entry = get_entry(name)
        model = entry.builder()
        model.entry = entry
        return model.to(device).eval()
    return build_model(name, device=device)


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


def centre_region(size: int, device: str) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool, device=device)
    region[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return region


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """(median seconds, peak extra memory in MiB) of ``fn``.

    CUDA: ``max_memory_allocated`` above the allocation before the call. CPU: the peak resident
    set (VmHWM, reset through /proc/self/clear_refs) above the resident set before the call, after
    ``malloc_trim`` so freed memory is returned first; an approximation of the allocator peak."""
    times = []
    peak = 0.0
    for _ in range(repeats):
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            Path("/proc/self/clear_refs").write_text("5")
            base = _rss_kib("VmRSS") * 1024
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            used = torch.cuda.max_memory_allocated() - base
        else:
            used = _rss_kib("VmHWM") * 1024 - base
        times.append(time.perf_counter() - start)
        peak = max(peak, used / 2**20)
        del result
    return statistics.median(times), peak


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.1f}")
