"""Compiled CPU backend of the fixed fan-in op: ``csrc/ffi.c``, built on first use by
``bench.kernels.native`` and loaded through ctypes; parallel over 256-label chunks.

Forward: register-blocked over 4 labels × 64 batch columns of a tiled copy of ``x``ᵀ, scores
written to ``out [B, L]`` through 16 × 16 register transposes. Backward: both gradients from one
read of ``grad_out``, a chunk's (label, slot) entries walked in input-id order into per-thread
``grad_x`` buffers that the caller sums. The op is load-bound (labels share no inputs); the design
and why it is laid out this way are in docs/kernels.md.

Math runs in float32: bfloat16/float16 inputs are upcast and results cast back; float64 goes to
the reference (``gradcheck``). If no compiler is found or the build fails, the backend says why
once (a warning) and stays unavailable: ``reference`` runs instead.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from bench.kernels import buffers, native, reference
from bench.kernels.native import CACHE_ENV  # noqa: F401 — where the library is kept
from bench.kernels.native import float32 as _f32, kernel_ids as _ids
from bench.kernels.ops import register_backend


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("ffi.c", "fixed fan-in")
    if lib is not None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        native.declare(lib, ("ffi_forward",), [ptr, ptr, ptr, c_int, ptr, i64, i64, i64, i64, c_int])
        native.declare(lib, ("ffi_backward",), [ptr, ptr, ptr, ptr, c_int, ptr, ptr, i64, i64, i64, i64, c_int])
        native.declare(lib, ("ffi_threads_used",), [i64, c_int], c_int)
        # the fused loss step (bench.kernels.fused_loss)
        native.declare(lib, ("ffi_loss_step",), [ptr, ptr, ptr, c_int, ptr, ptr, ptr, c_int, ctypes.c_float,
                                                 ptr, ptr, ptr, i64, i64, i64, i64, c_int], ctypes.c_double)
    return lib


def available(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16) \
        and library() is not None


def _wide(*tensors: torch.Tensor) -> bool:
    return any(t is not None and t.dtype == torch.float64 for t in tensors)


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if _wide(x, values):
        return reference.ffi_forward(x, values, indices)
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = buffers.empty(batch, num_labels)  # [B, L]: float32, on reused memory when free
    if batch and num_labels:
        ids, xt, v = _ids(indices), _f32(x).t().contiguous(), _f32(values)  # xt [d, B]; named: live through the call
        library().ffi_forward(xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(), out.data_ptr(),
                              batch, d, num_labels, k, torch.get_num_threads())
    return out.to(torch.result_type(x, values))


def ffi_grads(grad_out: torch.Tensor, x: torch.Tensor | None, values: torch.Tensor | None, indices: torch.Tensor,
              in_features: int, want_x: bool = True, want_values: bool = True):
    """``(grad_x [B, d] | None, grad_values [L, k] | None)`` from one pass over ``grad_out [B, L]``
    (``x`` is needed for ``grad_values`` only, ``values`` for ``grad_x`` only)."""
    if _wide(grad_out, x, values):
        return (reference.ffi_grad_input(grad_out, values, indices, in_features) if want_x else None,
                reference.ffi_grad_values(grad_out, x, indices) if want_values else None)
    batch, (num_labels, k) = grad_out.shape[0], indices.shape
    grad_x = grad_v = None
    if want_values:
        grad_v = buffers.empty(num_labels, k) if batch else torch.zeros(num_labels, k)  # [L, k]
    if want_x:
        grad_x = torch.zeros(batch, in_features)  # [B, d]
    if batch and num_labels and (want_x or want_values):
        lib, threads, padded = library(), torch.get_num_threads(), -(-batch // 16) * 16
        g, ids = _f32(grad_out), _ids(indices)
        xt = _f32(x).t().contiguous() if want_values else None  # [d, B]
        v = _f32(values) if want_x else None
        parts = torch.empty(lib.ffi_threads_used(num_labels, threads), in_features, padded) \
            if want_x else None  # [T, d, B16]
        lib.ffi_backward(g.data_ptr(), *(t.data_ptr() if t is not None else None for t in (xt, v)),
                         ids.data_ptr(), ids.element_size(),
                         *(t.data_ptr() if t is not None else None for t in (grad_v, parts)),
                         batch, in_features, num_labels, k, threads)
        if want_x:
            grad_x = parts.sum(0)[:, :batch].t()  # [d, B16] -> [B, d]
    if want_x:
        grad_x = grad_x.to(torch.result_type(grad_out, values)).contiguous()
    if want_values:
        grad_v = grad_v.to(torch.result_type(grad_out, x))
    return grad_x, grad_v


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return ffi_grads(grad_out, x, None, indices, x.shape[1], want_x=False)[1]


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   in_features: int) -> torch.Tensor:
    return ffi_grads(grad_out, None, values, indices, in_features, want_values=False)[0]


def _grads(grad_out, x, values, indices, want_x, want_values):
    return ffi_grads(grad_out, x, values, indices, x.shape[1], want_x, want_values)


# Above the reference (-1), below GPU backends; chosen for every CPU input it can compile for.
register_backend("cpu", ffi_forward, ffi_grad_input, ffi_grad_values, available=available, priority=5,
                 grads=_grads)
