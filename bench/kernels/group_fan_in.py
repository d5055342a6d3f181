"""Group-shared fixed fan-in: labels in groups of ``g`` share one set of ``k`` input ids.

    out[b, l]           = Σ_j values[l, j] · x[b, idx[l // g, j]]          forward
    grad_values[l, j]   = Σ_b grad_out[b, l] · x[b, idx[l // g, j]]
    grad_x[b, idx[G,j]] += Σ_{l in G} values[l, j] · grad_out[b, l]

It is an ``ffi`` layer whose rows repeat their group's ids (``reference.ffi_*`` with
``idx.repeat_interleave(g)`` is the oracle in the tests), but the gather is done once per group:
the ``[Gc, k, B]`` block of gathered inputs is g times smaller than ffi's ``[Lc, k, B]``, and the
product becomes a batched dense ``[g, k] @ [k, B]`` per group (``bmm``), which the CPU BLAS runs
at close to dense speed. FLOPs stay 2·B·L·k per pass; gathered bytes drop by g.

Work is chunked over groups so that the gathered block stays under ``WORK_ELEMENTS``; no
``[B, L, k]`` tensor and no dense ``[L, d]`` weight exists. Math runs in float32 (float64 stays
float64) and results come back in the input dtype. ``num_labels`` may be any value ≤ G·g: the
last group may be ragged (fewer than g labels).

The functions here are the reference; CPU float32/bfloat16 tensors run the compiled kernels of
``bench.kernels.cpu_group`` (a register-blocked GEMM per group, no ``[L, B]`` intermediate) when
the C compiler is there. ``backend="reference"``, ``with use_backend("reference"):`` or
``XMC_FFI_BACKEND=reference`` force this reference, as for ``fixed_fan_in``.
"""

from __future__ import annotations

import torch

from bench.errors import ConfigError
from bench.kernels import cpu_group
from bench.kernels.ops import forced_backend
from bench.kernels.reference import WORK_ELEMENTS, _acc_dtype


def _group_chunks(num_groups: int, k: int, batch: int, group_size: int):
    step = max(1, WORK_ELEMENTS // max(1, k * max(batch, group_size)))
    for lo in range(0, num_groups, step):
        yield lo, min(lo + step, num_groups)


def _padded(values: torch.Tensor, glo: int, ghi: int, g: int, acc: torch.dtype) -> torch.Tensor:
    """Rows of groups ``[glo, ghi)`` of ``values [L, k]`` as ``[Gc, g, k]`` (a ragged last group
    padded with zero rows)."""
    lo, hi = glo * g, min(ghi * g, values.shape[0])
    v = values[lo:hi].to(acc)
    short = (ghi - glo) * g - (hi - lo)
    if short:
        v = torch.cat([v, v.new_zeros(short, v.shape[1])])
    return v.view(ghi - glo, g, -1)


def group_forward(x, values, group_indices, group_size):
    """``x [B, d]``, ``values [L, k]``, ``group_indices [G, k]`` → ``[B, L]``."""
    batch, (num_labels, k), g = x.shape[0], values.shape, group_size
    acc = _acc_dtype(x, values)
    x_t = x.to(acc).t().contiguous()  # [d, B]: gathering input i copies one contiguous row
    out = torch.empty(num_labels, batch, dtype=acc, device=x.device)  # [L, B]
    for glo, ghi in _group_chunks(group_indices.shape[0], k, batch, g):
        gathered = x_t.index_select(0, group_indices[glo:ghi].reshape(-1).long()).view(ghi - glo, k, batch)
        scores = torch.bmm(_padded(values, glo, ghi, g, acc), gathered)  # [Gc, g, k] @ [Gc, k, B] -> [Gc, g, B]
        lo, hi = glo * g, min(ghi * g, num_labels)
        out[lo:hi] = scores.view(-1, batch)[: hi - lo]
    return out.t().to(torch.result_type(x, values))


def group_grads(grad_out, x, values, group_indices, group_size, want_x=True, want_values=True):
    """``(grad_x [B, d] | None, grad_values [L, k] | None)`` from ``grad_out [B, L]``; one gather
    per group chunk serves the values gradient."""
    batch, (num_labels, k), g = x.shape[0], values.shape, group_size
    acc = _acc_dtype(grad_out, x, values)
    x_t = x.to(acc).t().contiguous() if want_values else None  # [d, B]
    grad_t = grad_out.to(acc).t().contiguous()  # [L, B]
    grad_x_t = torch.zeros(x.shape[1], batch, dtype=acc, device=x.device) if want_x else None  # [d, B]
    grad_v = torch.empty(num_labels, k, dtype=acc, device=x.device) if want_values else None  # [L, k]
    for glo, ghi in _group_chunks(group_indices.shape[0], k, batch, g):
        lo, hi = glo * g, min(ghi * g, num_labels)
        ids = group_indices[glo:ghi].reshape(-1).long()
        gout = grad_t[lo:hi]
        short = (ghi - glo) * g - (hi - lo)
        if short:
            gout = torch.cat([gout, gout.new_zeros(short, batch)])
        gout = gout.view(ghi - glo, g, batch)  # [Gc, g, B]
        if want_values:
            gathered = x_t.index_select(0, ids).view(ghi - glo, k, batch)  # [Gc, k, B]
            # [Gc, g, B] @ [Gc, B, k] -> [Gc, g, k]
            grad_v[lo:hi] = torch.bmm(gout, gathered.transpose(1, 2)).view(-1, k)[: hi - lo]
        if want_x:
            # [Gc, k, g] @ [Gc, g, B] -> [Gc, k, B]: each shared input's summed contribution
            contrib = torch.bmm(_padded(values, glo, ghi, g, acc).transpose(1, 2), gout)
            grad_x_t.index_add_(0, ids, contrib.view(-1, batch))
    grad_x = grad_x_t.t().contiguous().to(x.dtype) if want_x else None
    return grad_x, grad_v.to(values.dtype) if want_values else None


def select_group_backend(x: torch.Tensor, values: torch.Tensor, backend: str | None = None) -> str:
    """``"cpu"`` (compiled) or ``"reference"``: the implementation ``group_fan_in`` runs on."""
    forced = forced_backend(backend)
    if forced == "reference":
        return "reference"
    if cpu_group.available(x, values):
        return "cpu"
    if forced == "cpu":
        raise ConfigError(f"group fan-in backend 'cpu' cannot run on {x.device} / {x.dtype}, {values.dtype}")
    return "reference"  # any other forced name (a GPU backend) has no group kernel: the reference runs


_IMPLEMENTATIONS = {"reference": (group_forward, group_grads), "cpu": (cpu_group.group_forward, cpu_group.group_grads)}


class _GroupFanIn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, group_indices, group_size, backend_name):
        ctx.save_for_backward(x, values, group_indices)
        ctx.group_size, ctx.backend_name = group_size, backend_name  # backward runs where the forward did
        return _IMPLEMENTATIONS[backend_name][0](x, values, group_indices, group_size)

    @staticmethod
    def backward(ctx, grad_out):
        x, values, group_indices = ctx.saved_tensors
        grads = _IMPLEMENTATIONS[ctx.backend_name][1]
        grad_x, grad_v = grads(grad_out, x, values, group_indices, ctx.group_size,
                               ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_x, grad_v, None, None, None


def group_fan_in(x: torch.Tensor, values: torch.Tensor, group_indices: torch.Tensor, group_size: int,
                 backend: str | None = None) -> torch.Tensor:
    """``out[b, l] = Σ_j values[l, j] · x[b, group_indices[l // g, j]]``: ``[B, d] → [B, L]``.

    ``values [L, k]``, ``group_indices [G, k]`` integer with ``G = ceil(L / g)``; indices get no
    gradient. ``backend``: ``"reference"`` or ``"cpu"`` to force one (default: automatic).
    """
    if x.dim() != 2 or values.dim() != 2 or group_indices.dim() != 2 or values.shape[1] != group_indices.shape[1]:
        raise ValueError(f"group_fan_in expects x [B, d], values [L, k], group_indices [G, k]; got "
                         f"{tuple(x.shape)}, {tuple(values.shape)}, {tuple(group_indices.shape)}")
    if group_indices.shape[0] != -(-values.shape[0] // group_size):
        raise ValueError(f"group_fan_in: {values.shape[0]} labels in groups of {group_size} need "
                         f"{-(-values.shape[0] // group_size)} index rows, got {group_indices.shape[0]}")
    return _GroupFanIn.apply(x, values, group_indices, group_size, select_group_backend(x, values, backend))
