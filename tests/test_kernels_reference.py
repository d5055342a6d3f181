"""The reference fixed fan-in op against a masked dense layer with the same weights."""

import pytest
import torch

from bench.classifiers.fixed_fan_in import random_fan_in_indices
from bench.kernels import fixed_fan_in, reference
from bench.kernels.ops import select_backend
from bench.errors import ConfigError


def _dense_weight(values, indices, d):
    return torch.zeros(values.shape[0], d, dtype=torch.float32).scatter(1, indices.long(), values.float())


def _case(batch, d, num_labels, k, dtype, index_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    indices = random_fan_in_indices(num_labels, d, k, g).to(index_dtype)
    values = torch.randn(num_labels, k, generator=g).to(dtype)
    x = torch.randn(batch, d, generator=g).to(dtype)
    return x, values, indices


@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("num_labels,k", [(1000, 7), (37, 5), (1, 3)])
def test_forward_and_gradients_match_masked_dense_float32(num_labels, k, index_dtype, monkeypatch):
    monkeypatch.setattr(reference, "WORK_ELEMENTS", 13 * k * 9)  # several ragged label chunks
    x, values, indices = _case(9, 23, num_labels, k, torch.float32, index_dtype)
    x.requires_grad_(True)
    values.requires_grad_(True)
    out = fixed_fan_in(x, values, indices)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)

    xr = x.detach().clone().requires_grad_(True)
    weight = _dense_weight(values.detach(), indices, 23).requires_grad_(True)
    ref = xr @ weight.t()
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-5)
    # the dense weight's gradient read at the connections is the values' gradient
    torch.testing.assert_close(values.grad, weight.grad.gather(1, indices.long()), rtol=1e-5, atol=1e-5)


def test_bfloat16_matches_float32_math():
    x, values, indices = _case(16, 40, 301, 12, torch.bfloat16, torch.int16, seed=3)
    x.requires_grad_(True)
    values.requires_grad_(True)
    out = fixed_fan_in(x, values, indices)
    assert out.dtype == torch.bfloat16
    grad_out = torch.randn(out.shape).to(torch.bfloat16)
    out.backward(grad_out)
    assert x.grad.dtype == torch.bfloat16 and values.grad.dtype == torch.bfloat16

    xf = x.detach().float().requires_grad_(True)
    weight = _dense_weight(values.detach(), indices, 40).requires_grad_(True)
    ref = xf @ weight.t()
    ref.backward(grad_out.float())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(x.grad.float(), xf.grad, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(values.grad.float(), weight.grad.gather(1, indices.long()), rtol=2e-2, atol=5e-2)


def test_chunk_budget_bounds_work_and_does_not_change_results(monkeypatch):
    x, values, indices = _case(8, 30, 500, 6, torch.float32, torch.int16)
    full = reference.ffi_forward(x, values, indices)
    seen = []
    real_bmm = torch.bmm

    def spy_bmm(a, b):
        seen.append(max(a.numel(), b.numel()))
        return real_bmm(a, b)

    monkeypatch.setattr(reference, "WORK_ELEMENTS", 6 * 8 * 11)
    monkeypatch.setattr(torch, "bmm", spy_bmm)
    chunked = reference.ffi_forward(x, values, indices)
    torch.testing.assert_close(chunked, full)
    assert len(seen) == 46 and max(seen) <= 6 * 8 * 11  # ceil(500 / 11) chunks, each within budget


def test_backend_selection():
    x = torch.zeros(2, 3)
    assert select_backend(x) == "reference"
    with pytest.raises(ConfigError, match="unknown fixed fan-in backend 'cuda-magic'"):
        select_backend(x, "cuda-magic")


def test_shape_errors():
    with pytest.raises(ValueError, match="fixed_fan_in expects"):
        fixed_fan_in(torch.zeros(2, 3), torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.int16))
