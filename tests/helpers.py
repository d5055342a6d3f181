"""Shared test helpers (imported by test modules; pytest puts tests/ on sys.path)."""

import torch
from torch.overrides import TorchFunctionMode


class MaxTensorSize(TorchFunctionMode):
    """Records the largest tensor any torch call creates while active (memory-bound checks)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def assert_kernel_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """A compiled kernel's result against the reference: float32 tight; bfloat16 (one rounding
    of inputs and outputs) relative to the largest entry."""
    assert got.dtype == dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    else:
        scale = want.float().abs().max().item()
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2 * scale)
