"""Readers and writers for the Extreme Classification Repository's file formats.

Sparse matrix text format (feature and label files, prediction files)::

    num_rows num_cols
    col:value col:value ...      <- one line per row; an empty line is an empty row
    col col ...                  <- label files may omit ``:value``, meaning 1

Parsing is vectorised over the whole file (one ``split`` per line, one numpy conversion for all
ids and all values), which reads ~1e6 nonzeros in one to two seconds. Validation runs after
the fast path; only when something is wrong does a slow per-line pass find the exact line,
so error messages always say ``path:line: what was expected``.

Also here (each section below starts with its format):

* the XC **BOW single-file** format (``num_points num_features num_labels`` then
  ``l1,l2,... f:v f:v ...``), in which the small XC datasets and the Stack Exchange sets come;
* **MULAN ARFF** (``@attribute`` lines, ``@data``, sparse ``{idx val,...}`` or dense rows) with
  the companion **MULAN .xml** naming the label attributes;
* **filter files** (``doc label`` pairs to drop from predictions), **split index files** and the
  **label-feature (LF)** raw-text JSON lines (``uid``, ``title``, ``content``, ``target_ind``).
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path
from typing import NamedTuple, Sequence

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


# -- BOW single-file format (XC small datasets) --------------------------------------------
#
#     num_points num_features num_labels
#     l1,l2,... f:v f:v ...        <- labels, one space, features; a row without labels starts
#                                     with the space (or with its first feature)


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


# -- MULAN ARFF + .xml ---------------------------------------------------------------------
#
#     @relation name
#     @attribute word {0,1}            <- features and labels are all attributes; the .xml
#     @attribute TAG_x {0,1}              (<labels><label name="TAG_x"/>...) says which are labels
#     @data
#     {0 1,5 1,1834 1}                 <- sparse row: 0-based attribute index, value; omitted = 0
#     0.53,0.49,...,0,1                <- dense row: one value per attribute


class ArffData(NamedTuple):
    features: CSR  # [N, V] float32: the non-label attributes, in file order
    labels: CSR  # [N, L] binary: the label attributes, in the order of the label list
    feature_names: list
    label_names: list


def read_mulan_xml(path) -> list[str]:
    """Label names of a MULAN ``.xml`` label file, in document order (nested labels included)."""
    import xml.etree.ElementTree as ET

    try:
        text = _read_text(path)
        root = ET.fromstring(text)
    except ET.ParseError as err:
        line = err.position[0] if getattr(err, "position", None) else None
        raise DataFormatError(path, line, f"not well-formed XML ({err}): expected a MULAN <labels> file") from None
    names = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "label":
            continue
        name = element.get("name")
        if not name:
            raise DataFormatError(path, None, "a <label> element without a name attribute: expected <label name=\"...\">")
        names.append(name)
    if not names:
        raise DataFormatError(path, None, "no <label name=...> elements: expected at least one label")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataFormatError(path, None, f"label names repeated: {repeated[:5]}; expected distinct names")
    return names


def write_mulan_xml(path, label_names: Sequence[str]) -> None:
    from xml.sax.saxutils import quoteattr

    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<labels xmlns="http://mulan.sourceforge.net/labels">\n')
        f.writelines(f"<label name={quoteattr(n)}></label>\n" for n in label_names)
        f.write("</labels>\n")


def read_arff(path, labels) -> ArffData:
    """Read a MULAN ARFF file; ``labels`` is the list of label attribute names (from
    ``read_mulan_xml``) or an int ``n``: the last ``n`` attributes (MULAN's other convention).

    Feature attributes must be numeric (``numeric``/``real``/``integer`` or a nominal with
    numeric values such as ``{0,1}``); label attributes must hold 0 or 1. Errors name the line.
    """
    lines = _read_lines(path)
    if not any(line.strip() for line in lines):
        raise DataFormatError(path, 1, "empty file: expected an ARFF header (@relation, @attribute ..., @data)")
    names, kinds, decl_lines, data_start = _parse_arff_header(path, lines)
    label_attrs = _label_attributes(path, names, labels)
    n_attr = len(names)
    is_label = np.zeros(n_attr, bool)
    is_label[label_attrs] = True
    for a in label_attrs:
        if kinds[a] not in ("binary", "numeric"):
            raise DataFormatError(path, decl_lines[a], f"label attribute {names[a]!r} is {kinds[a]}: expected {{0,1}}")
    for a in np.flatnonzero(~is_label):
        if kinds[a] not in ("binary", "numeric"):
            raise DataFormatError(
                path, decl_lines[a], f"feature attribute {names[a]!r} is {kinds[a]}: expected numeric or {{0,1}}"
            )
    feature_attrs = np.flatnonzero(~is_label)
    column = np.full(n_attr, -1, np.int64)  # attribute -> feature column or label column
    column[feature_attrs] = np.arange(len(feature_attrs))
    column[label_attrs] = np.arange(len(label_attrs))

    rows, attrs, values, row_lines = _parse_arff_rows(path, lines, data_start, n_attr)
    num_rows = len(row_lines)
    label_entry = is_label[attrs]
    bad = np.flatnonzero(label_entry & (values != 0) & (values != 1))
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            path, int(row_lines[rows[i]]), f"label attribute {names[attrs[i]]!r} has value {values[i]:g}: expected 0 or 1"
        )
    keep = values != 0
    x = _csr_from_triples(rows[keep & ~label_entry], column[attrs[keep & ~label_entry]],
                          values[keep & ~label_entry], num_rows, len(feature_attrs))
    y = _csr_from_triples(rows[keep & label_entry], column[attrs[keep & label_entry]], None,
                          num_rows, len(label_attrs))
    return ArffData(x, y, [names[a] for a in feature_attrs], [names[a] for a in label_attrs])


def write_arff(path, features: CSR, labels: CSR, feature_names=None, label_names=None,
               relation: str = "xmc", sparse: bool = True) -> None:
    """Write a MULAN ARFF file: numeric features first, then ``{0,1}`` labels; sparse rows by
    default (``{idx val,...}``), dense rows (``v,v,...``) with ``sparse=False``."""
    V, L = features.num_cols, labels.num_cols
    feature_names = list(feature_names or (f"f{i}" for i in range(V)))
    label_names = list(label_names or (f"label{i}" for i in range(L)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"@relation {_arff_quote(relation)}\n\n")
        f.writelines(f"@attribute {_arff_quote(n)} numeric\n" for n in feature_names)
        f.writelines(f"@attribute {_arff_quote(n)} {{0,1}}\n" for n in label_names)
        f.write("\n@data\n")
        for i in range(features.num_rows):
            cols = np.concatenate([features.row(i), labels.row(i) + V])
            vals = np.concatenate([features.row_data(i), np.ones(len(labels.row(i)), np.float32)])
            if sparse:
                f.write("{" + ",".join(f"{c} {v:.9g}" for c, v in zip(cols.tolist(), vals.tolist())) + "}\n")
            else:
                dense = np.zeros(V + L)
                dense[cols] = vals
                f.write(",".join(f"{v:.9g}" for v in dense.tolist()) + "\n")


_ARFF_NUMERIC = ("numeric", "real", "integer")


def _parse_arff_header(path, lines):
    names, kinds, decl_lines = [], [], []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith("%"):
            continue
        keyword = text.split(None, 1)[0].lower()
        if keyword == "@relation":
            continue
        if keyword == "@data":
            if not names:
                raise DataFormatError(path, i + 1, "@data before any @attribute: expected the attributes first")
            return names, kinds, decl_lines, i + 1
        if keyword != "@attribute":
            raise DataFormatError(
                path, i + 1, f"expected @relation, @attribute, @data or a % comment in the header, found {text[:60]!r}"
            )
        name, rest = _arff_name(path, i + 1, text[len("@attribute"):].strip())
        names.append(name)
        kinds.append(_arff_kind(rest))
        decl_lines.append(i + 1)
    raise DataFormatError(path, len(lines), "the header never reaches @data: expected '@data' before the rows")


def _arff_name(path, line_no, text):
    """The attribute name (quoted or bare) and the rest of the declaration."""
    if text[:1] in ("'", '"'):
        quote, out, i = text[0], [], 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                return "".join(out), text[i + 1:].strip()
            out.append(ch)
            i += 1
        raise DataFormatError(path, line_no, f"unterminated quoted attribute name: expected a closing {quote}")
    parts = text.split(None, 1)
    if len(parts) < 2:
        raise DataFormatError(path, line_no, "expected '@attribute NAME TYPE'")
    return parts[0].replace("\\", ""), parts[1].strip()


def _arff_kind(type_text):
    low = type_text.lower()
    if low in _ARFF_NUMERIC:
        return "numeric"
    if low.startswith("{") and low.endswith("}"):
        values = [v.strip().strip("'\"") for v in type_text[1:-1].split(",")]
        try:
            [float(v) for v in values]
        except ValueError:
            return f"nominal {type_text}"
        return "binary" if set(values) <= {"0", "1"} else "numeric"
    return low.split(None, 1)[0] if low else "untyped"


def _label_attributes(path, names, labels) -> np.ndarray:
    if isinstance(labels, (int, np.integer)):
        if not 0 < labels < len(names):
            raise DataFormatError(path, None, f"{labels} label attributes requested but the file has {len(names)} attributes")
        return np.arange(len(names) - labels, len(names))
    where = {n: i for i, n in enumerate(names)}
    missing = [n for n in labels if n not in where]
    if missing:
        raise DataFormatError(
            path, None, f"{len(missing)} label(s) of the label list are not attributes of this file, "
            f"e.g. {missing[:3]}: expected every label name to be declared by an @attribute line"
        )
    return np.array([where[n] for n in labels], np.int64)


def _parse_arff_rows(path, lines, data_start, n_attr):
    """All ``(row, attribute, value)`` entries of the data section, vectorised where possible."""
    row_lines, sparse_entries, sparse_counts, dense_rows, dense_idx = [], [], [], [], []
    for i in range(data_start, len(lines)):
        text = lines[i].strip()
        if not text or text.startswith("%"):
            continue
        r = len(row_lines)
        row_lines.append(i + 1)
        if text.startswith("{"):
            if not text.endswith("}"):
                raise DataFormatError(path, i + 1, "sparse row without a closing '}': expected '{index value,...}'")
            body = text[1:-1].strip()
            entries = body.split(",") if body else []
            sparse_entries.extend(entries)
            sparse_counts.append((r, len(entries)))
        else:
            dense_rows.append(text.split(","))
            dense_idx.append(r)
    row_lines = np.array(row_lines, np.int64)
    # sparse rows: "idx val" pairs
    s_rows = np.repeat(np.array([r for r, _ in sparse_counts], np.int64),
                       np.array([c for _, c in sparse_counts], np.int64))
    parts = " ".join(sparse_entries).split()
    try:
        if len(parts) != 2 * len(sparse_entries):
            raise ValueError
        s_attr = np.array(parts[0::2], np.int64) if parts else np.zeros(0, np.int64)
        s_val = np.array([p.strip("'\"") for p in parts[1::2]], np.float64) if parts else np.zeros(0)
    except (ValueError, OverflowError):
        _raise_bad_sparse_entry(path, sparse_entries, s_rows, row_lines)
        raise DataFormatError(path, None, "malformed sparse entry: expected 'index value'") from None
    # dense rows: one value per attribute
    for r, values in zip(dense_idx, dense_rows):
        if len(values) != n_attr:
            raise DataFormatError(path, int(row_lines[r]), f"dense row has {len(values)} values: expected {n_attr} (one per @attribute)")
    d_rows = np.repeat(np.array(dense_idx, np.int64), n_attr)
    d_attr = np.tile(np.arange(n_attr, dtype=np.int64), len(dense_idx))
    flat = [v.strip().strip("'\"") for values in dense_rows for v in values]
    try:
        d_val = np.array(flat, np.float64) if flat else np.zeros(0)
        if not np.isfinite(d_val).all():
            raise ValueError
    except ValueError:
        for r, values in zip(dense_idx, dense_rows):
            for a, v in enumerate(values):
                try:
                    ok = np.isfinite(float(v.strip().strip("'\"")))
                except ValueError:
                    ok = False
                if not ok:
                    expected = "a finite number ('?' missing values are not supported)"
                    raise DataFormatError(path, int(row_lines[r]), f"value {v!r} of attribute {a}: expected {expected}")
        raise
    rows, attrs, vals = (np.concatenate(p) for p in ((s_rows, d_rows), (s_attr, d_attr), (s_val, d_val)))
    bad = np.flatnonzero((attrs < 0) | (attrs >= n_attr))
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(path, int(row_lines[rows[i]]), f"attribute index {attrs[i]} out of range: expected 0 <= index < {n_attr}")
    order = np.lexsort((attrs, rows))
    rows, attrs, vals = rows[order], attrs[order], vals[order]
    repeated = np.flatnonzero((attrs[1:] == attrs[:-1]) & (rows[1:] == rows[:-1]))
    if repeated.size:
        i = int(repeated[0]) + 1
        raise DataFormatError(path, int(row_lines[rows[i]]), f"attribute index {attrs[i]} appears twice in the row: expected distinct indices")
    if not np.isfinite(vals).all():
        i = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise DataFormatError(path, int(row_lines[rows[i]]), f"non-finite value for attribute {attrs[i]}: expected a finite number")
    return rows, attrs, vals, row_lines


def _raise_bad_sparse_entry(path, entries, rows, row_lines):
    for entry, r in zip(entries, rows):
        parts = entry.split()
        ok = len(parts) == 2
        if ok:
            try:
                int(parts[0])
                float(parts[1].strip("'\""))
            except ValueError:
                ok = False
        if not ok:
            raise DataFormatError(path, int(row_lines[r]), f"expected 'index value' entries in a sparse row, found {entry.strip()!r}")


def _arff_quote(name: str) -> str:
    if name and re.fullmatch(r"[^\s'\"{},%\\]+", name):
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _csr_from_triples(rows, cols, values, num_rows, num_cols) -> CSR:
    """Entries already sorted by (row, col) -> CSR."""
    indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    data = None if values is None else values.astype(np.float32)
    return CSR(indptr, cols.astype(np.int64), data, int(num_cols))


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


# -- label-feature (LF) raw text: JSON lines -------------------------------------------------
#
#     {"uid": "B00X", "title": "...", "content": "...", "target_ind": [3, 17]}


class LFRecords(NamedTuple):
    uids: list
    titles: list
    contents: list  # "" where a record has no content
    targets: CSR | None  # [N, num_labels] binary, None for a label file (no target_ind)
    lines: np.ndarray | None = None  # [N] 1-based line of each record (blank lines are skipped, not records)


def read_lf_jsonl(path, num_labels: int | None = None) -> LFRecords:
    """Read an LF JSON-lines file (``trn.json``/``tst.json``/``lbl.json``). With ``num_labels``
    every record must carry ``target_ind`` (0-based label ids below ``num_labels``)."""
    lines = _read_lines(path)
    uids, titles, contents, targets, record_lines = [], [], [], [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        record_lines.append(i + 1)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, i + 1, f"not a JSON object ({err.msg}): expected one JSON object per line") from None
        if not isinstance(record, dict) or "uid" not in record or "title" not in record:
            raise DataFormatError(path, i + 1, "expected a JSON object with 'uid' and 'title'")
        uids.append(str(record["uid"]))
        titles.append(str(record["title"]))
        contents.append(str(record.get("content", "") or ""))
        if num_labels is not None:
            ids = record.get("target_ind")
            if not isinstance(ids, list) or not all(isinstance(t, int) and 0 <= t < num_labels for t in ids):
                raise DataFormatError(
                    path, i + 1, f"expected 'target_ind': a list of integer label ids in [0, {num_labels}), found {ids!r}"
                )
            if len(set(ids)) != len(ids):
                raise DataFormatError(path, i + 1, f"'target_ind' repeats a label id: {ids!r}")
            targets.append(sorted(ids))
    if not uids:
        raise DataFormatError(path, 1, "empty file: expected one JSON object per line")
    y = CSR.from_rows(targets, num_labels) if num_labels is not None else None
    return LFRecords(uids, titles, contents, y, np.array(record_lines, np.int64))


def write_lf_jsonl(path, uids, titles, contents=None, targets: CSR | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, (uid, title) in enumerate(zip(uids, titles)):
            record = {"uid": uid, "title": title}
            if contents is not None and contents[i]:
                record["content"] = contents[i]
            if targets is not None:
                record["target_ind"] = targets.row(i).tolist()
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


# -- helpers -------------------------------------------------------------------------------


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
