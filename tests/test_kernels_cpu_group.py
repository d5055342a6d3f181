"""The compiled group fan-in kernels (``bench.kernels.cpu_group``) against the torch reference
(``bench.kernels.group_fan_in``) and against ``ffi``'s reference with each group's ids repeated
per label: forward, grad wrt input, grad wrt values, on ragged shapes (labels not a multiple of
g, batch not a multiple of the 16-float vectors or of the 12-row blocks, k not a power of two),
g ∈ {1, 3, 8, 32, 300}, several 256-label super-chunks, int16/int32/int64 ids, float32/bfloat16, one and two threads."""

from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from bench.kernels import cpu_group, group_fan_in as torch_group, reference, use_backend
from bench.kernels.group_fan_in import group_fan_in, select_group_backend
from helpers import assert_kernel_close as check

pytestmark = pytest.mark.skipif(cpu_group.library() is None,
                                reason="no C compiler: the compiled group backend is unavailable")

SHAPES = [  # (B, d, L, k, g)
    (7, 37, 1003, 13, 8),  # ragged last group (3 labels), 7 rows: only 4- and 1-row blocks
    (130, 64, 45, 5, 3),  # 130 = 10·12 + 4 + 6·1 rows, 16-column tail of an 8-column B tail
    (29, 50, 97, 20, 32),  # one ragged group of 1 label
    (33, 40, 70, 7, 1),  # ffi
    (18, 300, 200, 33, 32),  # k = 33: a one-row tail in every block of ids
    (21, 100, 1500, 16, 32),  # 6 super-chunks of 8 groups (the backward's unit), the last one ragged
    (20, 64, 700, 6, 300),  # g > 256: one group per super-chunk
]


def group_ids(num_groups, in_features, fan_in, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(in_features, generator=gen)[:fan_in] for _ in range(num_groups)]).to(dtype)


def operands(shape, dtype, index_dtype):
    batch, d, num_labels, k, g = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d, generator=gen).to(dtype)
    values = torch.randn(num_labels, k, generator=gen).to(dtype)
    grad_out = torch.randn(batch, num_labels, generator=gen).to(dtype)
    return x, values, grad_out, group_ids(-(-num_labels // g), d, k, index_dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_and_ffi_reference(shape, index_dtype, dtype, threads):
    x, values, grad_out, ids = operands(shape, dtype, index_dtype)
    g, d = shape[4], shape[1]
    rows = ids.repeat_interleave(g, dim=0)[: values.shape[0]]  # [L, k]: the equivalent ffi layer
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = cpu_group.group_forward(x, values, ids, g)
        grad_x, grad_v = cpu_group.group_grads(grad_out, x, values, ids, g)
    finally:
        torch.set_num_threads(before)
    check(out, torch_group.group_forward(x, values, ids, g), dtype)
    want_x, want_v = torch_group.group_grads(grad_out, x, values, ids, g)
    check(grad_x, want_x, dtype)
    check(grad_v, want_v, dtype)
    check(out, reference.ffi_forward(x, values, rows), dtype)
    check(grad_x, reference.ffi_grad_input(grad_out, values, rows, d), dtype)
    check(grad_v, reference.ffi_grad_values(grad_out, x, rows), dtype)


def test_one_gradient_at_a_time():
    x, values, grad_out, ids = operands(SHAPES[1], torch.float32, torch.int16)
    both = cpu_group.group_grads(grad_out, x, values, ids, 3)
    only_x = cpu_group.group_grads(grad_out, x, values, ids, 3, want_values=False)
    only_v = cpu_group.group_grads(grad_out, x, values, ids, 3, want_x=False)
    assert only_x[1] is None and only_v[0] is None
    torch.testing.assert_close(only_x[0], both[0])
    torch.testing.assert_close(only_v[1], both[1])


def test_selected_for_cpu_tensors_and_autograd_matches_reference():
    x, values, grad_out, ids = operands(SHAPES[0], torch.float32, torch.int16)
    assert select_group_backend(x, values) == "cpu"
    assert select_group_backend(x.double(), values.double()) == "reference"  # gradcheck stays exact
    with use_backend("reference"):
        assert select_group_backend(x, values) == "reference"
    got = [t.clone().requires_grad_() for t in (x, values)]
    group_fan_in(*got, ids, 8).backward(grad_out)
    want = [t.clone().requires_grad_() for t in (x, values)]
    group_fan_in(*want, ids, 8, backend="reference").backward(grad_out)
    torch.testing.assert_close(got[0].grad, want[0].grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[1].grad, want[1].grad, rtol=1e-5, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Input #.* is not a double precision")
def test_gradcheck_through_the_compiled_kernels():
    """Finite differences in float32 (the kernels' precision) on a ragged layer: the analytic
    gradients of the compiled backward match the compiled forward."""
    x, values, _, ids = operands((5, 12, 10, 3, 4), torch.float32, torch.int16)
    x.requires_grad_(), values.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, v: group_fan_in(a, v, ids, 4, backend="cpu"), (x, values),
                                    eps=1e-2, atol=1e-2, rtol=1e-2)


def test_forcing_cpu_on_float64_fails_clearly():
    with pytest.raises(ConfigError, match="'cpu' cannot run"):
        select_group_backend(torch.randn(2, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64), "cpu")


def test_empty_batch_and_labels():
    x, values, ids = torch.randn(0, 6), torch.randn(5, 3), group_ids(2, 6, 3, torch.int16)
    assert cpu_group.group_forward(x, values, ids, 4).shape == (0, 5)
    grad_x, grad_v = cpu_group.group_grads(torch.zeros(0, 5), x, values, ids, 4)
    assert grad_x.shape == (0, 6) and grad_v.shape == (5, 3) and grad_v.abs().sum() == 0
    assert cpu_group.group_forward(torch.randn(4, 6), torch.zeros(0, 3), ids[:0], 4).shape == (4, 0)


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(cpu_group.native.CACHE_ENV, str(tmp_path))
    cpu_group.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="group fan-in CPU backend unavailable.*reference"):
            assert select_group_backend(torch.randn(2, 3), torch.randn(4, 2)) == "reference"
    finally:
        monkeypatch.undo()
        cpu_group.library.cache_clear()
    assert cpu_group.library() is not None
