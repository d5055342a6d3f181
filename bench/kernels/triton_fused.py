"""Triton kernels with the loss and the top-k inside (CUDA; tests run them under
``TRITON_INTERPRET=1`` on CPU tensors). One kernel of each serves ``ffi`` (``group_size`` 1) and
``ffi-group`` (label l reads the ids of row ``l // group_size``).

    loss_grads(x, values, ids, group_size, bias, targets, loss_id, scale, want)
        scale · Σ_{b,l} loss(z[b, l], y[b, l]) and its gradients, z = fan-in scores + bias
    topk(x, values, ids, group_size, bias, k)
        the best k labels of every row of z, ranked as ``bench.ranking`` ranks them

The loss step: one program owns ``BLOCK_L`` labels and walks the whole batch in ``BLOCK_B`` row
blocks. Per block it gathers the scores (k gathers of inputs, as the forward kernel), reads the
targets from the sparse label lists (each row's labels sorted once; a binary search finds the
row's positives inside the label block, which are compared with the block's ids: no 0/1
matrix), applies the per-score loss (``LOSS`` 0: BCE, 1: squared hinge; the formulas of
``fused_loss.score_loss``) and runs the backward from the block in registers: the bias and
value gradients of its own labels accumulate in the program (no atomics), the input gradient
goes by fp32 atomics into ``[B, d]``. No ``[B, L]`` score or gradient is written.

The top-k: one program per ``[BLOCK_B, BLOCK_L]`` tile scores it and keeps the tile's best K
per row (K rounds of max, lowest id among equals; NaN first), writing ``[B, K]`` candidates per
tile; ``bench.ranking.select_chunk`` ranks the ``[B, K · L / BLOCK_L]`` candidates. Candidates of
equal score sit in label order (tiles in label order, each tile's picks in rank order), so the
column tie-break of ``select_chunk`` is the label-id tie-break.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bench.kernels.native import kernel_ids
from bench.ranking import select_chunk

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# the top-k tile: K ≤ SELECT_L (a tile holds at least K labels, so only the last tile pads)
SELECT_B, SELECT_L = (16, 16) if INTERPRET else (32, 128)
MAX_TOPK = SELECT_L


@triton.jit
def _scores(x_ptr, v_ptr, idx_ptr, bias_ptr, offs_b, offs_l, mask_b, mask_l, k, d, G, HAS_BIAS: tl.constexpr,
            BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    """``z [BLOCK_B, BLOCK_L]`` in fp32: Σ_j v[l, j] · x[b, idx[l // G, j]] (+ bias[l])."""
    mask = mask_b[:, None] & mask_l[None, :]
    xrow = offs_b.to(tl.int64)[:, None] * d
    id_row = (offs_l // G).to(tl.int64) * k
    v_row = offs_l.to(tl.int64) * k
    z = tl.zeros((BLOCK_B, BLOCK_L), dtype=tl.float32)
    for j in range(0, k):
        ids = tl.load(idx_ptr + id_row + j, mask=mask_l, other=0).to(tl.int64)
        w = tl.load(v_ptr + v_row + j, mask=mask_l, other=0.0).to(tl.float32)
        z += tl.load(x_ptr + xrow + ids[None, :], mask=mask, other=0.0).to(tl.float32) * w[None, :]
    if HAS_BIAS:
        z += tl.load(bias_ptr + offs_l, mask=mask_l, other=0.0).to(tl.float32)[None, :]
    return z


@triton.jit
def _lower_bound(ptr, lo, hi, value, mask, STEPS: tl.constexpr):
    """Per row, the first position in ``[lo, hi)`` of the sorted ``ptr`` whose entry is ≥ ``value``
    (``hi`` if none); ``STEPS`` halvings cover ranges of up to 2^STEPS − 1 entries."""
    for _ in tl.static_range(STEPS):
        mid = (lo + hi) // 2
        active = mask & (lo < hi)
        entry = tl.load(ptr + mid, mask=active, other=0)
        right = active & (entry < value)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    return lo


@triton.jit
def _loss_kernel(x_ptr, v_ptr, idx_ptr, bias_ptr, indptr_ptr, labels_ptr, gv_ptr, gb_ptr, gx_ptr, part_ptr,
                 scale, B, L, k, d, G,
                 SEARCH_STEPS: tl.constexpr, LOSS: tl.constexpr, HAS_BIAS: tl.constexpr,
                 WANT_X: tl.constexpr, WANT_V: tl.constexpr,
                 WANT_B: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0)
    offs_l = pid * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_l = offs_l < L
    id_row = (offs_l // G).to(tl.int64) * k
    v_row = offs_l.to(tl.int64) * k
    grad_bias = tl.zeros((BLOCK_L,), dtype=tl.float32)
    total = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        mask_b = offs_b < B
        mask = mask_b[:, None] & mask_l[None, :]
        z = _scores(x_ptr, v_ptr, idx_ptr, bias_ptr, offs_b, offs_l, mask_b, mask_l, k, d, G, HAS_BIAS,
                    BLOCK_B, BLOCK_L)
        # targets of the tile: each row's (sorted) positives inside this label block, found by
        # binary search, so the cost is the block's positives, not the row's
        start = tl.load(indptr_ptr + offs_b, mask=mask_b, other=0)
        end = tl.load(indptr_ptr + offs_b + 1, mask=mask_b, other=0)
        first = _lower_bound(labels_ptr, start, end, pid * BLOCK_L, mask_b, SEARCH_STEPS)
        count = _lower_bound(labels_ptr, first, end, pid * BLOCK_L + BLOCK_L, mask_b, SEARCH_STEPS) - first
        y = tl.zeros((BLOCK_B, BLOCK_L), dtype=tl.float32)
        for t in range(0, tl.max(count, axis=0)):
            label = tl.load(labels_ptr + first + t, mask=mask_b & (t < count), other=-1)
            y = tl.where(label[:, None] == offs_l[None, :], 1.0, y)
        if LOSS == 0:  # BCE with logits
            value = tl.maximum(z, 0.0) - z * y + tl.log(1.0 + tl.exp(-tl.abs(z)))
            dz = tl.sigmoid(z) - y
        else:  # squared hinge, targets ±1
            sign = 2.0 * y - 1.0
            margin = tl.maximum(1.0 - sign * z, 0.0)
            value = margin * margin
            dz = -2.0 * sign * margin
        total += tl.sum(tl.where(mask, value, 0.0), axis=0)
        g = tl.where(mask, dz * scale, 0.0)  # [BLOCK_B, BLOCK_L] ∂(scaled loss)/∂z
        grad_bias += tl.sum(g, axis=0)
        if WANT_X or WANT_V:
            xrow = offs_b.to(tl.int64)[:, None] * d
            for j in range(0, k):
                ids = tl.load(idx_ptr + id_row + j, mask=mask_l, other=0).to(tl.int64)
                if WANT_V:  # this program alone owns these labels' rows: plain read-add-write
                    xg = tl.load(x_ptr + xrow + ids[None, :], mask=mask, other=0.0).to(tl.float32)
                    old = tl.load(gv_ptr + v_row + j, mask=mask_l, other=0.0)
                    tl.store(gv_ptr + v_row + j, old + tl.sum(g * xg, axis=0), mask=mask_l)
                if WANT_X:
                    w = tl.load(v_ptr + v_row + j, mask=mask_l, other=0.0).to(tl.float32)
                    tl.atomic_add(gx_ptr + xrow + ids[None, :], g * w[None, :], mask=mask)
    if WANT_B:
        tl.store(gb_ptr + offs_l, grad_bias, mask=mask_l)
    tl.store(part_ptr + pid, tl.sum(total, axis=0))


@triton.jit
def _select_kernel(x_ptr, v_ptr, idx_ptr, bias_ptr, s_ptr, i_ptr, B, L, k, d, G, width,
                   K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_b = tl.program_id(0), tl.program_id(1)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_l, mask_b = offs_l < L, offs_b < B
    z = _scores(x_ptr, v_ptr, idx_ptr, bias_ptr, offs_b, offs_l, mask_b, mask_l, k, d, G, HAS_BIAS,
                BLOCK_B, BLOCK_L)
    labels = tl.zeros((BLOCK_B, BLOCK_L), dtype=tl.int64) + offs_l[None, :].to(tl.int64)
    none = L + BLOCK_L  # an id above every label: "no pick"
    is_nan = z != z
    taken = (labels >= L)  # columns past L never rank
    out = offs_b.to(tl.int64) * width + pid_l * K
    for t in tl.static_range(K):
        nan_id = tl.min(tl.where(is_nan & ~taken, labels, none), axis=1)  # NaN ranks first
        numbers = ~is_nan & ~taken
        best = tl.max(tl.where(numbers, z, float("-inf")), axis=1)
        best_id = tl.min(tl.where(numbers & (z == best[:, None]), labels, none), axis=1)
        pick = tl.where(nan_id < none, nan_id, best_id)  # [BLOCK_B]
        chosen = labels == pick[:, None]
        score = tl.sum(tl.where(chosen, z, 0.0), axis=1)  # the picked score itself (NaN stays NaN)
        score = tl.where(pick < none, score, float("-inf"))
        tl.store(s_ptr + out + t, score, mask=mask_b)
        tl.store(i_ptr + out + t, pick, mask=mask_b)
        taken = taken | chosen


if INTERPRET:  # the autotuner times with CUDA events: one small configuration in the interpreter
    _FIXED = {"BLOCK_B": 16, "BLOCK_L": 16}
    _loss = _loss_kernel
else:
    _FIXED = {}
    # reruns while tuning accumulate into the value and input gradients: they restart from zero
    _loss = triton.autotune([triton.Config({"BLOCK_B": b, "BLOCK_L": l}, num_warps=w)
                             for b, l, w in [(32, 64, 4), (64, 64, 4), (32, 128, 4), (64, 128, 8), (16, 256, 8)]],
                            key=["B", "L", "k", "G"], reset_to_zero=["gv_ptr", "gx_ptr"])(_loss_kernel)


def _operands(x, values, ids, bias):
    return (x.contiguous(), values.contiguous(), kernel_ids(ids),
            bias.contiguous() if bias is not None else values.new_empty(1))


def _sorted_rows(indptr: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Each row's label ids in ascending order (the kernel binary-searches them); one sort of
    ``row · L + label`` keys. A dummy entry when there are none (the kernel reads nothing then)."""
    if labels.numel() == 0:
        return torch.full((1,), -1, dtype=torch.int64, device=labels.device)
    rows = torch.repeat_interleave(torch.arange(indptr.numel() - 1, device=labels.device), indptr[1:] - indptr[:-1])
    keys = torch.sort(rows * num_labels + labels).values
    return (keys - rows * num_labels).contiguous()


def loss_grads(x: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, group_size: int, bias, targets,
               loss_id: int = 0, scale: float = 1.0, want=(True, True, True)):
    """``(loss, grad_x | None, grad_values | None, grad_bias | None)`` of ``scale · Σ l(z, y)``;
    ``loss_id`` is the loss's id in ``bench.kernels.fused_loss.LOSSES`` (csrc/loss.h's: 0 BCE,
    1 squared hinge); ``ids`` are ``[L, k]`` (``group_size`` 1) or the groups' ``[ceil(L / g), k]``.
    Gradients in float32."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    device = x.device
    x, v, idx, b = _operands(x, values, ids, bias)
    indptr = targets.indptr.to(device=device, dtype=torch.int64).contiguous()
    labels = _sorted_rows(indptr, targets.indices.to(device=device, dtype=torch.int64), num_labels)
    max_pos = int((indptr[1:] - indptr[:-1]).max().item()) if batch else 0
    grad_x = torch.zeros(batch, d, dtype=torch.float32, device=device)
    grad_v = torch.zeros(num_labels, k, dtype=torch.float32, device=device)
    grad_b = torch.zeros(num_labels, dtype=torch.float32, device=device)
    parts = torch.zeros(triton.cdiv(max(num_labels, 1), 16), dtype=torch.float32, device=device)
    if batch and num_labels:
        grid = lambda meta: (triton.cdiv(num_labels, meta["BLOCK_L"]),)  # noqa: E731
        _loss[grid](x, v, idx, b, indptr, labels, grad_v, grad_b, grad_x, parts, float(scale),
                    # search steps: at least 5 (one compiled variant for up to 31 labels per row)
                    batch, num_labels, k, d, int(group_size), SEARCH_STEPS=max(5, max_pos.bit_length()),
                    LOSS=int(loss_id), HAS_BIAS=bias is not None, WANT_X=bool(want[0]), WANT_V=bool(want[1]),
                    WANT_B=bool(want[2]), **_FIXED)
    total = parts.sum() * scale
    return total, grad_x if want[0] else None, grad_v if want[1] else None, grad_b if want[2] else None


def topk(x: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, group_size: int, bias,
         k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [B, K] float32, ids [B, K] int64)``, ``K = min(k, L)`` (``k ≤ MAX_TOPK``): the
    best labels of every row of the layer's scores plus bias, ranked."""
    (batch, d), (num_labels, fan_in) = x.shape, values.shape
    K = min(k, num_labels)
    if K > MAX_TOPK:
        raise ValueError(f"Triton top-k keeps at most {MAX_TOPK} labels per row, asked for {k}")
    if batch == 0 or K == 0:
        return (torch.empty(batch, K, device=x.device),
                torch.empty(batch, K, dtype=torch.int64, device=x.device))
    tiles = triton.cdiv(num_labels, SELECT_L)
    scores = torch.empty(batch, tiles * K, dtype=torch.float32, device=x.device)
    picked = torch.empty(batch, tiles * K, dtype=torch.int64, device=x.device)
    x, v, idx, b = _operands(x, values, ids, bias)
    _select_kernel[(tiles, triton.cdiv(batch, SELECT_B))](
        x, v, idx, b, scores, picked, batch, num_labels, fan_in, d, int(group_size), tiles * K,
        K=K, HAS_BIAS=bias is not None, BLOCK_B=SELECT_B, BLOCK_L=SELECT_L)
    best, columns = select_chunk(scores, K)
    return best, picked.gather(1, columns)

