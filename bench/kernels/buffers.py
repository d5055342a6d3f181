"""Reuse of the compiled CPU kernels' large outputs (``[B, L]`` logits, ``[L, k]`` value
gradients) once their previous result is dead: a one-deep cache per shape, like PyTorch's
caching allocator on CUDA.

Why: glibc serves allocations above 32 MiB with a fresh ``mmap`` each time, and the OS zeroes
every new page on first touch (for a ``[B, L]`` output, about as much work as the forward), in
4 KiB pages that ``madvise(MADV_HUGEPAGE)`` then has to fault in as 2 MiB ones.

Safety: a cached buffer is handed out again only when nothing else references its storage (no
tensor, view, storage object, autograd saved tensor or ``.grad``): ``torch._C._storage_Use_Count``
and the storage object's Python reference count show no owner but the cache's own tensor. Each
call returns a new tensor object on that storage, so the cache never holds a caller's tensor (or
its autograd graph). ``XMC_KERNEL_BUFFER_CACHE=0`` turns reuse off (every output is a fresh
``torch.empty``).

Cost: a cached buffer stays resident after its tensor dies, so it still counts in a step's peak.
Hence buffers above ``MAX_BUFFER_BYTES`` are never cached (at those sizes memory is the scarce
resource), and at most ``MAX_BYTES`` are kept in all. Design notes: docs/kernels.md.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

import torch

ENV_VAR = "XMC_KERNEL_BUFFER_CACHE"
MAX_BUFFER_BYTES = 256 << 20  # larger outputs are always fresh
MAX_BYTES = 512 << 20  # a dead buffer kept for reuse costs memory: at most this much in all
_use_count = getattr(torch._C, "_storage_Use_Count", None)
_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # (shape, dtype) -> the cache's own tensor


def enabled() -> bool:
    return _use_count is not None and os.environ.get(ENV_VAR, "1") != "0"


def _references(t: torch.Tensor) -> tuple[int, int]:
    """(tensors on t's storage, Python references to its storage object): both count, since
    a storage object handed to Python is kept and returned again (one object per storage)."""
    storage = t.untyped_storage()
    return _use_count(storage._cdata), sys.getrefcount(storage)


# what a storage referenced by one tensor only (the cache's) shows
_ALONE = _references(torch.empty(1)) if _use_count is not None else (0, 0)


def _free(held: torch.Tensor) -> bool:
    """Is the cache's tensor the only owner of its memory?"""
    tensors, python = _references(held)
    return tensors <= _ALONE[0] and python <= _ALONE[1]


def _alias(held: torch.Tensor) -> torch.Tensor:
    """A new tensor object on ``held``'s storage (so the caller never gets the cache's object)."""
    return torch.empty(0, dtype=held.dtype).set_(held.untyped_storage(), 0, held.shape, held.stride())


def empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, on reused memory when a buffer of this
    shape is free (contents undefined either way)."""
    if not enabled():
        return torch.empty(shape, dtype=dtype)
    key = (shape, dtype)
    held = _cache.get(key)
    if held is not None and _free(held):
        _cache.move_to_end(key)
        return _alias(held)
    fresh = torch.empty(shape, dtype=dtype)
    if fresh.nbytes <= min(MAX_BUFFER_BYTES, MAX_BYTES):
        _cache[key] = fresh  # replaces a busy buffer of this shape: its owner keeps it alive
        _cache.move_to_end(key)
        while sum(t.nbytes for t in _cache.values()) > MAX_BYTES:
            _cache.popitem(last=False)  # the least recently used shape goes first
    return _alias(fresh)


def clear() -> None:
    """Drop every cached buffer (their memory goes back once no caller holds it)."""
    _cache.clear()
