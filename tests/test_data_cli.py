"""`xmc-bench data prepare | info` and the Arrow cache: layout, reuse by `run`, atomicity,
zero-copy loading. Uses small synthetic data so it runs without ../shared/data."""

import json
import tracemalloc

import numpy as np
import pytest

import bench.data.cache as cache
import bench.data.catalog as catalog
from bench.cli import main
from bench.config import DataConfig
from bench.data.catalog import DATASETS, load_dataset
from bench.data.propensity import jain_propensity
from bench.errors import BenchError

SMALL = dict(name="synthetic", num_labels=60, num_train=300, num_test=80, num_features=400, avg_labels_per_point=3.0)


def same(a, b):
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert (a.data is None) == (b.data is None)
    if a.data is not None:
        np.testing.assert_array_equal(a.data, b.data)


def test_prepare_then_load_from_cache(tmp_path):
    cfg = DataConfig(**SMALL, cache_dir=str(tmp_path))
    folder = catalog.prepare(cfg, log=lambda *a: None)
    assert folder == tmp_path / "synthetic"
    assert sorted(p.name for p in folder.iterdir()) == ["labels", "meta.json", "test", "train"]
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folder left
    loaded = load_dataset(cfg)
    assert loaded.meta["cache"] == str(folder)
    built = DATASETS.get("synthetic")(cfg)
    for m in ("train_x", "train_y", "test_x", "test_y"):
        same(getattr(loaded, m), getattr(built, m))
    # propensities: Jain et al. of the training label counts, with the default A/B (no card)
    labels = cache.load_label_table(folder)
    counts = built.train_y.column_counts()
    np.testing.assert_array_equal(labels["train_count"], counts)
    np.testing.assert_allclose(labels["propensity"], jain_propensity(counts, built.num_train, 0.55, 1.5))
    # other data settings do not match this cache: built from source again
    assert cache.load_cached(DataConfig(**{**SMALL, "seed": 1}, cache_dir=str(tmp_path))) is None


def test_loading_does_not_copy_the_matrices(tmp_path):
    cfg = DataConfig(**{**SMALL, "num_train": 6000, "num_labels": 500}, cache_dir=str(tmp_path))
    catalog.prepare(cfg, log=lambda *a: None)
    tracemalloc.start()
    dataset = cache.load_cached(cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    matrix_bytes = sum(a.nbytes for m in (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y)
                       for a in (m.indptr, m.indices, m.data) if a is not None)
    assert peak < 0.1 * matrix_bytes  # Arrow buffers are memory-mapped, not copied into numpy
    assert not dataset.train_x.indices.flags.writeable


def test_failed_prepare_leaves_no_partial_cache_and_keeps_the_old_one(tmp_path, monkeypatch):
    cfg = DataConfig(**SMALL, cache_dir=str(tmp_path))
    folder = catalog.prepare(cfg, log=lambda *a: None)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    calls = []

    def failing_save(table, where):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(table, where)

    real_save = cache._save
    monkeypatch.setattr(cache, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        catalog.prepare(DataConfig(**{**SMALL, "seed": 5}, cache_dir=str(tmp_path)), log=lambda *a: None)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # the temporary folder is gone
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # the existing cache is untouched
    # a fresh root: nothing at all is left behind
    fresh = tmp_path / "fresh"
    calls.clear()
    with pytest.raises(OSError):
        catalog.prepare(DataConfig(**SMALL, cache_dir=str(fresh)), log=lambda *a: None)
    assert list(fresh.iterdir()) == []


def test_prepare_rejects_a_dataset_that_disagrees_with_its_card(tmp_path, monkeypatch):
    import bench.data.cards as cards

    card = {"name": "synthetic", "statistics": {"num_train": 300, "num_test": 80, "num_features": 400, "num_labels": 61},
            "propensity": {"A": 0.5, "B": 0.4}}
    monkeypatch.setattr(cards, "load_card", lambda name: card)
    with pytest.raises(BenchError, match="num_labels: card says 61, files give 60"):
        catalog.prepare(DataConfig(**SMALL, cache_dir=str(tmp_path)), log=lambda *a: None)
    assert not (tmp_path / "synthetic").exists()


def test_cli_info_and_prepare(tmp_path, capsys):
    args = [f"data.{k}={v}" for k, v in SMALL.items() if k != "name"]
    assert main(["data", "info", "synthetic", *args, "--json", "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_labels"] == 60 and info["num_train"] == 300 and "label_frequency_median" in info
    assert main(["data", "prepare", "synthetic", *args, "--cache-dir", str(tmp_path)]) == 0
    assert "cached synthetic" in capsys.readouterr().out
    assert main(["data", "info", "synthetic", *args, "--cache-dir", str(tmp_path),
                 "--plot", str(tmp_path / "freq.png")]) == 0
    out = capsys.readouterr().out
    assert f"cache {tmp_path / 'synthetic'}" in out and (tmp_path / "freq.png").stat().st_size > 0
    assert main(["data", "info", "synthetic", "train.epochs=2"]) == 2  # only data.* keys
    assert "only data.* overrides" in capsys.readouterr().err
    assert main(["data", "info", "bibtx"]) == 2
    assert "did you mean 'bibtex'" in capsys.readouterr().err


def test_run_uses_the_cache(tmp_path, tiny_overrides, monkeypatch):
    import bench.data.synthetic as synthetic
    from bench.config import resolve
    from bench.experiment import run_experiment

    cfg = resolve([*tiny_overrides, "method=dense", f"data.cache_dir={tmp_path / 'cache'}"])
    catalog.prepare(cfg.data, log=lambda *a: None)
    monkeypatch.setattr(synthetic, "make_synthetic", lambda **kw: pytest.fail("built instead of read from the cache"))
    record = run_experiment(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["dataset"]["num_labels"] == cfg.data.num_labels


def test_cached_propensities_hand_example(tmp_path, monkeypatch):
    from bench.data.dataset import XMCDataset
    from bench.sparse import CSR

    # 4 training points; label 0 in 3 of them, label 1 in 1, label 2 in none
    y = CSR.from_rows([[0], [0, 1], [0], []], 3)
    x = CSR.from_rows([[0]] * 4, 2, values=[[1.0]] * 4)
    hand = XMCDataset("hand", x, y, x.take_rows(np.array([0])), y.take_rows(np.array([0])))
    monkeypatch.setitem(DATASETS._entries, "hand", lambda cfg: hand)
    folder = catalog.prepare(DataConfig(name="hand", cache_dir=str(tmp_path)), log=lambda *a: None)
    labels = cache.load_label_table(folder)
    np.testing.assert_array_equal(labels["train_count"], [3, 1, 0])
    # Jain et al., A = 0.55, B = 1.5, N = 4: C = (ln 4 - 1)(B + 1)^A = 0.386294 * 1.655264 = 0.639419
    # p(3) = 1 / (1 + C * 4.5^-0.55) = 1 / (1 + 0.639419 * 0.437255) = 0.781502
    # p(1) = 1 / (1 + C * 2.5^-0.55) = 1 / (1 + (ln 4 - 1)) = 0.721348
    # p(0) = 1 / (1 + C * 1.5^-0.55) = 1 / (1 + 0.639419 * 0.800227) = 0.661548
    np.testing.assert_allclose(labels["propensity"], [0.781502, 0.721348, 0.661548], atol=2e-6)
