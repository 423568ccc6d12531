"""Giving freed host memory back to the system (fssgui.pipeline.models.release_freed_memory):
glibc's malloc_trim on Linux, nothing elsewhere, at most every N seconds when asked."""
from __future__ import annotations

import ctypes
import math
import platform
import subprocess
import sys

import pytest

from fssgui.pipeline import models



_FRAGMENT_AND_RELEASE = """
import os
from fssgui.pipeline import models

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

base = rss_mib()
blocks = [bytearray(b"x" * 65536) for _ in range(1600)]  # 100 MiB in 64 KiB heap blocks (below mmap's threshold)
kept = blocks[::16]  # every 16th stays: the heap cannot shrink from its top, the free blocks lie between
del blocks
held = rss_mib()
released = models.release_freed_memory()
print(held - base, held - rss_mib(), released, len(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back_to_the_system():
    # in a fresh process: in this one, earlier tests leave free heap that the blocks would reuse
    out = subprocess.run([sys.executable, "-c", _FRAGMENT_AND_RELEASE], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    grown, given_back, released, kept = float(out[0]), float(out[1]), out[2], int(out[3])
    assert grown > 50  # glibc kept the freed blocks
    assert released == "True"
    assert given_back > 0.5 * grown
    assert kept == 100


def test_at_most_every_skips_the_call_and_nothing_is_done_without_the_symbol(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "_MALLOC_TRIM", calls.append)
    monkeypatch.setattr(models, "_last_release", -math.inf)
    assert models.release_freed_memory(at_most_every=3600) is True and calls == [0]
    assert models.release_freed_memory(at_most_every=3600) is False and calls == [0]
    assert models.release_freed_memory() is True and calls == [0, 0]  # 0: no interval

    monkeypatch.setattr(models, "_MALLOC_TRIM", None)
    assert models.release_freed_memory() is False

    monkeypatch.setattr(models.ctypes, "CDLL", lambda name: object())  # a C library without malloc_trim
    assert models._malloc_trim() is None
    monkeypatch.setattr(models.ctypes, "CDLL", ctypes.CDLL)
    monkeypatch.setattr(models.sys, "platform", "darwin")
    assert models._malloc_trim() is None
