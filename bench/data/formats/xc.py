"""The Extreme Classification Repository's sparse matrix text files, its filter and split index
files, and the ``xc-split`` dataset reader.

Sparse matrix text format (feature and label files, prediction files)::

    num_rows num_cols
    col:value col:value ...      <- one line per row; an empty line is an empty row
    col col ...                  <- label files may omit ``:value``, meaning 1

Parsing is vectorised over the whole file (one ``split`` per line, one numpy conversion for all
ids and all values). Validation runs after the fast path; only when something is wrong does a
slow per-line pass find the exact line, so error messages always say ``path:line: what was
expected``.

``xc-split``: a dataset as the repository's split files, ``<train>_X_Xf.txt`` (features) and
``<train>_X_Y.txt`` (labels), the same for ``<test>``; the card's ``files`` give the prefixes
(``train: trn``, ``test: tst``).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.formats.common import (
    Read, _body_lines, _check_columns, _csr_from_triples, _parse_entries, _parse_header, _read_lines,
    _sort_within_rows, register_reader,
)
from bench.errors import BenchError, DataFormatError
from bench.sparse import CSR


def read_sparse_matrix(path, binary: bool = False) -> CSR:
    """Read a sparse matrix text file into a ``CSR`` with columns sorted within each row.

    ``binary=True`` (label files) drops the values: ``data`` is ``None``. Raises
    ``DataFormatError`` naming the line for a malformed header, a wrong number of rows, a
    column id that is not an integer in ``[0, num_cols)``, a non-numeric value or a column
    repeated within a row.
    """
    lines = _read_lines(path)
    num_rows, num_cols = _parse_header(path, lines)
    rows = _body_lines(path, lines, num_rows)
    tokens = [line.split() for line in rows]  # per row: ["col:value", ...]
    lengths = np.fromiter(map(len, tokens), np.int64, num_rows)
    indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    cols, values = _parse_entries(path, rows, list(chain.from_iterable(tokens)), num_cols)
    _check_columns(path, cols, indptr, num_cols)
    cols, values = _sort_within_rows(path, cols, values, indptr)
    return CSR(indptr, cols, None if binary else values.astype(np.float32), num_cols)


def write_sparse_matrix(path, matrix: CSR, value_format: str = "%.6g") -> None:
    """Write ``matrix`` in the sparse text format: ``col`` alone for a binary matrix
    (``data is None``), else ``col:value`` with values printed by ``value_format``."""
    cols = matrix.indices.tolist()
    if matrix.data is None:
        entries = [str(c) for c in cols]
    else:
        entry_format = "%d:" + value_format  # one %-format per entry, no f-string per value
        entries = [entry_format % cv for cv in zip(cols, matrix.data.tolist())]
    bounds = matrix.indptr.tolist()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{matrix.num_rows} {matrix.num_cols}\n")
        f.writelines(" ".join(entries[lo:hi]) + "\n" for lo, hi in zip(bounds[:-1], bounds[1:]))


# -- filter files, split index files --------------------------------------------------------


def read_filter(path, num_rows: int, num_labels: int) -> CSR:
    """A filter file (one ``doc label`` pair per line, 0-based, no header) as a binary
    ``[num_rows, num_labels]`` matrix of the pairs to drop from predictions. A repeated pair
    counts once; an empty file filters nothing."""
    lines = _read_lines(path)
    docs, labels = [], []
    for i, line in enumerate(lines):
        fields = line.split()
        if not fields:
            continue
        try:
            doc, label = (int(f) for f in fields)
        except ValueError:
            raise DataFormatError(path, i + 1, f"expected 'doc label' (two 0-based integers), found {line!r}") from None
        if not (0 <= doc < num_rows and 0 <= label < num_labels):
            raise DataFormatError(
                path, i + 1, f"pair ({doc}, {label}) out of range: expected 0 <= doc < {num_rows} and 0 <= label < {num_labels}"
            )
        docs.append(doc)
        labels.append(label)
    keys = np.unique(np.array(docs, np.int64) * num_labels + np.array(labels, np.int64))
    return _csr_from_triples(keys // max(num_labels, 1), keys % max(num_labels, 1), None, num_rows, num_labels)


def write_filter(path, pairs: CSR) -> None:
    rows = np.repeat(np.arange(pairs.num_rows), pairs.row_lengths())
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{r} {c}\n" for r, c in zip(rows.tolist(), pairs.indices.tolist()))


def read_split_indices(path, num_points: int, column: int = 0) -> np.ndarray:
    """Column ``column`` of an XC split file (``*_trSplit.txt``/``*_tstSplit.txt``: one row per
    point of the split, one column per random split, 1-based point ids) as 0-based ids."""
    lines = [(i + 1, line.split()) for i, line in enumerate(_read_lines(path)) if line.strip()]
    if not lines:
        raise DataFormatError(path, 1, "empty file: expected one line per point of the split")
    width = len(lines[0][1])
    if not 0 <= column < width:
        raise DataFormatError(path, 1, f"split column {column} requested but the file has {width} columns")
    ids = np.empty(len(lines), np.int64)
    for j, (line_no, fields) in enumerate(lines):
        if len(fields) != width:
            raise DataFormatError(path, line_no, f"{len(fields)} columns: expected {width} like the first line")
        try:
            ids[j] = int(fields[column])
        except ValueError:
            raise DataFormatError(path, line_no, f"expected integer point ids, found {fields[column]!r}") from None
        if not 1 <= ids[j] <= num_points:
            raise DataFormatError(path, line_no, f"point id {ids[j]} out of range: expected 1 <= id <= {num_points} (1-based)")
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError(path, None, f"column {column} repeats a point id: expected distinct ids")
    return ids - 1


def write_split_indices(path, columns: Sequence[np.ndarray]) -> None:
    """Write 0-based id arrays (same length) as an XC split file (1-based, one column each)."""
    table = np.stack([np.asarray(c, np.int64) + 1 for c in columns], axis=1)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(" ".join(map(str, row)) + "\n" for row in table.tolist())


# -- the xc-split dataset reader ------------------------------------------------------------


@register_reader("xc-split", files=("train", "test"), required=("train", "test"))
def read_xc_split(folder: Path, source) -> Read:
    """The (features, labels) of the ``train`` and ``test`` prefixes' split files."""
    prefixes = (source.train, source.test)
    parts = [
        (read_sparse_matrix(folder / f"{prefix}_X_Xf.txt"), read_sparse_matrix(folder / f"{prefix}_X_Y.txt", binary=True))
        for prefix in prefixes
    ]
    for (x, y), prefix in zip(parts, prefixes):
        if x.num_rows != y.num_rows:
            raise BenchError(f"{folder}: {prefix}_X_Xf.txt has {x.num_rows} rows but {prefix}_X_Y.txt {y.num_rows}")
    return Read(parts, {}, {})
