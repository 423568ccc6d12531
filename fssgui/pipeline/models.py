"""Models for the pipeline: what to load (:class:`ModelSpec`), loaded once and kept
(:class:`ModelCache`), and the device they run on (:class:`DeviceInfo`).

The device rule is one for every front-end: no device (or ``auto``) means CUDA when available,
and the log says so when it falls back to the CPU; ``cuda`` asked for on a machine without it is
an error, never a silent fallback.

Memory: :func:`release_freed_memory` hands the host memory that freed tensors left with the C
allocator back to the system (the dataset sweeps: between episodes every 30 s, and at the end).
"""
from __future__ import annotations

import ctypes
import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..models.registry import TASK_FSS, TASK_SEMSEG, build_model, resolve_device

if TYPE_CHECKING:  # torch is imported where it is used: the window imports this module before torch
    import torch

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: registry name, checkpoint file (None for checkpoint-free models) and
    device (None or "auto": CUDA when available; "cpu", "cuda", "cuda:i")."""

    name: str
    checkpoint: Optional[str] = None
    device: Optional[str] = "auto"

    @property
    def auto_device(self) -> bool:
        return self.device in (None, "auto")


class LatestLevels:
    """The latest explanation by levels (AffEx) made with one loaded model, under the key of what
    its levels depend on (see :meth:`EpisodeRun.explain`): one entry, so the other variants of the
    explanation a person is looking at cost no forward and no ablation, and nothing else is kept.
    It holds the :class:`ExplanationResult`'s own arrays (no copy)."""

    def __init__(self) -> None:
        self.key: Optional[str] = None
        self.result: Any = None  # fssgui.pipeline.results.ExplanationResult

    def get(self, key: str):
        return self.result if key and key == self.key else None

    def put(self, key: str, result) -> None:
        self.key, self.result = key, result

    def clear(self) -> None:
        self.key = self.result = None


@dataclass(frozen=True)
class LoadedModel:
    """A built model in eval mode, the device it is on, and the spec it was built from."""

    spec: ModelSpec
    model: Any  # fssgui.models.base.FSSModel
    device: torch.device
    latest_levels: LatestLevels = field(default_factory=LatestLevels, compare=False, repr=False)

    @classmethod
    def wrap(cls, model, checkpoint: Optional[str] = None) -> "LoadedModel":
        """A model already built (tests, benchmarks), on the device of its parameters."""
        import torch

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return cls(ModelSpec(model.entry.name, checkpoint, str(device)), model, device)

    @property
    def entry(self):
        return self.model.entry

    @property
    def input_size(self) -> int:
        return int(self.model.entry.input_size)


def load_model(spec: ModelSpec, log: Optional[Log] = None, builder: Optional[Callable[..., Any]] = None,
               task: str = TASK_FSS) -> LoadedModel:
    """Build ``spec`` (a registry model of ``task``) on its device (see the module docstring for
    the device rule). ``builder`` replaces the registry's ``build_model`` (tests)."""
    import torch

    device = resolve_device(None if spec.auto_device else spec.device)
    if spec.auto_device and device.type == "cpu" and log is not None:
        log("CUDA is not available: running on the CPU")
    if device.type == "cuda":
        # the current CUDA device is per thread: set it in the thread that runs the model
        torch.cuda.set_device(device)
    started = time.perf_counter()
    if builder is None:
        model = build_model(spec.name, spec.checkpoint, device=device, log=log, task=task)
    else:
        model = builder(spec.name, spec.checkpoint, device=device, log=log)
    if log is not None:
        log(f"model {spec.name} ready on {device} ({time.perf_counter() - started:.1f} s)")
    return LoadedModel(spec, model, device)


class ModelCache:
    """The resident models of a long-lived process (the app's device worker): one model per task,
    a few-shot model for the workspace and a ScaleProtoSeg model for the Prototypes tab (asking
    for another spec of a task replaces that task's model, freeing its memory first)."""

    def __init__(self, builder: Optional[Callable[..., Any]] = None) -> None:
        self._builder = builder  # the few-shot models' builder (tests); None: the registry
        self._loaded: dict[str, LoadedModel] = {}

    @property
    def loaded(self) -> Optional[LoadedModel]:
        """The resident few-shot model."""
        return self._loaded.get(TASK_FSS)

    @property
    def spec(self) -> Optional[ModelSpec]:
        return None if self.loaded is None else self.loaded.spec

    @property
    def device(self) -> Optional[torch.device]:
        return None if self.loaded is None else self.loaded.device

    def get(self, spec: ModelSpec, log: Optional[Log] = None, task: str = TASK_FSS) -> LoadedModel:
        """The model of ``spec``, built once and kept until another spec of its task is asked for."""
        loaded = self._loaded.get(task)
        if loaded is not None and loaded.spec == spec:
            return loaded
        if self._loaded.pop(task, None) is not None:
            self._empty_device_cache()
        builder = self._builder if task == TASK_FSS else None
        self._loaded[task] = load_model(spec, log, builder, task)
        return self._loaded[task]

    def get_semseg(self, spec: ModelSpec, log: Optional[Log] = None) -> tuple[Any, torch.device]:
        """The ScaleProtoSeg model of ``spec`` and its device."""
        loaded = self.get(spec, log, TASK_SEMSEG)
        return loaded.model, loaded.device

    def release(self) -> None:
        self._loaded.clear()
        self._empty_device_cache()

    @staticmethod
    def _empty_device_cache() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class DeviceInfo:
    """The device a model actually runs on, and its memory when it is CUDA."""

    device: str  # e.g. "cpu", "cuda:0"
    description: str  # e.g. "NVIDIA H100 80GB HBM3" or "CPU"
    cuda_available: bool
    requested: str = "auto"
    allocated_bytes: int = 0
    reserved_bytes: int = 0
    free_bytes: int = 0
    total_bytes: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def device_info(device: Optional[torch.device], requested: Optional[str] = "auto") -> DeviceInfo:
    import torch

    cuda = torch.cuda.is_available()
    requested = requested or "auto"
    if device is None or device.type != "cuda":
        return DeviceInfo("cpu", "CPU", cuda, requested)
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return DeviceInfo(f"cuda:{index}", torch.cuda.get_device_name(index), True, requested,
                      int(torch.cuda.memory_allocated(index)), int(torch.cuda.memory_reserved(index)),
                      int(free), int(total))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device or the host running out of memory."""
    import torch

    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))


def out_of_memory_message(exc: BaseException, device: Optional[torch.device] = None) -> str:
    """One line: what ran out (after emptying the device's cache, so the next job has the memory
    back) and what to try. ``device``: the model's device when known."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        if device is None or device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        what = "GPU memory ran out"
        if device is not None:
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(device)
            what += f" on {device} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free after clearing the cache)"
    else:
        what = "the computer's memory (RAM) ran out"
    return (f"{what}: try a smaller explanation size (AffEx size E), fewer shots, one causal state per pass "
            f"(batch size 1), or the CPU")


def device_description(device: torch.device) -> str:
    """One line for reports: the GPU's name with the CUDA version, or the CPU, and torch's version."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU, torch {torch.__version__}"


def cuda_devices() -> list[tuple[str, str]]:
    """``[("cuda:0", "NVIDIA H100 ..."), ...]``: every CUDA device torch can use (empty without CUDA).
    The query can take a while the first time (driver start-up): front-ends call it off their GUI thread."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [(f"cuda:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none (not Linux, or a C library without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_size_t,)
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _malloc_trim()
_last_release = -math.inf  # time.monotonic() of the last malloc_trim


def release_freed_memory(at_most_every: float = 0.0) -> bool:
    """Give the memory freed since the last call back to the system; whether it was done.

    glibc keeps freed blocks (the buffers of CPU tensors among them) in its heaps for reuse, so a
    long run's resident set keeps what its largest steps once needed (``bench/soak.py``, headless
    pipeline: +35 MiB over 150 jobs, +2 MiB after ``malloc_trim``). This is ``malloc_trim(0)`` on
    Linux with glibc, and nothing elsewhere (another OS, a C library without it).

    Not free: the call walks the heaps, and the next allocations fault the pages it gave back in
    again. A prediction sweep (matcher-lite2, one CPU thread) trimmed after every episode took
    2.6 ms per call + 11 ms more for the next 86 ms episode at 128 px, 17 ms + 78 ms for a 412 ms
    episode at 384 px. ``at_most_every``: skip the call when the last one was less than that many
    seconds ago, so a loop can call this after every step at a bounded cost."""
    global _last_release
    if _MALLOC_TRIM is None or time.monotonic() - _last_release < at_most_every:
        return False
    _MALLOC_TRIM(0)
    _last_release = time.monotonic()
    return True
