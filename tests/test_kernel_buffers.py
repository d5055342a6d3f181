"""The compiled kernels' output cache: memory comes back only when nothing references it."""

from __future__ import annotations

import pytest
import torch

from bench.kernels import buffers, cpu, reference

pytestmark = pytest.mark.skipif(not buffers.enabled(), reason="this torch has no storage use count: no reuse")


@pytest.fixture(autouse=True)
def empty_cache():
    buffers.clear()
    yield
    buffers.clear()


def test_reused_once_the_previous_result_is_dropped():
    first = buffers.empty(4, 5)
    ptr = first.data_ptr()
    del first
    again = buffers.empty(4, 5)
    assert again.data_ptr() == ptr and again.shape == (4, 5) and again.is_contiguous()


@pytest.mark.parametrize("holder", ["tensor", "view", "storage", "saved_for_backward"])
def test_never_reused_while_referenced(holder):
    first = buffers.empty(6, 7)
    ptr = first.data_ptr()
    if holder == "view":
        kept = first[2:, 1:]
    elif holder == "storage":
        kept = first.untyped_storage()
    elif holder == "saved_for_backward":
        kept = first.normal_().requires_grad_().pow(2)  # the graph saves pow's input: first
    else:
        kept = first
    del first
    other = buffers.empty(6, 7)
    assert other.data_ptr() != ptr
    del kept


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv(buffers.ENV_VAR, "0")
    assert not buffers.enabled()
    buffers.empty(3, 3)
    buffers.empty(3, 3)
    assert not buffers._cache  # nothing kept: every call was a plain torch.empty


def test_shapes_are_kept_apart_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_BYTES", 2 * 10 * 10 * 4)  # room for two 10 × 10 buffers
    a = buffers.empty(10, 10)
    b = buffers.empty(10, 10)  # a is busy: a second buffer of the shape replaces it in the cache
    assert a.data_ptr() != b.data_ptr()
    del a, b
    buffers.empty(5, 20)
    buffers.empty(20, 5)  # third shape: the least recently used one goes
    assert list(buffers._cache) == [((5, 20), torch.float32), ((20, 5), torch.float32)]


def test_large_buffers_are_never_kept(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_BUFFER_BYTES", 90 * 4)  # 10 × 9 floats fit, 10 × 10 do not
    buffers.empty(10, 10)
    assert not buffers._cache
    buffers.empty(10, 9)
    assert list(buffers._cache) == [((10, 9), torch.float32)]


@pytest.mark.skipif(cpu.library() is None, reason="no C compiler: the CPU backend is unavailable")
def test_forward_results_stay_right_on_reused_memory():
    g = torch.Generator().manual_seed(0)
    x, values = torch.randn(9, 30, generator=g), torch.randn(300, 5, generator=g)
    indices = torch.randint(0, 30, (300, 5), generator=g, dtype=torch.int16)
    first = cpu.ffi_forward(x, values, indices)
    kept = first.clone()
    ptr = first.data_ptr()
    del first
    x2 = torch.randn(9, 30, generator=g)
    second = cpu.ffi_forward(x2, values, indices)
    assert second.data_ptr() == ptr  # the same memory, new contents
    torch.testing.assert_close(second, reference.ffi_forward(x2, values, indices), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept, reference.ffi_forward(x, values, indices), rtol=1e-5, atol=1e-5)
    third = cpu.ffi_forward(x, values, indices)  # second is alive: fresh memory, second untouched
    assert third.data_ptr() != second.data_ptr()
    torch.testing.assert_close(second, reference.ffi_forward(x2, values, indices), rtol=1e-5, atol=1e-5)
