"""`dense`: the full ``[L, d]`` linear output layer — the baseline every sparse layer is measured against."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.classifiers.base import Classifier, dense_memory_bytes, float_dtype, register_classifier


class DenseClassifier(Classifier):
    def __init__(self, in_features: int, num_labels: int, seed: int | None = None,
                 dtype: torch.dtype | str = torch.float32):
        super().__init__()
        dtype = float_dtype("dense", dtype)
        self.in_features, self.num_labels = in_features, num_labels
        self.weight = nn.Parameter(torch.empty(num_labels, in_features))  # [L, d]
        self.bias = nn.Parameter(torch.zeros(num_labels))  # [L]
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default scale
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
        if dtype != torch.float32:  # drawn in float32 above: the same initial weights, rounded
            self.to(dtype)

    def logits(self, h, lo, hi):
        # h in the weight's dtype (a no-op when they agree; autocast recasts both anyway)
        return F.linear(h.to(self.weight.dtype), self.weight[lo:hi], self.bias[lo:hi])

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots)


@register_classifier("dense")
def dense(in_features: int, num_labels: int, seed: int | None = None,
          dtype: torch.dtype | str = torch.float32) -> DenseClassifier:
    return DenseClassifier(in_features, num_labels, seed=seed, dtype=dtype)
