"""The Triton kernels against the reference, on CPU under ``TRITON_INTERPRET=1``.

The interpreter must be switched on before triton is imported, so the checks run in a fresh
interpreter (a subprocess) whatever this process has imported already. Shapes are tiny: the
interpreter executes every program instance in Python. Ragged L and B (not multiples of the
16-wide blocks), k not a power of two, float32/bfloat16 values, int16/int32 ids.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

CHECKS = textwrap.dedent("""
    import torch
    from bench.kernels import reference, triton_ffi

    def close(got, want, dtype, what):
        assert got.dtype == dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        scale = max(want.float().abs().max().item(), 1.0)
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol * scale, msg=what)

    cases = 0
    for batch, d, num_labels, k in [(5, 23, 37, 7), (17, 40, 20, 3), (3, 9, 1, 5)]:
        for dtype in (torch.float32, torch.bfloat16):
            for index_dtype in (torch.int16, torch.int32):
                g = torch.Generator().manual_seed(batch + k)
                x = torch.randn(batch, d, generator=g).to(dtype)
                values = torch.randn(num_labels, k, generator=g).to(dtype)
                grad_out = torch.randn(batch, num_labels, generator=g).to(dtype)
                indices = torch.rand(num_labels, d, generator=g).argsort(1)[:, :k].to(index_dtype)
                what = f"B={batch} d={d} L={num_labels} k={k} {dtype} {index_dtype}"
                close(triton_ffi.ffi_forward(x, values, indices), reference.ffi_forward(x, values, indices),
                      dtype, "forward " + what)
                close(triton_ffi.ffi_grad_values(grad_out, x, indices),
                      reference.ffi_grad_values(grad_out, x, indices), dtype, "grad_values " + what)
                close(triton_ffi.ffi_grad_input(grad_out, values, indices, d),
                      reference.ffi_grad_input(grad_out, values, indices, d), dtype, "grad_input " + what)
                cases += 1
    print("ok", cases)
""")


# The fused loss step and the score-and-select against the torch references: BCE and squared
# hinge, with and without bias, ffi (group size 1) and groups of 3 with a ragged last group,
# rows without labels; top-k on scores full of ties, NaN and ±0, against today's ranking.
FUSED_CHECKS = textwrap.dedent("""
    import torch
    from bench.kernels import fused_loss, group_fan_in, reference, triton_fused
    from bench.ranking import select_chunk

    cases = 0
    g = torch.Generator().manual_seed(0)
    for batch, d, num_labels, k, group in [(5, 23, 37, 7, 1), (17, 30, 41, 4, 3), (2, 6, 3, 2, 1)]:
        x = torch.randn(batch, d, generator=g)
        values = torch.randn(num_labels, k, generator=g)
        bias = torch.randn(num_labels, generator=g)
        ids = torch.rand(-(-num_labels // group), d, generator=g).argsort(1)[:, :k].to(torch.int16)
        counts = torch.randint(0, 4, (batch,), generator=g)
        counts[0] = 0
        counts[-1] = 40  # a long unsorted row with repeats: the kernel's binary search past 5 steps
        indptr = torch.zeros(batch + 1, dtype=torch.int64)
        indptr[1:] = counts.cumsum(0)
        targets = fused_loss.Targets(indptr, torch.randint(0, num_labels, (int(indptr[-1]),), generator=g))
        for loss in ("bce", "squared_hinge"):
            for b in (bias, None):
                for want in ((True, True, True), (True, False, False), (False, True, True)):
                    got = triton_fused.loss_grads(x, values, ids, group, b, targets, fused_loss.loss_id(loss), 0.3,
                                                  want)
                    ref = (fused_loss.reference_ffi_loss(x, values, ids, b, targets, loss, 0.3, want) if group == 1
                           else fused_loss.reference_group_loss(x, values, ids, group, b, targets, loss, 0.3, want))
                    for name, a, w in zip(("loss", "grad_x", "grad_values", "grad_bias"), got, ref):
                        assert (a is None) == (w is None), (name, want)
                        if w is not None:
                            torch.testing.assert_close(a, w.float(), rtol=1e-5, atol=1e-5, msg=f"{name} {loss}")
                    cases += 1
        scores = (group_fan_in.group_forward(x, values, ids, group) if group > 1
                  else reference.ffi_forward(x, values, ids)) + bias
        for top in (1, 5, triton_fused.MAX_TOPK):
            got = triton_fused.topk(x, values, ids, group, bias, top)
            want = select_chunk(scores, min(top, num_labels))
            torch.testing.assert_close(got[0], want[0])
            assert torch.equal(got[1], want[1]), (got[1], want[1])
            cases += 1

    # bfloat16 operands (as autocast hands them over): float32 math on the rounded values
    x, values, bias = (t.to(torch.bfloat16) for t in (torch.randn(6, 20, generator=g), torch.randn(33, 5, generator=g),
                                                        torch.randn(33, generator=g)))
    ids = torch.rand(33, 20, generator=g).argsort(1)[:, :5].to(torch.int16)
    targets = fused_loss.Targets(torch.tensor([0, 2, 2, 5, 6, 6, 9]), torch.tensor([3, 30, 1, 2, 32, 0, 8, 8, 9]))
    got = triton_fused.loss_grads(x, values, ids, 1, bias, targets, fused_loss.loss_id("squared_hinge"), 0.5)
    ref = fused_loss.reference_ffi_loss(x.float(), values.float(), ids, bias.float(), targets, "squared_hinge", 0.5)
    for a, w in zip(got, ref):
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-4)
    got = triton_fused.topk(x, values, ids, 1, bias, 4)
    want = select_chunk(reference.ffi_forward(x.float(), values.float(), ids) + bias.float(), 4)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])
    cases += 1

    # ties everywhere (small integer scores), NaN and -0 biases: the label-id tie-break
    x = torch.randint(-1, 2, (9, 8), generator=g).float()
    values = torch.randint(-1, 2, (45, 3), generator=g).float()
    ids = torch.rand(45, 8, generator=g).argsort(1)[:, :3].to(torch.int32)
    bias = torch.zeros(45)
    bias[[3, 20, 44]] = float("nan")
    bias[[5, 6]] = -0.0
    bias[[7, 30]] = float("-inf")
    scores = reference.ffi_forward(x, values, ids) + bias
    for top in (1, 4, triton_fused.MAX_TOPK):
        got = triton_fused.topk(x, values, ids, 1, bias, top)
        want = select_chunk(scores, top)
        torch.testing.assert_close(got[0], want[0], equal_nan=True)
        assert torch.equal(got[1], want[1]), (top, got[1], want[1])
        cases += 1
    print("ok", cases)
""")

# The classifiers take the Triton path where ``kernel_backend`` says "triton" (CUDA): forced
# here on CPU tensors in the interpreter, against each classifier's own torch path.
WIRING_CHECKS = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, "tests")
    from helpers import random_targets, small_classifier
    from bench import losses
    from bench.classifiers.base import Classifier
    from bench.kernels import fused_loss

    fused_loss.kernel_backend = lambda *args, **kwargs: "triton"
    cases = 0
    for name in ("ffi", "ffi-group", "head-tail"):
        for loss in ("bce", "squared_hinge"):
            clf = small_classifier(name, 16, 50)
            h = torch.randn(6, 16, requires_grad=True)
            targets = random_targets(6, 50, seed=1)
            criterion = losses.create(loss)
            fused = clf.loss(h, targets, criterion=criterion)
            fused.backward()
            got = [h.grad.clone()] + [p.grad.clone() for p in clf.parameters()]
            h.grad = None
            clf.zero_grad()
            plain = clf.loss(h, targets, fused=False, criterion=criterion)
            plain.backward()
            want = [h.grad] + [p.grad for p in clf.parameters()]
            torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
            for a, w in zip(got, want):
                torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-5)
            cases += 1
        with torch.no_grad():
            h = torch.randn(7, 16)
            got, want = clf.topk(h, 5), Classifier.topk(clf, h, 5)
        torch.testing.assert_close(got[0], want[0])
        assert torch.equal(got[1], want[1]), name
        cases += 1
    print("ok", cases)
""")


def _interpret(script: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    return run.stdout


def test_triton_kernels_match_reference_in_the_interpreter():
    assert _interpret(CHECKS).split()[-2:] == ["ok", "12"]


def test_triton_fused_loss_and_topk_match_the_references_in_the_interpreter():
    assert _interpret(FUSED_CHECKS).split()[-2:] == ["ok", str(3 * 2 * 2 * 3 + 3 * 3 + 1 + 3)]


def test_classifiers_take_the_triton_paths_where_they_run():
    assert _interpret(WIRING_CHECKS).split()[-2:] == ["ok", "9"]
