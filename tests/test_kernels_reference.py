"""The fixed fan-in op against a masked dense layer, and the backend table around it.

The oracle: scatter ``values [L, k]`` into a dense ``[L, d]`` weight and run ``x @ W.T`` in
float64; the op must agree on the forward, the gradient wrt the input and the gradient wrt
the values (which is the dense weight's gradient gathered at the chosen inputs).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from bench.errors import ConfigError
from bench.kernels import fixed_fan_in, list_backends, ops, reference, register_backend, select_backend, use_backend


def random_indices(num_labels, in_features, fan_in, dtype, seed=0):
    """``[L, k]`` distinct ids per row (small sizes: draws an ``[L, d]`` key matrix)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.rand(num_labels, in_features, generator=g)
    return keys.argsort(dim=1)[:, :fan_in].sort(dim=1).values.to(dtype)


def dense_oracle(x, values, indices, grad_out):
    """Forward, grad wrt x and grad wrt values of the equivalent dense layer, in float64."""
    x64 = x.detach().double().requires_grad_()
    weight = torch.zeros(values.shape[0], x.shape[1], dtype=torch.float64)
    weight = weight.scatter(1, indices.long(), values.detach().double()).requires_grad_()  # [L, d]
    out = x64 @ weight.t()  # [B, L]
    out.backward(grad_out.double())
    return out, x64.grad, weight.grad.gather(1, indices.long())


def run_op(x, values, indices, grad_out):
    x = x.detach().requires_grad_()
    values = values.detach().requires_grad_()
    out = fixed_fan_in(x, values, indices)
    out.backward(grad_out)
    return out, x.grad, values.grad


def check_close(got, want, dtype):
    assert got.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    else:  # bfloat16 keeps 8 bits of mantissa: compare relative to the tensor's scale
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=2e-2 * scale)


class MaxTensorSize(TorchFunctionMode):
    """Records the largest tensor any torch call inside the block returns, and which ops ran."""

    def __init__(self):
        super().__init__()
        self.max_numel, self.calls = 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append(getattr(func, "__name__", str(func)))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


SHAPES = [  # (B, d, L, k): ragged L, k not a power of two
    (7, 37, 1000, 13),
    (3, 64, 333, 5),
    (5, 9, 1, 3),  # a single label
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_masked_dense_layer(shape, index_dtype, dtype, monkeypatch):
    batch, d, num_labels, k = shape
    # about 48 labels per chunk: ~21 chunks, the last one ragged
    monkeypatch.setattr(reference, "WORK_ELEMENTS", batch * k * 48)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d, generator=g).to(dtype)
    values = (torch.rand(num_labels, k, generator=g) * 2 - 1).to(dtype)
    grad_out = torch.randn(batch, num_labels, generator=g).to(dtype)
    indices = random_indices(num_labels, d, k, index_dtype)

    out, grad_x, grad_values = run_op(x, values, indices, grad_out)
    want_out, want_grad_x, want_grad_values = dense_oracle(x, values, indices, grad_out)
    assert out.shape == (batch, num_labels)
    check_close(out, want_out, dtype)
    check_close(grad_x, want_grad_x, dtype)
    check_close(grad_values, want_grad_values, dtype)


@pytest.mark.parametrize("d, index_dtype", [(32767, torch.int16), (33000, torch.int32)])
def test_input_ids_near_the_index_dtype_limit(d, index_dtype):
    batch, num_labels, k = 4, 20, 7
    g = torch.Generator().manual_seed(2)
    x, values = torch.randn(batch, d, generator=g), torch.randn(num_labels, k, generator=g)
    indices = random_indices(num_labels, d, k, index_dtype)
    indices[0, -1] = d - 1  # the largest id the dtype must hold (rows stay distinct and sorted)
    grad_out = torch.randn(batch, num_labels, generator=g)
    for got, want in zip(run_op(x, values, indices, grad_out), dense_oracle(x, values, indices, grad_out)):
        check_close(got, want, torch.float32)


def test_float64_gradcheck(monkeypatch):
    monkeypatch.setattr(reference, "WORK_ELEMENTS", 4 * 3 * 4)  # 4 labels per chunk, 11 labels
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    values = torch.randn(11, 3, dtype=torch.float64, generator=g, requires_grad=True)
    indices = random_indices(11, 6, 3, torch.int16)
    assert torch.autograd.gradcheck(lambda a, b: fixed_fan_in(a, b, indices), (x, values))


def test_chunking_bounds_the_work_and_keeps_results(monkeypatch):
    batch, d, num_labels, k = 7, 37, 1000, 13
    g = torch.Generator().manual_seed(4)
    x, values = torch.randn(batch, d, generator=g), torch.randn(num_labels, k, generator=g)
    grad_out = torch.randn(batch, num_labels, generator=g)
    indices = random_indices(num_labels, d, k, torch.int16)

    def all_three():
        return (reference.ffi_forward(x, values, indices),
                reference.ffi_grad_input(grad_out, values, indices, d),
                reference.ffi_grad_values(grad_out, x, indices))

    whole = all_three()  # default budget: a single chunk at this size
    budget = batch * k * 50
    monkeypatch.setattr(reference, "WORK_ELEMENTS", budget)
    with MaxTensorSize() as probe:
        chunked = all_three()
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # forward and grad_values each run one bmm per chunk: 20 chunks of 50 labels
    assert probe.calls.count("bmm") == 2 * math.ceil(num_labels / 50)
    # nothing bigger than the budget or the op's own inputs/outputs: no [B, L, k], no [L, d]
    allowed = max(budget, batch * num_labels, num_labels * k, batch * d)
    assert probe.max_numel <= allowed < min(batch * num_labels * k, num_labels * d)


def test_label_chunk_respects_budget():
    for k, batch in [(32, 256), (128, 1024), (13, 7), (1, 1)]:
        lc = reference.label_chunk(k, batch)
        assert lc >= 1 and lc * k * batch <= reference.WORK_ELEMENTS


def test_empty_label_range():
    x = torch.randn(3, 8)
    out = fixed_fan_in(x, torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int16))
    assert out.shape == (3, 0)


def test_bad_arguments():
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"values \[L, k\]"):
        fixed_fan_in(x, torch.zeros(5, 4), torch.zeros(5, 3, dtype=torch.int16))
    with pytest.raises(ValueError, match="integer indices"):
        fixed_fan_in(x, torch.zeros(5, 4), torch.zeros(5, 4))


# --- the backend table ---------------------------------------------------------------------


@pytest.fixture
def backends(monkeypatch):
    """A private table holding only the reference, so backends registered by a test vanish
    after it (and the compiled ones do not outrank the test's own)."""
    monkeypatch.setattr(ops, "_BACKENDS", {"reference": ops._BACKENDS["reference"]})
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    return ops._BACKENDS


def spy_backend(name, calls, **kwargs):
    def wrap(fn, what):
        def run(*args):
            calls.append((name, what))
            return fn(*args)
        return run

    return register_backend(name, wrap(reference.ffi_forward, "forward"),
                            wrap(reference.ffi_grad_input, "grad_input"),
                            wrap(reference.ffi_grad_values, "grad_values"), **kwargs)


def small_problem():
    x = torch.randn(3, 8, requires_grad=True)
    values = torch.randn(5, 4, requires_grad=True)
    return x, values, random_indices(5, 8, 4, torch.int16)


def test_reference_is_the_fallback_on_cpu(backends):
    assert "reference" in list_backends()
    assert select_backend(torch.randn(2, 3)) == "reference"


def test_new_backend_is_one_registration(backends):
    calls = []
    spy_backend("fast", calls)  # default priority beats the reference fallback
    x, values, indices = small_problem()
    assert select_backend(x) == "fast"
    fixed_fan_in(x, values, indices).sum().backward()
    assert calls == [("fast", "forward"), ("fast", "grad_input"), ("fast", "grad_values")]


def test_unavailable_backend_is_skipped_and_cannot_be_forced(backends):
    spy_backend("cuda-only", [], available=lambda x: x.is_cuda, priority=10)
    x, values, indices = small_problem()
    assert select_backend(x) != "cuda-only"
    with pytest.raises(ConfigError, match="cuda-only.*cannot run"):
        fixed_fan_in(x, values, indices, backend="cuda-only")


def test_forcing_a_backend(backends, monkeypatch):
    calls = []
    spy_backend("fast", calls)
    x, values, indices = small_problem()
    with use_backend("reference"):
        assert select_backend(x) == "reference"
        assert select_backend(x, backend="fast") == "fast"  # the argument beats the context
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert select_backend(x) == "reference"
    with use_backend("fast"):
        assert select_backend(x) == "fast"  # the context beats the environment
    monkeypatch.setenv(ops.ENV_VAR, "nope")
    with pytest.raises(ConfigError, match="unknown fixed fan-in backend 'nope'"):
        fixed_fan_in(x, values, indices)
    with pytest.raises(ConfigError, match="unknown fixed fan-in backend 'triton'"):
        with use_backend("triton"):
            pass


def test_only_requested_gradients_are_computed(backends):
    calls = []
    spy_backend("fast", calls)
    x, values, indices = small_problem()
    fixed_fan_in(x, values.detach(), indices).sum().backward()
    assert calls == [("fast", "forward"), ("fast", "grad_input")]
    assert x.grad is not None and values.grad is None
