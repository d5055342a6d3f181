"""`ffi-group`: fixed fan-in whose labels share their inputs in groups of ``g`` (HASTE's
hardware-aware layout). Labels ``[i·g, (i+1)·g)`` form group ``i`` (the last one may be
ragged); each group keeps exactly ``k`` distinct inputs ``group_indices [ceil(L/g), k]``, each
label its own weights ``values [L, k]``. Index memory drops by ``g``; the forward gathers k
input columns per group, then a small batched dense product (``bench.kernels.group_fan_in``).

With ``g = 1`` it is ``ffi``; for any ``g`` it equals an ``ffi`` layer whose rows repeat their
group's indices (the tests check exactly that). Groups are contiguous label ids: to group
labels by cluster, number them so that each cluster's labels are consecutive.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from bench.classifiers.base import (Classifier, autocast_operands, dense_memory_bytes, float_dtype, refill_slots,
                                   register_classifier, zero_optimizer_state)
from bench import losses
from bench.classifiers.fixed_fan_in import (FixedFanInClassifier, kernel_loss, kernel_loss_scale, kernel_topk,
                                            random_fan_in_indices)
from bench.errors import ConfigError
from bench.kernels import fused_loss
from bench.kernels.group_fan_in import group_fan_in


class GroupFanInClassifier(Classifier):
    label_grouped = ("group_indices",)

    def __init__(self, in_features: int, num_labels: int, fan_in: int, group_size: int = 32, seed: int = 0,
                 dtype: torch.dtype | str = torch.float32):
        super().__init__()
        if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral) or not 1 <= fan_in <= in_features:
            raise ConfigError(f"ffi-group classifier: 'fan_in' must be an integer in [1, {in_features}] "
                              f"(the input size d = {in_features}), got {fan_in!r}")
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
            raise ConfigError(f"ffi-group classifier: 'group_size' must be a positive integer, got {group_size!r}")
        dtype = float_dtype("ffi-group", dtype)
        self.in_features, self.num_labels, self.fan_in = in_features, num_labels, int(fan_in)
        self.label_group_size = self.group_size = int(group_size)
        self.num_groups = -(-num_labels // self.group_size)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("group_indices",  # [G, k] int16/int32
                             random_fan_in_indices(self.num_groups, in_features, self.fan_in, generator))
        bound = 1.0 / math.sqrt(self.fan_in)
        values = torch.empty(num_labels, self.fan_in).uniform_(-bound, bound, generator=generator)
        self.values = nn.Parameter(values.to(dtype))  # [L, k]
        self.bias = nn.Parameter(torch.zeros(num_labels, dtype=dtype))  # [L]

    def logits(self, h, lo, hi):
        # whole groups covering [lo, hi) (at most two partial groups computed in excess). In the
        # fused loss, values and group_indices arrive sliced to a chunk that starts on a group
        # boundary and lo = 0, so the same arithmetic holds.
        g = self.group_size
        glo, ghi = lo // g, -(-hi // g)
        values = self.values[glo * g : min(ghi * g, self.values.shape[0])]  # [n, k]
        h, values = autocast_operands(h, values)  # unchanged without autocast
        scores = group_fan_in(h, values, self.group_indices[glo:ghi], g)  # [B, n]
        return scores[:, lo - glo * g : hi - glo * g] + self.bias[lo:hi]

    def loss(self, h, targets, fused=None, criterion=None):
        """``Classifier.loss``; fused, on the CPU backend, with a loss the kernels know, one
        compiled pass (``bench.kernels.fused_loss.group_loss``), as ``FixedFanInClassifier.loss``."""
        criterion = losses.DEFAULT if criterion is None else criterion
        name = kernel_loss(criterion)
        if (self.fused_loss if fused is None else fused) and name is not None \
                and type(self).logits is GroupFanInClassifier.logits:
            x, values = autocast_operands(h, self.values)  # as logits casts them
            if fused_loss.kernel_backend(x, values, self.bias, grouped=True) is not None:
                return fused_loss.group_loss(x, values, self.group_indices, self.group_size, self.bias, targets,
                                             name, kernel_loss_scale(criterion, h.shape[0], self.num_labels))
        return super().loss(h, targets, fused=fused, criterion=criterion)

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``Classifier.topk``; one score-and-select pass that never writes the scores to memory
        where a kernel runs it (``fixed_fan_in.kernel_topk``)."""
        if type(self).logits is GroupFanInClassifier.logits:
            found = kernel_topk(h, self.values, self.group_indices, self.group_size, self.bias, k)
            if found is not None:
                return found
        return super().topk(h, k)

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.group_indices.numel() * self.group_indices.element_size())

    def connectivity(self) -> "GroupFanInConnectivity":
        return GroupFanInConnectivity(self)

    def label_indices(self) -> torch.Tensor:
        """``[L, k]``: each label's input ids (its group's), the equivalent ffi layer's indices."""
        return self.group_indices.repeat_interleave(self.group_size, dim=0)[: self.num_labels]

    @torch.no_grad()
    def check_connectivity(self) -> None:
        """Every group has exactly k distinct inputs in [0, d) (ffi's check, rows = groups)."""
        FixedFanInClassifier.check_connectivity(_Rows(self.group_indices, self.num_groups, self.in_features,
                                                      self.fan_in))

    def to_dense_weight(self) -> torch.Tensor:
        """The equivalent dense ``[L, d]`` weight (small layers, tests only)."""
        weight = torch.zeros(self.num_labels, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return weight.scatter(1, self.label_indices().long(), self.values.detach())


class _Rows:
    """What ``FixedFanInClassifier.check_connectivity`` reads, for rows that are groups."""

    def __init__(self, indices, num_rows, in_features, fan_in):
        self.indices, self.num_labels, self.in_features, self.fan_in = indices, num_rows, in_features, fan_in


class GroupFanInConnectivity:
    """DST protocol (``bench.classifiers.base``) of an ffi-group layer: rows are groups. A
    group's shared inputs are pruned by the summed |w| of its labels, RigL scores an input by
    the summed |∂loss/∂w| of its labels, and a regrown input starts at ``init`` for every label
    of the group, with zero optimiser state. Works on anything with ``values [L, k]``,
    ``group_indices [G, k]``, ``group_size``, ``num_groups``, ``num_labels`` and ``in_features``."""

    GRAD_ELEMENTS = 1 << 22  # [labels, d] per-label gradient block in gradient_scores

    def __init__(self, clf):
        self.clf, self.g = clf, clf.group_size
        self.num_labels, self.in_features, self.param = clf.num_groups, clf.in_features, clf.values

    def _labels(self, lo: int, hi: int) -> tuple[int, int]:
        return lo * self.g, min(hi * self.g, self.clf.num_labels)

    def active(self, lo: int, hi: int) -> torch.Tensor:
        out = torch.zeros(hi - lo, self.in_features, dtype=torch.bool, device=self.param.device)
        return out.scatter_(1, self.clf.group_indices[lo:hi].long(), True)

    def slots(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self._labels(lo, hi)
        magnitude = torch.zeros(hi - lo, self.clf.fan_in, device=self.param.device)  # [Gc, k]
        rows = torch.arange(b - a, device=self.param.device) // self.g
        magnitude.index_add_(0, rows, self.clf.values[a:b].detach().abs().float())
        return magnitude, torch.ones_like(magnitude, dtype=torch.bool)

    def gradient_scores(self, lo, hi, h, targets, loss) -> torch.Tensor:
        scores = torch.zeros(hi - lo, self.in_features, device=self.param.device)  # [Gc, d]
        a, b = self._labels(lo, hi)
        step = max(self.g, self.GRAD_ELEMENTS // self.in_features // self.g * self.g)
        for start in range(a, b, step):
            end = min(start + step, b)
            logits = self.clf.logits(h, start, end)
            grad = loss.grad(logits, targets, start, end, self.clf.num_labels)  # [B, n]
            per_label = (grad.t() @ h.float()).abs()  # [n, d]
            rows = (torch.arange(start, end, device=scores.device) - a) // self.g
            scores.index_add_(0, rows, per_label)
        return scores

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer, keep_state: bool = False) -> None:
        slot_rows, slot_cols = refill_slots(self.clf.group_indices[lo:hi], drop, grow)
        a, b = self._labels(lo, hi)
        label_drop = drop.repeat_interleave(self.g, dim=0)[: b - a]  # [n, k]: every label of the group
        self.clf.values[a:b].masked_fill_(label_drop, init)
        if not keep_state:  # keep: the new connections continue with their slots' state
            zero_optimizer_state(optimizer, self.param, label_drop, slice(a, b))


@register_classifier("ffi-group")
def ffi_group(in_features: int, num_labels: int, fan_in: int = 32, group_size: int = 32, seed: int = 0,
              dtype: torch.dtype | str = torch.float32) -> GroupFanInClassifier:
    return GroupFanInClassifier(in_features, num_labels, fan_in=fan_in, group_size=group_size, seed=seed, dtype=dtype)
