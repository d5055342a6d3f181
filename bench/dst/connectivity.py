"""The small protocol through which DST sees a sparse classifier.

DST works on label chunks ``[lo, hi)``. A layer stores each label's connections in ``S`` slots
(``S = k`` for fixed fan-in, ``S = d`` for a mask), and exposes:

- ``slots(lo, hi)``: ``(magnitude [Lc, S], in_use [Lc, S] bool)`` — |w| of each slot and
  whether the slot holds a connection; pruning chooses among these slots;
- ``active(lo, hi)``: bool ``[Lc, d]`` — which inputs each label uses (the regrowth candidates
  are the others); only this chunk is ever materialised, never ``[L, d]``;
- ``replace(lo, hi, drop, grow, init, optimizer)``: empty the ``drop`` slots ``[Lc, S]`` and
  connect the ``grow`` inputs ``[Lc, d]`` (as many per label), set the new weights to ``init``
  and zero their optimiser state; dropped weights keep no optimiser state either.

Each sparse classifier registers an adapter here; SET and RigL are written once against it.
An adapter whose rows are not the classifier's labels (ffi-group: rows are groups) also gives
``gradient_scores(lo, hi, h, targets)`` → ``[Lc, d]``, the RigL score of each row's missing inputs.
"""

from __future__ import annotations

import torch

from bench.classifiers.base import bce_grad_logits
from bench.classifiers.fixed_fan_in import FixedFanInClassifier
from bench.classifiers.group_fan_in import GroupFanInClassifier
from bench.classifiers.head_tail import HeadTailClassifier
from bench.classifiers.masked import MaskedClassifier

_ADAPTERS: dict[type, object] = {}  # classifier type -> adapter class (or factory)


def register_connectivity(classifier_type: type):
    def add(adapter: type) -> type:
        _ADAPTERS[classifier_type] = adapter
        return adapter

    return add


def connectivity_of(classifier):
    """The connectivity adapter of a sparse classifier; a clear error for a dense one."""
    for cls in type(classifier).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls](classifier)
    raise TypeError(f"{type(classifier).__name__} has no sparse connectivity to rewire "
                    f"(sparse classifiers: {', '.join(c.__name__ for c in _ADAPTERS)})")


def _zero_optimizer_state(optimizer, param: torch.Tensor, where: torch.Tensor, rows: slice) -> None:
    """Zero every per-element optimiser buffer of ``param`` (momentum, Adam moments) at
    ``where`` (a bool mask over ``param[rows]``)."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[rows].masked_fill_(where, 0)


def _refill_slots(idx: torch.Tensor, drop: torch.Tensor, grow: torch.Tensor):
    """Put the ``grow`` inputs (bool ``[R, d]``) into the ``drop`` slots (bool ``[R, k]``) of the
    index rows ``idx [R, k]`` in place; returns the (rows, slots) that changed.

    nonzero() lists both in row-major order and every row drops as many as it grows, so the
    i-th freed slot takes the i-th grown input of the same row."""
    slot_rows, slot_cols = drop.nonzero(as_tuple=True)
    grow_rows, grow_cols = grow.nonzero(as_tuple=True)
    if not torch.equal(slot_rows, grow_rows):
        raise AssertionError("rewire must grow exactly as many inputs per row as it drops")
    idx[slot_rows, slot_cols] = grow_cols.to(idx.dtype)
    return slot_rows, slot_cols


@register_connectivity(FixedFanInClassifier)
class FixedFanInConnectivity:
    def __init__(self, clf: FixedFanInClassifier):
        self.clf = clf
        self.num_labels, self.in_features, self.param = clf.num_labels, clf.in_features, clf.values

    def active(self, lo: int, hi: int) -> torch.Tensor:
        out = torch.zeros(hi - lo, self.in_features, dtype=torch.bool, device=self.param.device)
        return out.scatter_(1, self.clf.indices[lo:hi].long(), True)

    def slots(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = self.clf.values[lo:hi].detach().abs().float()  # [Lc, k]
        return magnitude, torch.ones_like(magnitude, dtype=torch.bool)

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer) -> None:
        slot_rows, slot_cols = _refill_slots(self.clf.indices[lo:hi], drop, grow)
        self.clf.values[lo:hi][slot_rows, slot_cols] = init
        _zero_optimizer_state(optimizer, self.param, drop, slice(lo, hi))


@register_connectivity(MaskedClassifier)
class MaskedConnectivity:
    def __init__(self, clf: MaskedClassifier):
        self.clf = clf
        self.num_labels, self.in_features, self.param = clf.num_labels, clf.in_features, clf.weight

    def active(self, lo: int, hi: int) -> torch.Tensor:
        return self.clf.mask[lo:hi].clone()

    def slots(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.clf.mask[lo:hi]
        return (self.clf.weight[lo:hi].detach().abs() * mask).float(), mask

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer) -> None:
        if not torch.equal(drop.sum(1), grow.sum(1)):
            raise AssertionError("rewire must grow exactly as many inputs per label as it drops")
        mask, weight = self.clf.mask[lo:hi], self.clf.weight[lo:hi]
        mask[drop] = False
        weight[drop] = 0.0
        mask[grow] = True
        weight[grow] = init
        _zero_optimizer_state(optimizer, self.param, drop | grow, slice(lo, hi))


@register_connectivity(GroupFanInClassifier)
class GroupFanInConnectivity:
    """Rows are groups: a group's shared inputs are pruned by the summed |w| of its labels, RigL
    scores an input by the summed |∂L/∂w| of its labels, and a regrown input starts at ``init``
    for every label of the group, with zero optimiser state."""

    GRAD_ELEMENTS = 1 << 22  # [labels, d] per-label gradient block in gradient_scores

    def __init__(self, clf: GroupFanInClassifier):
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

    def gradient_scores(self, lo, hi, h, targets) -> torch.Tensor:
        scores = torch.zeros(hi - lo, self.in_features, device=self.param.device)  # [Gc, d]
        a, b = self._labels(lo, hi)
        step = max(self.g, self.GRAD_ELEMENTS // self.in_features // self.g * self.g)
        for start in range(a, b, step):
            end = min(start + step, b)
            logits = self.clf.logits(h, start, end)
            grad = bce_grad_logits(logits, targets.dense_chunk(start, end), h.shape[0])  # [B, n]
            per_label = (grad.t() @ h.float()).abs()  # [n, d]
            rows = (torch.arange(start, end, device=scores.device) - a) // self.g
            scores.index_add_(0, rows, per_label)
        return scores

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer) -> None:
        slot_rows, slot_cols = _refill_slots(self.clf.group_indices[lo:hi], drop, grow)
        a, b = self._labels(lo, hi)
        label_drop = drop.repeat_interleave(self.g, dim=0)[: b - a]  # [n, k]: every label of the group
        self.clf.values[a:b].masked_fill_(label_drop, init)
        _zero_optimizer_state(optimizer, self.param, label_drop, slice(a, b))


@register_connectivity(HeadTailClassifier)
def head_tail_connectivity(clf: HeadTailClassifier):
    """The tail is an ffi layer of ``T`` labels, or an ffi-group layer; the dense head is not
    rewired. Rows are tail rows (or groups of them), not label ids, so RigL (which scores rows
    through label slices) is not supported."""
    return HeadTailConnectivity(clf) if clf.tail_group_size == 1 else HeadTailGroupConnectivity(clf)


def _no_rigl(*_):
    raise TypeError("head-tail: the tail is rewired with SET only (dst.regrow=random); "
                    "gradient (RigL) regrowth is not supported for it")


class HeadTailConnectivity(FixedFanInConnectivity):
    gradient_scores = _no_rigl

    def __init__(self, clf: HeadTailClassifier):
        self.clf = clf.tail_view()
        self.num_labels, self.in_features, self.param = clf.num_tail, clf.in_features, clf.tail_values


class HeadTailGroupConnectivity(GroupFanInConnectivity):
    gradient_scores = _no_rigl

    def __init__(self, clf: HeadTailClassifier):
        super().__init__(clf.tail_view())
