"""bench.losses: each loss's value and gradient against a plain dense formula under every
reduction, blocks of labels, the fused path against the unfused one, and RigL scoring with
the loss it is given."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench import losses
from bench.classifiers import create_classifier
from bench.config import DSTConfig
from bench.dst import Rewirer
from bench.errors import ConfigError, UnknownNameError
from bench.sparse import SparseTargets

B, L, D = 7, 29, 12


def _targets(batch=B, num_labels=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (batch, 3), generator=g)
    return SparseTargets(torch.arange(0, 3 * batch + 1, 3), labels.reshape(-1), num_labels)


def _reference(name, z, y):
    """The per-element loss written out plainly (autograd gives its gradient)."""
    if name == "bce":
        return -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
    s = 2 * y - 1  # ±1
    return torch.relu(1 - s * z) ** 2


def _reduced(name, reduction, z, y):
    total = _reference(name, z, y).sum()
    return {"sum_over_labels": total / z.shape[0], "mean": total / z.numel(), "sum": total}[reduction]


@pytest.mark.parametrize("name", losses.list_losses())
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_value_and_gradient_match_the_dense_formula(name, reduction):
    loss = losses.create(name, reduction)
    targets = _targets()
    z = (3 * torch.randn(B, L, generator=torch.Generator().manual_seed(1))).requires_grad_()
    want = _reduced(name, reduction, z, targets.dense())
    want_grad = torch.autograd.grad(want, z)[0]
    got = loss.value(z, targets, 0, L, L)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(got, z)[0], want_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.grad(z.detach(), targets, 0, L, L), want_grad, rtol=1e-5, atol=1e-6)
    # a block of labels: its unreduced sum and its columns of the whole loss's gradient
    lo, hi = 5, 17
    total, grad = loss.block(z[:, lo:hi], targets, lo, hi, L)
    torch.testing.assert_close(total, _reference(name, z[:, lo:hi], targets.dense()[:, lo:hi]).sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, want_grad[:, lo:hi], rtol=1e-5, atol=1e-6)


def test_bce_is_bitwise_the_torch_expression():
    # the suite's records depend on it: the gradient is bit for bit (σ(z) − y) / B; the value is
    # computed from the positives (Σ softplus(z) − Σ z⁺), equal to torch's up to rounding
    targets, z = _targets(), torch.randn(B, L)
    y = targets.dense()
    torch.testing.assert_close(losses.DEFAULT.value(z, targets, 0, L, L),
                               F.binary_cross_entropy_with_logits(z, y, reduction="sum") / B, rtol=1e-6, atol=1e-6)
    assert torch.equal(losses.DEFAULT.grad(z, targets, 0, L, L), (torch.sigmoid(z) - y) / B)


def test_hinge_gradient_is_not_sigmoid_minus_y():
    targets, z = _targets(), torch.randn(B, L)
    hinge = losses.create("squared_hinge").grad(z, targets, 0, L, L)
    assert not torch.allclose(hinge, losses.DEFAULT.grad(z, targets, 0, L, L))
    y = targets.dense()
    assert (hinge[(y == 1) & (z >= 1)] == 0).all() and (hinge[(y == 0) & (z <= -1)] == 0).all()


def test_unknown_loss_and_reduction_are_clear_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'bce'"):
        losses.create("bc")
    with pytest.raises(ConfigError, match="reduction"):
        losses.create("bce", "average")


@pytest.mark.parametrize("classifier", ["dense", "ffi", "ffi-group"])
@pytest.mark.parametrize("name", losses.list_losses())
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_fused_equals_unfused(classifier, name, reduction):
    options = {"dense": {}, "ffi": {"fan_in": 4}, "ffi-group": {"fan_in": 4, "group_size": 3}}[classifier]
    clf = create_classifier(classifier, D, L, seed=2, **options)
    clf.label_chunk = 6  # ragged: 29 labels in chunks of 6
    loss = losses.create(name, reduction)
    h = torch.randn(B, D, generator=torch.Generator().manual_seed(3)).requires_grad_()
    targets = _targets(seed=4)
    out = {}
    for fused in (False, True):
        clf.zero_grad()
        h.grad = None
        value = clf.loss(h, targets, fused=fused, criterion=loss)
        value.backward()
        out[fused] = (value.detach(), h.grad.clone(), [p.grad.clone() for p in clf.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-6)
    for a, b in zip(out[True][2], out[False][2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _rigl(classifier, loss, options):
    clf = create_classifier(classifier, D, L, seed=5, **options)
    cfg = DSTConfig(regrow="gradient", interval=1, start=0.0, end=1.0, fraction=0.5, decay="constant")
    rewirer = Rewirer(clf, cfg, 10, seed=0, loss=loss)
    g = torch.Generator().manual_seed(6)
    h = 3 * torch.randn(B, D, generator=g)
    targets = _targets(seed=7)
    before = copy.deepcopy(clf)
    rewirer.rewire(1, h, targets)
    return before, clf, h, targets


@pytest.mark.parametrize("classifier", ["ffi", "ffi-group"])
def test_rigl_scores_with_the_given_loss(classifier):
    options = {"fan_in": 4} if classifier == "ffi" else {"fan_in": 4, "group_size": 3}
    hinge = losses.create("squared_hinge")
    before, bce_clf, h, targets = _rigl(classifier, losses.DEFAULT, options)
    _, hinge_clf, _, _ = _rigl(classifier, hinge, options)
    ids = "indices" if classifier == "ffi" else "group_indices"
    assert not torch.equal(getattr(bce_clf, ids), getattr(hinge_clf, ids))  # a different gradient grows differently
    if classifier == "ffi":
        # each label regrew the inactive inputs of largest |Σ_b ∂loss/∂z[b, l] · h[b, i]| under the hinge
        scores = (hinge.grad(before.logits(h, 0, L), targets, 0, L, L).t() @ h).abs()  # [L, d]
        old = torch.zeros(L, D, dtype=torch.bool).scatter_(1, before.indices.long(), True)
        new = torch.zeros(L, D, dtype=torch.bool).scatter_(1, hinge_clf.indices.long(), True)
        grown = new & ~old
        for label in range(L):
            count = int(grown[label].sum())
            candidates = scores[label].masked_fill(old[label], float("-inf"))
            assert set(grown[label].nonzero().flatten().tolist()) == set(candidates.topk(count).indices.tolist())


def test_rewirer_defaults_to_the_training_default():
    clf = create_classifier("ffi", D, L, fan_in=4)
    cfg = dataclasses.replace(DSTConfig(), regrow="gradient")
    assert Rewirer(clf, cfg, 10).loss is losses.DEFAULT
