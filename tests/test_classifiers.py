"""Contract tests over every registered classifier, plus per-classifier invariants."""

import pytest
import torch
import torch.nn.functional as F

from bench import create_classifier, list_classifiers
from bench.errors import ConfigError, UnknownNameError
from bench.sparse import SparseTargets

D, L = 24, 50
OPTIONS = {"masked": {"density": 0.3}, "ffi": {"fan_in": 5}}


def make(name, d=D, num_labels=L, **kw):
    clf = create_classifier(name, d, num_labels, **{**OPTIONS.get(name, {}), **kw})
    clf.label_chunk = 7  # ragged label chunks in top-k
    return clf


def _targets(batch, num_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = (torch.rand(batch, num_labels, generator=g) < 0.1)
    dense[0] = False  # a row with no positives
    rows, cols = dense.nonzero(as_tuple=True)
    indptr = torch.zeros(batch + 1, dtype=torch.int64)
    indptr[1:] = torch.bincount(rows, minlength=batch).cumsum(0)
    return SparseTargets(indptr, cols, num_labels), dense.float()


@pytest.mark.parametrize("name", list_classifiers())
def test_contract(name):
    clf = make(name)
    h = torch.randn(6, D, requires_grad=True)
    logits = clf(h)
    assert logits.shape == (6, L) and clf.num_labels == L and clf.in_features == D

    targets, dense_targets = _targets(6, L)
    loss = clf.loss(h, targets)
    expected = F.binary_cross_entropy_with_logits(logits, dense_targets, reduction="sum") / 6
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0

    scores, ids = clf.topk(h.detach(), 4)
    order = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices[:, :4]
    assert torch.equal(ids, order)
    torch.testing.assert_close(scores, logits.detach().gather(1, order))

    memory = clf.memory_bytes(optimizer_slots=2)
    assert set(memory) == {"parameters", "gradients", "optimizer", "indices", "total"}
    assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
    params = sum(p.numel() * p.element_size() for p in clf.parameters())
    buffers = sum(b.numel() * b.element_size() for b in clf.buffers())
    assert memory["parameters"] == params and memory["optimizer"] == 2 * params
    assert memory["indices"] == buffers


@pytest.mark.parametrize("name", list_classifiers())
def test_topk_ties_break_towards_lower_label_id(name):
    clf = make(name)
    with torch.no_grad():
        for p in clf.parameters():
            p.zero_()  # every score ties at 0
    _, ids = clf.topk(torch.randn(3, D), 10)
    assert torch.equal(ids, torch.arange(10).expand(3, -1))
    _, ids = clf.topk(torch.randn(2, D), L + 5)  # k beyond L returns all labels
    assert ids.shape == (2, L)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_keeps_off_mask_weights_exactly_zero(optimizer):
    clf = make("masked")
    off = ~clf.mask
    assert off.any() and (clf.weight[off] == 0).all()
    opt = (torch.optim.SGD(clf.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2) if optimizer == "sgd"
           else torch.optim.AdamW(clf.parameters(), lr=0.05, weight_decay=1e-2))
    targets, _ = _targets(8, L, seed=1)
    for step in range(20):
        opt.zero_grad()
        clf.loss(torch.randn(8, D), targets).backward()
        opt.step()
    assert (clf.weight[off] == 0).all()
    assert (clf.weight[clf.mask] != 0).float().mean() > 0.9  # on-mask weights do train


def test_masked_density_is_realised_and_checked():
    clf = create_classifier("masked", 200, 500, density=0.25, seed=1)
    assert abs(clf.density - 0.25) < 0.01
    with pytest.raises(ConfigError, match="density"):
        create_classifier("masked", 10, 10, density=1.5)


def test_ffi_indices_are_compact_distinct_and_seeded():
    clf = make("ffi")
    assert clf.indices.dtype == torch.int16 and clf.indices.shape == (L, 5)
    clf.check_connectivity()
    again = make("ffi")
    assert torch.equal(clf.indices, again.indices) and torch.equal(clf.values, again.values)
    other = make("ffi", seed=1)
    assert not torch.equal(clf.indices, other.indices)
    wide = create_classifier("ffi", 40000, 3, fan_in=4)
    assert wide.indices.dtype == torch.int32
    wide.check_connectivity()


def test_ffi_matches_its_dense_weight():
    clf = make("ffi")
    h = torch.randn(4, D)
    torch.testing.assert_close(clf(h), h @ clf.to_dense_weight().t() + clf.bias, rtol=1e-5, atol=1e-5)


def test_ffi_connectivity_check_catches_broken_rows():
    clf = make("ffi")
    clf.indices[3, 1] = clf.indices[3, 0]
    with pytest.raises(AssertionError, match="label 3 has a repeated input"):
        clf.check_connectivity()
    clf = make("ffi")
    clf.indices[5, 0] = D
    with pytest.raises(AssertionError, match="label 5"):
        clf.check_connectivity()


def test_registry_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'ffi'"):
        create_classifier("ffl", 8, 8)
    with pytest.raises(ConfigError, match="does not take fanin; it accepts: fan_in"):
        create_classifier("ffi", 8, 8, fanin=3)
    with pytest.raises(ConfigError, match="fan_in"):
        create_classifier("ffi", 8, 8, fan_in=9)
    assert list_classifiers("ff*") == ["ffi"]
