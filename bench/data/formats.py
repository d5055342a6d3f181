"""Readers and writers for the Extreme Classification Repository's file formats.

Sparse matrix text format (feature and label files, prediction files)::

    num_rows num_cols
    col:value col:value ...      <- one line per row; an empty line is an empty row
    col col ...                  <- label files may omit ``:value``, meaning 1

Parsing is vectorised over the whole file (one ``split`` per line, one numpy conversion for all
ids and all values), which reads ~1e6 nonzeros in one to two seconds. Validation runs after
the fast path; only when something is wrong does a slow per-line pass find the exact line,
so error messages always say ``path:line: what was expected``.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np

from bench.errors import DataFormatError
from bench.sparse import CSR

HEADER_LINE = 1  # 1-based line numbers: the header is line 1, row i is line i + 2


# -- sparse matrix text format -------------------------------------------------------------


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


# -- helpers -------------------------------------------------------------------------------


def _read_lines(path) -> list[str]:
    # universal newlines turn \r\n into \n; a final newline ends the last line, it is not a row
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def _parse_header(path, lines: list[str]) -> tuple[int, int]:
    expected = "a header 'num_rows num_cols' of two non-negative integers"
    if not lines:
        raise DataFormatError(path, HEADER_LINE, f"empty file, expected {expected}")
    fields = lines[0].split()
    try:
        num_rows, num_cols = (int(x) for x in fields)
    except ValueError:
        raise DataFormatError(path, HEADER_LINE, f"expected {expected}, found {lines[0]!r}") from None
    if num_rows < 0 or num_cols < 0:
        raise DataFormatError(path, HEADER_LINE, f"expected {expected}, found {lines[0]!r}")
    return num_rows, num_cols


def _body_lines(path, lines: list[str], num_rows: int) -> list[str]:
    body = lines[1:]
    if len(body) < num_rows:
        raise DataFormatError(
            path, len(lines) + 1, f"the header announces {num_rows} rows but the file ends after {len(body)}"
        )
    # blank lines past the last row are tolerated (trailing newlines); anything else is a row too many
    for i in range(num_rows, len(body)):
        if body[i].strip():
            raise DataFormatError(
                path, i + 2, f"the header announces {num_rows} rows but more non-empty lines follow"
            )
    return body[:num_rows]


def _parse_entries(path, rows: list[str], entries: list[str], num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``col[:value]`` tokens of the file -> ``[nnz]`` int64 columns, ``[nnz]`` float64 values."""
    nnz = len(entries)
    joined = " ".join(entries)
    colons = joined.count(":")
    try:
        if colons == 0:  # labels only
            col_str, val_str = entries, None
        elif colons == nnz and all(":" in e for e in entries):  # one value per entry: split all at once
            parts = joined.replace(":", " ").split()
            if len(parts) != 2 * nnz:
                raise ValueError("empty id or value")
            col_str, val_str = parts[0::2], parts[1::2]
        else:  # a mix of bare ids and col:value (or a malformed entry): one entry at a time
            split = [e.split(":") for e in entries]
            col_str = [p[0] for p in split]
            val_str = [p[1] if len(p) == 2 else ("1" if len(p) == 1 else "bad") for p in split]
        cols = np.array(col_str, dtype=np.int64) if nnz else np.zeros(0, np.int64)
        values = np.ones(nnz) if val_str is None else np.array(val_str, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("non-finite value")
    except (ValueError, OverflowError):
        _raise_first_bad_entry(path, rows, num_cols)
        # only reached if numpy and Python disagree on a number's spelling
        expected = "expected 'col:value' entries with integer ids and numeric values"
        raise DataFormatError(path, None, expected) from None
    return cols, values


def _raise_first_bad_entry(path, rows: list[str], num_cols: int) -> None:
    """Slow pass that finds the line of the first unparsable entry."""
    for i, line in enumerate(rows):
        for entry in line.split():
            col, sep, value = entry.partition(":")
            try:
                in_range = 0 <= int(col) < num_cols
            except ValueError:
                raise DataFormatError(
                    path, i + 2, f"expected 'col:value' with an integer column id, found {entry!r}"
                ) from None
            if not in_range:  # too large for int64 is out of range too
                expected = f"expected 0 <= id < {num_cols}"
                raise DataFormatError(path, i + 2, f"column id in {entry!r} out of range: {expected}")
            if sep:
                try:
                    ok = np.isfinite(float(value))
                except ValueError:
                    ok = False
                if not ok:
                    raise DataFormatError(
                        path, i + 2, f"expected 'col:value' with a finite numeric value, found {entry!r}"
                    )


def _line_of_entry(indptr: np.ndarray, position: int) -> int:
    row = int(np.searchsorted(indptr, position, side="right")) - 1
    return row + 2


def _check_columns(path, cols: np.ndarray, indptr: np.ndarray, num_cols: int) -> None:
    bad = np.flatnonzero((cols < 0) | (cols >= num_cols))
    if bad.size:
        first = int(bad[0])
        raise DataFormatError(
            path,
            _line_of_entry(indptr, first),
            f"column id {int(cols[first])} out of range: expected 0 <= id < {num_cols} (from the header)",
        )


def _sort_within_rows(path, cols: np.ndarray, values: np.ndarray, indptr: np.ndarray):
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))  # [nnz]
    order = np.lexsort((cols, rows))  # rows keep their order, columns ascend within a row
    cols, values = cols[order], values[order]
    repeated = np.flatnonzero((cols[1:] == cols[:-1]) & (rows[1:] == rows[:-1]))
    if repeated.size:
        first = int(repeated[0]) + 1
        raise DataFormatError(
            path,
            _line_of_entry(indptr, first),
            f"column id {int(cols[first])} appears twice in the row: expected distinct ids",
        )
    return cols, values
