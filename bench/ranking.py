"""Ranking of label scores, as every top-k of the suite orders them: score down, then label id
up; NaN ranks above every number and -0 equals +0. ``select_chunk`` keeps the best of one score
block by selection (not a full sort); ``merge_ranked`` merges two ranked lists. Pure torch, used
by ``Classifier.topk`` and the Triton score-and-select (``bench.kernels.triton_fused``)."""

from __future__ import annotations

import torch


def _ties(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Where ``a`` and ``b`` rank equal: the same number, or both NaN."""
    return (a == b) | (a.isnan() & b.isnan())


def merge_ranked(scores_a: torch.Tensor, ids_a: torch.Tensor, scores_b: torch.Tensor, ids_b: torch.Tensor,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of two ranked lists ``[B, ka]``, ``[B, kb]`` (each by score down, then id
    up), where every id of ``a`` is below every id of ``b``: a stable sort keeps, among equal
    scores, ``a``'s entries (the lower ids) first, then ``b``'s in their order."""
    scores, ids = torch.cat([scores_a, scores_b], dim=1), torch.cat([ids_a, ids_b], dim=1)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), ids.gather(1, order)


def select_chunk(scores: torch.Tensor, k: int, lo: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(k, Lc)`` best of a float32 score block ``[B, Lc]`` (labels ``lo + column``),
    ranked by score down, then id up: exactly what a stable descending sort of the block keeps.

    ``torch.topk`` finds the best values but breaks ties in no defined order. So it selects
    ``k + 1``: where the ``k``-th and ``(k+1)``-th values differ, the ``k`` entries above the
    cut are the only ones with their values and just need ordering (by id, then a stable sort
    by score); rows where they tie (ties across the cut) take the stable sort of their row."""
    if scores.shape[1] <= k + 1:  # nothing to select from: rank the whole block
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        return scores.gather(1, order), order + lo
    values, picked = torch.topk(scores, k + 1, dim=1, sorted=True)  # [B, k + 1]
    picked = picked[:, :k].sort(dim=1).values  # the entries above the cut, by id
    top = scores.gather(1, picked)
    order = torch.sort(top, dim=1, descending=True, stable=True).indices
    top, picked = top.gather(1, order), picked.gather(1, order)
    cut = _ties(values[:, k - 1], values[:, k]).nonzero().flatten()
    if cut.numel():
        rows = scores[cut]
        order = torch.sort(rows, dim=1, descending=True, stable=True).indices[:, :k]
        top[cut], picked[cut] = rows.gather(1, order), order
    return top, picked + lo


def merge_by_id(scores_a: torch.Tensor, ids_a: torch.Tensor, scores_b: torch.Tensor, ids_b: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``merge_ranked`` for two lists whose ids interleave (e.g. a layer's head and tail labels):
    the entries in id order, then a stable sort by score."""
    scores, ids = torch.cat([scores_a, scores_b], dim=1), torch.cat([ids_a, ids_b], dim=1)
    by_id = ids.argsort(dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), ids.gather(1, order)
