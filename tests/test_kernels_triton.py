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


def test_triton_kernels_match_reference_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", CHECKS], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert run.stdout.split()[-2:] == ["ok", "12"]
