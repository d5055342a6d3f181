"""Streaming ranking metrics for extreme multi-label classification, with pyxclib's conventions.

``RankingMetrics`` consumes one batch of top-k predictions at a time and keeps only a few
running sums per ``k``: the ``[N, L]`` score matrix and the full list of predictions never
exist, so test sets with millions of points and labels evaluate in constant memory.

Conventions (those of pyxclib / the Extreme Classification Repository):

* every row counts in ``N``; a row with no true labels contributes 0 to every metric;
* ``P@k = hits@k / k``; ``R@k = hits@k / |y|``;
* ``nDCG@k = DCG@k / IDCG(min(k, |y|))`` with ``DCG@k = Σ_hits 1 / log2(rank + 1)``;
* ``PSP@k = Σ_rows Σ_hits@k 1/p  /  Σ_rows (sum of the k largest 1/p among the row's labels)``;
* ``PSnDCG@k = Σ_rows PSDCG@k / IDCG  /  Σ_rows PSDCG*@k / IDCG``, where ``PSDCG`` weighs each
  hit by ``1/p`` and ``PSDCG*`` is that of the best ordering (labels by descending ``1/p``),
  both divided by the row's count-based ideal DCG.

A label id repeated within a predicted row counts once, at its best rank; id ``-1`` means
"no prediction" and is a miss.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.sparse import CSR

METRIC_NAMES = ("P", "nDCG", "PSP", "PSnDCG", "R")


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(rank + 1)`` for ranks ``1..k``: ``[k]`` float64."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _row_ids(labels: CSR) -> np.ndarray:
    """The row of every stored entry: ``[nnz]`` int64."""
    return np.repeat(np.arange(labels.num_rows, dtype=np.int64), labels.row_lengths())


class RankingMetrics:
    """Running P@k, nDCG@k, PSP@k, PSnDCG@k and R@k over batches of top-k predictions."""

    def __init__(self, num_labels: int, ks: Sequence[int] = (1, 3, 5), inv_propensity: np.ndarray | None = None):
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1:
            raise BenchError(f"ks must be a non-empty list of positive ranks, got {ks}")
        self.num_labels = int(num_labels)
        self.ks = tuple(sorted(set(ks)))
        self.max_k = self.ks[-1]
        self.inv_propensity = None
        if inv_propensity is not None:
            w = np.asarray(inv_propensity, dtype=np.float64)
            if w.shape != (self.num_labels,):
                raise BenchError(
                    f"inv_propensity has shape {w.shape}, expected ({self.num_labels},): one weight per label"
                )
            self.inv_propensity = w
        self._discount = _discounts(self.max_k)  # [max_k]
        # IDCG of n ones for n = 0..max_k: [max_k + 1], idcg[0] = 0 (empty row)
        self._idcg = np.concatenate([[0.0], np.cumsum(self._discount)])
        self.reset()

    def reset(self) -> None:
        self.num_rows = 0
        # one running sum per (metric, k); PS* numerators and denominators are kept apart
        # because they are normalised by the sum over rows, not row by row
        names = ("P", "nDCG", "R", "PSP", "PSP*", "PSnDCG", "PSnDCG*")
        self._sums = {name: np.zeros(len(self.ks)) for name in names}  # each [len(ks)]

    # -- per batch -------------------------------------------------------------------------

    def _prepare(self, topk_ids, true_labels: CSR) -> np.ndarray:
        if isinstance(topk_ids, torch.Tensor):
            topk_ids = topk_ids.detach().cpu().numpy()
        top = np.asarray(topk_ids)
        if top.ndim != 2:
            raise BenchError(f"topk_ids must be a [B, K] array of label ids, got shape {top.shape}")
        if top.size and not np.issubdtype(top.dtype, np.integer):
            raise BenchError(f"topk_ids must hold integer label ids, got dtype {top.dtype}")
        if top.shape[0] != true_labels.num_rows:
            raise BenchError(f"topk_ids has {top.shape[0]} rows but true_labels has {true_labels.num_rows}")
        if true_labels.num_cols != self.num_labels:
            raise BenchError(f"true_labels has {true_labels.num_cols} columns, expected {self.num_labels} labels")
        top = top.astype(np.int64, copy=False)
        if top.size and (top.min() < -1 or top.max() >= self.num_labels):
            raise BenchError(f"predicted label ids must lie in [0, {self.num_labels}) or be -1 (no prediction)")
        # only the first max_k ranks matter; fewer than max_k predictions are padded with misses
        top = top[:, : self.max_k]
        if top.shape[1] < self.max_k:
            pad = np.full((top.shape[0], self.max_k - top.shape[1]), -1, np.int64)
            top = np.concatenate([top, pad], axis=1)
        return top  # [B, max_k]

    def _hits(self, top: np.ndarray, true_labels: CSR) -> np.ndarray:
        """``[B, max_k]`` bool: is the prediction at each rank a true label of its row."""
        B, K = top.shape
        L = self.num_labels
        truth_keys = _row_ids(true_labels) * L + true_labels.indices  # [nnz]
        pred_keys = np.arange(B, dtype=np.int64)[:, None] * L + top  # [B, K]
        hits = np.isin(pred_keys, truth_keys) & (top >= 0)
        # a repeated id must not be counted twice: a stable sort puts its best rank first
        order = np.argsort(top, axis=1, kind="stable")  # [B, K]
        ranked = np.take_along_axis(top, order, axis=1)
        repeat = np.zeros((B, K), bool)
        repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        later = np.zeros((B, K), bool)
        np.put_along_axis(later, order, repeat, axis=1)
        return hits & ~later

    def _ideal_ps(self, true_labels: CSR) -> tuple[np.ndarray, np.ndarray]:
        """Each true label's ``1/p`` and its rank (0-based) in its row by descending ``1/p``."""
        rows = _row_ids(true_labels)  # [nnz]
        w = self.inv_propensity[true_labels.indices]  # [nnz]
        order = np.lexsort((-w, rows))  # by row, then by descending weight
        # rows stay in CSR order after the sort, so the rank is the offset from the row start
        rank = np.arange(len(rows)) - true_labels.indptr[rows[order]]
        return w[order], rank

    def update(self, topk_ids, true_labels: CSR) -> None:
        """Add one batch: ``topk_ids`` ``[B, K]`` label ids best first, ``true_labels`` its ``B`` rows."""
        top = self._prepare(topk_ids, true_labels)
        B = top.shape[0]
        if B == 0:
            return
        hits = self._hits(top, true_labels).astype(np.float64)  # [B, max_k]
        n_true = true_labels.row_lengths()  # [B]
        has = n_true > 0
        dcg_terms = hits * self._discount  # [B, max_k]
        if self.inv_propensity is not None:
            w_top = self.inv_propensity[np.maximum(top, 0)]  # [B, max_k]; -1 slots are misses anyway
            ps_hits = hits * w_top
            ps_dcg_terms = ps_hits * self._discount
            w_sorted, rank = self._ideal_ps(true_labels)  # [nnz], [nnz]
            row_sorted = np.repeat(np.arange(B), n_true)  # rows are unchanged by the sort
            ideal_dcg_terms = w_sorted * self._discount[np.minimum(rank, self.max_k - 1)]
        for j, k in enumerate(self.ks):
            hits_k = hits[:, :k].sum(1)  # [B]
            idcg = self._idcg[np.minimum(n_true, k)]  # [B], 0 for empty rows
            safe_idcg = np.where(has, idcg, 1.0)
            self._sums["P"][j] += hits_k.sum() / k
            self._sums["R"][j] += (hits_k[has] / n_true[has]).sum()
            self._sums["nDCG"][j] += (dcg_terms[:, :k].sum(1) / safe_idcg).sum()
            if self.inv_propensity is None:
                continue
            in_k = rank < k  # [nnz]: the k heaviest true labels of each row
            self._sums["PSP"][j] += ps_hits[:, :k].sum()
            self._sums["PSP*"][j] += w_sorted[in_k].sum()
            self._sums["PSnDCG"][j] += (ps_dcg_terms[:, :k].sum(1) / safe_idcg).sum()
            best = np.bincount(row_sorted[in_k], ideal_dcg_terms[in_k], minlength=B)  # [B]
            self._sums["PSnDCG*"][j] += (best / safe_idcg).sum()
        self.num_rows += B

    # -- result ----------------------------------------------------------------------------

    def compute(self) -> dict[str, float]:
        """``{'P@1': …, …, 'R@5': …}`` as fractions, grouped by metric in ``METRIC_NAMES`` order."""
        if self.num_rows == 0:
            raise BenchError("no rows to evaluate: call update() with at least one non-empty batch first")
        s, n = self._sums, self.num_rows

        def ratio(num: float, den: float) -> float:
            return float(num / den) if den > 0 else 0.0

        out: dict[str, float] = {}
        for name in METRIC_NAMES:
            if name.startswith("PS") and self.inv_propensity is None:
                continue
            for j, k in enumerate(self.ks):
                if name in ("PSP", "PSnDCG"):
                    out[f"{name}@{k}"] = ratio(s[name][j], s[name + "*"][j])
                else:
                    out[f"{name}@{k}"] = float(s[name][j] / n)
        return out


def topk_from_scores(scores: CSR, k: int) -> np.ndarray:
    """The ``k`` highest-scoring columns of every row: ``[N, k]`` int64, ``-1`` padded.

    Ties go to the lower label id, so rankings read from files are deterministic. A binary
    matrix (``data is None``) scores every stored entry 1.
    """
    if k < 1:
        raise BenchError(f"k must be at least 1, got {k}")
    N = scores.num_rows
    rows = _row_ids(scores)  # [nnz]
    values = np.ones(scores.nnz) if scores.data is None else np.asarray(scores.data, dtype=np.float64)
    order = np.lexsort((scores.indices, -values, rows))  # by row, then score down, then id up
    rank = np.arange(len(rows)) - scores.indptr[rows[order]]  # rows keep their order: offset from start
    keep = rank < k
    out = np.full((N, k), -1, np.int64)
    out[rows[order][keep], rank[keep]] = scores.indices[order][keep]
    return out


def drop_filtered(topk_ids, filtered: CSR, k: int) -> np.ndarray:
    """Remove the ``(row, label)`` pairs of ``filtered`` from ranked predictions and keep the
    first ``k`` survivors of every row: ``[B, K]`` -> ``[B, k]`` int64, ``-1`` padded.

    The XC repository's label filters (e.g. a page that links to itself) act on predictions
    only, before top-k. Removing the pairs — rather than zeroing their scores — keeps a genuine
    prediction that happens to score 0. Fetch ``K = k + (the row's filtered count)`` ranks so
    that ``k`` remain."""
    if isinstance(topk_ids, torch.Tensor):
        topk_ids = topk_ids.detach().cpu().numpy()
    top = np.asarray(topk_ids, dtype=np.int64)  # [B, K]
    if top.shape[0] != filtered.num_rows:
        raise BenchError(f"topk_ids has {top.shape[0]} rows but the filter has {filtered.num_rows}")
    L = filtered.num_cols
    keys = np.arange(top.shape[0], dtype=np.int64)[:, None] * L + top  # [B, K]
    drop = (top < 0) | np.isin(keys, _row_ids(filtered) * L + filtered.indices)  # [B, K]
    order = np.argsort(drop, axis=1, kind="stable")  # survivors first, in rank order
    out = np.take_along_axis(top, order, axis=1)
    out[np.take_along_axis(drop, order, axis=1)] = -1
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((out.shape[0], k - out.shape[1]), -1, np.int64)], axis=1)
    return out[:, :k]


def evaluate_topk(
    topk_ids, true_labels: CSR, ks: Sequence[int] = (1, 3, 5), inv_propensity: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of one set of predictions in one call (a single ``update``)."""
    metrics = RankingMetrics(true_labels.num_cols, ks=ks, inv_propensity=inv_propensity)
    metrics.update(topk_ids, true_labels)
    return metrics.compute()
