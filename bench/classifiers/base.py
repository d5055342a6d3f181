"""The classifier contract every output layer implements, and the registry they join.

A classifier maps encoder features ``h [B, d]`` to label scores. Subclasses implement
``logits(h, lo, hi)`` — the scores of the label slice ``[lo, hi)`` — and ``memory_bytes``.
Everything else (full forward, loss, streaming top-k) is built on label slices here, so
that a subclass gets label-chunked training and inference without writing them again.

A sparse classifier also returns its ``connectivity()``: the small protocol through which
dynamic sparse training (``bench.dst``) sees its connections. DST works on row chunks
``[lo, hi)`` (rows are labels, or whatever the layer rewires as a unit, e.g. groups). A layer
stores each row's connections in ``S`` slots (``S = k`` for fixed fan-in, ``S = d`` for a
mask); its connectivity object has ``num_labels`` (rows), ``in_features`` (d), ``param`` (the
tensor whose device DST works on) and

- ``slots(lo, hi)``: ``(magnitude [Rc, S], in_use [Rc, S] bool)`` — |w| of each slot and
  whether it holds a connection; pruning chooses among these slots;
- ``active(lo, hi)``: bool ``[Rc, d]`` — which inputs each row uses (the regrowth candidates
  are the others); only this chunk is ever materialised, never ``[L, d]``;
- ``replace(lo, hi, drop, grow, init, optimizer, keep_state=False)``: empty the ``drop`` slots
  ``[Rc, S]`` and connect the ``grow`` inputs ``[Rc, d]`` (as many per row), set the new weights
  to ``init`` and zero their optimiser state; dropped weights keep no optimiser state either.
  ``keep_state=True`` (``dst.optimizer_state=keep``; passed only then, so the argument is
  optional) leaves a refilled slot's state as it was, the reference's behaviour;
- optionally ``gradient_scores(lo, hi, h, targets, loss)`` → ``[Rc, d]``: the RigL score
  (|∂loss/∂w|) of each row's inputs, where rows are not labels. Without it DST scores
  rows as labels through ``logits`` and ``loss.grad``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from bench import losses
from bench.errors import ConfigError
from bench.registry import Registry
from bench.ranking import merge_ranked, select_chunk
from bench.sparse import SparseTargets

DEFAULT_LABEL_CHUNK = 16384

CLASSIFIERS = Registry("classifier")


def register_classifier(name: str):
    """Decorator for a classifier factory ``fn(in_features, num_labels, **options) -> Classifier``.

    The factory's keyword names are its options: ``build_model`` passes each one the config
    value of the same name (``model.fan_in`` → ``fan_in``, …; also ``seed`` and
    ``label_counts``), so a classifier defined in one file gets its options without edits
    elsewhere. A factory derives its own defaults (e.g. a density of 0 meaning ``fan_in / d``).
    """
    return CLASSIFIERS.register(name)


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

    def loss(self, h: torch.Tensor, targets: SparseTargets, fused: bool | None = None,
             criterion: losses.Loss | None = None) -> torch.Tensor:
        """The training loss of the batch: ``criterion`` (default: BCE summed over labels and
        averaged over the batch, ``losses.DEFAULT``) of every label's score.

        ``fused`` (default: the ``fused_loss`` attribute) computes it label chunk by label
        chunk without ``[B, L]`` logits — see ``fused_loss``.
        """
        criterion = losses.DEFAULT if criterion is None else criterion
        if self.fused_loss if fused is None else fused:
            return fused_loss(self, h, targets, criterion)
        return criterion.value(self.forward(h), targets, 0, self.num_labels, self.num_labels)

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best labels per row, streamed over label chunks: memory O(B·(k + chunk)).

        Ties break towards the lower label id (NaN ranks above every number; -0 equals +0).
        Each chunk is reduced by a selection (``select_chunk``), not a sort, and merged with
        the running best.
        """
        k = min(k, self.num_labels)
        best_scores = h.new_empty(h.shape[0], 0, dtype=torch.float32)
        best_ids = torch.empty(h.shape[0], 0, dtype=torch.int64, device=h.device)
        for lo in range(0, self.num_labels, self.label_chunk):
            hi = min(lo + self.label_chunk, self.num_labels)
            scores, ids = select_chunk(self.logits(h, lo, hi).float(), k, lo)
            best_scores, best_ids = merge_ranked(best_scores, best_ids, scores, ids, k)
        return best_scores, best_ids

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        """Analytic bytes: parameters, their gradients, ``optimizer_slots`` optimiser buffers
        per parameter (1 for SGD with momentum, 2 for Adam), and index/mask storage."""
        raise NotImplementedError

    def connectivity(self):
        """The DST view of this layer's connections (the protocol in the module docstring);
        ``None``: a dense layer, nothing to rewire."""
        return None


def float_dtype(classifier: str, dtype: torch.dtype | str) -> torch.dtype:
    """The storage dtype ``dtype`` names (``torch.bfloat16``, ``"bfloat16"`` or
    ``"torch.bfloat16"``); a ConfigError naming ``classifier`` for anything not floating."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"{classifier} classifier: 'dtype' must be a floating torch dtype such as "
                          f"float32 or bfloat16, got {dtype!r}")
    return dtype


def autocast_operands(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` in the autocast dtype when autocast is on for their device (as autocast treats
    a matmul's operands), else unchanged: the fan-in ops are custom autograd functions, which
    autocast does not reach by itself. The casts are differentiable (gradients come back in
    each tensor's own dtype)."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


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


def zero_optimizer_state(optimizer, param: torch.Tensor, where: torch.Tensor, rows: slice) -> None:
    """Zero every per-element optimiser buffer of ``param`` (momentum, Adam moments) at
    ``where`` (a bool mask over ``param[rows]``)."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[rows].masked_fill_(where, 0)


def refill_slots(idx: torch.Tensor, drop: torch.Tensor, grow: torch.Tensor):
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


class _FusedLoss(torch.autograd.Function):
    """Loss and every gradient in one sweep over label chunks.

    For each chunk ``[lo, hi)``: the chunk's slices of the label-indexed tensors become leaves,
    ``logits(h, lo, hi)`` ``[B, Lc]`` meets its targets, the loss's ∂loss/∂z goes back
    through the chunk's graph (so hooks in ``logits``, such as masked's gradient mask, apply),
    and the slice gradients land in their rows of full-size gradient buffers. Peak extra memory
    is one chunk: ``[B, Lc]`` logits and gradient, never ``[B, L]``. The backward only scales
    the stored gradients by the incoming one (a loss weight such as the auxiliary mix).
    """

    @staticmethod
    def forward(ctx, clf, targets, criterion, names, h, *params):
        batch, num_labels, chunk = h.shape[0], clf.num_labels, max(1, clf.label_chunk)
        group = clf.label_group_size
        chunk = -(-chunk // group) * group  # chunks start on a group boundary
        own = dict(clf.named_parameters()) | dict(clf.named_buffers())
        sliced = set(label_tensors(clf))
        want_h, want_p = ctx.needs_input_grad[4], ctx.needs_input_grad[5:]
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
            value, dz = criterion.block(logits, targets, lo, hi, num_labels)  # sum, ∂loss/∂z [B, Lc]
            total += value
            leaves = [h_leaf] if want_h else []
            slots = [grad_h] if want_h else []
            for name, g in zip(names, grads):
                if g is not None:
                    leaves.append(tensors[name])
                    slots.append(g[lo:hi] if name in sliced else g)
            if not leaves:
                continue
            for slot, g in zip(slots, torch.autograd.grad(logits, leaves, dz.to(logits.dtype), allow_unused=True)):
                if g is not None:
                    slot += g
        ctx.grads = [grad_h.to(h.dtype) if want_h else None] + grads
        return criterion.reduce(total, batch, num_labels)

    @staticmethod
    def backward(ctx, grad_loss):
        grads, ctx.grads = ctx.grads, None
        scaled = [None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads]
        return (None, None, None, None, *scaled)


def fused_loss(clf: Classifier, h: torch.Tensor, targets: SparseTargets,
               criterion: losses.Loss | None = None) -> torch.Tensor:
    """``Classifier.loss`` without ``[B, L]`` logits or gradient: label chunks of
    ``clf.label_chunk``; same value and gradients as the unfused path up to summation order."""
    criterion = losses.DEFAULT if criterion is None else criterion
    names, params = zip(*clf.named_parameters()) if any(True for _ in clf.parameters()) else ((), ())
    return _FusedLoss.apply(clf, targets, criterion, list(names), h, *params)
