"""The raw texts of the label-feature (LF) datasets: a tiny LF folder (BoW split files, filter,
trn.json.gz / tst.json.gz / lbl.json) loaded as `lf-amazontitles-131k` via data.path; texts
attached and checked against the BoW labels, kept by the Arrow cache, and a transformer run."""

import gzip
import json

import numpy as np
import pytest
from test_transformer_encoder import tiny_bert  # noqa: F401  (the fixture: a tiny random BERT)

import bench.data.cache as cache
import bench.data.catalog as catalog
from bench.cli import main
from bench.config import DataConfig
from bench.data.catalog import load_dataset
from bench.data.formats import write_filter, write_lf_jsonl, write_sparse_matrix
from bench.data.formats.lf import first_differing_row
from bench.errors import BenchError, DataFormatError
from bench.sparse import CSR
from bench.record import read_records

NAME = "lf-amazontitles-131k"


pytestmark = pytest.mark.usefixtures("stand_in_files")  # toy folders stand in for the card's files
L, V = 12, 30
SIZES = {"trn": 24, "tst": 10}


def random_split(rng, n):
    x = CSR.from_dense((rng.random((n, V)) < 0.2) * rng.random((n, V)).astype(np.float32))
    dense_y = rng.random((n, L)) < 0.2
    dense_y[np.arange(n), rng.integers(0, L, n)] = True  # every point has a label
    return x, CSR.from_dense(dense_y, binary=True)


def titles(n):  # words the tiny BERT's WordPiece vocabulary spells: w, ##0 … ##9
    return [f"w{i} w{(i * 7) % 10}" for i in range(n)]


def contents(n):
    return ["w9 w8" if i % 3 == 0 else "" for i in range(n)]


def write_gz_jsonl(path, *args, **kw):
    write_lf_jsonl(path.with_suffix(""), *args, **kw)
    path.write_bytes(gzip.compress(path.with_suffix("").read_bytes()))
    path.with_suffix("").unlink()


@pytest.fixture
def lf_folder(tmp_path):
    """trn/tst BoW split files, filter_labels_test.txt, trn.json.gz, tst.json.gz and lbl.json
    (plain: each raw text file is found as named or with .gz)."""
    folder, rng = tmp_path / "LF", np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in SIZES.items():
        x, y = random_split(rng, n)
        write_sparse_matrix(folder / f"{prefix}_X_Xf.txt", x)
        write_sparse_matrix(folder / f"{prefix}_X_Y.txt", y)
        write_gz_jsonl(folder / f"{prefix}.json.gz", [f"{prefix}{i}" for i in range(n)], titles(n), contents(n), y)
    write_lf_jsonl(folder / "lbl.json", [f"L{i}" for i in range(L)], [f"w{i}" for i in range(L)])
    write_filter(folder / "filter_labels_test.txt", CSR.from_rows([[1], [], [0, 3]] + [[]] * 7, L))
    return folder


def config(folder, tmp_path):
    return DataConfig(name=NAME, path=str(folder), cache_dir=str(tmp_path / "cache"))


def expected_texts(n):
    return [f"{t} {c}" if c else t for t, c in zip(titles(n), contents(n))]


def test_texts_are_attached(lf_folder, tmp_path):
    d = load_dataset(config(lf_folder, tmp_path))
    assert (d.num_train, d.num_test, d.num_labels) == (24, 10, L)
    assert d.train_text == expected_texts(24) and d.test_text == expected_texts(10)
    assert d.train_text[3] == "w3 w1 w9 w8"  # title, a space, content
    assert d.label_text == [f"w{i}" for i in range(L)]
    assert d.meta["raw_text"]["files"] == ["trn.json.gz", "tst.json.gz", "lbl.json"]
    assert d.test_filter is not None and d.test_filter.nnz == 3


def test_without_raw_text_files_the_dataset_is_bow_only(lf_folder, tmp_path):
    for name in ("trn.json.gz", "tst.json.gz", "lbl.json"):
        (lf_folder / name).unlink()
    d = load_dataset(config(lf_folder, tmp_path))
    assert d.train_text is None and d.test_text is None and d.label_text is None
    assert d.meta["raw_text"].startswith("absent") and d.num_train == 24


def test_some_raw_text_files_missing_is_an_error(lf_folder, tmp_path):
    (lf_folder / "tst.json.gz").unlink()
    with pytest.raises(BenchError, match=r"not tst\.json \(nor \.gz\)"):
        load_dataset(config(lf_folder, tmp_path))


@pytest.mark.parametrize("targets", [[0, 1, 2], [11]], ids=["other-count", "other-ids"])
def test_target_ind_differing_from_trn_x_y_names_file_line_and_row(lf_folder, tmp_path, targets):
    path = lf_folder / "trn.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    record = json.loads(lines[5])
    if record["target_ind"] == targets:
        targets = [t for t in range(L) if t not in targets][: len(targets)]
    lines[5] = json.dumps({**record, "target_ind": targets})
    path.write_bytes(gzip.compress(("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n").encode()))
    with pytest.raises(DataFormatError, match=r"record 5 has target_ind .* row 5 of trn_X_Y\.txt \(line 7\)") as info:
        load_dataset(config(lf_folder, tmp_path))
    assert info.value.path == str(path) and info.value.line == 7  # a blank line before it: line 7, not 6


@pytest.mark.parametrize("name, expected", [("tst.json.gz", "9 records but tst_X_Y.txt has 10 rows"),
                                            ("lbl.json", "11 label records but trn_X_Y.txt has 12 labels")])
def test_wrong_record_count_is_an_error(lf_folder, tmp_path, name, expected):
    path = lf_folder / name
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode().splitlines()[:-1]
    body = ("\n".join(text) + "\n").encode()
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    with pytest.raises(DataFormatError, match=expected) as info:
        load_dataset(config(lf_folder, tmp_path))
    assert info.value.path == str(path)


def test_first_differing_row():
    a = CSR.from_rows([[0], [1, 2], [3], [4]], 6)
    assert first_differing_row(a, a) is None
    assert first_differing_row(a, CSR.from_rows([[0], [1, 2], [3, 5], [4]], 6)) == 2  # a longer row
    assert first_differing_row(a, CSR.from_rows([[0], [1, 5], [3], [5]], 6)) == 1  # same lengths, other ids
    assert first_differing_row(a, CSR.from_rows([[0], [1, 2], [3], [4, 5]], 6)) == 3


def test_label_text_length_and_relabel(lf_folder, tmp_path):
    d = load_dataset(config(lf_folder, tmp_path))
    new_id = (np.arange(L) + 1) % L  # label l becomes l + 1
    moved = d.relabel(new_id, {"how": "roll"})
    assert moved.label_text[1] == d.label_text[0] and moved.label_text[0] == d.label_text[L - 1]
    d.label_text = d.label_text[:-1]
    with pytest.raises(BenchError, match="label_text has 11 texts but there are 12 labels"):
        d.validate()


def test_prepare_then_load_cached_keeps_the_texts(lf_folder, tmp_path, monkeypatch):
    import bench.data.cards as cards

    monkeypatch.setattr(cards, "load_card", lambda name: None)  # the real card's counts are not the tiny folder's
    cfg = config(lf_folder, tmp_path)
    folder = catalog.prepare(cfg, log=lambda *a: None)
    loaded = load_dataset(cfg)
    assert loaded.meta["cache"] == str(folder)
    assert isinstance(loaded.train_text, cache.TextColumn)  # memory-mapped, not a list
    assert list(loaded.train_text) == expected_texts(24) and list(loaded.test_text) == expected_texts(10)
    assert list(loaded.label_text) == [f"w{i}" for i in range(L)]
    assert loaded.train_text[np.int64(3)] == "w3 w1 w9 w8" and loaded.train_text[-1] == expected_texts(24)[-1]
    assert sorted(cache.load_label_table(folder)) == ["propensity", "train_count"]
    # a cache of the previous layout is not used
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    assert cache.load_cached(cfg) is None


def test_transformer_run_on_lf_texts(lf_folder, tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [f"data={NAME}", f"data.path={lf_folder}", f"data.cache_dir={tmp_path / 'cache'}", "method=dense",
                 "model.encoder=transformer", f"model.encoder_path={tiny_bert}", "model.max_len=16",
                 "train.max_steps=2", "train.batch_size=8", "eval.batch_size=8",
                 f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled"]
    assert main(["run", *overrides]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok", record.get("error")
    assert record["num_labels"] == L and record["dataset"]["num_test"] == 10
    assert 0 <= record["metrics"]["P@1"] <= 1
