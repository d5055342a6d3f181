"""Mini-batches for a bag-of-words model: ``EmbeddingBag`` inputs plus sparse targets.

A batch is cut from the CSR matrices with one vectorised ``CSR.take_rows`` per batch (no loop
over rows), so batching costs O(nnz of the batch) and the label side never becomes ``[B, L]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from bench.errors import ConfigError
from bench.sparse import CSR, SparseTargets


@dataclass(frozen=True)
class Batch:
    feature_ids: torch.Tensor  # [nnz] int64, feature ids of all rows, row after row
    feature_offsets: torch.Tensor  # [B] int64, start of each row in feature_ids (EmbeddingBag offsets)
    feature_weights: torch.Tensor  # [nnz] float32, feature values (EmbeddingBag per_sample_weights)
    targets: SparseTargets  # B rows of label ids
    rows: np.ndarray  # [B] int64, the dataset rows in this batch (host side, for metrics)
    texts: tuple[str, ...] | None = None  # raw texts of the rows, for text encoders (None: features only)

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def to(self, device: torch.device | str) -> "Batch":
        nb = torch.device(device).type == "cuda"  # overlap host→device copies on CUDA
        move = lambda t: t.to(device, non_blocking=nb)  # noqa: E731
        return replace(
            self,
            feature_ids=move(self.feature_ids),
            feature_offsets=move(self.feature_offsets),
            feature_weights=move(self.feature_weights),
            targets=SparseTargets(
                move(self.targets.indptr), move(self.targets.indices), self.targets.num_labels
            ),
        )


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches in one epoch over ``n`` rows."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def make_batch(x: CSR, y: CSR, rows: np.ndarray, texts=None) -> Batch:
    """The batch of the given dataset rows, in that order (with their ``texts`` when given)."""
    rows = np.asarray(rows, dtype=np.int64)
    bx, by = x.take_rows(rows), y.take_rows(rows)
    weights = np.ones(bx.nnz, np.float32) if bx.data is None else bx.data.astype(np.float32, copy=False)
    return Batch(
        feature_ids=torch.from_numpy(bx.indices.astype(np.int64, copy=False)),
        feature_offsets=torch.from_numpy(bx.indptr[:-1].astype(np.int64, copy=False)),
        feature_weights=torch.from_numpy(weights),
        targets=SparseTargets.from_csr(by),
        rows=rows,
        texts=None if texts is None else tuple(texts[i] for i in rows),
    )


def iterate_batches(
    x: CSR,
    y: CSR,
    batch_size: int,
    shuffle: bool,
    generator: np.random.Generator | None = None,
    drop_last: bool = False,
    texts=None,
    start: int = 0,
    local_rows=None,
) -> Iterator[Batch]:
    """One epoch of batches over the rows of ``x`` and ``y``; every row appears exactly once
    (the last, short batch is skipped when ``drop_last``). ``shuffle`` draws the order from
    ``generator`` — pass one to make the order reproducible (``None``: a fresh unseeded one).
    ``start``: skip the epoch's first batches (a resumed run; the order is drawn all the same).
    ``local_rows``: maps a batch's rows to this process's share of them (data-parallel runs)."""
    if x.num_rows != y.num_rows:
        raise ConfigError(f"features have {x.num_rows} rows but labels have {y.num_rows}; expected equal")
    count = num_batches(x.num_rows, batch_size, drop_last)
    if shuffle:
        order = (generator if generator is not None else np.random.default_rng()).permutation(x.num_rows)
    else:
        order = np.arange(x.num_rows, dtype=np.int64)
    for b in range(start, count):
        rows = order[b * batch_size : (b + 1) * batch_size]
        yield make_batch(x, y, rows if local_rows is None else local_rows(rows), texts)
