"""The loss inside the compiled CPU kernels: one call computes, label chunk by label chunk in
cache, the scores ``z = x·w + bias``, a per-score loss ``l(z, y)`` against the batch's sparse
label lists, and every gradient of ``scale · Σ_{b,l} l(z[b, l], y[b, l])`` — no ``[B, L]``
scores, gradients or dense targets exist.

    ffi_loss(x, values, indices, bias, targets, loss, scale)                  fixed fan-in
    group_loss(x, values, group_indices, group_size, bias, targets, loss, scale)   group-shared

Both are autograd functions returning the 0-dim loss: the forward runs the fused kernel and keeps
the gradients, the backward only scales them by the incoming gradient (so a mixed objective such
as ``(1 − α) · main + α · aux`` gets its weights right).

``loss`` is a name in ``LOSSES`` (the per-score function the kernel applies: BCE, squared hinge);
``scale`` the reduction's factor (``scale_for``: 1/B for the sum over labels averaged over the
batch, 1/(B·L) for the mean, 1 for the sum). ``targets`` has ``indptr [B + 1]`` and ``indices
[nnz]`` (``bench.sparse.SparseTargets``): row b's positive label ids, in any order.

Where the compiled library is missing, inputs are not CPU float32/bfloat16/float16, or the
reference is forced (``backend="reference"``, ``use_backend("reference")``,
``XMC_FFI_BACKEND=reference``), ``reference_ffi_loss`` / ``reference_group_loss`` run instead:
pure torch over label chunks through ``bench.kernels.reference`` / ``group_fan_in``'s ops, the
oracle of the tests. Design: docs/kernels.md ("Fused loss steps").
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from bench.errors import ConfigError
from bench.kernels import buffers, cpu, cpu_group, group_fan_in as group_ops, reference
from bench.kernels.native import float32 as _f32, kernel_ids
from bench.kernels.ops import forced_backend, list_backends

# name → the kernel's loss id (csrc/loss.h: LOSS_*); "-" and "_" spellings both accepted
LOSSES = {"bce": 0, "squared_hinge": 1}
REDUCTIONS = ("sum_over_labels", "mean", "sum")
REFERENCE_CHUNK = 16384  # labels per chunk of the reference


def loss_id(loss: str) -> int:
    key = str(loss)
    if key not in LOSSES:
        raise ConfigError(f"fused kernel loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    return LOSSES[key]


def scale_for(reduction: str, batch: int, num_labels: int) -> float:
    """The factor of ``reduction`` on the sum over ``[B, L]``: ``sum_over_labels`` 1/B, ``mean``
    1/(B·L), ``sum`` 1."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return 1.0 / max(1, batch) if reduction == "sum_over_labels" else \
        1.0 / max(1, batch * num_labels) if reduction == "mean" else 1.0


class Targets(NamedTuple):
    """Sparse label lists in the layout the kernels read: row b's label ids are
    ``indices[indptr[b]:indptr[b + 1]]`` (``bench.sparse.SparseTargets`` has the same fields)."""

    indptr: torch.Tensor  # [B + 1] int64
    indices: torch.Tensor  # [nnz] int64


def map_targets(targets, row_of_label: torch.Tensor) -> Targets:
    """The targets of a layer that holds some labels in rows of its own: label ``l`` becomes
    row ``row_of_label[l]``, labels whose row is negative are dropped (e.g. head-tail's tail:
    ``row_of_label = slot`` keeps the tail labels as tail rows). Rows keep their order."""
    ids = targets.indices.long()
    rows = row_of_label.long()[ids]
    keep = rows >= 0
    counts = torch.zeros(targets.indptr.numel() - 1, dtype=torch.int64, device=ids.device)
    batch_row = torch.repeat_interleave(torch.arange(counts.numel(), device=ids.device),
                                        targets.indptr[1:] - targets.indptr[:-1])
    counts.index_add_(0, batch_row[keep], torch.ones_like(batch_row[keep]))
    indptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=ids.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    return Targets(indptr, rows[keep])


# --- the pure-torch reference ---------------------------------------------------------------


def score_loss(z: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-score ``(l(z, y), ∂l/∂z)`` of ``loss`` (the formulas of csrc/loss.h's ``loss_vec``)."""
    if loss_id(loss) == LOSSES["bce"]:
        value = z.clamp(min=0) - z * y + torch.log1p(torch.exp(-z.abs()))
        return value, torch.sigmoid(z) - y
    sign = 2 * y - 1
    margin = (1 - sign * z).clamp(min=0)
    return margin.square(), -2 * sign * margin


def _target_chunk(targets, lo: int, hi: int, batch: int, dtype, device) -> torch.Tensor:
    """Targets of labels ``[lo, hi)`` as ``[B, hi - lo]`` 0/1 (the reference only)."""
    indptr, ids = targets.indptr.to(device), targets.indices.to(device).long()
    rows = torch.repeat_interleave(torch.arange(batch, device=device), indptr[1:] - indptr[:-1])
    keep = (ids >= lo) & (ids < hi)
    out = torch.zeros(batch, hi - lo, dtype=dtype, device=device)
    out[rows[keep], ids[keep] - lo] = 1
    return out


def _reference(forward, grads, x, values, bias, targets, loss, scale, chunk, want):
    """Shared loop of the references: ``forward(lo, hi) → [B, hi − lo]`` scores (no bias),
    ``grads(g, lo, hi) → (grad_x | None, grad_values | None)`` of a chunk's ``g``."""
    batch, num_labels = x.shape[0], values.shape[0]
    acc = reference._acc_dtype(x, values, *([bias] if bias is not None else []))
    total = torch.zeros((), dtype=torch.float64 if acc == torch.float64 else torch.float32, device=x.device)
    grad_x = torch.zeros(batch, x.shape[1], dtype=acc, device=x.device) if want[0] else None
    grad_v = torch.zeros(values.shape, dtype=acc, device=x.device) if want[1] else None
    grad_b = torch.zeros(num_labels, dtype=acc, device=x.device) if want[2] else None
    for lo in range(0, num_labels, chunk):
        hi = min(lo + chunk, num_labels)
        z = forward(lo, hi).to(acc)
        if bias is not None:
            z = z + bias[lo:hi].to(acc)
        value, dz = score_loss(z, _target_chunk(targets, lo, hi, batch, acc, x.device), loss)
        total += value.sum(dtype=total.dtype)
        g = dz * scale
        if grad_b is not None:
            grad_b[lo:hi] = g.sum(0)
        gx, gv = grads(g, lo, hi)
        if gx is not None:
            grad_x += gx
        if gv is not None:
            grad_v[lo:hi] = gv
    return total * scale, grad_x, grad_v, grad_b


def reference_ffi_loss(x, values, indices, bias, targets, loss="bce", scale=1.0, want=(True, True, True)):
    """``(loss, grad_x, grad_values, grad_bias)`` (``None`` where ``want`` is false) of
    ``scale · Σ l(x·w + bias, y)`` in pure torch, label chunk by label chunk; float32 math
    (float64 stays float64)."""
    d = x.shape[1]

    def grads(g, lo, hi):
        return (reference.ffi_grad_input(g, values[lo:hi], indices[lo:hi], d) if want[0] else None,
                reference.ffi_grad_values(g, x, indices[lo:hi]) if want[1] else None)

    return _reference(lambda lo, hi: reference.ffi_forward(x, values[lo:hi], indices[lo:hi]), grads,
                      x, values, bias, targets, loss, scale, REFERENCE_CHUNK, want)


def reference_group_loss(x, values, group_indices, group_size, bias, targets, loss="bce", scale=1.0,
                         want=(True, True, True)):
    """``reference_ffi_loss`` for the group-shared layer (labels in groups of ``group_size``
    share the ``group_indices [ceil(L / g), k]`` row of their group)."""
    g = group_size
    chunk = -(-REFERENCE_CHUNK // g) * g  # chunks start on a group boundary

    def rows(lo, hi):
        return group_indices[lo // g: -(-hi // g)]

    def grads(grad, lo, hi):
        return group_ops.group_grads(grad, x, values[lo:hi], rows(lo, hi), g, want[0], want[1])

    return _reference(lambda lo, hi: group_ops.group_forward(x, values[lo:hi], rows(lo, hi), g), grads,
                      x, values, bias, targets, loss, scale, chunk, want)


# --- the compiled kernels ---------------------------------------------------------------------


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _compiled(step, lib, threads_used, x, values, ids, bias, targets, loss, scale, want, extra=()):
    """Run ``lib.<step>``: ``(loss, grad_x, grad_values, grad_bias)`` in float32."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    xt, v, b = x.to(torch.float32).t().contiguous(), _f32(values), _f32(bias)  # xt [d, B]
    ids = kernel_ids(ids)
    indptr = targets.indptr.to(torch.int64).contiguous()
    labels = targets.indices.to(torch.int64).contiguous()
    threads, padded = torch.get_num_threads(), -(-batch // 16) * 16
    runs = batch > 0 and num_labels > 0  # else the kernel writes nothing: zero gradients
    grad_v = (buffers.empty(num_labels, k) if runs else torch.zeros(num_labels, k)) if want[1] else None  # [L, k]
    grad_b = (torch.empty if runs else torch.zeros)(num_labels) if want[2] else None
    parts = torch.empty(threads_used(num_labels, *extra, threads), d, padded) if want[0] and runs \
        else None  # [T, d, B16]: every thread's buffer cleared and filled by the kernel
    total = getattr(lib, step)(xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(), _ptr(b),
                               indptr.data_ptr(), labels.data_ptr(), loss_id(loss), float(scale),
                               _ptr(grad_v), _ptr(grad_b), _ptr(parts), batch, d, num_labels, k, *extra, threads)
    grad_x = None
    if want[0]:
        grad_x = parts.sum(0)[:, :batch].t().contiguous() if parts is not None else torch.zeros(batch, d)
    return torch.tensor(total * float(scale), dtype=torch.float32), grad_x, grad_v, grad_b


KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the fused kernels read


def kernel_backend(x, values, bias=None, grouped: bool = False, backend: str | None = None) -> str | None:
    """Where the fused loss step of these operands runs in kernels: ``"cpu"`` (the compiled C
    library: CPU tensors), ``"triton"`` (CUDA tensors, where the Triton backend is registered),
    or ``None`` (float64, a forced ``reference``, no compiler / no Triton: the torch path)."""
    tensors = [t for t in (x, values, bias) if t is not None]
    if any(t.dtype not in KERNEL_DTYPES for t in tensors):
        return None
    forced = forced_backend(backend)
    if all(t.device.type == "cpu" for t in tensors):
        library = cpu_group.library() if grouped else cpu.library()
        return "cpu" if forced in (None, "cpu") and library is not None else None
    if all(t.is_cuda for t in tensors) and forced in (None, "triton") and "triton" in list_backends():
        return "triton"
    return None


def _triton():
    from bench.kernels import triton_fused  # imports triton: reached with CUDA tensors (or the tests)
    return triton_fused


def ffi_loss_grads(x, values, indices, bias, targets, loss="bce", scale=1.0, want=(True, True, True),
                   backend=None):
    """``(loss, grad_x | None, grad_values | None, grad_bias | None)`` of ``scale · Σ l(z, y)``,
    ``z = fixed_fan_in(x, values, indices) + bias``: the fused kernel where one runs
    (``kernel_backend``), else the reference. Gradients come in float32 (float64 for float64 inputs)."""
    loss_id(loss)
    path = kernel_backend(x, values, bias, backend=backend)
    if path == "cpu":
        return _compiled("ffi_loss_step", cpu.library(), cpu.library().ffi_threads_used,
                         x, values, indices, bias, targets, loss, scale, want)
    if path == "triton":
        return _triton().loss_grads(x, values, indices, 1, bias, targets, loss_id(loss), scale, want)
    return reference_ffi_loss(x, values, indices, bias, targets, loss, scale, want)


def group_loss_grads(x, values, group_indices, group_size, bias, targets, loss="bce", scale=1.0,
                     want=(True, True, True), backend=None):
    """``ffi_loss_grads`` for the group-shared layer."""
    loss_id(loss)
    path = kernel_backend(x, values, bias, grouped=True, backend=backend)
    if path == "cpu":
        lib = cpu_group.library()
        return _compiled("group_loss_step", lib, lib.group_threads_used, x, values, group_indices, bias,
                         targets, loss, scale, want, extra=(int(group_size),))
    if path == "triton":
        return _triton().loss_grads(x, values, group_indices, int(group_size), bias, targets, loss_id(loss), scale,
                                    want)
    return reference_group_loss(x, values, group_indices, group_size, bias, targets, loss, scale, want)


class _FusedLoss(torch.autograd.Function):
    """Forward: the loss and its gradients in one sweep; backward: the kept gradients times the
    incoming one."""

    @staticmethod
    def forward(ctx, x, values, bias, run):
        want = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        total, grad_x, grad_v, grad_b = run(want)
        ctx.grads = [None if g is None else g.to(t.dtype) for g, t in ((grad_x, x), (grad_v, values), (grad_b, bias))]
        return total.to(torch.float64 if x.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad_loss):
        grads, ctx.grads = ctx.grads, None
        return (*(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads), None)


def _check(x, values, ids, bias, targets):
    if x.dim() != 2 or values.dim() != 2 or ids.dim() != 2 or values.shape[1] != ids.shape[1]:
        raise ValueError(f"fused loss expects x [B, d], values [L, k], indices [., k]; got "
                         f"{tuple(x.shape)}, {tuple(values.shape)}, {tuple(ids.shape)}")
    if bias is not None and bias.shape != (values.shape[0],):
        raise ValueError(f"fused loss: bias must be [L] = [{values.shape[0]}], got {tuple(bias.shape)}")
    if targets.indptr.numel() != x.shape[0] + 1:
        raise ValueError(f"fused loss: targets hold {targets.indptr.numel() - 1} rows for a batch of {x.shape[0]}")


def ffi_loss(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, bias: torch.Tensor | None, targets,
             loss: str = "bce", scale: float = 1.0, backend: str | None = None) -> torch.Tensor:
    """``scale · Σ_{b,l} loss(z[b, l], y[b, l])`` with ``z = fixed_fan_in(x, values, indices) + bias``
    and ``y`` the 0/1 targets of ``targets`` (``indptr``/``indices``): a 0-dim tensor whose
    backward gives ``x``, ``values`` and ``bias`` (may be ``None``) their gradients."""
    _check(x, values, indices, bias, targets)
    return _FusedLoss.apply(x, values, bias, lambda want: ffi_loss_grads(
        x.detach(), values.detach(), indices, None if bias is None else bias.detach(), targets, loss, scale, want,
        backend))


def group_loss(x: torch.Tensor, values: torch.Tensor, group_indices: torch.Tensor, group_size: int,
               bias: torch.Tensor | None, targets, loss: str = "bce", scale: float = 1.0,
               backend: str | None = None) -> torch.Tensor:
    """``ffi_loss`` for ``group_fan_in(x, values, group_indices, group_size) + bias``."""
    _check(x, values, group_indices, bias, targets)
    if group_indices.shape[0] != -(-values.shape[0] // group_size):
        raise ValueError(f"group_loss: {values.shape[0]} labels in groups of {group_size} need "
                         f"{-(-values.shape[0] // group_size)} index rows, got {group_indices.shape[0]}")
    return _FusedLoss.apply(x, values, bias, lambda want: group_loss_grads(
        x.detach(), values.detach(), group_indices, group_size, None if bias is None else bias.detach(), targets,
        loss, scale, want, backend))
