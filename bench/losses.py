"""Training losses of label scores against sparse targets, written once for every consumer.

A loss sees a score block ``z [B, Lc]`` (the labels ``[lo, hi)`` of a batch) and the batch's
targets as sparse label lists (``SparseTargets``). It gives

- ``block(z, targets, lo, hi, num_labels)`` → ``(total, grad)``: the block's unreduced loss sum
  and ∂loss/∂z after the reduction — what the fused, label-chunked path uses (RigL: ``grad``);
- ``value(z, targets, lo, hi, num_labels)``: the reduced loss of a block as a differentiable
  torch expression — what the unfused path and the aux branch back-propagate through;
- ``reduce(total, batch, num_labels)``: the reduction applied to a sum of block totals.

The reduction divides the sum over every (point, label) pair by ``B`` (``sum_over_labels``:
each label's weight gradient is independent of L, so one learning rate serves every label-space
size), by ``B·L`` (``mean``) or by nothing (``sum``). ``num_labels`` is the size of the whole
label space the loss is taken over (only ``mean`` reads it). The names are the config values of
``train.loss`` / ``train.loss_reduction`` (and ``aux.loss`` / ``aux.loss_reduction``).

No consumer builds a dense 0/1 target block: losses take the block's positives as index pairs
(``SparseTargets.chunk_positives``). Gradients are bit for bit those of the dense formulas;
loss values agree with them up to float rounding (a different summation).

Adding a loss is one subclass (the sparse ``sparse_sum``/``sparse_derivative`` and the dense
reference ``sum``/``derivative``) and one ``@register_loss`` line; ``create(name, reduction)``
builds it by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.registry import Registry
from bench.sparse import SparseTargets

LOSSES = Registry("loss")
REDUCTIONS = ("sum_over_labels", "mean", "sum")


def register_loss(name: str):
    """Class decorator: ``@register_loss('bce')`` makes ``create('bce', reduction)`` build it."""
    return LOSSES.register(name)


def create(name: str = "bce", reduction: str = "sum_over_labels") -> "Loss":
    """``create('squared_hinge', 'mean')``; unknown names fail with a "did you mean" hint."""
    return LOSSES.get(name)(reduction)


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.names(pattern)


class Loss:
    """A per-element loss ``ℓ(z, y)`` of a score ``z`` and a 0/1 target ``y``, summed over a
    block and reduced by ``reduction``.

    The targets of a block are its few positive ``(row, column)`` pairs, never a dense 0/1
    matrix: a subclass gives ``sparse_sum`` (Σ ℓ over the block: the loss of every score as a
    negative, corrected at the positives) and ``sparse_derivative`` (∂ℓ/∂z, corrected at the
    positives by index), and, as the readable reference the tests hold them to, the dense
    ``sum`` and ``derivative``. Everything else is built on them here."""

    name = "loss"

    def __init__(self, reduction: str = "sum_over_labels"):
        if reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
        self.reduction = reduction

    def sum(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Reference: ``Σ ℓ(z, y)`` over a float32 block ``z [B, Lc]`` with dense 0/1 targets ``y``."""
        raise NotImplementedError

    def derivative(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Reference: ``∂ℓ/∂z`` per element ``[B, Lc]`` (before the reduction)."""
        raise NotImplementedError

    def sparse_sum(self, z: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``Σ ℓ`` over the float32 block ``z [B, Lc]`` whose positives are the distinct pairs
        ``(rows, cols)`` (``SparseTargets.chunk_positives``); equals ``sum`` up to rounding."""
        raise NotImplementedError

    def sparse_derivative(self, z: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``∂ℓ/∂z`` ``[B, Lc]`` from the positives ``(rows, cols)``: bitwise ``derivative``."""
        raise NotImplementedError

    def divisor(self, batch: int, num_labels: int) -> int:
        if self.reduction == "sum_over_labels":
            return batch
        return batch * num_labels if self.reduction == "mean" else 1

    def reduce(self, total: torch.Tensor, batch: int, num_labels: int) -> torch.Tensor:
        return total / self.divisor(batch, num_labels)

    def share(self, part: int, whole: int, num_labels: int) -> float:
        """The factor that turns the reduced loss of ``part`` points into their share of the
        reduced loss of ``whole`` points (``part`` of them): ``part / whole`` when the reduction
        divides by the batch, 1 for ``sum``. Shares of disjoint parts add up to the whole's loss
        (gradient accumulation, a rank's local batch)."""
        return self.divisor(part, num_labels) / self.divisor(whole, num_labels)

    def value(self, z: torch.Tensor, targets: SparseTargets, lo: int, hi: int, num_labels: int) -> torch.Tensor:
        """The reduced loss of labels ``[lo, hi)`` (differentiable): the whole loss when the
        block is every label. Its gradient is ``sparse_derivative`` times the incoming one."""
        total = _SparseSum.apply(z.float(), self, *targets.chunk_positives(lo, hi))
        return self.reduce(total, z.shape[0], num_labels)

    def grad(self, z: torch.Tensor, targets: SparseTargets, lo: int, hi: int, num_labels: int) -> torch.Tensor:
        """∂(reduced loss)/∂z of the block ``[B, Lc]`` (float32)."""
        dz = self.sparse_derivative(z.detach().float(), *targets.chunk_positives(lo, hi))
        return dz.div_(self.divisor(z.shape[0], num_labels))

    def block(self, z: torch.Tensor, targets: SparseTargets, lo: int, hi: int,
              num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unreduced sum, reduced gradient)`` of one block, sharing its positives."""
        z, (rows, cols) = z.detach().float(), targets.chunk_positives(lo, hi)
        dz = self.sparse_derivative(z, rows, cols).div_(self.divisor(z.shape[0], num_labels))
        return self.sparse_sum(z, rows, cols), dz

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class _SparseSum(torch.autograd.Function):
    """``loss.sparse_sum`` with ``loss.sparse_derivative(z) · grad`` as its backward: the product
    autograd formed through the dense expression before, so gradients stay bit for bit."""

    @staticmethod
    def forward(ctx, z, loss, rows, cols):
        ctx.save_for_backward(z, rows, cols)
        ctx.loss = loss
        return loss.sparse_sum(z, rows, cols)

    @staticmethod
    def backward(ctx, grad):
        z, rows, cols = ctx.saved_tensors
        return ctx.loss.sparse_derivative(z, rows, cols).mul_(grad), None, None, None


@register_loss("bce")
class BCE(Loss):
    """Binary cross-entropy on logits: ``ℓ = −y·log σ(z) − (1 − y)·log(1 − σ(z))``, ``∂ℓ/∂z = σ(z) − y``.

    Sparse: ``Σ ℓ = Σ softplus(z) − Σ_positives z``; ``∂ℓ/∂z = σ(z)``, minus 1 at the positives."""

    name = "bce"

    def sum(self, z, y):
        return F.binary_cross_entropy_with_logits(z, y, reduction="sum")

    def derivative(self, z, y):
        return torch.sigmoid(z) - y

    def sparse_sum(self, z, rows, cols):
        return F.softplus(z).sum() - z[rows, cols].sum()

    def sparse_derivative(self, z, rows, cols):
        out = torch.sigmoid(z)
        out[rows, cols] = out[rows, cols] - 1.0
        return out


@register_loss("squared_hinge")
class SquaredHinge(Loss):
    """Squared hinge with targets ``s = ±1``: ``ℓ = max(0, 1 − s·z)²``, ``∂ℓ/∂z = −2·s·max(0, 1 − s·z)``.

    Sparse: every score as a negative (``max(0, 1 + z)``), the positives' terms swapped for
    ``max(0, 1 − z)`` by index."""

    name = "squared_hinge"

    def sum(self, z, y):
        return torch.clamp(1.0 - (2.0 * y - 1.0) * z, min=0.0).square().sum()

    def derivative(self, z, y):
        sign = 2.0 * y - 1.0
        return -2.0 * sign * torch.clamp(1.0 - sign * z, min=0.0)

    def sparse_sum(self, z, rows, cols):
        zp = z[rows, cols]
        as_positive = torch.clamp(1.0 - zp, min=0.0).square().sum()
        as_negative = torch.clamp(1.0 + zp, min=0.0).square().sum()
        return torch.clamp(1.0 + z, min=0.0).square().sum() - as_negative + as_positive

    def sparse_derivative(self, z, rows, cols):
        out = torch.clamp(1.0 + z, min=0.0).mul_(2.0)  # −2·(−1)·max(0, 1 + z): every score a negative
        out[rows, cols] = torch.clamp(1.0 - z[rows, cols], min=0.0).mul_(-2.0)
        return out


DEFAULT = BCE("sum_over_labels")  # the loss every run trains with unless told otherwise
