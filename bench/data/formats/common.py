"""What every format module shares: reading text files (UTF-8, gzip, universal newlines) with
errors that name the file and line, the sparse ``col:value`` entry parser, and the registry of
dataset readers by format name.

A dataset reader is ``read(folder, source) -> Read``: it reads the files a card's ``files``
names (``source``: ``bench.data.cards.Source``) from ``folder`` and returns the (features,
labels) pair of each split as the files hold them, plus any texts. Splitting, feature weighting
and filters are the same for every format and happen in ``bench.data.real``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from bench.errors import DataFormatError
from bench.registry import Registry
from bench.sparse import CSR

HEADER_LINE = 1  # 1-based line numbers: the header is line 1, row i is line i + 2


class Read(NamedTuple):
    parts: list  # [(features CSR, labels CSR)]: the train split, then the test split when the files have one
    texts: dict  # {train_text, test_text, label_text} when the format carries texts, else {}
    meta: dict  # what the reader adds to the dataset's meta (e.g. raw_text)


class Reader(NamedTuple):
    read: Callable  # (folder: Path, source) -> Read
    files: tuple  # the card's `files` keys this format reads (test_filter is allowed for every format)
    required: tuple  # those a card must give


READERS = Registry("data format")


def register_reader(name: str, files: tuple, required: tuple = ("train",)) -> Callable:
    """Decorator: ``read(folder, source) -> Read`` reads datasets whose card says ``format: name``."""

    def add(read: Callable) -> Callable:
        READERS.register(name, Reader(read, tuple(files), tuple(required)))
        return read

    return add


def _read_text(path) -> str:
    """The file as UTF-8 text with universal newlines; a missing file or bytes that are not
    UTF-8 are a ``DataFormatError`` naming the line of the first bad byte."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a directory: expected a file") from None
    if raw[:2] == b"\x1f\x8b":  # gzip (the XC repository ships some files as .gz)
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataFormatError(path, None, f"truncated or damaged gzip file ({err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            path, line, f"byte 0x{raw[err.start]:02x} is not UTF-8 ({err.reason}): expected UTF-8 text"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_lines(path) -> list[str]:
    # universal newlines turn \r\n into \n; a final newline ends the last line, it is not a row
    text = _read_text(path)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def _parse_header(path, lines: list[str], names=("num_rows", "num_cols")) -> tuple[int, ...]:
    count = {2: "two", 3: "three"}.get(len(names), str(len(names)))
    expected = f"a header '{' '.join(names)}' of {count} non-negative integers"
    if not lines:
        raise DataFormatError(path, HEADER_LINE, f"empty file, expected {expected}")
    fields = lines[0].split()
    try:
        if len(fields) != len(names):
            raise ValueError
        values = tuple(int(x) for x in fields)
    except ValueError:
        raise DataFormatError(path, HEADER_LINE, f"expected {expected}, found {lines[0]!r}") from None
    if min(values) < 0:
        raise DataFormatError(path, HEADER_LINE, f"expected {expected}, found {lines[0]!r}")
    return values


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


def _check_columns(path, cols: np.ndarray, indptr: np.ndarray, num_cols: int, what: str = "column id") -> None:
    bad = np.flatnonzero((cols < 0) | (cols >= num_cols))
    if bad.size:
        first = int(bad[0])
        raise DataFormatError(
            path,
            _line_of_entry(indptr, first),
            f"{what} {int(cols[first])} out of range: expected 0 <= id < {num_cols} (from the header)",
        )


def _sort_within_rows(path, cols: np.ndarray, values: np.ndarray, indptr: np.ndarray, what: str = "column id"):
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))  # [nnz]
    order = np.lexsort((cols, rows))  # rows keep their order, columns ascend within a row
    cols, values = cols[order], values[order]
    repeated = np.flatnonzero((cols[1:] == cols[:-1]) & (rows[1:] == rows[:-1]))
    if repeated.size:
        first = int(repeated[0]) + 1
        raise DataFormatError(
            path,
            _line_of_entry(indptr, first),
            f"{what} {int(cols[first])} appears twice in the row: expected distinct ids",
        )
    return cols, values


def _csr_from_triples(rows, cols, values, num_rows, num_cols) -> CSR:
    """Entries already sorted by (row, col) -> CSR."""
    indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    data = None if values is None else values.astype(np.float32)
    return CSR(indptr, cols.astype(np.int64), data, int(num_cols))
