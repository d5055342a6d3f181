import numpy as np
import pytest
import torch

from bench.data.loader import make_batch
from bench.errors import ConfigError
from bench.models.bow import BagOfWordsEncoder
from bench.sparse import CSR


def _batch(num_rows=6, num_features=50, seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((num_rows, num_features)) < 0.2) * rng.random((num_rows, num_features))
    dense[-1] = 0  # a document without words
    dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)  # like TF-IDF rows
    x = CSR.from_dense(dense.astype(np.float32))
    y = CSR.from_dense(np.eye(num_rows, 3, dtype=np.float32), binary=True)
    return make_batch(x, y, np.arange(num_rows)), torch.as_tensor(dense, dtype=torch.float32)


@pytest.mark.parametrize("activation, fn", [
    ("relu", torch.relu), ("gelu", torch.nn.functional.gelu), ("tanh", torch.tanh), ("none", lambda t: t),
])
def test_forward_is_a_weighted_sum_of_embeddings(activation, fn):
    torch.manual_seed(0)
    enc = BagOfWordsEncoder(50, 8, activation=activation)
    with torch.no_grad():
        enc.bias.normal_()
    batch, dense = _batch()
    h = enc(batch)
    assert h.shape == (6, 8) and enc.out_features == 8
    torch.testing.assert_close(h, fn(dense @ enc.embedding.weight + enc.bias), atol=1e-6, rtol=1e-5)


def test_gradients_reach_the_used_embeddings_and_the_bias():
    torch.manual_seed(0)
    enc = BagOfWordsEncoder(50, 8, activation="tanh")
    batch, dense = _batch()
    enc(batch).sum().backward()
    grad = enc.embedding.weight.grad  # [V, d]
    used = dense.abs().sum(0) > 0
    assert torch.all(grad[used].abs().sum(1) > 0) and torch.all(grad[~used] == 0)
    assert enc.bias.grad is not None and torch.all(enc.bias.grad != 0)


def test_output_scale_is_the_init_std_whatever_the_document_length():
    torch.manual_seed(0)
    enc = BagOfWordsEncoder(2000, 256, activation="none", init_std=0.01)
    many_words, _ = _batch(64, 2000, seed=1)  # ~400 words per row
    eye = CSR.from_dense(np.eye(64, 2000, dtype=np.float32))
    one_word = make_batch(eye, eye, np.arange(64))  # one word per row
    with torch.no_grad():
        for batch in (many_words, one_word):
            assert 0.008 < enc(batch)[:-1].std().item() < 0.012  # (the last many-word row is empty)


def test_dropout_only_in_training():
    enc = BagOfWordsEncoder(50, 64, dropout=0.5, activation="none")
    with torch.no_grad():
        enc.bias.fill_(1.0)
    batch, _ = _batch()
    assert (enc(batch) == 0).any()
    enc.eval()
    assert not (enc(batch) == 0).any()


def test_memory_bytes_counts_parameters_gradients_and_optimizer_slots():
    enc = BagOfWordsEncoder(1000, 32)
    params = (1000 * 32 + 32) * 4
    assert enc.memory_bytes() == {
        "parameters": params, "gradients": params, "optimizer": 2 * params, "indices": 0, "total": 4 * params,
    }
    assert enc.memory_bytes(optimizer_slots=1)["total"] == 3 * params


@pytest.mark.parametrize("kwargs, name", [
    (dict(activation="swish"), "activation"), (dict(dropout=1.0), "dropout"), (dict(dim=0), "dim"),
    (dict(init_std=-1.0), "init_std"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        BagOfWordsEncoder(**{"num_features": 10, "dim": 4, **kwargs})
