"""Prepared datasets cached as local Hugging Face ``datasets`` Arrow files.

``bench.data.catalog.prepare(cfg)`` reads a registered dataset, validates it (matrix invariants, the counts of its
card), computes label statistics and propensities, and writes::

    <cache_dir>/<name>/
        train/, test/     Arrow datasets: feature_ids, feature_values, label_ids (large lists, one row per point),
                          text (large string) when the dataset has raw texts
        labels/           Arrow dataset: train_count, propensity (one row per label), text when labels have texts
        test_filter/      Arrow dataset: label_ids per test point to drop from predictions (when the dataset has a filter)
        meta.json         name, the data config it was built from, statistics, card propensity A/B — written last

Everything is written into a temporary folder beside the target and renamed into place only
when complete, so a failed prepare leaves no partial cache and never damages an existing one.
``load_cached`` memory-maps the Arrow files and hands their buffers to ``CSR`` without a copy:
loading needs no more memory than the sparse matrices themselves (and their pages are
file-backed, shared and evictable). Texts stay in the mapped files too (``TextColumn``): a text
becomes a Python ``str`` only when it is read (a batch's texts), never the whole column at once.

A cache records whether the dataset had texts when it was prepared; raw text files added to
the data folder afterwards need ``xmc-bench data prepare`` again. A cache of another
``FORMAT_VERSION`` (v1 had no texts) is ignored, as one built from other data settings is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data.dataset import XMCDataset
from bench.errors import BenchError
from bench.sparse import CSR

CACHE_ENV = "XMC_CACHE_DIR"
FORMAT_VERSION = 2  # 2: optional text columns (train, test, labels)
SPLITS = ("train", "test")
NOT_KEY = ("path", "cache_dir")  # where files live does not change the data


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "xmc-dst-bench"


def cache_path(cfg: DataConfig) -> Path:
    from bench.data.cards import dataset_name

    return cache_root(cfg) / dataset_name(cfg.name)  # a card file's dataset under the card's name


def cache_key(cfg: DataConfig) -> dict:
    """The data config fields that decide the cached content (not where files live)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_KEY}


def label_statistics(dataset: XMCDataset) -> dict:
    """``XMCDataset.stats()`` plus the shape of the label-frequency distribution."""
    counts = dataset.train_y.column_counts()  # [L]
    return {
        **dataset.stats(),
        "label_frequency_max": int(counts.max()) if counts.size else 0,
        "label_frequency_median": float(np.median(counts)) if counts.size else 0.0,
        "frac_labels_with_at_most_5_train_points": float(np.mean(counts <= 5)) if counts.size else 0.0,
        "frac_train_points_without_labels": float(np.mean(dataset.train_y.row_lengths() == 0)),
        "frac_test_points_without_labels": float(np.mean(dataset.test_y.row_lengths() == 0)),
        "frac_test_labels_unseen_in_train": float(
            np.mean(counts[dataset.test_y.indices] == 0)) if dataset.test_y.nnz else 0.0,
    }


def store(cfg: DataConfig, dataset: XMCDataset, log=print) -> Path:
    """Check the validated ``dataset`` (built from ``cfg``) against its card and cache it;
    returns the cache folder. ``bench.data.catalog.prepare`` builds and stores a dataset."""
    from bench.data.cards import DEFAULT_PROPENSITY, card_file, check_against_card, load_card
    from bench.data.propensity import jain_propensity

    card = load_card(cfg.name)
    stats = label_statistics(dataset)
    if card is not None:
        check_against_card(stats, card)
    propensity = card["propensity"] if card else DEFAULT_PROPENSITY
    A, B = propensity["A"], propensity["B"]
    counts = dataset.train_y.column_counts()
    meta = {
        "format_version": FORMAT_VERSION,
        "name": dataset.name,
        "data_config": cache_key(cfg),
        "statistics": stats,
        "propensity": {"A": A, "B": B},
        "source": dataset.meta,
        "card": card_file(cfg.name) if card else None,
    }
    root = cache_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    final = cache_path(cfg)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        for split in SPLITS:
            x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
            texts = getattr(dataset, f"{split}_text")
            _save(_split_table(x, y, texts), tmp / split)
            log(f"  {split}: {x.num_rows} points, {x.nnz} feature and {y.nnz} label entries"
                f"{'' if texts is None else ', texts'}")
        import pyarrow as pa

        labels = {"train_count": counts, "propensity": jain_propensity(counts, dataset.num_train, A, B)}
        if dataset.label_text is not None:
            labels["text"] = _text_array(dataset.label_text)
        _save(pa.table(labels), tmp / "labels")
        if dataset.test_filter is not None:  # (test point, label) pairs dropped from predictions
            _save(pa.table({"label_ids": _list_array(dataset.test_filter.indptr, dataset.test_filter.indices)}),
                  tmp / "test_filter")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_cached(cfg: DataConfig) -> XMCDataset | None:
    """The cached dataset for ``cfg`` (memory-mapped), or ``None`` when there is none or it was
    built from other data settings (e.g. another ``data.split_seed``)."""
    folder = cache_path(cfg)
    meta = read_meta(folder)
    if meta is None or meta.get("format_version") != FORMAT_VERSION or meta.get("data_config") != cache_key(cfg):
        return None
    mats = {}
    for split in SPLITS:
        mats[f"{split}_x"], mats[f"{split}_y"], mats[f"{split}_text"] = _load_split(folder / split, meta["statistics"])
    labels = _load_table(folder / "labels")
    mats["label_text"] = TextColumn(labels.column("text")) if "text" in labels.column_names else None
    test_filter = None
    if (folder / "test_filter").exists():
        column = _load_table(folder / "test_filter").column("label_ids")
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        offsets = array.offsets.to_numpy()
        test_filter = CSR(offsets - offsets[0], array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(),
                          None, meta["statistics"]["num_labels"])
    return XMCDataset(meta["name"], **mats, meta={**meta["source"], "cache": str(folder)}, test_filter=test_filter)


def read_meta(folder: Path) -> dict | None:
    path = Path(folder) / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}: damaged cache metadata ({err.msg}); run `xmc-bench data prepare` again") from None


def load_label_table(folder: Path) -> dict[str, np.ndarray]:
    """The numeric columns of the labels table (train_count, propensity); label texts are
    ``load_cached(cfg).label_text``."""
    table = _load_table(Path(folder) / "labels")
    return {name: table.column(name).to_numpy() for name in table.column_names if name != "text"}


class TextColumn(Sequence):
    """A cached string column as a read-only sequence of ``str``: the strings stay in the
    memory-mapped Arrow file and one becomes a Python ``str`` only when indexed."""

    def __init__(self, column):  # a pyarrow ChunkedArray of (large) strings
        self._column = column.chunk(0) if column.num_chunks == 1 else column

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._column[j].as_py() for j in range(*i.indices(len(self)))]
        return self._column[int(i)].as_py()


# -- Arrow <-> CSR ------------------------------------------------------------------------------


def _list_array(indptr: np.ndarray, values: np.ndarray):
    import pyarrow as pa

    return pa.LargeListArray.from_arrays(pa.array(indptr.astype(np.int64, copy=False)), pa.array(values))


def _text_array(texts: Sequence[str]):
    import pyarrow as pa

    return pa.array(texts, type=pa.large_string())  # 64-bit offsets: a split's texts may pass 2 GiB


def _split_table(x: CSR, y: CSR, texts: Sequence[str] | None = None):
    import pyarrow as pa

    values = x.data if x.data is not None else np.ones(x.nnz, np.float32)
    columns = {
        "feature_ids": _list_array(x.indptr, x.indices.astype(np.int64, copy=False)),  # [N] lists of int64
        "feature_values": _list_array(x.indptr, values.astype(np.float32, copy=False)),  # [N] lists of float32
        "label_ids": _list_array(y.indptr, y.indices.astype(np.int64, copy=False)),  # [N] lists of int64
    }
    if texts is not None:
        columns["text"] = _text_array(texts)  # [N] strings
    return pa.table(columns)


def _save(table, folder: Path) -> None:
    import datasets
    from datasets.table import InMemoryTable

    datasets.disable_progress_bars()
    datasets.Dataset(InMemoryTable(table)).save_to_disk(str(folder))


def _load_table(folder: Path):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only, never the Hub
    import datasets

    return datasets.load_from_disk(str(folder)).data.table  # pyarrow Table over memory-mapped files


def _load_split(folder: Path, stats: dict) -> tuple[CSR, CSR, TextColumn | None]:
    table = _load_table(folder)

    def flat(name: str) -> tuple[np.ndarray, np.ndarray]:
        column = table.column(name)
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # several shards: one copy
        offsets = array.offsets.to_numpy()  # [N + 1] int64, zero-copy
        values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy()  # [nnz], zero-copy
        return (offsets - offsets[0]) if offsets[0] else offsets, values

    indptr, ids = flat("feature_ids")
    _, values = flat("feature_values")
    y_indptr, labels = flat("label_ids")
    texts = TextColumn(table.column("text")) if "text" in table.column_names else None
    return CSR(indptr, ids, values, stats["num_features"]), CSR(y_indptr, labels, None, stats["num_labels"]), texts


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``; an existing ``final`` is moved aside first and
    restored if the rename fails, then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
