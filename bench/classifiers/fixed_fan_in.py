"""`ffi`: the semi-structured fixed fan-in layer. Every label keeps exactly ``k`` distinct
inputs: values ``[L, k]`` and indices ``[L, k]`` (int16 when d < 32768), so memory and FLOPs
scale with ``L·k`` instead of ``L·d``. Scores go through the one ``fixed_fan_in`` op."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from bench import losses
from bench.classifiers.base import (Classifier, autocast_operands, dense_memory_bytes, float_dtype, refill_slots,
                                   register_classifier, zero_optimizer_state)
from bench.errors import ConfigError
from bench.kernels import cpu_select, fixed_fan_in, fused_loss

INIT_CHUNK_ELEMENTS = 1 << 22  # random keys [Lc, d] drawn at a time (16 MiB): never a dense [L, d]
CHECK_CHUNK_ELEMENTS = 1 << 22  # ids [Lc, k] widened to int64 at a time by check_connectivity


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


def kernel_loss(criterion) -> str | None:
    """The fused kernels' name for ``criterion``'s per-score loss, or ``None`` when they have
    none: the registry's own loss class (wrappers such as ``bench.distributed.ShardLoss`` are
    read through their ``loss``), not a subclass that may change the formula."""
    base = getattr(criterion, "loss", criterion)
    name = getattr(base, "name", None)
    if name not in fused_loss.LOSSES or name not in losses.LOSSES.names():
        return None
    return name if type(base) is losses.LOSSES.get(name) else None


def kernel_loss_scale(criterion, batch: int, num_labels: int) -> float:
    """The kernels' ``scale`` for ``criterion``'s reduction: 1 / its divisor, so a wrapper that
    reduces over another label count (a label shard's ``ShardLoss``: the global L) keeps it."""
    return 1.0 / criterion.divisor(batch, num_labels)


def topk_kernel(h, values, bias, group_size: int, k: int) -> str | None:
    """The score-and-select kernel that serves a fan-in layer's top-``k``: ``"compiled"`` (CPU
    float32, ``bench.kernels.cpu_select``), ``"triton"`` (CUDA, ``bench.kernels.triton_fused``,
    k ≤ its ``MAX_TOPK``) or ``None`` (the torch path)."""
    path = fused_loss.kernel_backend(h, values, bias, grouped=group_size > 1)
    if path == "cpu" and cpu_select.available(h, values, bias):
        return "compiled"
    if path == "triton":
        from bench.kernels import triton_fused  # imports triton: CUDA only

        return "triton" if k <= triton_fused.MAX_TOPK else None
    return None


def kernel_topk(h, values, ids, group_size, bias, k):
    """``(scores, ids)`` of the fan-in layer's best ``k`` labels from the kernel ``topk_kernel``
    names; ``None`` where none runs (the torch path then)."""
    path = topk_kernel(h, values, bias, group_size, k)
    if path == "compiled":
        if group_size > 1:
            return cpu_select.group_topk(h, values, ids, group_size, bias, k)
        return cpu_select.ffi_topk(h, values, ids, bias, k)
    if path == "triton":
        from bench.kernels import triton_fused

        return triton_fused.topk(h, values, ids, group_size, bias, k)
    return None


class FixedFanInClassifier(Classifier):
    def __init__(self, in_features: int, num_labels: int, fan_in: int, seed: int = 0,
                 dtype: torch.dtype | str = torch.float32):
        super().__init__()
        if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral) or not 1 <= fan_in <= in_features:
            raise ConfigError(f"ffi classifier: 'fan_in' must be an integer in [1, {in_features}] "
                              f"(the input size d = {in_features}), got {fan_in!r}")
        fan_in = int(fan_in)
        dtype = float_dtype("ffi", dtype)
        self.in_features, self.num_labels, self.fan_in = in_features, num_labels, fan_in
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("indices", random_fan_in_indices(num_labels, in_features, fan_in, generator))
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's scale for a fan-in of k
        values = torch.empty(num_labels, fan_in).uniform_(-bound, bound, generator=generator)
        self.values = nn.Parameter(values.to(dtype))  # [L, k]
        self.bias = nn.Parameter(torch.zeros(num_labels, dtype=dtype))  # [L]

    def logits(self, h, lo, hi):
        h, values = autocast_operands(h, self.values[lo:hi])  # unchanged without autocast
        return fixed_fan_in(h, values, self.indices[lo:hi]) + self.bias[lo:hi]

    def loss(self, h, targets, fused=None, criterion=None):
        """``Classifier.loss``; fused, where the kernels run (compiled C on CPU, Triton on CUDA)
        with a loss they know, one pass (``bench.kernels.fused_loss.ffi_loss``): scores, loss
        and ∂loss/∂score per label block in cache, targets from the sparse label lists. Equal to
        the torch path up to float rounding (another summation order)."""
        criterion = losses.DEFAULT if criterion is None else criterion
        name = kernel_loss(criterion)
        if (self.fused_loss if fused is None else fused) and name is not None \
                and type(self).logits is FixedFanInClassifier.logits:
            x, values = autocast_operands(h, self.values)  # as logits casts them
            if fused_loss.kernel_backend(x, values, self.bias) is not None:
                return fused_loss.ffi_loss(x, values, self.indices, self.bias, targets, name,
                                           kernel_loss_scale(criterion, h.shape[0], self.num_labels))
        return super().loss(h, targets, fused=fused, criterion=criterion)

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``Classifier.topk``; one score-and-select pass that never writes the labels' scores
        to memory where a kernel runs it (``kernel_topk``)."""
        if type(self).logits is FixedFanInClassifier.logits:
            found = kernel_topk(h, self.values, self.indices, 1, self.bias, k)
            if found is not None:
                return found
        return super().topk(h, k)

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        # values [L, k] and bias [L] train densely; indices [L, k] are int16/int32
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.indices.numel() * self.indices.element_size())

    def connectivity(self) -> "FixedFanInConnectivity":
        return FixedFanInConnectivity(self)

    @torch.no_grad()
    def check_connectivity(self) -> None:
        """Raise ``AssertionError`` unless every label has exactly k distinct inputs in [0, d)
        stored in ``index_dtype(d)``. Checked label chunk by label chunk (DST calls it after
        every rewiring, at any L)."""
        idx = self.indices
        if idx.shape != (self.num_labels, self.fan_in):
            raise AssertionError(f"ffi indices have shape {tuple(idx.shape)}, expected ({self.num_labels}, {self.fan_in})")
        if idx.dtype != index_dtype(self.in_features):
            raise AssertionError(f"ffi indices are {idx.dtype}, expected {index_dtype(self.in_features)}")
        rows = max(1, CHECK_CHUNK_ELEMENTS // self.fan_in)
        for lo in range(0, self.num_labels, rows):
            chunk = idx[lo : lo + rows].long()  # [Lc, k]
            bad = ((chunk < 0) | (chunk >= self.in_features)).any(1)
            if bad.any():
                label = lo + int(bad.nonzero()[0])
                raise AssertionError(f"ffi label {label} has an input id outside [0, {self.in_features}): "
                                     f"{self.indices[label].tolist()}")
            ordered = chunk.sort(dim=1).values
            dup = (ordered[:, 1:] == ordered[:, :-1]).any(1)
            if dup.any():
                label = lo + int(dup.nonzero()[0])
                raise AssertionError(f"ffi label {label} has a repeated input id: {self.indices[label].tolist()}")

    def to_dense_weight(self) -> torch.Tensor:
        """The equivalent dense ``[L, d]`` weight (detached). For tests on small layers only: it
        allocates the ``L·d`` tensor this layer exists to avoid."""
        weight = torch.zeros(self.num_labels, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return weight.scatter(1, self.indices.long(), self.values.detach())


class FixedFanInConnectivity:
    """DST protocol (``bench.classifiers.base``) of an ffi layer: rows are labels, slots are
    its k inputs. Works on anything with ``values``/``indices [R, k]``, ``num_labels`` rows
    and ``in_features`` (head-tail's tail view too)."""

    def __init__(self, clf):
        self.clf = clf
        self.num_labels, self.in_features, self.param = clf.num_labels, clf.in_features, clf.values

    def active(self, lo: int, hi: int) -> torch.Tensor:
        out = torch.zeros(hi - lo, self.in_features, dtype=torch.bool, device=self.param.device)
        return out.scatter_(1, self.clf.indices[lo:hi].long(), True)

    def slots(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = self.clf.values[lo:hi].detach().abs().float()  # [Lc, k]
        return magnitude, torch.ones_like(magnitude, dtype=torch.bool)

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer, keep_state: bool = False) -> None:
        slot_rows, slot_cols = refill_slots(self.clf.indices[lo:hi], drop, grow)
        self.clf.values[lo:hi][slot_rows, slot_cols] = init
        if not keep_state:  # keep: the new connection continues with its slot's state
            zero_optimizer_state(optimizer, self.param, drop, slice(lo, hi))


@register_classifier("ffi")
def ffi(in_features: int, num_labels: int, fan_in: int = 32, seed: int = 0,
        dtype: torch.dtype | str = torch.float32) -> FixedFanInClassifier:
    return FixedFanInClassifier(in_features, num_labels, fan_in=fan_in, seed=seed, dtype=dtype)
