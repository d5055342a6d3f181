import numpy as np
import pytest
import torch

from bench.data.loader import Batch, iterate_batches, make_batch, num_batches
from bench.errors import ConfigError
from bench.sparse import CSR


def _random_csr(rng, n, cols, density, binary=False):
    """A random CSR and its dense twin; every 7th row is empty."""
    dense = (rng.random((n, cols)) < density) * rng.random((n, cols)).astype(np.float32)
    dense[::7] = 0
    return CSR.from_dense(dense, binary=binary), dense


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x, x_dense = _random_csr(rng, 103, 40, 0.15)
    y, y_dense = _random_csr(rng, 103, 17, 0.2, binary=True)
    return x, y, x_dense, (y_dense > 0).astype(np.float32)


def _batch_features_dense(batch: Batch, num_cols: int) -> np.ndarray:
    """Rebuild the batch's feature rows from the EmbeddingBag inputs."""
    lengths = np.diff(np.append(batch.feature_offsets.numpy(), len(batch.feature_ids)))
    out = np.zeros((batch.batch_size, num_cols), np.float32)
    out[np.repeat(np.arange(batch.batch_size), lengths), batch.feature_ids.numpy()] = batch.feature_weights.numpy()
    return out


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_a_shuffled_epoch_covers_every_row_once_with_matching_features_and_targets(data, batch_size):
    x, y, x_dense, y_dense = data
    batches = list(iterate_batches(x, y, batch_size, shuffle=True, generator=np.random.default_rng(1)))
    assert len(batches) == num_batches(103, batch_size)
    rows = np.concatenate([b.rows for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(103))
    assert batch_size >= 103 or not np.array_equal(rows, np.arange(103))  # actually shuffled
    for b in batches:
        assert b.feature_ids.dtype == torch.int64 and b.feature_offsets.dtype == torch.int64
        assert b.feature_weights.dtype == torch.float32 and b.feature_offsets.shape == (b.batch_size,)
        np.testing.assert_array_equal(_batch_features_dense(b, 40), x_dense[b.rows])
        assert b.targets.batch_size == b.batch_size and b.targets.num_labels == 17
        np.testing.assert_array_equal(b.targets.dense().numpy(), y_dense[b.rows])


def test_unshuffled_order_and_drop_last(data):
    x, y, *_ = data
    batches = list(iterate_batches(x, y, 25, shuffle=False, drop_last=True))
    assert len(batches) == num_batches(103, 25, drop_last=True) == 4
    assert np.array_equal(np.concatenate([b.rows for b in batches]), np.arange(100))
    assert [b.batch_size for b in iterate_batches(x, y, 25, shuffle=False)] == [25, 25, 25, 25, 3]


def test_the_order_is_reproducible_from_the_generator(data):
    x, y, *_ = data
    order = lambda seed: np.concatenate(  # noqa: E731
        [b.rows for b in iterate_batches(x, y, 16, shuffle=True, generator=np.random.default_rng(seed))]
    )
    assert np.array_equal(order(5), order(5))
    assert not np.array_equal(order(5), order(6))


def test_binary_features_get_unit_weights(data):
    _, y, *_ = data
    batch = make_batch(y, y, np.array([4, 0, 2]))
    assert torch.all(batch.feature_weights == 1.0)
    np.testing.assert_array_equal(batch.rows, [4, 0, 2])


def test_to_device_keeps_everything(data):
    x, y, *_ = data
    batch = next(iterate_batches(x, y, 8, shuffle=False))
    moved = batch.to("cpu")
    assert torch.equal(moved.feature_ids, batch.feature_ids)
    assert torch.equal(moved.targets.indices, batch.targets.indices)
    assert moved.targets.num_labels == 17 and moved.rows is batch.rows


def test_bad_arguments(data):
    x, y, *_ = data
    with pytest.raises(ConfigError, match="103 rows but labels have 50"):
        next(iterate_batches(x, y.take_rows(np.arange(50)), 8, shuffle=False))
    with pytest.raises(ConfigError, match="batch_size"):
        next(iterate_batches(x, y, 0, shuffle=False))
    assert num_batches(0, 4) == 0 and num_batches(9, 4) == 3 and num_batches(9, 4, drop_last=True) == 2
