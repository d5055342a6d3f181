"""Real datasets read from files as they are distributed: MULAN ARFF (+ .xml) and XC BOW.

A dataset is described by a ``Source`` (its folder, format, files and how to split it) and
registered by name in ``bench.data.catalog``. Files are looked up in ``data.path`` when set,
else in ``$XMC_SHARED_DATA/<folder>``, else in ``../shared/data/<folder>`` beside the repository.

Features become what the bag-of-words encoder expects: word counts or binary word indicators
get ``(1 + log tf) · idf`` with the idf of the training split, rows L2-normalised (``tfidf``);
dense numeric features (Mediamill) and the XC repository's BoW files (already TF-IDF) are only
L2-normalised (``l2``). Where a dataset ships an
official train/test split it is used; otherwise the test split is a seeded random draw of
``data.test_fraction`` of the points (``data.split_seed``), the same on every machine.

The label-feature (LF) datasets also ship raw text as JSON lines beside their BoW files
(``trn.json``, ``tst.json``, ``lbl.json``, each also found as ``.gz``). When they are there they
are attached: a point's or a label's text is its ``title``, plus ``" " + content`` when the record
has content (LF-WikiSeeAlso's articles; the AmazonTitles sets have titles only), so a text
encoder sees everything the record says and truncates to ``model.max_len`` tokens itself. Each
record must match its BoW row (count, order and ``target_ind`` = that row of ``*_X_Y.txt``),
and ``lbl.json`` must hold one record per label. When none of them is there the dataset is
BoW only and ``meta["raw_text"]`` says so. Reading keeps the decompressed file, its records and
the texts in memory at once (LF-WikiSeeAlso's contents: a few GB for a moment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data.dataset import XMCDataset
from bench.data.formats import (
    LFRecords, read_arff, read_bow, read_filter, read_lf_jsonl, read_mulan_xml, read_sparse_matrix,
)
from bench.errors import BenchError, ConfigError, DataFormatError
from bench.sparse import CSR

SHARED_DATA_ENV = "XMC_SHARED_DATA"


@dataclass(frozen=True)
class Source:
    folder: str  # directory name under the shared data root
    format: str  # arff (MULAN ARFF + .xml) | bow (XC BOW single file) | xc-split (trn_X_Xf.txt, trn_X_Y.txt, tst_…)
    train: str  # the training file, or the only file when there is no official split
    test: str = ""  # the official test file; "" means a seeded split of `train`
    xml: str = ""  # MULAN label file (arff)
    labels_by: str = "name"  # arff: `name` (attributes the .xml names) | `last` (the last N, N from the .xml)
    features: str = "tfidf"  # tfidf (counts / binary words) | l2 (dense numeric features) | as-is (already TF-IDF)
    test_filter: str = ""  # optional filter file of (test point, label) pairs dropped from predictions
    raw_text: tuple[str, ...] = ()  # LF raw text JSON lines (train, test, labels), each also looked for + ".gz";
    #                                 attached when present (needs the official split), BoW only when absent


def shared_data_root() -> Path:
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def source_dir(source: Source, cfg: DataConfig) -> Path:
    folder = Path(cfg.path) if cfg.path else shared_data_root() / source.folder
    if not folder.is_dir():
        raise BenchError(
            f"dataset {cfg.name!r}: folder {folder} does not exist; expected the files {source.train}"
            f"{' and ' + source.test if source.test else ''} there (set data.path=DIR or ${SHARED_DATA_ENV})"
        )
    return folder


def load_source(name: str, source: Source, cfg: DataConfig) -> XMCDataset:
    folder = source_dir(source, cfg)
    if source.format == "arff":
        labels = read_mulan_xml(folder / source.xml)
        spec = len(labels) if source.labels_by == "last" else labels
        train = read_arff(folder / source.train, spec)
        parts = [(train.features, train.labels)]
        if source.test:
            test = read_arff(folder / source.test, spec)
            if test.feature_names != train.feature_names or test.label_names != train.label_names:
                raise BenchError(f"{folder / source.test}: its attributes differ from {folder / source.train}'s")
            parts.append((test.features, test.labels))
    elif source.format == "bow":
        parts = [read_bow(folder / source.train)]
        if source.test:
            parts.append(read_bow(folder / source.test))
    elif source.format == "xc-split":  # train/test are the prefixes: trn -> trn_X_Xf.txt + trn_X_Y.txt
        parts = [
            (read_sparse_matrix(folder / f"{prefix}_X_Xf.txt"), read_sparse_matrix(folder / f"{prefix}_X_Y.txt", binary=True))
            for prefix in (source.train, source.test)
        ]
        for (x, y), prefix in zip(parts, (source.train, source.test)):
            if x.num_rows != y.num_rows:
                raise BenchError(f"{folder}: {prefix}_X_Xf.txt has {x.num_rows} rows but {prefix}_X_Y.txt {y.num_rows}")
    else:
        raise ValueError(f"unknown source format {source.format!r}")
    meta = {"source": str(folder), "files": [source.train] + ([source.test] if source.test else [])}
    texts = {}
    if source.test:
        (train_x, train_y), (test_x, test_y) = parts
        meta["split"] = "official"
        if source.raw_text:
            label_files = ([f"{p}_X_Y.txt" for p in (source.train, source.test)] if source.format == "xc-split"
                           else [source.train, source.test])
            texts, meta["raw_text"] = read_raw_texts(folder, source.raw_text, (train_y, test_y), label_files)
    elif source.raw_text:
        raise ValueError("raw_text needs an official train/test split")
    else:
        x, y = parts[0]
        train_rows, test_rows = seeded_split(x.num_rows, cfg.test_fraction, cfg.split_seed)
        train_x, train_y, test_x, test_y = x.take_rows(train_rows), y.take_rows(train_rows), x.take_rows(test_rows), y.take_rows(test_rows)
        meta["split"] = f"seeded: test_fraction={cfg.test_fraction} split_seed={cfg.split_seed}"
    if source.features == "tfidf":
        train_x, test_x = tf_idf(train_x, test_x)
    elif source.features == "l2":
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    meta["features"] = source.features
    test_filter = None
    if source.test_filter and (folder / source.test_filter).exists():
        test_filter = read_filter(folder / source.test_filter, test_y.num_rows, test_y.num_cols)
        meta["test_filter"] = source.test_filter
    return XMCDataset(name, train_x, train_y, test_x, test_y, meta, test_filter=test_filter, **texts)


def read_raw_texts(folder: Path, names: tuple[str, ...], labels: tuple[CSR, CSR],
                   label_files: list[str]) -> tuple[dict, dict | str]:
    """``{train_text, test_text, label_text}`` from the LF files ``names`` (train, test, labels)
    in ``folder``, each checked against its split's ``labels`` (read from ``label_files``), and
    what ``meta["raw_text"]`` says; ``({}, "absent: …")`` when none of the files is there."""
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
        texts[f"{split}_text"] = record_texts(records)
    label_records = read_lf_jsonl(paths[2])
    num_labels = labels[0].num_cols
    if len(label_records.uids) != num_labels:
        raise DataFormatError(paths[2], None, f"{len(label_records.uids)} label records but {label_files[0]} has "
                              f"{num_labels} labels: expected one record per label, in label id order")
    texts["label_text"] = record_texts(label_records)
    return texts, {"files": [p.name for p in paths], "text": "title, + ' ' + content where there is content"}


def record_texts(records: LFRecords) -> list[str]:
    """One text per record: its title, followed by a space and its content when it has one."""
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


def seeded_split(num_points: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), each ascending: a random ``test_fraction`` of the points drawn
    by ``np.random.default_rng(seed).permutation`` is the test split."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"config key 'data.test_fraction' must be in (0, 1), got {test_fraction}")
    num_test = int(round(num_points * test_fraction))
    if not 0 < num_test < num_points:
        raise ConfigError(f"data.test_fraction={test_fraction} leaves an empty split of {num_points} points")
    order = np.random.default_rng(seed).permutation(num_points)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def tf_idf(train_x: CSR, test_x: CSR) -> tuple[CSR, CSR]:
    """``(1 + log tf) · idf`` with the smoothed idf of the training rows, rows L2-normalised."""
    df = np.bincount(train_x.indices, minlength=train_x.num_cols)  # [V]
    idf = np.log((1.0 + train_x.num_rows) / (1.0 + df)) + 1.0

    def apply(x: CSR) -> CSR:
        tf = np.ones(x.nnz) if x.data is None else x.data.astype(np.float64)
        if np.any(tf < 0):
            raise BenchError("tf-idf needs non-negative counts; use features=l2 for signed features")
        value = np.where(tf > 0, 1.0 + np.log(np.maximum(tf, 1e-30)), 0.0) * idf[x.indices]
        return l2_normalize(CSR(x.indptr, x.indices, value.astype(np.float32), x.num_cols))

    return apply(train_x), apply(test_x)


def l2_normalize(x: CSR) -> CSR:
    value = np.ones(x.nnz) if x.data is None else x.data.astype(np.float64)
    row = np.repeat(np.arange(x.num_rows), x.row_lengths())
    norm = np.sqrt(np.bincount(row, weights=value * value, minlength=x.num_rows))  # [N]
    value /= np.where(norm > 0, norm, 1.0)[row]  # a row without features stays empty
    return CSR(x.indptr, x.indices, value.astype(np.float32), x.num_cols)
