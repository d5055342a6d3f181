"""XMCDataset: the train/test feature and label matrices of one dataset, as host CSR matrices.

Every dataset — synthetic or read from the XC repository — ends up here, so the rest of the
suite sees one shape: ``train_x [N, V]`` features, ``train_y [N, L]`` binary labels, and the
same for the test split. Text datasets also carry one raw text per point (``train_text``,
``test_text``) and, where the labels have text (the LF datasets), one per label (``label_text``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.errors import BenchError
from bench.sparse import CSR


@dataclass
class XMCDataset:
    name: str
    train_x: CSR  # [num_train, num_features] float32 (e.g. TF-IDF)
    train_y: CSR  # [num_train, num_labels] binary
    test_x: CSR  # [num_test, num_features]
    test_y: CSR  # [num_test, num_labels]
    meta: dict = field(default_factory=dict)  # where it came from: generator parameters, file paths
    test_filter: CSR | None = None  # [num_test, num_labels] (point, label) pairs dropped from predictions before top-k
    # Raw texts, for text encoders (None: features only). Any sequence of str: a list, or a
    # memory-mapped Arrow column when loaded from the cache (bench.data.cache.TextColumn).
    train_text: Sequence[str] | None = None  # [num_train] text of each training point
    test_text: Sequence[str] | None = None  # [num_test] text of each test point
    label_text: Sequence[str] | None = None  # [num_labels] text of each label (LF datasets: lbl.json)

    @property
    def num_features(self) -> int:
        return self.train_x.num_cols

    @property
    def num_labels(self) -> int:
        return self.train_y.num_cols

    @property
    def num_train(self) -> int:
        return self.train_x.num_rows

    @property
    def num_test(self) -> int:
        return self.test_x.num_rows

    def validate(self) -> "XMCDataset":
        """Check that the four matrices fit together; raise ``BenchError`` naming the mismatch."""
        where = f"dataset {self.name!r}"
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.num_rows != y.num_rows:
                raise BenchError(
                    f"{where}: {split}_x has {x.num_rows} rows but {split}_y has {y.num_rows}; "
                    "expected one label row per feature row"
                )
        if self.test_x.num_cols != self.train_x.num_cols:
            raise BenchError(
                f"{where}: test_x has {self.test_x.num_cols} features but train_x has {self.train_x.num_cols}"
            )
        if self.test_y.num_cols != self.train_y.num_cols:
            raise BenchError(
                f"{where}: test_y has {self.test_y.num_cols} labels but train_y has {self.train_y.num_cols}"
            )
        for matrix in ("train_x", "train_y", "test_x", "test_y"):
            _check_csr(getattr(self, matrix), f"{where}: {matrix}")
        for split, texts, x in (("train", self.train_text, self.train_x), ("test", self.test_text, self.test_x)):
            if texts is not None and len(texts) != x.num_rows:
                raise BenchError(f"{where}: {split}_text has {len(texts)} texts but {split}_x has {x.num_rows} rows")
        if self.label_text is not None and len(self.label_text) != self.num_labels:
            raise BenchError(f"{where}: label_text has {len(self.label_text)} texts but there are "
                             f"{self.num_labels} labels; expected one text per label")
        if self.test_filter is not None:
            if self.test_filter.shape != self.test_y.shape:
                raise BenchError(f"{where}: test_filter has shape {self.test_filter.shape}, expected {self.test_y.shape}")
            _check_csr(self.test_filter, f"{where}: test_filter")
        return self

    def relabel(self, new_id: np.ndarray, how: dict) -> "XMCDataset":
        """The dataset with label ``l`` renamed ``new_id[l]`` (a permutation) in every label
        matrix. Ranking metrics do not depend on label names, so a run on the renamed dataset
        measures the same task; ``how`` (JSON-able) is kept in ``meta["label_order"]``."""
        new_id = np.asarray(new_id, np.int64)
        if new_id.shape != (self.num_labels,) or not np.array_equal(np.sort(new_id), np.arange(self.num_labels)):
            raise BenchError(f"dataset {self.name!r}: a relabelling must be a permutation of its "
                             f"{self.num_labels} label ids")
        filtered = None if self.test_filter is None else self.test_filter.relabel_columns(new_id)
        label_text = None if self.label_text is None else [self.label_text[i] for i in np.argsort(new_id)]
        return dataclasses.replace(self, train_y=self.train_y.relabel_columns(new_id),
                                   test_y=self.test_y.relabel_columns(new_id), test_filter=filtered,
                                   label_text=label_text, meta={**self.meta, "label_order": how})

    def stats(self) -> dict:
        """Sizes and label-frequency statistics of the training split (plain JSON-able numbers)."""
        counts = self.train_y.column_counts()  # [L] positives per label
        positives = int(counts.sum())
        return {
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_features": self.num_features,
            "num_labels": self.num_labels,
            "avg_labels_per_point": positives / max(self.num_train, 1),
            "avg_points_per_label": positives / max(self.num_labels, 1),
            "avg_features_per_point": self.train_x.nnz / max(self.num_train, 1),
            "frac_labels_without_train_positive": float(np.mean(counts == 0)) if self.num_labels else 0.0,
        }


def _check_csr(m: CSR, where: str) -> None:
    """Structural invariants that every reader and generator must keep (O(nnz), vectorised)."""
    indptr = np.asarray(m.indptr)
    if indptr.ndim != 1 or len(indptr) < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise BenchError(f"{where}: indptr must start at 0 and never decrease")
    if indptr[-1] != len(m.indices):
        raise BenchError(f"{where}: indptr ends at {indptr[-1]} but there are {len(m.indices)} indices")
    if m.data is not None and len(m.data) != len(m.indices):
        raise BenchError(f"{where}: {len(m.data)} values for {len(m.indices)} indices")
    if len(m.indices) and (m.indices.min() < 0 or m.indices.max() >= m.num_cols):
        raise BenchError(
            f"{where}: column ids span [{m.indices.min()}, {m.indices.max()}] "
            f"but there are {m.num_cols} columns"
        )
