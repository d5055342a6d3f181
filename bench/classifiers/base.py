"""The classifier contract every output layer implements.

A classifier maps encoder features ``h [B, d]`` to label scores. Subclasses implement
``logits(h, lo, hi)`` — the scores of the label slice ``[lo, hi)`` — and ``memory_bytes``.
Everything else (full forward, loss, streaming top-k) is built on label slices here, so
that a subclass gets label-chunked training and inference without writing them again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.sparse import SparseTargets

DEFAULT_LABEL_CHUNK = 16384


class Classifier(nn.Module):
    in_features: int
    num_labels: int
    # Labels per slice in top-k inference and in the fused training loss.
    label_chunk: int = DEFAULT_LABEL_CHUNK
    # Training loss label chunk by label chunk (no [B, L] logits); False: full logits, for comparison.
    fused_loss: bool = True
    # Names of tensors shared by every label even if their first dim happens to equal L.
    label_independent: tuple[str, ...] = ()
    # Names of tensors indexed by group of ``label_group_size`` consecutive labels along dim 0
    # (ffi-group's shared indices [ceil(L/g), k]): the fused loss slices their rows with the chunk.
    label_grouped: tuple[str, ...] = ()
    label_group_size: int = 1

    def logits(self, h: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Scores of labels ``[lo, hi)``: ``[B, hi - lo]``."""
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B, L]
        return self.logits(h, 0, self.num_labels)

    def loss(self, h: torch.Tensor, targets: SparseTargets, fused: bool | None = None) -> torch.Tensor:
        """Binary cross-entropy summed over labels and averaged over the batch.

        Summing over labels keeps the gradient of each label's weights independent of L, so the
        same learning rate works at every label-space size. ``fused`` (default: the
        ``fused_loss`` attribute) computes it label chunk by label chunk — see ``fused_bce_loss``.
        """
        if self.fused_loss if fused is None else fused:
            return fused_bce_loss(self, h, targets)
        logits = self.forward(h)
        return F.binary_cross_entropy_with_logits(
            logits.float(), targets.dense(), reduction="sum"
        ) / h.shape[0]

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best labels per row, streamed over label chunks: memory O(B·(k + chunk)).

        Ties break towards the lower label id: candidates are kept in label-id order and merged
        with a stable sort, so among equal scores the earlier (lower) id stays first.
        """
        k = min(k, self.num_labels)
        best_scores = h.new_empty(h.shape[0], 0, dtype=torch.float32)
        best_ids = torch.empty(h.shape[0], 0, dtype=torch.int64, device=h.device)
        for lo in range(0, self.num_labels, self.label_chunk):
            hi = min(lo + self.label_chunk, self.num_labels)
            scores = self.logits(h, lo, hi).float()
            ids = torch.arange(lo, hi, device=h.device).expand(h.shape[0], -1)
            scores = torch.cat([best_scores, scores], dim=1)
            ids = torch.cat([best_ids, ids], dim=1)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
            best_scores, best_ids = scores.gather(1, order), ids.gather(1, order)
        return best_scores, best_ids

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        """Analytic bytes: parameters, their gradients, ``optimizer_slots`` optimiser buffers
        per parameter (1 for SGD with momentum, 2 for Adam), and index/mask storage."""
        raise NotImplementedError


def dense_memory_bytes(parameters, optimizer_slots: int, index_bytes: int = 0) -> dict[str, int]:
    """Memory breakdown for parameters that train densely (every element has a gradient)."""
    params = sum(p.numel() * p.element_size() for p in parameters)
    out = {
        "parameters": params,
        "gradients": params,
        "optimizer": params * optimizer_slots,
        "indices": index_bytes,
    }
    out["total"] = sum(out.values())
    return out


def bce_grad_logits(logits: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """∂loss/∂logits of ``Classifier.loss`` (BCE summed over labels, averaged over the batch)
    for one label chunk: ``(sigmoid(z) − y) / B``. RigL uses it to score missing connections
    chunk by chunk without building ``[B, L]``."""
    return (torch.sigmoid(logits.float()) - targets) / batch_size


# --- the fused, label-chunked loss -----------------------------------------------------------


def label_tensors(clf: Classifier) -> list[str]:
    """Names of the parameters and buffers indexed by label along dim 0 (``weight [L, d]``,
    ``bias [L]``, ``values``/``indices [L, k]``, ``mask [L, d]``): the fused loss slices them."""
    named = list(clf.named_parameters()) + list(clf.named_buffers())
    return [name for name, t in named if t.dim() >= 1 and t.shape[0] == clf.num_labels
            and name not in clf.label_independent and name not in clf.label_grouped]


def _chunk_logits(clf: Classifier, h: torch.Tensor, tensors: dict, size: int) -> torch.Tensor:
    """``clf.logits(h, 0, size)`` with ``tensors`` standing in for the classifier's own."""
    return functional_call(_Logits(clf), {f"clf.{k}": v for k, v in tensors.items()}, (h, size))


class _Logits(nn.Module):
    """Exposes ``logits(h, 0, size)`` as ``forward`` so ``functional_call`` can swap tensors."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf

    def forward(self, h, size):
        return self.clf.logits(h, 0, size)


class _FusedBCE(torch.autograd.Function):
    """Loss and every gradient in one sweep over label chunks.

    For each chunk ``[lo, hi)``: the chunk's slices of the label-indexed tensors become leaves,
    ``logits(h, lo, hi)`` ``[B, Lc]`` meets its targets, ``(sigmoid(z) − y) / B`` goes back
    through the chunk's graph (so hooks in ``logits``, such as masked's gradient mask, apply),
    and the slice gradients land in their rows of full-size gradient buffers. Peak extra memory
    is one chunk: ``[B, Lc]`` logits and gradient, never ``[B, L]``. The backward only scales
    the stored gradients by the incoming one (a loss weight such as the auxiliary mix).
    """

    @staticmethod
    def forward(ctx, clf, targets, names, h, *params):
        batch, num_labels, chunk = h.shape[0], clf.num_labels, max(1, clf.label_chunk)
        group = clf.label_group_size
        chunk = -(-chunk // group) * group  # chunks start on a group boundary
        own = dict(clf.named_parameters()) | dict(clf.named_buffers())
        sliced = set(label_tensors(clf))
        want_h, want_p = ctx.needs_input_grad[3], ctx.needs_input_grad[4:]
        grads = [torch.zeros_like(p) if w else None for p, w in zip(params, want_p)]
        # parameters not indexed by label are shared by every chunk: their gradients add up
        shared = {n: p.detach().requires_grad_(w) for n, p, w in zip(names, params, want_p) if n not in sliced}
        h_leaf = h.detach().requires_grad_(want_h)
        grad_h = torch.zeros_like(h, dtype=torch.float32) if want_h else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for lo in range(0, num_labels, chunk):
            hi = min(lo + chunk, num_labels)
            tensors = dict(shared)
            for name in sliced:
                t = own[name][lo:hi].detach()
                tensors[name] = t.requires_grad_(want_p[names.index(name)]) if name in names else t
            for name in clf.label_grouped:  # index buffers, no gradient
                tensors[name] = own[name][lo // group : -(-hi // group)]
            with torch.enable_grad():
                logits = _chunk_logits(clf, h_leaf, tensors, hi - lo)  # [B, Lc]
            y = targets.dense_chunk(lo, hi)  # [B, Lc]
            z = logits.detach().float()
            total += F.binary_cross_entropy_with_logits(z, y, reduction="sum")
            leaves = [h_leaf] if want_h else []
            slots = [grad_h] if want_h else []
            for name, g in zip(names, grads):
                if g is not None:
                    leaves.append(tensors[name])
                    slots.append(g[lo:hi] if name in sliced else g)
            if not leaves:
                continue
            dz = ((torch.sigmoid(z) - y) / batch).to(logits.dtype)  # [B, Lc]
            for slot, g in zip(slots, torch.autograd.grad(logits, leaves, dz, allow_unused=True)):
                if g is not None:
                    slot += g
        ctx.grads = [grad_h.to(h.dtype) if want_h else None] + grads
        return total / batch

    @staticmethod
    def backward(ctx, grad_loss):
        grads, ctx.grads = ctx.grads, None
        scaled = [None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads]
        return (None, None, None, *scaled)


def fused_bce_loss(clf: Classifier, h: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
    """``Classifier.loss`` without ``[B, L]`` logits or gradient: label chunks of
    ``clf.label_chunk``; same value and gradients as the unfused path up to summation order."""
    names, params = zip(*clf.named_parameters()) if any(True for _ in clf.parameters()) else ((), ())
    return _FusedBCE.apply(clf, targets, list(names), h, *params)
