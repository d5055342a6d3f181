"""Label filters act on predictions only, before top-k: exactly the listed pairs disappear,
a genuine prediction scored 0 stays, and the rest move up (files and the training-time path)."""

import numpy as np
import pytest
import torch

from bench.config import RunConfig
from bench.data.formats import write_filter, write_sparse_matrix
from bench.evaluation import evaluate_files
from bench.metrics import drop_filtered, evaluate_topk
from bench.sparse import CSR
from bench.train import evaluate


def test_drop_filtered_removes_exactly_the_pairs():
    top = np.array([[3, 1, 2, 0], [0, 1, 2, 3], [2, -1, -1, -1]])
    filtered = CSR.from_rows([[1], [], [2]], 4)
    np.testing.assert_array_equal(drop_filtered(top, filtered, 2), [[3, 2], [0, 1], [-1, -1]])
    np.testing.assert_array_equal(drop_filtered(top, filtered, 5)[0], [3, 2, 0, -1, -1])


@pytest.fixture
def files(tmp_path):
    labels = CSR.from_rows([[0, 1], [2], [1, 3]], 4)
    # row 0: label 1 is filtered although it is a hit with the top score; label 0 is a true
    # label predicted with score 0 — zeroing filtered scores instead would tie it with them
    scores = CSR.from_rows([[0, 1, 3], [2, 3], [0, 1, 3]], 4,
                           values=[[0.0, 0.9, 0.5], [0.8, 0.4], [0.1, 0.7, 0.6]])
    filtered = CSR.from_rows([[1], [], [1, 3]], 4)
    paths = {n: tmp_path / f"{n}.txt" for n in ("labels", "scores", "filter")}
    write_sparse_matrix(paths["labels"], labels)
    write_sparse_matrix(paths["scores"], scores)
    write_filter(paths["filter"], filtered)
    return paths, labels


def test_evaluate_files_with_filter(files):
    paths, labels = files
    got = evaluate_files(paths["scores"], paths["labels"], k=3, filter_path=paths["filter"])
    # after filtering: row 0 ranks 3, 0; row 1 ranks 2, 3; row 2 ranks 0
    expected_top = np.array([[3, 0, -1], [2, 3, -1], [0, -1, -1]])
    plain = evaluate_topk(expected_top, labels, ks=(1, 3))  # P, nDCG, R (no propensities)
    assert {k: got[k] for k in plain} == pytest.approx(plain)
    assert got["P@1"] == pytest.approx(1 / 3)  # only row 1's top prediction (2) is a true label
    assert got["P@3"] == pytest.approx(2 / 9)  # row 0 keeps its zero-score hit 0, row 1 hits 2
    unfiltered = evaluate_files(paths["scores"], paths["labels"], k=3)
    assert unfiltered["P@1"] == pytest.approx(1.0)  # unfiltered, label 1 tops rows 0 and 2 as a hit


class _FixedScores(torch.nn.Module):
    """A stand-in model: the encoder passes the batch's row ids, the classifier ranks a fixed
    score matrix — enough to drive ``train.evaluate``."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.encoder = lambda batch: torch.as_tensor(batch.rows)
        self.features = self.encoder  # XMCModel.features: encoder [→ intermediate]
        outer = self

        class Classifier:
            def topk(self, rows, k):
                return torch.topk(outer.scores[rows], k, dim=1)

        self.classifier = Classifier()


def test_training_time_evaluate_with_filter():
    rng = np.random.default_rng(0)
    n, L = 23, 9
    scores = rng.random((n, L))
    y = CSR.from_dense(rng.random((n, L)) < 0.3, binary=True)
    filtered = CSR.from_dense(rng.random((n, L)) < 0.25, binary=True)
    x = CSR.from_rows([[0]] * n, 1, values=[[1.0]] * n)
    cfg = RunConfig()
    cfg = type(cfg)(**{**cfg.__dict__, "eval": type(cfg.eval)(batch_size=5)})
    got, _, _ = evaluate(_FixedScores(scores), x, y, cfg, None, torch.device("cpu"), filtered=filtered)
    masked = np.where(filtered.to_dense() > 0, -np.inf, scores)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :5]
    top = np.where(np.take_along_axis(masked, top, 1) == -np.inf, -1, top)
    assert got == pytest.approx(evaluate_topk(top, y, ks=(1, 3, 5)))
    plain, _, _ = evaluate(_FixedScores(scores), x, y, cfg, None, torch.device("cpu"))
    assert plain == pytest.approx(evaluate_topk(np.argsort(-scores, axis=1)[:, :5], y, ks=(1, 3, 5)))


def _xc_split_folder(folder, seed=0):
    rng = np.random.default_rng(seed)
    L, V = 12, 20
    for prefix, n in (("trn", 40), ("tst", 15)):
        x = CSR.from_dense((rng.random((n, V)) < 0.3) * rng.random((n, V)))
        y = CSR.from_dense(rng.random((n, L)) < 0.25, binary=True)
        write_sparse_matrix(folder / f"{prefix}_X_Xf.txt", x)
        write_sparse_matrix(folder / f"{prefix}_X_Y.txt", y)
    filtered = CSR.from_rows([[i % L] if i % 3 == 0 else [] for i in range(15)], L)
    write_filter(folder / "filter_labels_test.txt", filtered)
    return filtered


def test_split_format_dataset_carries_its_filter_through_the_cache(tmp_path, stand_in_files, monkeypatch):
    from bench.config import DataConfig
    from bench.data.catalog import load_dataset, prepare

    filtered = _xc_split_folder(tmp_path)
    cfg = DataConfig(name="lf-amazontitles-131k", path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    built = load_dataset(cfg)
    assert (built.num_train, built.num_test, built.num_labels, built.num_features) == (40, 15, 12, 20)
    np.testing.assert_array_equal(built.test_filter.indices, filtered.indices)
    # the card's published counts do not fit this toy folder: prepare refuses it
    with pytest.raises(Exception, match="does not match its card lf-amazontitles-131k.yaml"):
        prepare(cfg, log=lambda *a: None)
    assert not (tmp_path / "cache" / "lf-amazontitles-131k").exists()
    # without the card check, the filter goes into the cache and comes back from it
    import bench.data.cards as cards

    monkeypatch.setattr(cards, "load_card", lambda name: None)
    prepare(cfg, log=lambda *a: None)
    cached = load_dataset(cfg)
    assert "cache" in cached.meta
    np.testing.assert_array_equal(cached.test_filter.indptr, filtered.indptr)
    np.testing.assert_array_equal(cached.test_filter.indices, filtered.indices)


def test_run_with_filter_end_to_end(tmp_path, tiny_overrides, stand_in_files):  # a toy folder as the card's files
    from bench.resolve import resolve
    from bench.experiment import run_experiment

    _xc_split_folder(tmp_path)
    keep = [o for o in tiny_overrides if not o.startswith("data.")]
    cfg = resolve([*keep, "method=dense", "data=lf-amazontitles-131k", f"data.path={tmp_path}"])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["num_labels"] == 12
