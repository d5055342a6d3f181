"""`head-tail`: a dense layer for the most frequent labels, fixed fan-in for the rest.

The head gives the encoder a dense gradient path (the frequent labels carry most of the
positives) without an auxiliary objective; the tail keeps memory at ``L·k``. The head is the
``head_labels`` most frequent labels, or (``head_labels = 0``) the fewest most frequent labels
that hold ``head_fraction`` of the training positives. Frequencies come from ``label_counts``
(training positives per label); without them label ids are taken as frequency ranks
(label 0 the most frequent, as in the synthetic data).

Storage: ``head_weight [H, d]`` (dense), ``tail_values [T, k]`` + ``tail_indices [T, k]``
(int16 when d < 32768), one ``bias [L]`` and ``slot [L]`` int32 in the original label order
(``slot ≥ 0``: the label's tail row; ``slot < 0``: head row ``−1 − slot``). Both are indexed by
label, so the fused loss slices them with each chunk and ``logits(h, lo, hi)`` serves any slice
in the original order. With ``tail="ffi-group"`` the tail rows share inputs in groups of
``group_size`` consecutive rows (``tail_group_indices [ceil(T/g), k]``, index memory / g; the
rows keep their label order, so with ``model.group_order=cluster``-style numbering a group is
a run of neighbouring labels); a tail row's ids are its group's, so the ffi kernel runs on
them as on repeated rows, and SET rewires the groups as ``ffi-group`` does.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from bench import losses
from bench.classifiers.base import Classifier, autocast_operands, dense_memory_bytes, float_dtype, register_classifier
from bench.classifiers.fixed_fan_in import (FixedFanInClassifier, FixedFanInConnectivity, kernel_loss,
                                            kernel_loss_scale, kernel_topk, random_fan_in_indices)
from bench.classifiers.group_fan_in import GroupFanInClassifier, GroupFanInConnectivity
from bench.errors import ConfigError
from bench.kernels import fixed_fan_in, fused_loss
from bench.ranking import merge_by_id, select_chunk
from bench.sparse import SparseTargets


def head_label_ids(num_labels: int, head_labels: int = 0, head_fraction: float = 0.5,
                   label_counts=None) -> torch.Tensor:
    """Sorted ids of the head: the ``head_labels`` most frequent labels, or the fewest most
    frequent ones holding ``head_fraction`` of all training positives."""
    if label_counts is None:
        counts = torch.arange(num_labels, 0, -1, dtype=torch.float64)  # ids as frequency ranks
    else:
        counts = torch.as_tensor(np.asarray(label_counts), dtype=torch.float64)
        if counts.shape != (num_labels,):
            raise ConfigError(f"head-tail classifier: 'label_counts' must have one count per label "
                              f"({num_labels}), got shape {tuple(counts.shape)}")
    order = torch.sort(counts, descending=True, stable=True).indices  # ties: lower id first
    if head_labels:
        size = head_labels
    else:
        covered = counts[order].cumsum(0)
        total = float(covered[-1]) if num_labels else 0.0
        size = int(torch.searchsorted(covered, head_fraction * total).item()) + 1 if total * head_fraction > 0 else 0
    size = max(0, min(int(size), num_labels))
    return order[:size].sort().values


class HeadTailClassifier(Classifier):
    label_independent = ("head_weight", "tail_values", "tail_indices", "tail_group_indices")

    def __init__(self, in_features: int, num_labels: int, fan_in: int, head_labels: int = 0,
                 head_fraction: float = 0.5, label_counts=None, seed: int = 0,
                 dtype: torch.dtype | str = torch.float32, tail: str = "ffi", group_size: int = 32):
        super().__init__()
        if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral) or not 1 <= fan_in <= in_features:
            raise ConfigError(f"head-tail classifier: 'fan_in' must be an integer in [1, {in_features}] "
                              f"(the input size d = {in_features}), got {fan_in!r}")
        if isinstance(head_labels, bool) or not isinstance(head_labels, numbers.Integral) or head_labels < 0:
            raise ConfigError(f"head-tail classifier: 'head_labels' must be an integer >= 0, got {head_labels!r}")
        if not isinstance(head_fraction, numbers.Real) or not 0.0 <= head_fraction <= 1.0:
            raise ConfigError(f"head-tail classifier: 'head_fraction' must be in [0, 1], got {head_fraction!r}")
        if tail not in ("ffi", "ffi-group"):
            raise ConfigError(f"head-tail classifier: 'tail' must be ffi or ffi-group, got {tail!r}")
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
            raise ConfigError(f"head-tail classifier: 'group_size' must be a positive integer, got {group_size!r}")
        dtype = float_dtype("head-tail", dtype)
        self.in_features, self.num_labels, self.fan_in = in_features, num_labels, int(fan_in)
        head = head_label_ids(num_labels, head_labels, head_fraction, label_counts)
        is_head = torch.zeros(num_labels, dtype=torch.bool)
        is_head[head] = True
        self.num_head, self.num_tail = int(is_head.sum()), num_labels - int(is_head.sum())
        slot = torch.empty(num_labels, dtype=torch.int32)  # [L]: tail row, or -1 - head row
        slot[is_head] = -1 - torch.arange(self.num_head, dtype=torch.int32)
        slot[~is_head] = torch.arange(self.num_tail, dtype=torch.int32)
        self.register_buffer("slot", slot)
        generator = torch.Generator().manual_seed(seed)
        self.tail_group_size = group_size if tail == "ffi-group" else 1
        rows = -(-self.num_tail // self.tail_group_size)  # [T, k], or [ceil(T/g), k] shared by groups
        self.register_buffer("tail_group_indices" if tail == "ffi-group" else "tail_indices",
                             random_fan_in_indices(rows, in_features, self.fan_in, generator))
        bound = 1.0 / math.sqrt(self.fan_in)
        tail = torch.empty(self.num_tail, self.fan_in).uniform_(-bound, bound, generator=generator)
        self.tail_values = nn.Parameter(tail.to(dtype))  # [T, k]
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's scale
        head_w = torch.empty(self.num_head, in_features).uniform_(-bound, bound, generator=generator)
        self.head_weight = nn.Parameter(head_w.to(dtype))  # [H, d]
        self.bias = nn.Parameter(torch.zeros(num_labels, dtype=dtype))  # [L], original order

    def logits(self, h, lo, hi):
        slot = self.slot[lo:hi].long()  # [n]
        head = slot < 0
        out = h.new_empty(h.shape[0], hi - lo, dtype=torch.result_type(h, self.tail_values))  # [B, n]
        if head.any():
            cols = head.nonzero().squeeze(1)
            head_scores = h.to(self.head_weight.dtype) @ self.head_weight[-1 - slot[cols]].t()  # [B, nh]
            out[:, cols] = head_scores.to(out.dtype)  # autocast's matmul may return another dtype
        if not head.all():
            cols = (~head).nonzero().squeeze(1)
            rows = slot[cols]
            x, values = autocast_operands(h, self.tail_values[rows])  # unchanged without autocast
            out[:, cols] = fixed_fan_in(x, values, self.tail_ids(rows)).to(out.dtype)
        return out + self.bias[lo:hi]

    def loss(self, h, targets, fused=None, criterion=None):
        """``Classifier.loss``; fused, on the CPU backend, with a loss the kernels know: the tail
        in one compiled pass (``fused_loss.ffi_loss`` / ``group_loss`` on the tail rows, targets
        mapped to them by ``slot``, the tail labels' bias gathered so its gradient lands in
        ``bias``) plus the head's dense ``[B, H]`` block through the criterion. Equal to the
        torch path up to float rounding."""
        criterion = losses.DEFAULT if criterion is None else criterion
        name = kernel_loss(criterion)
        if (self.fused_loss if fused is None else fused) and name is not None and self.num_tail \
                and type(self).logits is HeadTailClassifier.logits:
            x, values = autocast_operands(h, self.tail_values)  # as logits casts them
            if fused_loss.kernel_backend(x, values, self.bias, grouped=self.tail_group_size > 1) is not None:
                return self._kernel_loss(h, x, values, targets, criterion, name)
        return super().loss(h, targets, fused=fused, criterion=criterion)

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``Classifier.topk``; where a fan-in kernel selects (``kernel_topk``), the tail's best
        from its score-and-select pass and the head's from its dense ``[B, H]`` scores by
        selection, merged by score, then label id (both keep label order: row r of each is its
        r-th label)."""
        if type(self).logits is HeadTailClassifier.logits and self.num_tail:
            tail_labels = self.part_labels(tail=True)
            ids = self.tail_indices if self.tail_group_size == 1 else self.tail_group_indices
            tail = kernel_topk(h, self.tail_values, ids, self.tail_group_size, self.bias[tail_labels], k)
            if tail is not None:
                tail_scores, tail_ids = tail[0], tail_labels[tail[1]]
                if not self.num_head:
                    return tail_scores, tail_ids
                head_labels = self.part_labels(tail=False)
                scores = self._head_scores(h, head_labels)
                head_scores, head_rows = select_chunk(scores.float(), min(k, self.num_head))
                return merge_by_id(head_scores, head_labels[head_rows], tail_scores, tail_ids, min(k, self.num_labels))
        return super().topk(h, k)

    def part_labels(self, tail: bool) -> torch.Tensor:
        """The labels of the tail's rows (``[T]``) or of the head's (``[H]``): row r of either part
        is its r-th label in label order."""
        return (self.slot >= 0 if tail else self.slot < 0).nonzero().squeeze(1)

    def _head_scores(self, h: torch.Tensor, head_labels: torch.Tensor) -> torch.Tensor:
        """``[B, H]`` scores of the dense head (bias included)."""
        return (h.to(self.head_weight.dtype) @ self.head_weight.t()) + self.bias[head_labels]

    def _kernel_loss(self, h, x, values, targets, criterion, name):
        slot = self.slot.long()
        scale = kernel_loss_scale(criterion, h.shape[0], self.num_labels)
        tail_bias = self.bias[self.part_labels(tail=True)]  # [T], tail row order = label order
        tail_targets = fused_loss.map_targets(targets, slot)  # tail labels → tail rows, head dropped
        if self.tail_group_size == 1:
            total = fused_loss.ffi_loss(x, values, self.tail_indices, tail_bias, tail_targets, name, scale)
        else:
            total = fused_loss.group_loss(x, values, self.tail_group_indices, self.tail_group_size, tail_bias,
                                          tail_targets, name, scale)
        if not self.num_head:
            return total
        scores = self._head_scores(h, self.part_labels(tail=False))  # [B, H]
        head_rows = fused_loss.map_targets(targets, torch.where(slot < 0, -1 - slot, -1))
        head_targets = SparseTargets(head_rows.indptr, head_rows.indices, self.num_head)
        return total + criterion.value(scores, head_targets, 0, self.num_head, self.num_labels)

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        # head [H, d], tail values [T, k] and bias [L] train densely; tail ids and the slot map are indices
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=sum(b.numel() * b.element_size() for b in self.buffers()))

    def tail_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """``[n, k]`` input ids of tail rows ``rows`` (a grouped tail: their groups')."""
        if self.tail_group_size == 1:
            return self.tail_indices[rows]
        return self.tail_group_indices[torch.div(rows, self.tail_group_size, rounding_mode="floor")]

    def tail_view(self):
        """The tail as an ffi layer of ``T`` labels, or an ffi-group layer of ``T`` labels in
        groups (what DST and the connectivity check read)."""
        return _TailView(self) if self.tail_group_size == 1 else _GroupTailView(self)

    def connectivity(self):
        """The tail is an ffi layer of ``T`` labels, or an ffi-group layer; the dense head is not
        rewired. Rows are tail rows (or groups of them), not label ids, so RigL (which scores
        rows through label slices) is not supported."""
        return HeadTailConnectivity(self) if self.tail_group_size == 1 else HeadTailGroupConnectivity(self)

    @torch.no_grad()
    def check_connectivity(self) -> None:
        view = self.tail_view()
        (FixedFanInClassifier.check_connectivity if self.tail_group_size == 1
         else GroupFanInClassifier.check_connectivity)(view)


class _TailView:
    def __init__(self, clf: HeadTailClassifier):
        self.values, self.indices = clf.tail_values, clf.tail_indices
        self.num_labels, self.in_features, self.fan_in = clf.num_tail, clf.in_features, clf.fan_in


class _GroupTailView:
    def __init__(self, clf: HeadTailClassifier):
        self.values, self.group_indices, self.group_size = clf.tail_values, clf.tail_group_indices, clf.tail_group_size
        self.num_labels, self.in_features, self.fan_in = clf.num_tail, clf.in_features, clf.fan_in
        self.num_groups = clf.tail_group_indices.shape[0]


def _no_rigl(*_):
    raise TypeError("head-tail: the tail is rewired with SET only (dst.regrow=random); "
                    "gradient (RigL) regrowth is not supported for it")


class HeadTailConnectivity(FixedFanInConnectivity):
    gradient_scores = _no_rigl

    def __init__(self, clf: HeadTailClassifier):
        super().__init__(clf.tail_view())


class HeadTailGroupConnectivity(GroupFanInConnectivity):
    gradient_scores = _no_rigl

    def __init__(self, clf: HeadTailClassifier):
        super().__init__(clf.tail_view())


@register_classifier("head-tail")
def head_tail(in_features: int, num_labels: int, fan_in: int = 32, head_labels: int = 0, head_fraction: float = 0.5,
              label_counts=None, seed: int = 0, dtype: torch.dtype | str = torch.float32, tail: str = "ffi",
              group_size: int = 32) -> HeadTailClassifier:
    return HeadTailClassifier(in_features, num_labels, fan_in=fan_in, head_labels=head_labels,
                              head_fraction=head_fraction, label_counts=label_counts, seed=seed, dtype=dtype,
                              tail=tail, group_size=group_size)
