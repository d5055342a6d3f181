"""MULAN ARFF files with their ``.xml`` label lists, and the ``arff`` dataset reader.

::

    @relation name
    @attribute word {0,1}            <- features and labels are all attributes; the .xml
    @attribute TAG_x {0,1}              (<labels><label name="TAG_x"/>...) says which are labels
    @data
    {0 1,5 1,1834 1}                 <- sparse row: 0-based attribute index, value; omitted = 0
    0.53,0.49,...,0,1                <- dense row: one value per attribute

A card gives ``files: {train, test, xml}`` (``test`` only with an official split) and, when the
split files name their label attributes differently from the ``.xml`` (Delicious),
``labels_by: last``: the labels are then the last N attributes, N from the ``.xml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from bench.data.formats.common import Read, _csr_from_triples, _read_lines, _read_text, register_reader
from bench.errors import BenchError, DataFormatError
from bench.sparse import CSR


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


@register_reader("arff", files=("train", "test", "xml"), required=("train", "xml"))
def read_mulan(folder: Path, source) -> Read:
    """The (features, labels) of the ``train`` file and, when the card names one, the ``test``
    file, whose attributes must be the training file's."""
    labels = read_mulan_xml(folder / source.xml)
    spec = len(labels) if source.labels_by == "last" else labels
    train = read_arff(folder / source.train, spec)
    parts = [(train.features, train.labels)]
    if source.test:
        test = read_arff(folder / source.test, spec)
        if test.feature_names != train.feature_names or test.label_names != train.label_names:
            raise BenchError(f"{folder / source.test}: its attributes differ from {folder / source.train}'s")
        parts.append((test.features, test.labels))
    return Read(parts, {}, {})
