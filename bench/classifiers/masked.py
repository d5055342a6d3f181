"""`masked`: a dense ``[L, d]`` weight times a fixed unstructured random mask — sparsity as
most DST code simulates it. It saves no memory: weight, gradient and optimiser state stay
dense, and the mask adds ``L·d`` bytes.

Off-mask weights are zero at init and their gradient is zeroed by a hook on the weight slice
each ``logits`` call uses, so they stay exactly zero under SGD (momentum, weight decay) and
AdamW: their gradient, momentum and Adam moments are all zero, and weight decay scales zero.
The hook is attached per call rather than once to the parameter, so it survives
``copy.deepcopy`` and reloading, and it reads the current mask (DST may rewire it).
``apply_mask_`` re-zeroes off-mask weights after code that writes the weight directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.classifiers.base import (Classifier, dense_memory_bytes, float_dtype, register_classifier,
                                   zero_optimizer_state)
from bench.errors import ConfigError

MASK_CHUNK_ELEMENTS = 1 << 24  # random keys [Lc, d] drawn at a time (64 MiB float32)


class MaskedClassifier(Classifier):
    def __init__(self, in_features: int, num_labels: int, density: float, seed: int = 0,
                 dtype: torch.dtype | str = torch.float32):
        super().__init__()
        dtype = float_dtype("masked", dtype)
        try:
            density = float(density)
        except (TypeError, ValueError):
            raise ConfigError(f"masked classifier: 'density' must be a number in (0, 1], got {density!r}") from None
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
        self.density = int(mask.sum()) / mask.numel()  # realised density (Bernoulli draw)
        # nn.Linear's scale with the effective fan-in: each label sees about density·d inputs
        bound = 1.0 / math.sqrt(max(1.0, density * in_features))
        weight = torch.empty(num_labels, in_features).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight.mul_(mask))  # [L, d], exactly zero off-mask
        self.bias = nn.Parameter(torch.zeros(num_labels))  # [L]
        if dtype != torch.float32:  # drawn in float32 above: the same initial weights, rounded (zero stays zero)
            self.to(dtype)

    def logits(self, h, lo, hi):
        weight = self.weight[lo:hi]  # [Lc, d] view
        if weight.requires_grad:
            mask = self.mask[lo:hi]
            weight.register_hook(lambda grad: grad * mask)  # off-mask weights get no gradient
        return F.linear(h.to(weight.dtype), weight, self.bias[lo:hi])  # h.to: a no-op when the dtypes agree

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero every off-mask weight (a safety net for code that edits the weight directly)."""
        self.weight.mul_(self.mask)

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.mask.numel() * self.mask.element_size())

    def connectivity(self) -> "MaskedConnectivity":
        return MaskedConnectivity(self)


class MaskedConnectivity:
    """DST protocol (``bench.classifiers.base``) of a masked layer: rows are labels, slots are
    all d inputs (``in_use`` = the mask)."""

    def __init__(self, clf: MaskedClassifier):
        self.clf = clf
        self.num_labels, self.in_features, self.param = clf.num_labels, clf.in_features, clf.weight

    def active(self, lo: int, hi: int) -> torch.Tensor:
        return self.clf.mask[lo:hi].clone()

    def slots(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.clf.mask[lo:hi]
        return (self.clf.weight[lo:hi].detach().abs() * mask).float(), mask

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer, keep_state: bool = False) -> None:
        if not torch.equal(drop.sum(1), grow.sum(1)):
            raise AssertionError("rewire must grow exactly as many inputs per label as it drops")
        mask, weight = self.clf.mask[lo:hi], self.clf.weight[lo:hi]
        mask[drop] = False
        weight[drop] = 0.0
        mask[grow] = True
        weight[grow] = init
        # a dropped weight must stay exactly zero, so its state goes even with keep_state; a
        # grown input has no slot whose state it could continue with (its own is zero)
        zero_optimizer_state(optimizer, self.param, drop if keep_state else drop | grow, slice(lo, hi))


@register_classifier("masked")
def masked(in_features: int, num_labels: int, density: float = 0.0, fan_in: int = 32, seed: int = 0,
           dtype: torch.dtype | str = torch.float32) -> MaskedClassifier:
    """``density = 0``: ``fan_in / in_features`` (capped at 1), the sparsity of an ffi layer of
    the same fan-in."""
    if density == 0:
        density = min(1.0, fan_in / in_features)
    return MaskedClassifier(in_features, num_labels, density=density, seed=seed, dtype=dtype)
