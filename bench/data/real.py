"""Datasets read from files, as a card describes them (``bench.data.cards.Source``).

Files are looked up in ``data.path`` when set, else in ``$XMC_SHARED_DATA/<folder>``, else in
``../shared/data/<folder>`` beside the repository. The card's format names the reader
(``bench.data.formats.READERS``); what follows is the same for every format.

Features become what the bag-of-words encoder expects: word counts or binary word indicators
get ``(1 + log tf) · idf`` with the idf of the training split, rows L2-normalised (``tfidf``);
dense numeric features (Mediamill) and the XC repository's BoW files (already TF-IDF) are only
L2-normalised (``l2``). Where a dataset ships an
official train/test split it is used; otherwise the test split is a seeded random draw of
``data.test_fraction`` of the points (``data.split_seed``), the same on every machine.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data.cards import Source, check_read_counts
from bench.data.dataset import XMCDataset
from bench.data.formats import READERS, read_filter
from bench.errors import BenchError, ConfigError
from bench.sparse import CSR

SHARED_DATA_ENV = "XMC_SHARED_DATA"


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
    if cfg.title_only:
        if source.format != "lf":
            raise ConfigError(f"config key 'data.title_only' reads an lf dataset's titles alone; dataset {name!r} "
                              f"has format {source.format}")
        source = dataclasses.replace(source, title_only=True)
    folder = source_dir(source, cfg)
    read = READERS.get(source.format).read(folder, source)
    parts = read.parts
    check_read_counts(name, source, folder, parts)
    meta = {"source": str(folder), "files": [source.train] + ([source.test] if source.test else [])}
    texts = {}
    if source.test:
        (train_x, train_y), (test_x, test_y) = parts
        meta["split"] = "official"
        meta.update(read.meta)
        texts = read.texts
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
    if cfg.label_text_points:
        if texts.get("label_text") is None:
            raise ConfigError(f"config key 'data.label_text_points' adds the label texts as training points; "
                              f"dataset {name!r} has none (an lf dataset with its raw text files)")
        train_x, train_y, texts = add_label_points(train_x, train_y, texts)
        meta["label_text_points"] = train_y.num_cols
    return XMCDataset(name, train_x, train_y, test_x, test_y, meta, test_filter=test_filter, **texts)


def add_label_points(x: CSR, y: CSR, texts: dict) -> tuple[CSR, CSR, dict]:
    """The training split with one point per label appended after its points: label ``l``'s
    text, labelled ``l`` alone, without features (empty rows: the points are for text encoders)."""
    num_labels = y.num_cols
    x = CSR(np.concatenate([x.indptr, np.full(num_labels, x.indptr[-1], np.int64)]), x.indices, x.data, x.num_cols)
    y = CSR(np.concatenate([y.indptr, y.indptr[-1] + np.arange(1, num_labels + 1, dtype=np.int64)]),
            np.concatenate([y.indices, np.arange(num_labels, dtype=np.int64)]),
            None if y.data is None else np.concatenate([y.data, np.ones(num_labels, y.data.dtype)]), num_labels)
    return x, y, {**texts, "train_text": [*texts["train_text"], *texts["label_text"]]}


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
            raise BenchError("a negative feature value: the card's `features: tfidf` needs non-negative counts; "
                             "a card with signed features says `features: l2` (or `as-is`)")
        value = np.where(tf > 0, 1.0 + np.log(np.maximum(tf, 1e-30)), 0.0) * idf[x.indices]
        return l2_normalize(CSR(x.indptr, x.indices, value.astype(np.float32), x.num_cols))

    return apply(train_x), apply(test_x)


def l2_normalize(x: CSR) -> CSR:
    value = np.ones(x.nnz) if x.data is None else x.data.astype(np.float64)
    row = np.repeat(np.arange(x.num_rows), x.row_lengths())
    norm = np.sqrt(np.bincount(row, weights=value * value, minlength=x.num_rows))  # [N]
    value /= np.where(norm > 0, norm, 1.0)[row]  # a row without features stays empty
    return CSR(x.indptr, x.indices, value.astype(np.float32), x.num_cols)
