"""The fused, label-chunked BCE loss against the unfused one (full ``[B, L]`` logits), over
every registered classifier: same loss, same gradients wrt the input and every parameter,
with ragged label chunks; masked gradients stay masked; no ``[B, L]`` tensor exists."""

from __future__ import annotations

import pytest
import torch

from bench.classifiers.base import label_tensors
from bench.classifiers import create_classifier, list_classifiers
from bench.sparse import CSR, SparseTargets
import helpers
from helpers import MaxTensorSize, small_classifier

D, L, B = 16, 50, 6


def make(name, num_labels=L, label_chunk=7, **kw):
    clf = small_classifier(name, D, num_labels, label_chunk=label_chunk, **kw)
    with torch.no_grad():  # a non-zero bias, so its gradient path is exercised
        clf.bias.copy_(torch.linspace(-2, 1, num_labels))
    return clf


def random_targets(num_rows, num_labels, seed=0):
    return helpers.random_targets(num_rows, num_labels, seed, max_per_row=5)


def loss_and_grads(clf, h, targets, fused, scale=1.0):
    clf.zero_grad(set_to_none=True)
    h = h.detach().requires_grad_()
    loss = clf.loss(h, targets, fused=fused)
    (scale * loss).backward()
    return loss.detach(), h.grad, {n: p.grad for n, p in clf.named_parameters()}


@pytest.mark.parametrize("label_chunk", [7, 50, 64])
@pytest.mark.parametrize("name", list_classifiers())
def test_fused_matches_unfused(name, label_chunk):
    clf = make(name, label_chunk=label_chunk)
    h, targets = torch.randn(B, D, generator=torch.Generator().manual_seed(1)), random_targets(B, L)
    want = loss_and_grads(clf, h, targets, fused=False, scale=0.7)
    got = loss_and_grads(clf, h, targets, fused=True, scale=0.7)  # a loss weight scales the gradients
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert got[2].keys() == want[2].keys()
    for n in want[2]:
        torch.testing.assert_close(got[2][n], want[2][n], rtol=1e-5, atol=1e-6, msg=n)


def test_default_is_fused_and_attribute_switches_it():
    clf = make("dense")
    assert clf.fused_loss
    calls = []
    clf.logits = lambda h, lo, hi, _orig=clf.logits: calls.append((lo, hi)) or _orig(h, lo, hi)
    clf.loss(torch.randn(B, D), random_targets(B, L))
    assert calls == [(0, 7)] * 7 + [(0, 1)]  # 50 labels: chunks of 7 (on the chunk's own slices)
    calls.clear()
    clf.fused_loss = False
    clf.loss(torch.randn(B, D), random_targets(B, L))
    assert calls == [(0, L)]


def test_masked_fused_gradient_stays_masked():
    clf = make("masked")
    clf.loss(torch.randn(B, D), random_targets(B, L)).backward()
    assert clf.weight.grad is not None and (clf.weight.grad[~clf.mask] == 0).all()
    assert (clf.weight.grad[clf.mask] != 0).any()


def test_ffi_bfloat16_fused_matches_unfused():
    clf = make("ffi", dtype=torch.bfloat16)
    h, targets = torch.randn(B, D), random_targets(B, L)
    want, got = (loss_and_grads(clf, h, targets, fused=f) for f in (False, True))
    torch.testing.assert_close(got[0], want[0], rtol=1e-2, atol=1e-2)
    for a, b in zip([got[1], *got[2].values()], [want[1], *want[2].values()]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_no_grad_and_frozen_input():
    clf = make("ffi")
    h, targets = torch.randn(B, D), random_targets(B, L)
    with torch.no_grad():
        value = clf.loss(h, targets)
    torch.testing.assert_close(value, clf.loss(h, targets, fused=False).detach())
    clf.loss(h, targets).backward()  # h needs no gradient: only the parameters get one
    assert clf.values.grad is not None


def test_label_tensors():
    assert sorted(label_tensors(make("dense"))) == ["bias", "weight"]
    assert sorted(label_tensors(make("masked"))) == ["bias", "mask", "weight"]
    assert sorted(label_tensors(make("ffi"))) == ["bias", "indices", "values"]


@pytest.mark.parametrize("name", ["dense", "ffi"])
def test_fused_never_builds_batch_by_labels(name):
    num_labels, batch = 4000, 32  # B·L = 128000 > every parameter (ffi: L·k = 20000)
    clf = make(name, num_labels=num_labels, label_chunk=300)
    h = torch.randn(batch, D, requires_grad=True)
    targets = random_targets(batch, num_labels)
    with MaxTensorSize() as probe:
        clf.loss(h, targets).backward()
    biggest_param = max(t.numel() for t in list(clf.parameters()) + list(clf.buffers()))
    work = batch * 300 * getattr(clf, "fan_in", 1)  # the reference kernel's [Lc, k, B] block
    assert probe.max_numel <= max(work, biggest_param) < batch * num_labels
