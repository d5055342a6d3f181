"""AttentionXML-style raw-text datasets, and the ``text`` dataset reader.

Four files, one line per point, line ``i`` of a texts file going with line ``i`` of its labels
file::

    train_raw_texts.txt   one document per line (whatever the line holds, as is)
    train_labels.txt      the document's labels: label NAMES separated by spaces
    test_raw_texts.txt    test_labels.txt   the same for the test split

Label ids: the names of both splits, sorted (Python string order) and numbered from 0, as the
LightXML-derived reference code numbers them (``sorted`` of every name seen in the train and
test label files); a test label unseen in training is a label like any other. A name repeated
on one line counts once (``meta["raw_text"]["repeated_label_names"]`` says how often).

The AttentionXML releases name the texts ``*_raw_texts.txt`` for most datasets and
``*_texts.txt`` (tokenised text) for some: when the card's file is not there, the other
spelling is read, and ``meta["raw_text"]["files"]`` names the files read.

There are no BoW features: ``x`` of each split is an empty ``[N, 0]`` matrix, and the texts go
to a text encoder (``model.encoder=transformer``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.formats.common import Read, _read_lines, register_reader
from bench.errors import DataFormatError
from bench.sparse import CSR

SPELLINGS = ("_raw_texts.txt", "_texts.txt")  # AttentionXML's raw and tokenised text files


def text_file(folder: Path, name: str) -> Path:
    """``folder / name``, or the other AttentionXML spelling of it (``_raw_texts.txt`` ↔
    ``_texts.txt``) when only that one is there; ``folder / name`` when neither is."""
    path = folder / name
    if path.is_file():
        return path
    for this, other in (SPELLINGS, SPELLINGS[::-1]):
        if name.endswith(this) and (folder / (name[: -len(this)] + other)).is_file():
            return folder / (name[: -len(this)] + other)
    return path


def read_texts_and_label_names(texts_path, labels_path) -> tuple[list[str], list[list[str]]]:
    """The documents of ``texts_path`` and the label names of each from ``labels_path``; a
    ``DataFormatError`` names the file and line of a label line without names, and both files
    when their line counts differ."""
    texts, label_lines = _read_lines(texts_path), _read_lines(labels_path)
    if len(texts) != len(label_lines):
        short, long_ = (labels_path, texts_path) if len(label_lines) < len(texts) else (texts_path, labels_path)
        line = min(len(texts), len(label_lines)) + 1
        raise DataFormatError(long_, line, f"{Path(long_).name} has {max(len(texts), len(label_lines))} lines but "
                              f"{short} has {min(len(texts), len(label_lines))}: line {line} has no partner there; "
                              "expected one label line per document, in the same order")
    if not texts:
        raise DataFormatError(texts_path, 1, "empty file: expected one document per line")
    names = [line.split() for line in label_lines]
    for i, row in enumerate(names):
        if not row:
            raise DataFormatError(labels_path, i + 1, "no label names: expected the document's label names, "
                                  "separated by spaces (every document has at least one label)")
    return texts, names


def label_matrix(names: list[list[str]], label_id: dict) -> tuple[CSR, int]:
    """``[N, L]`` binary labels (ids sorted within rows) and how many names a line repeated."""
    rows = [sorted({label_id[n] for n in row}) for row in names]
    repeated = sum(len(row) for row in names) - sum(len(row) for row in rows)
    return CSR.from_rows(rows, len(label_id)), repeated


@register_reader("text", files=("train", "test", "train_labels", "test_labels"),
                 required=("train", "test", "train_labels", "test_labels"))
def read_text(folder: Path, source) -> Read:
    """Both splits: empty ``[N, 0]`` features, labels numbered by sorted name, and the texts."""
    splits = []
    for texts_name, labels_name in ((source.train, source.train_labels), (source.test, source.test_labels)):
        texts_path = text_file(folder, texts_name)
        splits.append((texts_path, *read_texts_and_label_names(texts_path, folder / labels_name)))
    label_id = {name: i for i, name in enumerate(sorted({n for _, _, names in splits for row in names for n in row}))}
    parts, texts, repeated = [], {}, 0
    for split, (_, documents, names) in zip(("train", "test"), splits):
        y, again = label_matrix(names, label_id)
        features = CSR(np.zeros(len(documents) + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
        parts.append((features, y))
        texts[f"{split}_text"] = documents
        repeated += again
    meta = {"raw_text": {"files": [splits[0][0].name, source.train_labels, splits[1][0].name, source.test_labels],
                         "label_ids": "label names of both splits, sorted and numbered from 0",
                         "repeated_label_names": repeated}}
    return Read(parts, texts, meta)
