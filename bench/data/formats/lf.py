"""The label-feature (LF) datasets' raw texts as JSON lines, and the ``lf`` dataset reader.

::

    {"uid": "B00X", "title": "...", "content": "...", "target_ind": [3, 17]}

An ``lf`` dataset is an ``xc-split`` one plus the raw texts of its points and labels: the card's
``files.texts`` names them (train, test, labels; ``trn.json``, ``tst.json``, ``lbl.json``, each
also found as ``.gz``). When they are there they are attached: a point's or a label's text is
its ``title``, plus ``" " + content`` when the record has content (LF-WikiSeeAlso's articles;
the AmazonTitles sets have titles only), so a text encoder sees everything the record says and
truncates to ``model.max_len`` tokens itself; with ``data.title_only`` (``Source.title_only``)
the title alone, as the reference reads its "titles" sets. Each record must match its BoW row (count, order
and ``target_ind`` = that row of ``*_X_Y.txt``), and the label file must hold one record per
label. When none of them is there the dataset is BoW only and ``meta["raw_text"]`` says so.
Reading keeps the decompressed file, its records and the texts in memory at once
(LF-WikiSeeAlso's contents: a few GB for a moment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bench.data.formats.common import Read, _read_lines, register_reader
from bench.data.formats.xc import read_xc_split
from bench.errors import BenchError, DataFormatError
from bench.sparse import CSR


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


# -- the lf dataset reader ------------------------------------------------------------------


@register_reader("lf", files=("train", "test", "texts"), required=("train", "test", "texts"))
def read_lf(folder: Path, source) -> Read:
    """``xc-split``'s (features, labels) of both splits, with the texts when they are there."""
    parts = read_xc_split(folder, source).parts
    label_files = [f"{prefix}_X_Y.txt" for prefix in (source.train, source.test)]
    texts, raw_text = read_raw_texts(folder, tuple(source.texts), (parts[0][1], parts[1][1]), label_files,
                                     title_only=source.title_only)
    return Read(parts, texts, {"raw_text": raw_text})


def read_raw_texts(folder: Path, names: tuple[str, ...], labels: tuple[CSR, CSR],
                   label_files: list[str], title_only: bool = False) -> tuple[dict, dict | str]:
    """``{train_text, test_text, label_text}`` from the LF files ``names`` (train, test, labels)
    in ``folder``, each checked against its split's ``labels`` (read from ``label_files``), and
    what ``meta["raw_text"]`` says; ``({}, "absent: …")`` when none of the files is there.
    ``title_only``: every text is the record's title alone (the reference's "titles" sets)."""
    paths = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
    if all(p is None for p in paths):
        return {}, f"absent: none of {', '.join(names)} (or .gz) in {folder}; features only"
    missing = [n for n, p in zip(names, paths) if p is None]
    if missing:
        found = [p.name for p in paths if p is not None]
        raise BenchError(f"{folder}: found {', '.join(found)} but not {', '.join(missing)} (nor .gz); "
                         "expected all of the raw text files (train, test, labels) or none")
    texts = {}
    for split, path, y, y_file in zip(("train", "test"), paths, labels, label_files):
        records = read_lf_jsonl(path, num_labels=y.num_cols)
        check_targets(path, records, y, y_file)
        texts[f"{split}_text"] = record_texts(records, title_only)
    label_records = read_lf_jsonl(paths[2])
    num_labels = labels[0].num_cols
    if len(label_records.uids) != num_labels:
        raise DataFormatError(paths[2], None, f"{len(label_records.uids)} label records but {label_files[0]} has "
                              f"{num_labels} labels: expected one record per label, in label id order")
    texts["label_text"] = record_texts(label_records, title_only)
    text = "title only (data.title_only)" if title_only else "title, + ' ' + content where there is content"
    return texts, {"files": [p.name for p in paths], "text": text}


def record_texts(records: LFRecords, title_only: bool = False) -> list[str]:
    """One text per record: its title, followed by a space and its content when it has one
    (the title alone with ``title_only``)."""
    if title_only:
        return list(records.titles)
    return [f"{title} {content}" if content else title for title, content in zip(records.titles, records.contents)]


def check_targets(path: Path, records: LFRecords, y: CSR, y_file: str) -> None:
    """The records of ``path`` must be the rows of ``y`` (from ``y_file``), in order, each with
    the same labels; raise ``DataFormatError`` naming the first record that is not."""
    got = records.targets  # [N, L] ids sorted within rows, as y's
    if got.num_rows != y.num_rows:
        raise DataFormatError(path, None, f"{got.num_rows} records but {y_file} has {y.num_rows} rows: "
                              "expected one record per row, in the same order")
    row = first_differing_row(got, y)
    if row is not None:
        raise DataFormatError(path, int(records.lines[row]), f"record {row} has target_ind {got.row(row).tolist()} "
                              f"but row {row} of {y_file} (line {row + 2}) has labels {y.row(row).tolist()}: "
                              "expected the same labels")


def first_differing_row(a: CSR, b: CSR) -> int | None:
    """The first row whose column ids differ between ``a`` and ``b`` (same row count, ids sorted
    within rows), or ``None``; vectorised, O(nnz)."""
    lengths = np.flatnonzero(a.row_lengths() != b.row_lengths())
    first = int(lengths[0]) if lengths.size else a.num_rows
    aligned = int(a.indptr[first])  # entries of the rows before `first` sit at the same positions
    ids = np.flatnonzero(a.indices[:aligned] != b.indices[:aligned])
    if ids.size:
        first = int(np.searchsorted(a.indptr, ids[0], side="right")) - 1
    return first if first < a.num_rows else None
