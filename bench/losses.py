"""Training losses of label scores against sparse targets, written once for every consumer.

A loss sees a score block ``z [B, Lc]`` (the labels ``[lo, hi)`` of a batch) and the batch's
targets as sparse label lists (``SparseTargets``). It gives

- ``block(z, targets, lo, hi, num_labels)`` → ``(total, grad)``: the block's unreduced loss sum
  and ∂loss/∂z after the reduction — what the fused, label-chunked path and RigL scoring use;
- ``value(z, targets, lo, hi, num_labels)``: the reduced loss of a block as a differentiable
  torch expression — what the unfused path and the aux branch back-propagate through;
- ``reduce(total, batch, num_labels)``: the reduction applied to a sum of block totals.

The reduction divides the sum over every (point, label) pair by ``B`` (``sum_over_labels``:
each label's weight gradient is independent of L, so one learning rate serves every label-space
size), by ``B·L`` (``mean``) or by nothing (``sum``). ``num_labels`` is the size of the whole
label space the loss is taken over (only ``mean`` reads it). The names are the config values of
``train.loss`` / ``train.loss_reduction`` (and ``aux.loss`` / ``aux.loss_reduction``).

Adding a loss is one subclass (``sum`` and ``derivative`` of the per-element loss) and one
``@register_loss`` line; ``create(name, reduction)`` builds it by name.
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
    block and reduced by ``reduction``. Subclasses give ``sum`` (differentiable) and
    ``derivative`` (∂ℓ/∂z per element); everything else is built on them here."""

    name = "loss"

    def __init__(self, reduction: str = "sum_over_labels"):
        if reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
        self.reduction = reduction

    def sum(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Σ ℓ(z, y)`` over a float32 block ``z [B, Lc]`` with dense 0/1 targets ``y``."""
        raise NotImplementedError

    def derivative(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``∂ℓ/∂z`` per element ``[B, Lc]`` (before the reduction)."""
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
        block is every label."""
        return self.reduce(self.sum(z.float(), targets.dense_chunk(lo, hi)), z.shape[0], num_labels)

    def grad(self, z: torch.Tensor, targets: SparseTargets, lo: int, hi: int, num_labels: int) -> torch.Tensor:
        """∂(reduced loss)/∂z of the block ``[B, Lc]`` (float32)."""
        return self.derivative(z.float(), targets.dense_chunk(lo, hi)) / self.divisor(z.shape[0], num_labels)

    def block(self, z: torch.Tensor, targets: SparseTargets, lo: int, hi: int,
              num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(unreduced sum, reduced gradient)`` of one block, sharing its dense targets."""
        z, y = z.detach().float(), targets.dense_chunk(lo, hi)
        return self.sum(z, y), self.derivative(z, y) / self.divisor(z.shape[0], num_labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


@register_loss("bce")
class BCE(Loss):
    """Binary cross-entropy on logits: ``ℓ = −y·log σ(z) − (1 − y)·log(1 − σ(z))``, ``∂ℓ/∂z = σ(z) − y``."""

    name = "bce"

    def sum(self, z, y):
        return F.binary_cross_entropy_with_logits(z, y, reduction="sum")

    def derivative(self, z, y):
        return torch.sigmoid(z) - y


@register_loss("squared_hinge")
class SquaredHinge(Loss):
    """Squared hinge with targets ``s = ±1``: ``ℓ = max(0, 1 − s·z)²``, ``∂ℓ/∂z = −2·s·max(0, 1 − s·z)``."""

    name = "squared_hinge"

    def sum(self, z, y):
        return torch.clamp(1.0 - (2.0 * y - 1.0) * z, min=0.0).square().sum()

    def derivative(self, z, y):
        sign = 2.0 * y - 1.0
        return -2.0 * sign * torch.clamp(1.0 - sign * z, min=0.0)


DEFAULT = BCE("sum_over_labels")  # the loss every run trains with unless told otherwise
