"""Losses from sparse label lists: no dense 0/1 target block anywhere in training, RigL or the
meta branch; gradients bit for bit those of the dense formulas, values equal up to rounding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench import losses
from bench.classifiers import create_classifier
from bench.config import DSTConfig
from bench.dst import Rewirer
from bench.models.meta import MetaClassifier
from bench.sparse import SparseTargets

B, L, D = 6, 41, 10


def _targets(seed=0, dup=True):
    g = torch.Generator().manual_seed(seed)
    rows = [sorted(torch.randint(0, L, (int(n),), generator=g).tolist())
            for n in torch.randint(0, 6, (B,), generator=g)]
    if dup:
        rows[1] = rows[1] + [5, 5]  # a label listed twice counts once
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in rows]))
    return SparseTargets(indptr, torch.tensor([i for r in rows for i in r], dtype=torch.int64), L)


def _scores(seed=1):
    z = torch.randn(B, L, generator=torch.Generator().manual_seed(seed)) * 3
    z[0, :4] = torch.tensor([1.0, -1.0, 0.0, 40.0])  # hinge kinks, a saturated sigmoid
    return z


@pytest.mark.parametrize("name", losses.list_losses())
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("lo,hi", [(0, L), (7, 30), (40, 41)])
def test_sparse_equals_dense_formula(name, reduction, lo, hi):
    loss, targets, z = losses.create(name, reduction), _targets(), _scores()
    y = targets.dense_chunk(lo, hi)
    block = z[:, lo:hi].contiguous()
    want_grad = loss.derivative(block, y) / loss.divisor(B, L)
    assert torch.equal(loss.grad(block, targets, lo, hi, L), want_grad)
    total, grad = loss.block(block, targets, lo, hi, L)
    assert torch.equal(grad, want_grad)
    torch.testing.assert_close(total, loss.sum(block, y), rtol=1e-5, atol=1e-4)
    # the differentiable value: same value up to rounding, bitwise the same autograd gradient
    a, b = block.clone().requires_grad_(), block.clone().requires_grad_()
    old = loss.reduce(loss.sum(a, y), B, L)
    new = loss.value(b, targets, lo, hi, L)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5)
    (old * 0.37).backward()
    (new * 0.37).backward()
    assert torch.equal(a.grad, b.grad)


def test_chunk_positives_are_distinct_and_relative():
    targets = SparseTargets(torch.tensor([0, 3, 3, 5]), torch.tensor([4, 2, 4, 9, 1]), 10)
    rows, cols = targets.chunk_positives(2, 9)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 2)]
    rows, cols = targets.chunk_positives(0, 10)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 2), (0, 4), (2, 1), (2, 9)]
    assert targets.chunk_positives(3, 3)[0].numel() == 0


@pytest.fixture
def no_dense_targets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dense target block was built")

    monkeypatch.setattr(SparseTargets, "dense_chunk", refuse)


@pytest.mark.parametrize("classifier", ["dense", "ffi", "ffi-group", "head-tail"])
@pytest.mark.parametrize("name", losses.list_losses())
def test_training_and_rigl_build_no_dense_targets(no_dense_targets, classifier, name):
    options = {"dense": {}, "ffi": {"fan_in": 4}, "ffi-group": {"fan_in": 4, "group_size": 3},
               "head-tail": {"fan_in": 4, "label_counts": np.arange(L)[::-1].copy()}}[classifier]
    try:
        clf = create_classifier(classifier, D, L, **options)
    except TypeError:
        pytest.skip(f"{classifier} takes other options")
    clf.label_chunk = 16
    h, targets, loss = torch.randn(B, D), _targets(), losses.create(name)
    for fused in (True, False):
        clf.zero_grad()
        clf.loss(h, targets, fused=fused, criterion=loss).backward()
    if clf.connectivity() is not None and classifier != "head-tail":
        cfg = dataclasses.replace(DSTConfig(), regrow="gradient", fraction=0.5)
        Rewirer(clf, cfg, 10, loss=loss).rewire(1, h, targets)


def test_meta_branch_builds_no_dense_targets(no_dense_targets):
    meta = MetaClassifier(D, np.arange(L) % 5, 5)
    z = torch.randn(B, D, requires_grad=True)
    meta.loss(z, _targets()).backward()
    assert z.grad is not None
