"""Triton kernels of the fixed fan-in op for CUDA tensors (fp32/bf16 values, int16/int32 ids).

One program owns a ``[BLOCK_B, BLOCK_L]`` tile of ``out [B, L]`` and walks the k connections:

    forward      acc[b, l] += v[l, j] · x[b, idx[l, j]]        gather of BLOCK_B × BLOCK_L inputs per j
    grad_values  gv[l, j]   = Σ_b g[b, l] · x[b, idx[l, j]]    one program per (label block, j); loops over B
    grad_input   gx[b, idx[l, j]] += v[l, j] · g[b, l]          fp32 atomics into [B, d]

Per j the forward reads BLOCK_L ids and values and BLOCK_B × BLOCK_L inputs (x is B·d: it
stays in L2), does 2·BLOCK_B·BLOCK_L FLOPs, and never writes the ``[Lc, k, B]`` block the
reference builds. Accumulation is fp32 whatever the input dtype. Block sizes are autotuned
per (B, L, k) on the GPU; under ``TRITON_INTERPRET=1`` (CPU, tests) one small configuration
runs, since the autotuner times with CUDA events.

The tests call the ``ffi_*`` functions directly on CPU tensors in interpreter mode; the
backend registers for CUDA inputs only (``available=lambda x: x.is_cuda``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bench.kernels.native import kernel_ids as _ids
from bench.kernels.ops import register_backend

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _configs(names):
    sizes = [(32, 64, 4), (64, 64, 4), (64, 128, 8), (128, 64, 8), (128, 128, 8), (32, 128, 4)]
    return [triton.Config({names[0]: b, names[1]: l}, num_warps=w) for b, l, w in sizes]


@triton.jit
def _forward_kernel(x_ptr, v_ptr, idx_ptr, out_ptr, B, L, k, d,
                    BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_b = tl.program_id(0), tl.program_id(1)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_l, mask_b = offs_l < L, offs_b < B
    mask = mask_b[:, None] & mask_l[None, :]
    acc = tl.zeros((BLOCK_B, BLOCK_L), dtype=tl.float32)
    for j in range(0, k):
        ids = tl.load(idx_ptr + offs_l * k + j, mask=mask_l, other=0).to(tl.int64)  # [BLOCK_L]
        w = tl.load(v_ptr + offs_l * k + j, mask=mask_l, other=0.0).to(tl.float32)
        xg = tl.load(x_ptr + offs_b[:, None].to(tl.int64) * d + ids[None, :], mask=mask, other=0.0)
        acc += xg.to(tl.float32) * w[None, :]
    tl.store(out_ptr + offs_b[:, None].to(tl.int64) * L + offs_l[None, :], acc, mask=mask)


@triton.jit
def _grad_values_kernel(g_ptr, x_ptr, idx_ptr, out_ptr, B, L, k, d,
                        BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, j = tl.program_id(0), tl.program_id(1)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_l = offs_l < L
    ids = tl.load(idx_ptr + offs_l * k + j, mask=mask_l, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        mask = (offs_b < B)[:, None] & mask_l[None, :]
        rows = offs_b[:, None].to(tl.int64)
        g = tl.load(g_ptr + rows * L + offs_l[None, :], mask=mask, other=0.0).to(tl.float32)
        xg = tl.load(x_ptr + rows * d + ids[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(g * xg, axis=0)
    tl.store(out_ptr + offs_l * k + j, acc, mask=mask_l)


@triton.jit
def _grad_input_kernel(g_ptr, v_ptr, idx_ptr, gx_ptr, B, L, k, d,
                       BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_b = tl.program_id(0), tl.program_id(1)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_l, mask_b = offs_l < L, offs_b < B
    mask = mask_b[:, None] & mask_l[None, :]
    rows = offs_b[:, None].to(tl.int64)
    g = tl.load(g_ptr + rows * L + offs_l[None, :], mask=mask, other=0.0).to(tl.float32)  # [BLOCK_B, BLOCK_L]
    for j in range(0, k):
        ids = tl.load(idx_ptr + offs_l * k + j, mask=mask_l, other=0).to(tl.int64)
        w = tl.load(v_ptr + offs_l * k + j, mask=mask_l, other=0.0).to(tl.float32)
        tl.atomic_add(gx_ptr + rows * d + ids[None, :], g * w[None, :], mask=mask)


if INTERPRET:
    _FIXED = {"BLOCK_B": 16, "BLOCK_L": 16}
    _forward, _grad_values, _grad_input = _forward_kernel, _grad_values_kernel, _grad_input_kernel
else:
    _FIXED = {}
    _KEY = ["B", "L", "k"]
    _forward = triton.autotune(_configs(["BLOCK_B", "BLOCK_L"]), key=_KEY)(_forward_kernel)
    _grad_values = triton.autotune(
        [triton.Config({"BLOCK_B": b, "BLOCK_L": l}, num_warps=w)
         for b, l, w in [(32, 64, 4), (64, 64, 4), (32, 128, 4), (64, 128, 8), (16, 256, 8)]], key=_KEY,
    )(_grad_values_kernel)
    # the autotuner reruns the kernel: the atomically accumulated output must restart from zero
    _grad_input = triton.autotune(_configs(["BLOCK_B", "BLOCK_L"]), key=_KEY, reset_to_zero=["gx_ptr"])(_grad_input_kernel)


def _grid(B, L):
    return lambda meta: (triton.cdiv(L, meta["BLOCK_L"]), triton.cdiv(B, meta["BLOCK_B"]))


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = torch.empty(batch, num_labels, dtype=torch.float32, device=x.device)  # [B, L]
    if batch and num_labels:
        _forward[_grid(batch, num_labels)](x.contiguous(), values.contiguous(), _ids(indices), out,
                                           batch, num_labels, k, d, **_FIXED)
    return out.to(torch.result_type(x, values))


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    (batch, d), (num_labels, k) = x.shape, indices.shape
    out = torch.zeros(num_labels, k, dtype=torch.float32, device=x.device)  # [L, k]
    if batch and num_labels:
        grid = lambda meta: (triton.cdiv(num_labels, meta["BLOCK_L"]), k)  # noqa: E731
        _grad_values[grid](grad_out.contiguous(), x.contiguous(), _ids(indices), out,
                           batch, num_labels, k, d, **_FIXED)
    return out.to(torch.result_type(grad_out, x))


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   in_features: int) -> torch.Tensor:
    batch, (num_labels, k) = grad_out.shape[0], values.shape
    gx = torch.zeros(batch, in_features, dtype=torch.float32, device=grad_out.device)  # [B, d]
    if batch and num_labels:
        _grad_input[_grid(batch, num_labels)](grad_out.contiguous(), values.contiguous(), _ids(indices), gx,
                                              batch, num_labels, k, in_features, **_FIXED)
    return gx.to(torch.result_type(grad_out, values))


def _on_cuda(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype in (torch.float32, torch.bfloat16, torch.float16)


register_backend("triton", ffi_forward, ffi_grad_input, ffi_grad_values, available=_on_cuda, priority=10)
