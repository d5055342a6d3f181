"""The XC repository's BOW single-file format and the ``xc-bow`` dataset reader.

::

    num_points num_features num_labels
    l1,l2,... f:v f:v ...        <- labels, one space, features; a row without labels starts
                                    with the space (or with its first feature)

The small XC datasets and the Stack Exchange sets come this way: one file, or a train and a
test file (the card's ``files: {train, test}``).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np

from bench.data.formats.common import (
    Read, _body_lines, _check_columns, _parse_entries, _parse_header, _read_lines, _sort_within_rows, register_reader,
)
from bench.errors import DataFormatError
from bench.sparse import CSR


def read_bow(path) -> tuple[CSR, CSR]:
    """Read an XC BOW file into ``(features [N, V] float32, labels [N, L] binary)``, ids sorted
    within each row. Every error names the line: a malformed header, too few or too many rows,
    a label or feature id that is not an integer in range, a repeated id, a bad value."""
    lines = _read_lines(path)
    num_rows, num_features, num_labels = _parse_header(path, lines, ("num_points", "num_features", "num_labels"))
    rows = _body_lines(path, lines, num_rows)
    heads, tails = [], []  # per row: "l1,l2,..." and "f:v f:v ..."
    for line in rows:
        head, _, tail = line.lstrip(" ").partition(" ") if not line.startswith(" ") else ("", "", line)
        if ":" in head:  # no labels, the first token is already a feature
            head, tail = "", line
        heads.append(head)
        tails.append(tail)
    label_tokens = [h.split(",") if h.strip() else [] for h in heads]
    y_indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.fromiter(map(len, label_tokens), np.int64, num_rows), out=y_indptr[1:])
    flat = list(chain.from_iterable(label_tokens))
    try:
        labels = np.array(flat, dtype=np.int64) if flat else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        for i, tokens in enumerate(label_tokens):
            for token in tokens:
                try:
                    int(token)
                except ValueError:
                    raise DataFormatError(
                        path, i + 2, f"expected comma-separated integer label ids before the first space, "
                        f"found {token!r} in {heads[i]!r}"
                    ) from None
        raise DataFormatError(path, None, "label id too large: expected 0 <= id < num_labels") from None
    _check_columns(path, labels, y_indptr, num_labels, what="label id")
    labels, _ = _sort_within_rows(path, labels, np.zeros(len(labels)), y_indptr, what="label id")

    feature_tokens = [t.split() for t in tails]
    x_indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.fromiter(map(len, feature_tokens), np.int64, num_rows), out=x_indptr[1:])
    entries = list(chain.from_iterable(feature_tokens))
    if any(":" not in e for e in entries):  # a feature needs a value; find the line
        for i, tokens in enumerate(feature_tokens):
            for e in tokens:
                if ":" not in e:
                    raise DataFormatError(path, i + 2, f"expected 'feature:value' after the labels, found {e!r}")
    cols, values = _parse_entries(path, tails, entries, num_features)
    _check_columns(path, cols, x_indptr, num_features, what="feature id")
    cols, values = _sort_within_rows(path, cols, values, x_indptr, what="feature id")
    return (
        CSR(x_indptr, cols, values.astype(np.float32), num_features),
        CSR(y_indptr, labels, None, num_labels),
    )


def write_bow(path, features: CSR, labels: CSR, value_format: str = "%.6g") -> None:
    """Write ``features`` and ``labels`` (same rows) as one XC BOW file."""
    if features.num_rows != labels.num_rows:
        raise ValueError(f"features have {features.num_rows} rows but labels {labels.num_rows}")
    entry_format = "%d:" + value_format
    values = features.data if features.data is not None else np.ones(features.nnz, np.float32)
    entries = [entry_format % cv for cv in zip(features.indices.tolist(), values.tolist())]
    label_ids = [str(c) for c in labels.indices.tolist()]
    xb, yb = features.indptr.tolist(), labels.indptr.tolist()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{features.num_rows} {features.num_cols} {labels.num_cols}\n")
        f.writelines(
            ",".join(label_ids[yb[i] : yb[i + 1]]) + " " + " ".join(entries[xb[i] : xb[i + 1]]) + "\n"
            for i in range(features.num_rows)
        )


@register_reader("xc-bow", files=("train", "test"))
def read_xc_bow(folder: Path, source) -> Read:
    """The (features, labels) of the ``train`` file and, when the card names one, the ``test`` file."""
    names = [source.train] + ([source.test] if source.test else [])
    parts = [read_bow(folder / name) for name in names]
    if source.features == "tfidf":
        for name, (x, _) in zip(names, parts):
            _check_counts(folder / name, x)
    return Read(parts, {}, {})


def _check_counts(path, x: CSR) -> None:
    """tf-idf takes the logarithm of counts: a negative value is a ``DataFormatError`` naming
    its line and the card field that chose tf-idf."""
    negative = np.flatnonzero(x.data < 0) if x.data is not None else np.zeros(0, np.int64)
    if negative.size:
        first = int(negative[0])
        row = int(np.searchsorted(x.indptr, first, side="right")) - 1
        raise DataFormatError(
            path, row + 2, f"feature {int(x.indices[first])} has the negative value {float(x.data[first]):g}: the "
            "card's `features: tfidf` needs non-negative counts; a card with signed (dense numeric or already "
            "weighted) features says `features: l2` (or `as-is`)")
