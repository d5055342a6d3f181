import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.dataset import XMCDataset
from bench.data.loader import iterate_batches
from bench.data.synthetic import make_synthetic
from bench.errors import BenchError, ConfigError
from bench.models.bow import BagOfWordsEncoder
from bench.sparse import CSR

SMALL = dict(num_labels=300, num_train=800, num_test=200, num_features=1500)


def _arrays(ds: XMCDataset):
    for m in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        yield m.indptr
        yield m.indices
        if m.data is not None:
            yield m.data


def test_same_seed_gives_byte_identical_data_and_another_seed_does_not():
    a, b, c = make_synthetic(**SMALL, seed=3), make_synthetic(**SMALL, seed=3), make_synthetic(**SMALL, seed=4)
    assert all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(_arrays(a), _arrays(b)))
    assert a.meta == b.meta
    assert a.train_y.indices.tobytes() != c.train_y.indices.tobytes()
    assert a.train_x.indices.tobytes() != c.train_x.indices.tobytes()


def test_shapes_dtypes_and_stats():
    ds = make_synthetic(**SMALL, seed=0)
    assert ds.name == "synthetic" and ds.validate() is ds
    assert (ds.num_train, ds.num_test, ds.num_features, ds.num_labels) == (800, 200, 1500, 300)
    assert ds.train_x.shape == (800, 1500) and ds.test_y.shape == (200, 300)
    assert ds.train_x.data.dtype == np.float32 and ds.train_y.data is None
    assert all(m.indptr.dtype == np.int64 and m.indices.dtype == np.int64
               for m in (ds.train_x, ds.train_y, ds.test_x, ds.test_y))
    stats = ds.stats()
    assert stats["num_labels"] == 300 and stats["num_train"] == 800
    assert stats["avg_points_per_label"] == pytest.approx(ds.train_y.nnz / 300)
    assert 0.0 <= stats["frac_labels_without_train_positive"] < 0.5
    assert ds.meta["num_topics"] >= 1 and ds.meta["seed"] == 0


@pytest.mark.parametrize("split", ["train", "test"])
def test_rows_are_sorted_distinct_and_nonempty(split):
    ds = make_synthetic(**SMALL, seed=1)
    for m in (getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")):
        inside = np.ones(m.nnz, bool)
        inside[m.indptr[1:-1]] = False  # the first entry of a row has no left neighbour in it
        assert np.all(np.diff(m.indices)[inside[1:]] > 0)  # strictly increasing within rows
    assert ds.train_y.row_lengths().min() >= 1 and ds.test_y.row_lengths().min() >= 1


def test_feature_rows_are_l2_normalised_tf_idf():
    ds = make_synthetic(**SMALL, seed=2)
    for x in (ds.train_x, ds.test_x):
        lengths = x.row_lengths()
        assert np.mean(lengths > 0) > 0.99
        rows = np.repeat(np.arange(x.num_rows), lengths)
        norms = np.sqrt(np.bincount(rows, weights=x.data.astype(np.float64) ** 2, minlength=x.num_rows))
        np.testing.assert_allclose(norms[lengths > 0], 1.0, atol=1e-5)
        assert np.all(x.data > 0)


@pytest.mark.parametrize("avg", [1.0, 2.5, 5.0, 8.0])
def test_average_labels_per_point_is_near_the_request(avg):
    ds = make_synthetic(num_labels=1000, num_train=4000, num_test=500, num_features=3000,
                        avg_labels_per_point=avg, seed=0)
    assert ds.stats()["avg_labels_per_point"] == pytest.approx(avg, rel=0.05)
    assert ds.train_y.row_lengths().max() <= ds.meta["max_labels_per_point"]


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5])
def test_label_frequencies_follow_a_power_law(exponent):
    ds = make_synthetic(num_labels=2048, num_train=10000, num_test=100, num_features=5000,
                        zipf_exponent=exponent, seed=0)
    freq = np.sort(ds.train_y.column_counts())[::-1].astype(np.float64)  # [L], most frequent first
    rank = np.arange(1, len(freq) + 1)
    # the head saturates (a label appears at most once per point) and the far tail is counting
    # noise, so fit the log-log slope over the ranks in between
    fit = (rank >= 3) & (rank <= len(freq) // 8) & (freq > 0)
    slope = np.polyfit(np.log(rank[fit]), np.log(freq[fit]), 1)[0]
    assert -1.5 * exponent <= slope <= -0.5 * exponent
    assert freq[0] > 5 * np.median(freq)


def test_uniform_popularity_when_the_exponent_is_zero():
    ds = make_synthetic(num_labels=200, num_train=4000, num_test=10, num_features=2000, zipf_exponent=0.0)
    freq = ds.train_y.column_counts()
    assert freq.max() < 3 * freq.mean()


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(num_labels=0), "num_labels"),
        (dict(num_labels=-5), "num_labels"),
        (dict(num_train=0), "num_train"),
        (dict(num_features=0), "num_features"),
        (dict(avg_labels_per_point=0.0), "avg_labels_per_point"),
        (dict(avg_labels_per_point=0.5), "avg_labels_per_point"),
        (dict(avg_labels_per_point=301.0), "avg_labels_per_point"),
        (dict(zipf_exponent=-1.0), "zipf_exponent"),
        (dict(num_topics=0), "num_topics"),
        (dict(signature_rate=1.5), "signature_rate"),
        (dict(noise_tokens=-1.0), "noise_tokens"),
        (dict(max_labels_per_point=400), "max_labels_per_point"),
        (dict(max_labels_per_point=2, avg_labels_per_point=3.0), "max_labels_per_point"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_parameter(bad, name):
    with pytest.raises(ConfigError, match=name):
        make_synthetic(**{**SMALL, **bad})


def test_validate_names_a_shape_mismatch():
    ds = make_synthetic(**SMALL, seed=0)
    broken = XMCDataset(ds.name, ds.train_x, ds.test_y, ds.test_x, ds.test_y, {})
    with pytest.raises(BenchError, match="train_x has 800 rows but train_y has 200"):
        broken.validate()
    narrow = CSR(ds.test_x.indptr, ds.test_x.indices, ds.test_x.data, 10)
    with pytest.raises(BenchError, match="test_x has 10 features"):
        XMCDataset(ds.name, ds.train_x, ds.train_y, narrow, ds.test_y, {}).validate()


def _precision_at_1(top: np.ndarray, y: CSR) -> float:
    """Fraction of rows whose predicted label (one per row) is a positive."""
    keys = np.repeat(np.arange(y.num_rows), y.row_lengths()) * y.num_cols + y.indices
    return float(np.isin(np.arange(y.num_rows) * y.num_cols + top, keys).mean())


def test_a_dense_bag_of_words_model_learns_the_data():
    """The latent structure is learnable: a small dense model clearly beats ranking by frequency.

    Observed over seeds 0-4: P@1 0.90-0.93 against 0.38-0.44 for predicting the most frequent
    label (at L=256 with 5 labels per point the Zipf head label is in ~40% of the points, so
    "3x the baseline" is out of reach; the bound below keeps a wide margin instead)."""
    torch.manual_seed(0)
    ds = make_synthetic(num_labels=256, num_train=3000, num_test=1000, num_features=2000, seed=0)
    encoder, classifier = BagOfWordsEncoder(ds.num_features, 64), nn.Linear(64, ds.num_labels)
    params = [*encoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-2)
    rng = np.random.default_rng(0)
    for _ in range(8):
        for batch in iterate_batches(ds.train_x, ds.train_y, 64, shuffle=True, generator=rng):
            loss = F.binary_cross_entropy_with_logits(classifier(encoder(batch)), batch.targets.dense())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.eval()
    with torch.no_grad():
        top = np.concatenate([
            torch.topk(classifier(encoder(b)), 1).indices[:, 0].numpy()
            for b in iterate_batches(ds.test_x, ds.test_y, 500, shuffle=False)
        ])
    p1 = _precision_at_1(top, ds.test_y)
    baseline = _precision_at_1(np.full(ds.num_test, np.argmax(ds.train_y.column_counts())), ds.test_y)
    assert p1 >= max(0.7, 1.6 * baseline, baseline + 0.3), (p1, baseline)
