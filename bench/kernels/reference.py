"""Pure-torch reference for the fixed fan-in (ffi) op — the oracle every fast backend is
tested against.

    out[b, l]          = Σ_j values[l, j] · x[b, idx[l, j]]             forward
    grad_values[l, j]  = Σ_b grad_out[b, l] · x[b, idx[l, j]]           same gather as forward
    grad_x[b, idx[l,j]] += values[l, j] · grad_out[b, l]                scatter-add

Each is 2·B·L·k FLOPs. Work is chunked over labels so that the gathered ``[Lc, k, B]`` block
stays under ``WORK_ELEMENTS`` elements (2^22 float32 = 16 MiB): no ``[B, L, k]`` tensor and no
dense ``[L, d]`` weight ever exists. Math runs in float32 whatever the input dtype (bfloat16
inputs are upcast per chunk) and results are returned in the input dtype.

The input is used transposed (``[d, B]``) so that gathering input column ``i`` is copying one
contiguous row of B values.
"""

from __future__ import annotations

import torch

WORK_ELEMENTS = 1 << 22  # elements of the per-chunk gathered block [Lc, k, B]


def label_chunk(k: int, batch: int) -> int:
    """Labels per chunk so that the ``[Lc, k, B]`` work block stays under the budget."""
    return max(1, WORK_ELEMENTS // max(1, k * batch))


def _chunks(num_labels: int, k: int, batch: int):
    step = label_chunk(k, batch)
    for lo in range(0, num_labels, step):
        yield lo, min(lo + step, num_labels)


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x [B, d]``, ``values [L, k]``, ``indices [L, k]`` (int16/int32/int64) → ``[B, L]``."""
    batch, (num_labels, k) = x.shape[0], values.shape
    x_t = x.float().t().contiguous()  # [d, B]
    out_t = torch.empty(num_labels, batch, dtype=torch.float32, device=x.device)  # [L, B]
    for lo, hi in _chunks(num_labels, k, batch):
        gathered = x_t.index_select(0, indices[lo:hi].reshape(-1).long()).view(hi - lo, k, batch)
        # [Lc, 1, k] @ [Lc, k, B] -> [Lc, 1, B]
        out_t[lo:hi] = torch.bmm(values[lo:hi].float().unsqueeze(1), gathered).squeeze(1)
    return out_t.t().to(torch.result_type(x, values))


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``grad_out [B, L]``, ``x [B, d]``, ``indices [L, k]`` → ``grad_values [L, k]`` (float32
    accumulation; returned in ``grad_out``'s dtype)."""
    batch, (num_labels, k) = x.shape[0], indices.shape
    x_t = x.float().t().contiguous()  # [d, B]
    grad_t = grad_out.float().t()  # [L, B] (a view; chunks are copied as they are used)
    out = torch.empty(num_labels, k, dtype=torch.float32, device=x.device)
    for lo, hi in _chunks(num_labels, k, batch):
        gathered = x_t.index_select(0, indices[lo:hi].reshape(-1).long()).view(hi - lo, k, batch)
        # [Lc, k, B] @ [Lc, B, 1] -> [Lc, k, 1]
        out[lo:hi] = torch.bmm(gathered, grad_t[lo:hi].unsqueeze(2)).squeeze(2)
    return out.to(grad_out.dtype)


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, in_features: int) -> torch.Tensor:
    """``grad_out [B, L]``, ``values [L, k]``, ``indices [L, k]`` → ``grad_x [B, d]``."""
    batch, (num_labels, k) = grad_out.shape[0], values.shape
    grad_x_t = torch.zeros(in_features, batch, dtype=torch.float32, device=grad_out.device)  # [d, B]
    grad_t = grad_out.float().t()  # [L, B]
    for lo, hi in _chunks(num_labels, k, batch):
        # [Lc, k, 1] * [Lc, 1, B] -> [Lc, k, B]: each connection's contribution to its input
        contrib = values[lo:hi].float().unsqueeze(2) * grad_t[lo:hi].unsqueeze(1)
        grad_x_t.index_add_(0, indices[lo:hi].reshape(-1).long(), contrib.view(-1, batch))
    return grad_x_t.t().to(grad_out.dtype)
