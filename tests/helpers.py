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
