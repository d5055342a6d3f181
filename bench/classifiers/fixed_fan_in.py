"""`ffi`: the semi-structured fixed fan-in layer. Every label keeps exactly ``k`` distinct
inputs: values ``[L, k]`` and indices ``[L, k]`` (int16 when d < 32768), so memory and FLOPs
scale with ``L·k`` instead of ``L·d``. Scores go through the one ``fixed_fan_in`` op."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.classifiers.base import Classifier
from bench.errors import ConfigError
from bench.kernels import fixed_fan_in
from bench.registry import register_classifier

INIT_CHUNK_ELEMENTS = 1 << 22  # random keys [Lc, d] drawn at a time: never a dense [L, d]


def index_dtype(in_features: int) -> torch.dtype:
    return torch.int16 if in_features < 32768 else torch.int32


def random_fan_in_indices(num_labels: int, in_features: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``[L, k]`` sorted, distinct input ids per label, drawn uniformly, label chunk by chunk."""
    out = torch.empty(num_labels, fan_in, dtype=index_dtype(in_features))
    rows = max(1, INIT_CHUNK_ELEMENTS // in_features)
    for lo in range(0, num_labels, rows):
        hi = min(lo + rows, num_labels)
        keys = torch.rand(hi - lo, in_features, generator=generator)  # [Lc, d]
        out[lo:hi] = keys.topk(fan_in, dim=1).indices.sort(dim=1).values.to(out.dtype)
    return out


class FixedFanInClassifier(Classifier):
    def __init__(self, in_features: int, num_labels: int, fan_in: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if not 1 <= fan_in <= in_features:
            raise ConfigError(f"ffi classifier: 'fan_in' must be in [1, {in_features}] (the input size d), got {fan_in}")
        self.in_features, self.num_labels, self.fan_in = in_features, num_labels, fan_in
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("indices", random_fan_in_indices(num_labels, in_features, fan_in, generator))
        bound = 1.0 / math.sqrt(fan_in)
        values = torch.empty(num_labels, fan_in).uniform_(-bound, bound, generator=generator)
        self.values = nn.Parameter(values.to(dtype))  # [L, k]
        self.bias = nn.Parameter(torch.zeros(num_labels, dtype=dtype))  # [L]

    def logits(self, h, lo, hi):
        return fixed_fan_in(h, self.values[lo:hi], self.indices[lo:hi]) + self.bias[lo:hi]

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        params = sum(p.numel() * p.element_size() for p in self.parameters())
        out = {
            "parameters": params,
            "gradients": params,
            "optimizer": params * optimizer_slots,
            "indices": self.indices.numel() * self.indices.element_size(),
        }
        out["total"] = sum(out.values())
        return out

    def check_connectivity(self) -> None:
        """Raise if any label lost the invariant: exactly k distinct inputs in [0, d)."""
        idx = self.indices.long()
        if idx.shape != (self.num_labels, self.fan_in):
            raise AssertionError(f"indices have shape {tuple(idx.shape)}, expected ({self.num_labels}, {self.fan_in})")
        bad = (idx < 0) | (idx >= self.in_features)
        if bad.any():
            raise AssertionError(f"label {int(bad.any(1).nonzero()[0])} has an input id outside [0, {self.in_features})")
        ordered = idx.sort(dim=1).values
        dup = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        if dup.any():
            raise AssertionError(f"label {int(dup.nonzero()[0])} has a repeated input id")

    def to_dense_weight(self) -> torch.Tensor:
        """The equivalent dense ``[L, d]`` weight — for tests on small layers only."""
        weight = torch.zeros(self.num_labels, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return weight.scatter(1, self.indices.long(), self.values.detach())


@register_classifier("ffi")
def ffi(in_features: int, num_labels: int, fan_in: int = 32, seed: int = 0,
        dtype: torch.dtype = torch.float32) -> FixedFanInClassifier:
    return FixedFanInClassifier(in_features, num_labels, fan_in=fan_in, seed=seed, dtype=dtype)
