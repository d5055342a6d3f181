"""`dense-bottleneck`: a low-rank dense output layer ``d → r → L`` — the "same memory, dense"
baseline of the paper. Scores are ``(h · Dᵀ) · Uᵀ + b`` with ``D [r, d]`` (shared by every
label) and ``U [L, r]``. The rank is given (``rank``) or chosen as the largest ``r`` whose
classifier memory (parameters + gradients + optimiser state, at ``optimizer_slots``) does not
exceed that of an ``ffi`` layer of fan-in ``match_fan_in`` (default: ``fan_in``) on the same
``d`` and ``L``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from bench.classifiers.base import Classifier, dense_memory_bytes, float_dtype, register_classifier
from bench.errors import ConfigError

FLOAT_BYTES = 4  # float32 parameters


def ffi_memory_total(in_features: int, num_labels: int, fan_in: int, optimizer_slots: int) -> int:
    """Analytic total bytes of a float32 ``ffi`` layer (values [L, k] + bias [L] with gradients
    and optimiser slots, indices [L, k] int16/int32) — without building it."""
    index_bytes = 2 if in_features < 32768 else 4
    params = (num_labels * fan_in + num_labels) * FLOAT_BYTES
    return params * (2 + optimizer_slots) + num_labels * fan_in * index_bytes


def matching_rank(in_features: int, num_labels: int, fan_in: int, optimizer_slots: int = 1) -> int:
    """The largest rank whose bottleneck memory fits the ``ffi`` budget (at least 1):
    ``(r·d + L·r + L) · 4 · (2 + slots) <= ffi_memory_total``."""
    per_param = FLOAT_BYTES * (2 + optimizer_slots)
    budget = ffi_memory_total(in_features, num_labels, fan_in, optimizer_slots) // per_param - num_labels
    return max(1, budget // (in_features + num_labels))


class DenseBottleneckClassifier(Classifier):
    # ``down [r, d]`` is shared by every label: the fused loss must not slice it by label,
    # even when r happens to equal L.
    label_independent = ("down",)

    def __init__(self, in_features: int, num_labels: int, rank: int = 0, match_fan_in: int = 32,
                 optimizer_slots: int = 1, seed: int | None = None, dtype: torch.dtype | str = torch.float32):
        super().__init__()
        dtype = float_dtype("dense-bottleneck", dtype)
        for name, value in (("rank", rank), ("match_fan_in", match_fan_in), ("optimizer_slots", optimizer_slots)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ConfigError(f"dense-bottleneck classifier: {name!r} must be an integer >= 0, got {value!r}")
        if not rank and not match_fan_in:
            raise ConfigError("dense-bottleneck classifier: give 'rank' or 'match_fan_in' (both are 0)")
        self.in_features, self.num_labels = in_features, num_labels
        self.rank = int(rank) or matching_rank(in_features, num_labels, int(match_fan_in), int(optimizer_slots))
        self.match_fan_in = 0 if rank else int(match_fan_in)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.down = nn.Parameter(torch.empty(self.rank, in_features))  # [r, d]
        self.up = nn.Parameter(torch.empty(num_labels, self.rank))  # [L, r]
        self.bias = nn.Parameter(torch.zeros(num_labels))  # [L]
        with torch.no_grad():  # nn.Linear's scale for each factor
            self.down.uniform_(-1 / math.sqrt(in_features), 1 / math.sqrt(in_features), generator=generator)
            self.up.uniform_(-1 / math.sqrt(self.rank), 1 / math.sqrt(self.rank), generator=generator)
        if dtype != torch.float32:  # drawn in float32 above: the same initial weights, rounded
            self.to(dtype)

    def logits(self, h, lo, hi):
        down = F.linear(h.to(self.down.dtype), self.down)  # [B, r]
        return F.linear(down, self.up[lo:hi], self.bias[lo:hi])  # [B, hi - lo]

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, rank={self.rank}, num_labels={self.num_labels}"


@register_classifier("dense-bottleneck")
def dense_bottleneck(in_features: int, num_labels: int, rank: int = 0, match_fan_in: int = 0, fan_in: int = 32,
                     optimizer_slots: int = 1, seed: int | None = None,
                     dtype: torch.dtype | str = torch.float32) -> DenseBottleneckClassifier:
    """``match_fan_in = 0``: match the memory of ffi at ``fan_in``."""
    return DenseBottleneckClassifier(in_features, num_labels, rank=rank, match_fan_in=match_fan_in or fan_in,
                                     optimizer_slots=optimizer_slots, seed=seed, dtype=dtype)
