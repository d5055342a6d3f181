"""Compiled CPU kernels of the group-shared fixed fan-in op (``bench.kernels.group_fan_in``):
``csrc/group.c``, built on first use by ``bench.kernels.native``; parallel over groups.

Per group of g labels sharing k input ids the forward is a register-blocked ``[B, k] × [k, g]``
GEMM writing g contiguous scores per batch row of ``out [B, L]``; the backward takes ~256-label
super-chunks of ``grad_out``, one read for both gradients (``grad_values`` per group as a GEMM,
``grad_x`` into per-thread buffers summed by the caller). Design: docs/kernels.md.
Math runs in float32 (bfloat16/float16 upcast, results cast back); float64 runs the reference.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from bench.kernels import buffers, native
from bench.kernels.native import float32 as _f32, kernel_ids as _ids


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("group.c", "group fan-in")
    if lib is not None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        native.declare(lib, ("group_forward",), [ptr, ptr, ptr, c_int, ptr, i64, i64, i64, i64, i64, c_int])
        native.declare(lib, ("group_backward",), [ptr, ptr, ptr, ptr, c_int, ptr, ptr, i64, i64, i64, i64, i64, c_int])
        native.declare(lib, ("group_threads_used",), [i64, i64, c_int], c_int)
        # the fused loss step (bench.kernels.fused_loss)
        native.declare(lib, ("group_loss_step",), [ptr, ptr, ptr, c_int, ptr, ptr, ptr, c_int, ctypes.c_float,
                                                   ptr, ptr, ptr, i64, i64, i64, i64, i64, c_int], ctypes.c_double)
    return lib


def available(*tensors: torch.Tensor) -> bool:
    """CPU float32/bfloat16/float16 inputs, and the library builds (float64 stays on the reference)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16, torch.float16)
               for t in tensors) and library() is not None


def _xt(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).t().contiguous()  # [d, B]: an input id's B values are one row


def group_forward(x, values, group_indices, group_size):
    """``x [B, d]``, ``values [L, k]``, ``group_indices [G, k]`` → ``[B, L]``."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = buffers.empty(batch, num_labels)  # [B, L]: float32, on reused memory when free
    if batch and num_labels:
        xt, v, ids = _xt(x), _f32(values), _ids(group_indices)  # named: they must live through the call
        library().group_forward(xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(), out.data_ptr(),
                                batch, d, num_labels, k, group_size, torch.get_num_threads())
    return out.to(torch.result_type(x, values))


def group_grads(grad_out, x, values, group_indices, group_size, want_x=True, want_values=True):
    """``(grad_x [B, d] | None, grad_values [L, k] | None)`` from ``grad_out [B, L]``, both from one
    pass over ``grad_out``."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    grad_v = buffers.empty(num_labels, k) if want_values else None  # [L, k]: every entry written
    grad_x = torch.zeros(batch, d) if want_x else None  # [B, d]
    if want_values and not batch:
        grad_v.zero_()
    if batch and num_labels and (want_x or want_values):
        lib, threads = library(), torch.get_num_threads()
        g, xt, v, ids = _f32(grad_out), _xt(x), _f32(values), _ids(group_indices)
        padded = -(-batch // 16) * 16
        parts = torch.empty(lib.group_threads_used(num_labels, group_size, threads), d, padded) if want_x else None
        lib.group_backward(g.data_ptr(), xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(),
                           grad_v.data_ptr() if want_values else None, parts.data_ptr() if want_x else None,
                           batch, d, num_labels, k, group_size, threads)
        if want_x:
            grad_x = parts.sum(0)[:, :batch].t()  # [d, B16] -> [B, d]
    grad_x = grad_x.to(x.dtype).contiguous() if want_x else None
    return grad_x, grad_v.to(values.dtype) if want_values else None
