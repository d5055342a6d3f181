"""Compiled score-and-select for the fixed fan-in layers (ffi, ffi-group) on CPU: ``csrc/select.c``, built on first
use by ``bench.kernels.native`` and loaded through ctypes.

``ffi_topk`` gives the ``K`` best labels of every row of ``x @ W + bias`` for an ffi layer
(``values``/``indices [L, k]``) without a ``[B, L]`` — or even a ``[B, chunk]`` — score array in
memory: threads score 256 labels at a time into a cache-resident stage and fold them into
per-row running top-K lists (``group_topk``: the same for ffi-group, group by group). Scores
are bit for bit the compiled forward's (``cpu`` / ``cpu_group``) plus the bias;
ranking is score down, then label id up (NaN first, -0 equal to +0), as ``Classifier.topk``.
float32 only; anything else (and an unavailable compiler) takes the torch path.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from bench.kernels import native
from bench.kernels.native import kernel_ids as _ids


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled selection kernel, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("select.c", "fixed fan-in top-k")
    if lib is not None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        native.declare(lib, ("ffi_select",), [ptr, ptr, ptr, c_int, ptr, ptr, ptr, i64, i64, i64, i64, i64, c_int])
        native.declare(lib, ("group_select",), [ptr, ptr, ptr, c_int, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64,
                                                c_int])
    return lib


def available(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> bool:
    """CPU float32 features, values and bias, and the library builds."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, values, bias)) \
        and library() is not None


def _select(entry: str, x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, bias: torch.Tensor, k: int,
            *layout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``library().<entry>`` (``ffi_select`` / ``group_select``): the best ``min(k, L)``
    labels per row, ranked; ``layout`` is the layer's shape after L (fan-in [, group size])."""
    (batch, d), num_labels = x.shape, values.shape[0]
    k = min(k, num_labels)
    scores = torch.empty(batch, k)
    ids = torch.empty(batch, k, dtype=torch.int64)
    if batch and num_labels:
        idx = _ids(indices)
        xt, v, b = x.detach().t().contiguous(), values.detach().contiguous(), bias.detach().contiguous()
        getattr(library(), entry)(xt.data_ptr(), v.data_ptr(), idx.data_ptr(), idx.element_size(), b.data_ptr(),
                                  scores.data_ptr(), ids.data_ptr(), batch, d, num_labels, *layout, k,
                                  torch.get_num_threads())
    return scores, ids


def ffi_topk(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, bias: torch.Tensor,
             k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [B, K], ids [B, K] int64)``, ``K = min(k, L)``: the best labels of every row of
    ``fixed_fan_in(x, values, indices) + bias``, ranked."""
    return _select("ffi_select", x, values, indices, bias, k, values.shape[1])


def ffi_score_only(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, bias: torch.Tensor) -> None:
    """The same sweep as ``ffi_topk`` that scores every label and keeps none: the baseline the
    top-k benchmark measures the selection against."""
    ffi_topk(x, values, indices, bias, 0)


def group_topk(x: torch.Tensor, values: torch.Tensor, group_indices: torch.Tensor, group_size: int,
               bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ffi_topk`` of the ffi-group layer (``group_fan_in(x, values, group_indices, g) + bias``)."""
    return _select("group_select", x, values, group_indices, bias, k, values.shape[1], group_size)


def group_score_only(x: torch.Tensor, values: torch.Tensor, group_indices: torch.Tensor, group_size: int,
                     bias: torch.Tensor) -> None:
    """``group_topk``'s sweep, keeping nothing (the top-k benchmark's baseline)."""
    group_topk(x, values, group_indices, group_size, bias, 0)
