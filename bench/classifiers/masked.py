"""`masked`: a dense ``[L, d]`` weight times a fixed unstructured random mask — sparsity as
most DST code simulates it. The mask multiplies the weight in the forward pass, so the
gradient is masked by the chain rule and off-mask weights (zero at init) stay exactly zero
under SGD/momentum/weight decay and AdamW. It saves no memory: weight, gradient and optimiser
state stay dense, and the mask adds ``L·d`` bytes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.classifiers.base import Classifier, dense_memory_bytes
from bench.errors import ConfigError
from bench.registry import register_classifier

MASK_CHUNK_ELEMENTS = 1 << 24  # rows of random keys drawn at a time while building the mask


class MaskedClassifier(Classifier):
    def __init__(self, in_features: int, num_labels: int, density: float, seed: int = 0):
        super().__init__()
        if not 0.0 < density <= 1.0:
            raise ConfigError(f"masked classifier: 'density' must be in (0, 1], got {density}")
        self.in_features, self.num_labels = in_features, num_labels
        generator = torch.Generator().manual_seed(seed)
        mask = torch.empty(num_labels, in_features, dtype=torch.bool)  # [L, d]
        rows = max(1, MASK_CHUNK_ELEMENTS // in_features)
        for lo in range(0, num_labels, rows):
            hi = min(lo + rows, num_labels)
            mask[lo:hi] = torch.rand(hi - lo, in_features, generator=generator) < density
        self.register_buffer("mask", mask)
        self.density = float(mask.float().mean())  # realised density (Bernoulli draw)
        bound = 1.0 / math.sqrt(max(1.0, density * in_features))  # scale by the effective fan-in
        weight = torch.empty(num_labels, in_features).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight * mask)  # [L, d], exactly zero off-mask
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def logits(self, h, lo, hi):
        return F.linear(h, self.weight[lo:hi] * self.mask[lo:hi], self.bias[lo:hi])

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero every off-mask weight (a safety net for code that edits the weight directly)."""
        self.weight.mul_(self.mask)

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.mask.numel() * self.mask.element_size())


@register_classifier("masked")
def masked(in_features: int, num_labels: int, density: float = 0.125, seed: int = 0) -> MaskedClassifier:
    return MaskedClassifier(in_features, num_labels, density=density, seed=seed)
