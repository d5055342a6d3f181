"""The compiled CPU backend against the reference: forward, grad wrt input, grad wrt values
(alone and fused), on ragged shapes (batch not a multiple of the 16/64/128-wide register blocks, label count not
a multiple of the 16-label tile, k not a power of two), float32/bfloat16, int16/int32/int64
ids, one and two threads."""

from __future__ import annotations

import pytest
import torch

from bench.kernels import cpu, fixed_fan_in, reference, select_backend
from helpers import assert_kernel_close as check

pytestmark = pytest.mark.skipif(cpu.library() is None, reason="no C compiler: the CPU backend is unavailable")


def random_indices(num_labels, in_features, fan_in, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_labels, in_features, generator=g).argsort(dim=1)[:, :fan_in].to(dtype)


SHAPES = [  # (B, d, L, k)
    (7, 37, 1003, 13),
    (130, 64, 45, 5),  # 128 + 2 columns: the wide block, then the scalar tail
    (200, 300, 17, 33),  # 128 + 64 + 8
    (300, 50, 530, 6),  # 256 + 32 + 12 batch columns; two 256-label chunks and a ragged one
    (3, 9, 1, 3),
    (40, 70, 600, 16),  # k a power of two
    (20, 400, 300, 300),  # k > 256: the backward sorts a chunk in parts of 65536 // k = 218 labels
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, index_dtype, dtype, threads):
    batch, d, num_labels, k = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d, generator=g).to(dtype)
    values = torch.randn(num_labels, k, generator=g).to(dtype)
    grad_out = torch.randn(batch, num_labels, generator=g).to(dtype)
    indices = random_indices(num_labels, d, k, index_dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        want_x = reference.ffi_grad_input(grad_out, values, indices, d)
        want_values = reference.ffi_grad_values(grad_out, x, indices)
        check(cpu.ffi_forward(x, values, indices), reference.ffi_forward(x, values, indices), dtype)
        check(cpu.ffi_grad_values(grad_out, x, indices), want_values, dtype)
        check(cpu.ffi_grad_input(grad_out, values, indices, d), want_x, dtype)
        grad_x, grad_values = cpu.ffi_grads(grad_out, x, values, indices, d)  # both from one pass
        check(grad_x, want_x, dtype)
        check(grad_values, want_values, dtype)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_repeated_ids_within_a_label(threads):
    """Ids may repeat inside a label (the sort's gather/scatter path must then fall back to one
    entry at a time): odd labels draw 16 of 40 inputs with replacement (repeats almost surely),
    even labels take inputs 0..15 (distinct: the vector path)."""
    batch, d, num_labels, k = 37, 40, 700, 16
    g = torch.Generator().manual_seed(3)
    x, values = torch.randn(batch, d, generator=g), torch.randn(num_labels, k, generator=g)
    grad_out = torch.randn(batch, num_labels, generator=g)
    indices = torch.randint(0, d, (num_labels, k), generator=g, dtype=torch.int32)
    indices[::2] = torch.arange(k, dtype=torch.int32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        grad_x, grad_values = cpu.ffi_grads(grad_out, x, values, indices, d)
        check(grad_x, reference.ffi_grad_input(grad_out, values, indices, d), torch.float32)
        check(grad_values, reference.ffi_grad_values(grad_out, x, indices), torch.float32)
        check(cpu.ffi_grad_input(grad_out, values, indices, d), reference.ffi_grad_input(grad_out, values, indices, d),
              torch.float32)
    finally:
        torch.set_num_threads(before)


def test_selected_for_cpu_tensors_and_used_by_autograd():
    x = torch.randn(5, 20, requires_grad=True)
    values = torch.randn(30, 4, requires_grad=True)
    indices = random_indices(30, 20, 4, torch.int16)
    assert select_backend(x) == "cpu"
    fixed_fan_in(x, values, indices).square().sum().backward()
    want = [t.detach().requires_grad_() for t in (x, values)]
    fixed_fan_in(*want, indices, backend="reference").square().sum().backward()
    torch.testing.assert_close(x.grad, want[0].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values.grad, want[1].grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_autograd_computes_only_the_gradients_asked_for(needs):
    x = torch.randn(19, 40, requires_grad=needs[0])
    values = torch.randn(300, 7, requires_grad=needs[1])
    indices = random_indices(300, 40, 7, torch.int16)
    fixed_fan_in(x, values, indices).square().sum().backward()
    want = [t.detach().requires_grad_(n) for t, n in zip((x, values), needs)]
    fixed_fan_in(*want, indices, backend="reference").square().sum().backward()
    for got, ref in zip((x, values), want):
        assert (got.grad is None) == (ref.grad is None)
        if ref.grad is not None:
            torch.testing.assert_close(got.grad, ref.grad, rtol=1e-5, atol=1e-4)


def test_float64_and_empty_inputs():
    assert select_backend(torch.randn(2, 3, dtype=torch.float64)) == "reference"
    x, values = torch.randn(4, 6), torch.zeros(0, 3)
    assert cpu.ffi_forward(x, values, torch.zeros(0, 3, dtype=torch.int16)).shape == (4, 0)
    assert cpu.ffi_grad_input(torch.zeros(4, 0), values, torch.zeros(0, 3, dtype=torch.int16), 6).abs().sum() == 0


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(cpu.CACHE_ENV, str(tmp_path))
    cpu.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="CPU backend unavailable.*reference"):
            assert select_backend(torch.randn(2, 3)) == "reference"
    finally:
        monkeypatch.undo()
        cpu.library.cache_clear()
    assert cpu.library() is not None
