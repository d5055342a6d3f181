"""Pure-torch reference for the fixed fan-in (ffi) op — the oracle every fast backend is
tested against.

    out[b, l]          = Σ_j values[l, j] · x[b, idx[l, j]]             forward
    grad_values[l, j]  = Σ_b grad_out[b, l] · x[b, idx[l, j]]           same gather as forward
    grad_x[b, idx[l,j]] += values[l, j] · grad_out[b, l]                scatter-add

Cost of each of the three: 2·B·L·k FLOPs. Compulsory traffic is small — x (B·d), values and
indices (L·k · (2 + 2) bytes for bf16 values + int16 ids), the [B, L] scores — but this
reference moves every gathered element through memory: the ``[Lc, k, B]`` work block is
written and read once per chunk, 2 · 4 · B·L·k bytes in total. At 2 FLOPs per 8 bytes it is
memory bound; a fused kernel gathers straight into registers and never writes the block.

Work is chunked over labels so that the block stays under ``WORK_ELEMENTS`` elements: no
``[B, L, k]`` tensor and no dense ``[L, d]`` weight ever exists. Math runs in float32 (float64
stays float64, so ``gradcheck`` works) whatever the input dtype — bfloat16 inputs are upcast
per chunk — and results come back in the input dtype.

The input is used transposed (``[d, B]``) so that gathering input column ``i`` is copying one
contiguous row of B values.
"""

from __future__ import annotations

import torch

# Elements of the per-chunk work block [Lc, k, B]: 2^22 · 4 bytes = 16 MiB in float32.
# The bound holds while B·k <= 2^22 (one label per chunk); XMC batches are far below that
# (k = 128 allows B up to 32768).
WORK_ELEMENTS = 1 << 22


def label_chunk(k: int, batch: int) -> int:
    """Labels per chunk so that the ``[Lc, k, B]`` work block stays under the budget."""
    return max(1, WORK_ELEMENTS // max(1, k * batch))


def _chunks(num_labels: int, k: int, batch: int):
    step = label_chunk(k, batch)
    for lo in range(0, num_labels, step):
        yield lo, min(lo + step, num_labels)


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for bfloat16/float16/float32 inputs; float64 if any input is float64."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _gather(x_t: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows ``indices [Lc, k]`` of ``x_t [d, B]`` → the work block ``[Lc, k, B]``."""
    lc, k = indices.shape
    return x_t.index_select(0, indices.reshape(-1).long()).view(lc, k, x_t.shape[1])


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x [B, d]``, ``values [L, k]``, ``indices [L, k]`` (int16/int32/int64) → ``[B, L]``."""
    batch, (num_labels, k) = x.shape[0], values.shape
    acc = _acc_dtype(x, values)
    x_t = x.to(acc).t().contiguous()  # [d, B]
    out = torch.empty(batch, num_labels, dtype=acc, device=x.device)  # [B, L]
    for lo, hi in _chunks(num_labels, k, batch):
        gathered = _gather(x_t, indices[lo:hi])  # [Lc, k, B]
        # [Lc, 1, k] @ [Lc, k, B] -> [Lc, 1, B]
        scores = torch.bmm(values[lo:hi].to(acc).unsqueeze(1), gathered).squeeze(1)
        out[:, lo:hi] = scores.t()
    return out.to(torch.result_type(x, values))


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``grad_out [B, L]``, ``x [B, d]``, ``indices [L, k]`` → ``grad_values [L, k]``."""
    batch, (num_labels, k) = x.shape[0], indices.shape
    acc = _acc_dtype(grad_out, x)
    x_t = x.to(acc).t().contiguous()  # [d, B]
    grad_t = grad_out.to(acc).t()  # [L, B], a view when grad_out is already float32
    out = torch.empty(num_labels, k, dtype=acc, device=x.device)  # [L, k]
    for lo, hi in _chunks(num_labels, k, batch):
        gathered = _gather(x_t, indices[lo:hi])  # [Lc, k, B]
        # [Lc, k, B] @ [Lc, B, 1] -> [Lc, k, 1]
        out[lo:hi] = torch.bmm(gathered, grad_t[lo:hi].unsqueeze(2)).squeeze(2)
    return out.to(torch.result_type(grad_out, x))


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   in_features: int) -> torch.Tensor:
    """``grad_out [B, L]``, ``values [L, k]``, ``indices [L, k]`` → ``grad_x [B, d]``."""
    batch, (num_labels, k) = grad_out.shape[0], values.shape
    acc = _acc_dtype(grad_out, values)
    grad_x_t = torch.zeros(in_features, batch, dtype=acc, device=grad_out.device)  # [d, B]
    grad_t = grad_out.to(acc).t()  # [L, B]
    for lo, hi in _chunks(num_labels, k, batch):
        # [Lc, k, 1] * [Lc, 1, B] -> [Lc, k, B]: each connection's contribution to its input
        contrib = values[lo:hi].to(acc).unsqueeze(2) * grad_t[lo:hi].unsqueeze(1)
        grad_x_t.index_add_(0, indices[lo:hi].reshape(-1).long(), contrib.view(-1, batch))
    return grad_x_t.t().contiguous().to(torch.result_type(grad_out, values))
