"""Large internal buffers of the CPU recurrence, reused across calls.

The training forward's saved gates and cells and the backward's gate
gradients are tens of MB at N = 64 (T = 100, H = 512: 52 MB of saved gates).
Fresh from torch.empty, a buffer over 32 MiB is a new mmap (glibc maps every
allocation that large), and the kernel's first writes fault in each 4 KiB
page: on the development VM ~2.3 us a page, 40 ms of a 104 ms training
forward and 28 ms of a 93 ms backward at that shape. Reused, the pages stay
mapped. A buffer is handed out again only when nothing but the pool holds its
storage (not the saved tensors of a graph that has not run backward, not a
caller's tensor or view), so reuse never changes a result.

CPU tensors only (the CPU backend's); the pool keeps at most MAX_BUFFERS
buffers and MAX_BYTES bytes, dropping the least recently used, so memory
that a training step needed at its peak stays allocated between steps (up
to those bounds; clear() lets it go).
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor

# Smaller buffers come back from malloc's free lists, their pages mapped.
MIN_BYTES = 1 << 20
MAX_BUFFERS = 16
MAX_BYTES = 1 << 30

# The storage's reference count; without it (another torch), no reuse.
_use_count = getattr(torch._C, "_storage_Use_Count", None)
_pool: List[Tensor] = []  # 1-D buffers, least recently used first


def _only_pooled(buffer: Tensor) -> bool:
    """Nothing but the pool's tensor holds the buffer's storage: the count is
    that tensor's reference and the storage object made here to ask."""
    return _use_count(buffer.untyped_storage()._cdata) == 2


def _trim() -> None:
    while len(_pool) > MAX_BUFFERS or sum(b.numel() * b.element_size() for b in _pool) > MAX_BYTES:
        _pool.pop(0)  # a buffer still in use is freed with its last user


def reused_empty(shape, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """torch.empty(shape, dtype=dtype) on the CPU, from the smallest free
    pooled buffer of 1 to 2 times as many elements (packed batches vary in
    rows), else a new one that joins the pool. The tensor is no view of the
    pool's (no _base); it shares the pooled storage."""
    numel = math.prod(shape)
    if _use_count is None or numel * dtype.itemsize < MIN_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    best = None
    for index, buffer in enumerate(_pool):
        if (buffer.dtype == dtype and numel <= buffer.numel() <= 2 * numel
                and (best is None or buffer.numel() < _pool[best].numel()) and _only_pooled(buffer)):
            best = index
    if best is None:
        _pool.append(torch.empty(numel, dtype=dtype, device=device))
        buffer = _pool[-1]
        _trim()
    else:
        buffer = _pool.pop(best)
        _pool.append(buffer)
    return torch.empty(0, dtype=dtype, device=device).set_(buffer.untyped_storage(), 0, tuple(shape))


def clear() -> None:
    """Drops the pool's buffers (each freed once its last user lets go)."""
    _pool.clear()
