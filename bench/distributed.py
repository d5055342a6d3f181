"""Training across processes (torchrun), as Renee does: the encoder is data-parallel and the
classifier is sharded by labels, so each rank holds ``L / world`` labels.

One step on ``world`` ranks with local batches ``b_r`` (global batch ``B = Σ b_r``):

1. every rank encodes its local batch: ``h_r [b_r, d]``;
2. ``gather_features`` all-gathers them: ``H [B, d]`` on every rank (B·d floats per rank —
   small next to the classifier);
3. each rank computes the loss of *its* label shard on the whole global batch (the fused,
   label-chunked loss, reduced as the whole loss is: by the global B, and with ``mean`` by the
   global L too — ``ShardLoss``), so the shard's gradients are exact;
4. backward: the gradient wrt ``H`` is summed over ranks (every shard contributes to every
   example) and each rank keeps the rows of its local batch, which flow into its encoder;
5. encoder gradients are summed over ranks (each rank holds its own examples' share).

The global loss is the sum of the shard losses, so one step equals the single-process step on
the same global batch (tested with gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bench import losses
from bench.sparse import SparseTargets


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    lo: int  # first label of this rank
    hi: int  # one past the last
    total: int  # labels of the whole space (every shard together)

    @property
    def num_labels(self) -> int:
        return self.hi - self.lo


def label_shard(num_labels: int, rank: int, world: int) -> Shard:
    """Contiguous, balanced label ranges: the first ``L % world`` ranks get one label more."""
    base, extra = divmod(num_labels, world)
    lo = rank * base + min(rank, extra)
    return Shard(rank, world, lo, lo + base + (1 if rank < extra else 0), num_labels)


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); (0, 1)
    outside torchrun. gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's ``x`` along dim 0 (sizes may differ: gloo gathers equal shapes,
    so rows are padded to the largest and trimmed). Returns (result, rows per rank)."""
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(n) for n in sizes]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]), sizes


class _GatherFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        gathered, ctx.sizes = _all_gather_rows(h)
        ctx.rank = dist.get_rank()
        return gathered  # [B, d]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every label shard contributes to every example
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_features(h: torch.Tensor) -> torch.Tensor:
    """``[b_r, d]`` on each rank → ``[B, d]`` on every rank, differentiable."""
    return _GatherFeatures.apply(h) if dist.is_initialized() and dist.get_world_size() > 1 else h


def gather_targets(targets: SparseTargets, shard: Shard) -> SparseTargets:
    """The global batch's targets restricted to this rank's labels (ids relative to ``lo``)."""
    counts = targets.indptr[1:] - targets.indptr[:-1]  # [b_r]
    all_counts, _ = _all_gather_rows(counts)
    all_ids, _ = _all_gather_rows(targets.indices)
    keep = (all_ids >= shard.lo) & (all_ids < shard.hi)
    rows = torch.repeat_interleave(torch.arange(all_counts.numel(), device=all_ids.device), all_counts)
    kept_counts = torch.bincount(rows[keep], minlength=all_counts.numel())
    indptr = torch.zeros(all_counts.numel() + 1, dtype=torch.int64, device=all_ids.device)
    indptr[1:] = kept_counts.cumsum(0)
    return SparseTargets(indptr, all_ids[keep] - shard.lo, shard.num_labels)


class ShardLoss:
    """``loss`` on a label shard as its share of the loss over all ``num_labels`` labels: the
    reduction counts the whole label space (``mean`` divides by B·L, not by B·L_shard), so the
    ranks' shares add up to the one-process loss and RigL scores as one process would. It
    offers what the classifiers and DST ask of a loss (``bench.losses.Loss``)."""

    def __init__(self, loss: losses.Loss, num_labels: int):
        self.loss, self.num_labels = loss, num_labels
        self.name, self.reduction = loss.name, loss.reduction

    def divisor(self, batch: int, num_labels: int) -> int:
        return self.loss.divisor(batch, self.num_labels)

    def share(self, part: int, whole: int, num_labels: int) -> float:
        return self.loss.share(part, whole, self.num_labels)

    def reduce(self, total, batch, num_labels):
        return self.loss.reduce(total, batch, self.num_labels)

    def value(self, z, targets, lo, hi, num_labels):
        return self.loss.value(z, targets, lo, hi, self.num_labels)

    def grad(self, z, targets, lo, hi, num_labels):
        return self.loss.grad(z, targets, lo, hi, self.num_labels)

    def block(self, z, targets, lo, hi, num_labels):
        return self.loss.block(z, targets, lo, hi, self.num_labels)

    def __repr__(self) -> str:
        return f"ShardLoss({self.loss!r}, num_labels={self.num_labels})"


def shard_loss(loss: losses.Loss | None, shard: Shard) -> ShardLoss:
    """``loss`` (default ``losses.DEFAULT``) reduced over the whole label space of ``shard``."""
    loss = losses.DEFAULT if loss is None else loss
    return loss if isinstance(loss, ShardLoss) else ShardLoss(loss, shard.total)


def sharded_loss(encoder_out: torch.Tensor, classifier, targets: SparseTargets, shard: Shard,
                 fused: bool | None = None, criterion=None) -> torch.Tensor:
    """This rank's share of the global loss: its label shard on the global batch, reduced by the
    global batch size (and, for ``mean``, the global label count). ``backward()`` on it gives
    exact shard and (after ``sum_encoder_grads``) encoder gradients; ``all_reduce`` of the value
    gives the loss."""
    features = gather_features(encoder_out)  # [B, d]
    shard_targets = gather_targets(targets, shard)
    return classifier.loss(features, shard_targets, fused=fused, criterion=shard_loss(criterion, shard))


def sum_encoder_grads(module: torch.nn.Module) -> None:
    """Sum the data-parallel module's gradients over ranks (each rank holds its examples' share)."""
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


@torch.no_grad()
def sharded_topk(features: torch.Tensor, classifier, shard: Shard, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over all labels from each rank's shard top-k: gather ``[B, k]`` candidates per rank
    and merge (ties towards the lower global id, as on one process)."""
    scores, ids = classifier.topk(features, k)
    ids = ids + shard.lo
    all_scores = [torch.empty_like(scores) for _ in range(shard.world)]
    all_ids = [torch.empty_like(ids) for _ in range(shard.world)]
    dist.all_gather(all_scores, scores.contiguous())
    dist.all_gather(all_ids, ids.contiguous())
    # ranks hold increasing label ranges, so concatenating in rank order keeps ids ascending
    # among equal scores, and a stable sort keeps that order
    scores, ids = torch.cat(all_scores, 1), torch.cat(all_ids, 1)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), ids.gather(1, order)


# --- one training run across ranks (what `xmc-bench run` does under torchrun) ----------------


@dataclass
class Parallel:
    """The run's place among the ranks: its label shard, and the collective steps the training
    loop takes instead of the single-process ones."""

    shard: Shard
    global_batch: int = 0  # rows of the current global batch (set by ``local_rows``)
    local_batch: int = 0  # this rank's part of them

    @property
    def rank(self) -> int:
        return self.shard.rank

    @property
    def world(self) -> int:
        return self.shard.world

    @property
    def is_main(self) -> bool:
        return self.shard.rank == 0

    def seed(self, seed: int) -> int:
        """A seed of this rank's own, for what each rank draws for its shard (init, SET regrowth)."""
        return seed + 1_000_003 * self.rank

    def local_rows(self, rows):
        """This rank's part of a global batch's rows (every rank draws the same global order): a
        contiguous, balanced slice, by the same rule as the label shards."""
        part = label_shard(len(rows), self.rank, self.world)
        self.global_batch, self.local_batch = len(rows), part.num_labels
        return rows[part.lo : part.hi]

    def batch_size(self, batch) -> int:
        """Examples in the global batch ``batch`` is this rank's share of."""
        return self.global_batch

    def local_share(self, loss: torch.Tensor, criterion: losses.Loss, num_labels: int) -> torch.Tensor:
        """A data-parallel loss of this rank's examples (``criterion`` over ``num_labels`` labels),
        as its share of the global batch's loss: × b_r / B when the reduction divides by the
        batch, unchanged for ``sum``."""
        return loss * criterion.share(self.local_batch, self.global_batch, num_labels)

    def criterion(self, loss: losses.Loss) -> ShardLoss:
        """``loss`` as this rank's label shard takes it (its reduction counts every label)."""
        return shard_loss(loss, self.shard)

    def loss(self, h: torch.Tensor, classifier, targets: SparseTargets, fused: bool | None = None,
             criterion=None) -> torch.Tensor:
        return sharded_loss(h, classifier, targets, self.shard, fused, criterion)

    def sum_value(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of a scalar (a shard's loss → the global loss), detached."""
        value = value.detach().clone()
        dist.all_reduce(value)
        return value

    def sum_grads(self, *modules) -> None:
        """Data-parallel modules (encoder, intermediate layer, aux branch): sum their gradients."""
        for module in modules:
            if module is not None:
                sum_encoder_grads(module)

    def rewire_inputs(self, h: torch.Tensor, targets: SparseTargets) -> tuple[torch.Tensor, SparseTargets]:
        """What a shard's RigL scores need: the global batch's features and the shard's targets."""
        return gather_features(h), gather_targets(targets, self.shard)

    def topk(self, features: torch.Tensor, classifier, k: int):
        return sharded_topk(features, classifier, self.shard, k)


class OneProcess:
    """``Parallel``'s steps for a run in one process: the plain single-process operations, so
    the training loop is written once for both."""

    is_main = True
    local_rows = None  # every row of every batch is this process's

    def seed(self, seed: int) -> int:
        return seed

    def batch_size(self, batch) -> int:
        return batch.targets.batch_size

    def local_share(self, loss: torch.Tensor, criterion: losses.Loss, num_labels: int) -> torch.Tensor:
        return loss

    def criterion(self, loss: losses.Loss) -> losses.Loss:
        return loss

    def loss(self, h: torch.Tensor, classifier, targets: SparseTargets, fused: bool | None = None,
             criterion=None) -> torch.Tensor:
        return classifier.loss(h, targets, fused=fused, criterion=criterion)

    def sum_value(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach()

    def sum_grads(self, *modules) -> None:
        pass

    def rewire_inputs(self, h: torch.Tensor, targets: SparseTargets) -> tuple[torch.Tensor, SparseTargets]:
        return h, targets

    def topk(self, features: torch.Tensor, classifier, k: int):
        return classifier.topk(features, k)


# Each rank initialises its own shard (Renee's way: no rank ever holds the full layer). For
# checking a torchrun run against one process, XMC_SHARD_INIT=full makes every rank build the
# full layer as one process would, then keep its rows (memory of the full layer at start).
SHARD_INIT_ENV = "XMC_SHARD_INIT"


def keep_label_rows(full, part, shard: Shard):
    """``part`` (a classifier of ``shard.num_labels`` labels, same kind as ``full``) with the
    shard's rows of every label-indexed tensor of ``full``."""
    from bench.classifiers.base import label_tensors
    from bench.errors import ConfigError

    own = dict(full.named_parameters()) | dict(full.named_buffers())
    mine = dict(part.named_parameters()) | dict(part.named_buffers())
    rows = label_tensors(full)
    if set(rows) != set(mine):
        raise ConfigError(f"{SHARD_INIT_ENV}=full needs a classifier whose every tensor is indexed by label "
                          f"(dense, masked, ffi); {type(full).__name__} also has {sorted(set(mine) - set(rows))}")
    with torch.no_grad():
        for name in rows:
            mine[name].copy_(own[name][shard.lo : shard.hi])
    return part
