"""Row-compressed sparse structures shared by data, metrics and classifiers.

``CSR`` holds a sparse matrix on the host (numpy) — feature matrices and label matrices of a
dataset, predictions read from a file. ``SparseTargets`` is a batch of multi-label targets on
the model's device (torch); losses read its positives of a label chunk as index pairs
(``chunk_positives``), so no dense target matrix exists in training or evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class CSR:
    indptr: np.ndarray  # [N + 1] int64
    indices: np.ndarray  # [nnz] int64, column ids (sorted within a row)
    data: np.ndarray | None  # [nnz] float32, None for a binary (label) matrix
    num_cols: int

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.num_cols)

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def row_data(self, i: int) -> np.ndarray:
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return np.ones(hi - lo, np.float32) if self.data is None else self.data[lo:hi]

    def row_lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def take_rows(self, rows: np.ndarray) -> "CSR":
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # positions of every kept entry, built without a Python loop
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return CSR(indptr, self.indices[pos], None if self.data is None else self.data[pos], self.num_cols)

    def relabel_columns(self, new_id: np.ndarray) -> "CSR":
        """The same matrix with column ``c`` renamed ``new_id[c]`` (a permutation), ids kept
        sorted within each row."""
        rows = np.repeat(np.arange(self.num_rows), self.row_lengths())
        columns = np.asarray(new_id, np.int64)[self.indices]
        order = np.lexsort((columns, rows))  # by row, then by new column id
        return CSR(self.indptr.copy(), columns[order], None if self.data is None else self.data[order], self.num_cols)

    def column_counts(self) -> np.ndarray:
        """Number of rows in which each column is present: label frequencies for a label matrix."""
        return np.bincount(self.indices, minlength=self.num_cols).astype(np.int64)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        rows = np.repeat(np.arange(self.num_rows), self.row_lengths())
        out[rows, self.indices] = 1.0 if self.data is None else self.data
        return out

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Sequence[int]],
        num_cols: int,
        values: Sequence[Sequence[float]] | None = None,
    ) -> "CSR":
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = (
            np.concatenate([np.asarray(r, np.int64) for r in rows]) if indptr[-1] else np.zeros(0, np.int64)
        )
        data = None
        if values is not None:
            data = (
                np.concatenate([np.asarray(v, np.float32) for v in values])
                if indptr[-1]
                else np.zeros(0, np.float32)
            )
        return cls(indptr, indices, data, int(num_cols))

    @classmethod
    def from_dense(cls, dense: np.ndarray, binary: bool = False) -> "CSR":
        dense = np.asarray(dense)
        rows, cols = np.nonzero(dense)
        indptr = np.zeros(dense.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
        data = None if binary else dense[rows, cols].astype(np.float32)
        return cls(indptr, cols.astype(np.int64), data, dense.shape[1])


@dataclass(frozen=True)
class SparseTargets:
    """Multi-label targets of one batch on the model's device: row ``b`` holds the label ids
    ``indices[indptr[b]:indptr[b+1]]``."""

    indptr: torch.Tensor  # [B + 1] int64
    indices: torch.Tensor  # [nnz] int64
    num_labels: int

    @property
    def batch_size(self) -> int:
        return self.indptr.numel() - 1

    @classmethod
    def from_csr(cls, labels: CSR, device: torch.device | str = "cpu") -> "SparseTargets":
        return cls(
            torch.as_tensor(labels.indptr, dtype=torch.int64, device=device),
            torch.as_tensor(labels.indices, dtype=torch.int64, device=device),
            labels.num_cols,
        )

    def row_ids(self) -> torch.Tensor:
        """The batch row of every stored label: ``[nnz]`` int64."""
        counts = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(self.batch_size, device=self.indptr.device), counts)

    def chunk_positives(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct positive ``(row, column)`` pairs of labels ``[lo, hi)`` — columns
        relative to ``lo`` — as two ``[P]`` int64 tensors in row-major order: the sparse form of
        ``dense_chunk`` (a label listed twice in a row counts once, as it does there)."""
        keep = (self.indices >= lo) & (self.indices < hi)
        width = max(1, hi - lo)
        keys = torch.unique(self.row_ids()[keep] * width + (self.indices[keep] - lo))  # sorted, distinct
        return keys // width, keys % width

    def dense_chunk(self, lo: int, hi: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Targets of labels ``[lo, hi)`` as a dense ``[B, hi - lo]`` 0/1 matrix."""
        out = torch.zeros(self.batch_size, hi - lo, dtype=dtype, device=self.indices.device)
        keep = (self.indices >= lo) & (self.indices < hi)
        out[self.row_ids()[keep], self.indices[keep] - lo] = 1
        return out

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.dense_chunk(0, self.num_labels, dtype)
