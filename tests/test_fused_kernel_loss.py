"""The fused loss steps (``bench.kernels.fused_loss``: scores, loss and every gradient per label
chunk inside the compiled kernels) against the pure-torch reference in float64: both losses ×
the three reductions, ragged shapes (batch not a multiple of 16, labels not a multiple of the
256-label chunk, odd k, k > 256), int16/int32/int64 ids, rows without labels and with many,
labels on chunk borders, with and without bias, one and two threads, and the autograd
backward scaled by a loss weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.kernels import cpu, cpu_group, fixed_fan_in, fused_loss
from bench.kernels.group_fan_in import group_fan_in
from bench.sparse import SparseTargets

compiled = pytest.mark.skipif(cpu.library() is None or cpu_group.library() is None,
                              reason="no C compiler: the compiled kernels are unavailable")

LOSSES = ["bce", "squared_hinge"]
REDUCTIONS = ["sum_over_labels", "mean", "sum"]


def make_targets(batch, num_labels, seed=0, shuffle=False):
    """Row 0 empty, row 1 with many labels, the rest a few labels each, chunk borders included."""
    rng = np.random.default_rng(seed)
    borders = [lab for lab in (0, 255, 256, 257, 511, 512, num_labels - 1) if 0 <= lab < num_labels]
    rows = []
    for b in range(batch):
        if b == 0:
            row = []
        elif b == 1:
            row = rng.choice(num_labels, size=max(1, num_labels // 2), replace=False).tolist()
        else:
            row = rng.choice(num_labels, size=min(num_labels, int(rng.integers(1, 6))), replace=False).tolist()
            row += [borders[(b + i) % len(borders)] for i in range(2)]
        row = sorted(set(row))
        if shuffle:
            rng.shuffle(row)
        rows.append(row)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    ids = np.concatenate([np.asarray(r, np.int64) for r in rows]) if indptr[-1] else np.zeros(0, np.int64)
    return SparseTargets(torch.as_tensor(indptr, dtype=torch.int64), torch.as_tensor(ids), num_labels)


def inputs(batch, d, num_labels, k, rows, index_dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=g)
    values = torch.randn(num_labels, k, generator=g) * k ** -0.5
    bias = torch.randn(num_labels, generator=g) * 0.5
    ids = torch.rand(rows, d, generator=g).argsort(dim=1)[:, :k].to(index_dtype)
    return x, values, bias, ids


def check(got, want):
    """float32 kernel against the float64 reference, relative to the largest entry."""
    assert got is not None and want is not None and got.shape == want.shape
    scale = max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=2e-5 * scale)


FFI_SHAPES = [  # (B, d, L, k)
    (37, 50, 1000, 7),  # ragged everywhere: B not a multiple of 16, odd k, L = 3 chunks + 232
    (16, 64, 256, 16),  # one whole chunk
    (130, 64, 530, 5),  # 128 + 2 batch columns
    (300, 50, 530, 6),  # B > 256
    (20, 400, 300, 300),  # k > 256: the walk sorts a chunk in parts
    (3, 9, 1, 3),
]


@compiled
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32])
@pytest.mark.parametrize("shape", FFI_SHAPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_ffi_matches_reference(shape, loss, index_dtype, threads, monkeypatch):
    batch, d, num_labels, k = shape
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    x, values, bias, ids = inputs(batch, d, num_labels, k, num_labels, index_dtype)
    targets = make_targets(batch, num_labels)
    for reduction in REDUCTIONS:
        scale = fused_loss.scale_for(reduction, batch, num_labels)
        for b in (bias, None):
            got = fused_loss.ffi_loss_grads(x, values, ids, b, targets, loss, scale)
            want = fused_loss.reference_ffi_loss(x.double(), values.double(), ids, None if b is None else b.double(),
                                                 targets, loss, scale)
            for g, w in zip(got, want):  # without bias, grad_bias is that of a zero bias
                check(g, w)


GROUP_SHAPES = [  # (B, d, L, k, g)
    (37, 50, 1000, 7, 8),
    (130, 64, 530, 5, 32),
    (20, 300, 300, 33, 32),  # a ragged last group
    (16, 64, 600, 16, 128),
    (300, 50, 530, 6, 32),
    (5, 40, 70, 3, 1),
    (9, 40, 700, 5, 300),  # groups above 256 labels: one group per unit, 300 = 18 · 16 + 12 columns
]


@compiled
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32])
@pytest.mark.parametrize("shape", GROUP_SHAPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_group_matches_reference(shape, loss, index_dtype, threads, monkeypatch):
    batch, d, num_labels, k, size = shape
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    x, values, bias, ids = inputs(batch, d, num_labels, k, -(-num_labels // size), index_dtype)
    targets = make_targets(batch, num_labels)
    for reduction in REDUCTIONS:
        scale = fused_loss.scale_for(reduction, batch, num_labels)
        for b in (bias, None):
            got = fused_loss.group_loss_grads(x, values, ids, size, b, targets, loss, scale)
            want = fused_loss.reference_group_loss(x.double(), values.double(), ids, size,
                                                   None if b is None else b.double(), targets, loss, scale)
            for g, w in zip(got, want):
                check(g, w)


@pytest.mark.parametrize("loss", LOSSES)
def test_reference_is_the_unfused_loss(loss):
    """The reference against the composition a user would write: the layer's scores, dense
    targets, torch's loss, autograd."""
    batch, d, num_labels, k = 9, 20, 300, 4
    x, values, bias, ids = inputs(batch, d, num_labels, k, num_labels, torch.int64)
    x, values, bias = (t.double().requires_grad_() for t in (x, values, bias))
    targets = make_targets(batch, num_labels)
    z = fixed_fan_in(x, values, ids, backend="reference") + bias
    y = torch.zeros(batch, num_labels, dtype=torch.float64)
    for b in range(batch):
        y[b, targets.indices[targets.indptr[b]: targets.indptr[b + 1]]] = 1
    if loss == "bce":
        total = F.binary_cross_entropy_with_logits(z, y, reduction="sum") / batch
    else:
        total = (1 - (2 * y - 1) * z).clamp(min=0).square().sum() / batch
    total.backward()
    want = fused_loss.reference_ffi_loss(x.detach(), values.detach(), ids, bias.detach(), targets, loss, 1 / batch)
    torch.testing.assert_close(want[0], total.detach())
    for got, t in zip(want[1:], (x, values, bias)):
        torch.testing.assert_close(got, t.grad)


@pytest.mark.parametrize("layer", ["ffi", "group"])
@pytest.mark.parametrize("backend", [None, "reference"])
def test_autograd_scaled_by_weight(layer, backend):
    """backward scales the kept gradients by the incoming one (an aux mix weight)."""
    batch, d, num_labels, k, size = 21, 40, 700, 5, 32
    rows = num_labels if layer == "ffi" else -(-num_labels // size)
    x, values, bias, ids = inputs(batch, d, num_labels, k, rows, torch.int16)
    targets = make_targets(batch, num_labels, shuffle=True)  # any order within a row
    x, values, bias = (t.requires_grad_() for t in (x, values, bias))
    scale = 1 / batch
    if layer == "ffi":
        total = fused_loss.ffi_loss(x, values, ids, bias, targets, "bce", scale, backend=backend)
        want = fused_loss.reference_ffi_loss(x.detach().double(), values.detach().double(), ids,
                                             bias.detach().double(), targets, "bce", scale)
    else:
        total = fused_loss.group_loss(x, values, ids, size, bias, targets, "bce", scale, backend=backend)
        want = fused_loss.reference_group_loss(x.detach().double(), values.detach().double(), ids, size,
                                               bias.detach().double(), targets, "bce", scale)
    assert total.dim() == 0 and total.dtype == torch.float32
    (0.6 * total).backward()
    check(total.detach(), want[0])
    for t, w in zip((x, values, bias), want[1:]):
        check(t.grad, 0.6 * w)


@compiled
def test_only_some_gradients_and_bfloat16():
    batch, d, num_labels, k = 33, 48, 600, 8
    x, values, bias, ids = inputs(batch, d, num_labels, k, num_labels, torch.int16)
    targets = make_targets(batch, num_labels)
    want = fused_loss.reference_ffi_loss(x.double(), values.double(), ids, bias.double(), targets, "bce", 1.0)
    for want_grads in [(False, True, False), (True, False, False), (False, False, True)]:
        got = fused_loss.ffi_loss_grads(x, values, ids, bias, targets, "bce", 1.0, want_grads)
        check(got[0], want[0])
        for g, w, wanted in zip(got[1:], want[1:], want_grads):
            assert (g is not None) == wanted
            if wanted:
                check(g, w)
    v16 = values.bfloat16().requires_grad_()
    total = fused_loss.ffi_loss(x.bfloat16(), v16, ids, None, targets, "squared_hinge", 1 / batch)
    total.backward()
    ref = fused_loss.reference_ffi_loss(x.bfloat16().double(), v16.detach().double(), ids, None, targets,
                                        "squared_hinge", 1 / batch)
    assert v16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(total.double(), ref[0], rtol=1e-4, atol=0)
    torch.testing.assert_close(v16.grad.double(), ref[2], rtol=2e-2, atol=2e-2 * ref[2].abs().max().item())


@compiled
def test_empty_batch_and_extreme_scores():
    d, num_labels, k = 16, 300, 4
    x, values, bias, ids = inputs(4, d, num_labels, k, num_labels, torch.int32)
    empty = SparseTargets(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), num_labels)
    total, gx, gv, gb = fused_loss.ffi_loss_grads(x[:0], values, ids, bias, empty, "bce", 1.0)
    assert total.item() == 0 and gx.shape == (0, d) and not gv.any() and not gb.any()
    # scores far in both tails: the BCE value and gradient stay finite and exact
    targets = make_targets(4, num_labels)
    big = bias * 0 + torch.linspace(-120, 120, num_labels)
    got = fused_loss.ffi_loss_grads(x, values, ids, big, targets, "bce", 1.0)
    want = fused_loss.reference_ffi_loss(x.double(), values.double(), ids, big.double(), targets, "bce", 1.0)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        check(g, w)


def test_names_and_reductions():
    from bench import losses

    # the kernels' vocabulary is the loss registry's (a registered loss without a kernel form
    # trains on the torch path)
    assert set(fused_loss.LOSSES) <= set(losses.list_losses())
    assert tuple(fused_loss.REDUCTIONS) == tuple(losses.REDUCTIONS)
    with pytest.raises(ConfigError):
        fused_loss.loss_id("squared-hinge")
    with pytest.raises(ConfigError):
        fused_loss.loss_id("hinge")
    with pytest.raises(ConfigError):
        fused_loss.scale_for("median", 2, 3)
    assert fused_loss.scale_for("sum_over_labels", 4, 10) == 0.25
    assert fused_loss.scale_for("mean", 4, 10) == 1 / 40 and fused_loss.scale_for("sum", 4, 10) == 1.0


def test_map_targets_keeps_mapped_labels_per_row():
    """head-tail's tail: labels renamed to their tail rows, head labels dropped."""
    targets = SparseTargets(torch.tensor([0, 3, 3, 5]), torch.tensor([4, 0, 2, 1, 4]), 5)
    slot = torch.tensor([-1, 0, 2, -2, 1])  # label 0 and 3 in the head
    mapped = fused_loss.map_targets(targets, slot)
    assert mapped.indptr.tolist() == [0, 2, 2, 4]
    assert mapped.indices.tolist() == [1, 2, 0, 1]
