"""torch.distributed scale-out for ``fssgui evaluate`` (launched by ``torchrun``).

``torchrun --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT] -m fssgui.cli
evaluate ...`` (or the ``fssgui`` console script under torchrun) starts one process per rank with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment.
Without ``WORLD_SIZE`` (or with 1) everything runs in this one process and nothing is initialised.

The process group carries only control messages (errors agreed by all ranks, the final barrier
and the result rows sent to rank 0, all as CPU objects), so it always uses the ``gloo`` backend,
on CPU and GPU machines alike (NCCL would need the CUDA device bound before the first message);
the models run on ``cuda:LOCAL_RANK`` when CUDA is used. Episodes are sharded round-robin:
position p of the episode list goes to rank ``p % WORLD_SIZE``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional, Sequence, TypeVar

from ..errors import FssguiError

T = TypeVar("T")


class DistributedError(FssguiError):
    """The torchrun environment is inconsistent or a rank reported an error."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False  # True when we initialised the group (and must destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process)
    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable, small), in rank order."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def agree(self, error: Optional[BaseException]) -> None:
        """Raise on every rank when any rank had an error (so no rank waits for a dead peer)."""
        messages = self.all_gather(None if error is None else str(error))
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if failed:
            rank, message = failed[0]
            raise DistributedError(f"rank {rank}: {message}")

    def close(self) -> None:
        if self.created_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.created_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(backend: str = "gloo", timeout_hours: float = 72.0) -> DistContext:
    """The rank context from torchrun's environment, initialising the process group if needed.

    The timeout is long because ranks wait at the final barrier for the slowest shard."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext()
    rank = _env_int("RANK", -1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK={os.environ.get('RANK')!r} is not in 0..{world_size - 1} (launch with torchrun)")
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed support")
    created = False
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(hours=timeout_hours))
        except (ValueError, RuntimeError) as exc:
            raise DistributedError(f"cannot join the torchrun process group (rank {rank} of {world_size}): "
                                   f"{exc}") from None
        created = True
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise DistributedError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
                               f"RANK={rank}, WORLD_SIZE={world_size}")
    return DistContext(rank, world_size, local_rank, created)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Round-robin share of ``rank``: items at positions ``rank, rank + W, rank + 2W, ...``."""
    return list(items[rank::world_size])


def rank_device(requested: Optional[str], ctx: DistContext):
    """The device of this rank: ``cuda:LOCAL_RANK`` for 'cuda'/auto with CUDA under torchrun,
    an explicit ``cuda:i`` as given, else the CPU (as :func:`resolve_device`)."""
    import torch

    from ..models.registry import resolve_device

    device = resolve_device(requested)
    if device.type == "cuda":
        if ctx.distributed and (requested in (None, "auto", "cuda")):
            count = torch.cuda.device_count()
            if ctx.local_rank >= count:
                raise DistributedError(f"LOCAL_RANK {ctx.local_rank} has no GPU (this node has {count}); "
                                       f"use --nproc-per-node {count} or --device cpu")
            device = torch.device("cuda", ctx.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device
