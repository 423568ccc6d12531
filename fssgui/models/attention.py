"""Softmax attention onto a one-channel value (the support mask), as the matching models compute it
on the CPU: ``Σ_h softmax(scale · q_h k_hᵀ) · values`` over the heads h (DCAMA: 8 heads; the
built-in matcher: one), a few query rows at a time.

Each chunk of query rows holds about :data:`ATTENTION_CHUNK_BYTES` of scores, about a core's L2
cache: the product, the scale, the softmax and the product with the mask then read the chunk from
the cache instead of writing and rereading a whole ``[Nq, Ns]`` matrix four times (one 2304 x 2304
level of DCAMA, 8 heads: 204 -> 85 ms on this project's CPU, one thread; bench/RESULTS.md). The
arithmetic of a row does not depend on the chunks, so the values are those of the whole matrices.

When the caller wants the (head-summed) scores too, :class:`RowHandover` hands them over in blocks
of the caller's number of rows, whatever the chunks: a streaming model's chunks of
:data:`~fssgui.models.base.SCORE_CHUNK_BYTES`, or a whole level when it is held.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .base import score_chunk_rows

#: bytes of float32 scores per chunk of query rows (see the module docstring; measured, 2.5 MiB:
#: 284 rows of a 2304-column level, 56 rows at 5 shots)
ATTENTION_CHUNK_BYTES = 5 * 2**19


def mask_attention(
    queries: Sequence[Tensor],
    keys_t: Sequence[Tensor],
    values: Tensor,
    scale: float,
    take_scores: Optional[Callable[[int, Tensor], None]] = None,
) -> Tensor:
    """``Σ_h softmax(scale · queries[h] @ keys_t[h]) @ values``: ``[B, Nq, 1]``.

    ``queries[h]`` ``[B, Nq, d]``, ``keys_t[h]`` ``[B, d, Ns]`` (the keys transposed), ``values``
    ``[B, Ns, 1]``. With ``take_scores``, each chunk's head sum of the scaled scores ``[B, n, Ns]``
    (summed in head order) is handed to ``take_scores(start, scores)``, in row order; the tensor
    is the caller's."""
    b, nq = queries[0].shape[:2]
    ns = keys_t[0].shape[-1]
    step = score_chunk_rows(ns, b, ATTENTION_CHUNK_BYTES)
    out = queries[0].new_empty(b, nq, 1)
    for start in range(0, nq, step):
        stop = min(nq, start + step)
        score_sum = None
        part = None
        for q, k_t in zip(queries, keys_t):
            scores = torch.matmul(q[:, start:stop], k_t).mul_(scale)
            head_part = torch.matmul(torch.softmax(scores, dim=-1), values)
            if take_scores is not None:  # the first head's scores, read, become the sum (no copy)
                score_sum = scores if score_sum is None else score_sum.add_(scores)
            part = head_part if part is None else part + head_part
        out[:, start:stop] = part
        if take_scores is not None:
            take_scores(start, score_sum)
    return out


class RowHandover:
    """Hands rows that come in chunks over to ``take(start, rows)`` in blocks of ``rows`` query rows
    (the last one shorter), whatever the chunks: a block inside one chunk is a view of it, a block
    spanning chunks is one tensor, filled as its rows come."""

    def __init__(self, take: Callable[[int, Tensor], None], rows: int, total: int) -> None:
        self.take, self.rows, self.total = take, max(1, int(rows)), total
        self.start = 0  # first row of the next block
        self.block: Optional[Tensor] = None
        self.filled = 0

    def add(self, start: int, chunk: Tensor) -> None:
        """The rows ``start ..`` ``[B, n, Ns]``, in row order."""
        if start != self.start + self.filled:
            raise ValueError(f"rows from {start} handed over out of order (expected {self.start + self.filled})")
        offset = 0
        while offset < chunk.shape[1]:
            size = min(self.rows, self.total - self.start)
            if self.block is None and chunk.shape[1] - offset >= size:  # a whole block in the chunk
                self.take(self.start, chunk[:, offset : offset + size])
                self.start += size
                offset += size
                continue
            if self.block is None:
                self.block = chunk.new_empty(chunk.shape[0], size, chunk.shape[2])
                self.filled = 0
            n = min(chunk.shape[1] - offset, size - self.filled)
            self.block[:, self.filled : self.filled + n] = chunk[:, offset : offset + n]
            self.filled += n
            offset += n
            if self.filled == size:
                block, self.block, self.filled = self.block, None, 0
                self.take(self.start, block)
                self.start += size
