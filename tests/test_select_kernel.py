"""The compiled score-and-select pass of ffi (``bench.kernels.cpu_select``): the same top-k as
a stable descending sort of the layer's scores, ties (lower id first), NaN and ±inf included,
and scores bit for bit the compiled forward's."""

from __future__ import annotations

import pytest
import torch

from bench.classifiers import create_classifier
from bench.classifiers.base import Classifier
from bench.kernels import cpu_select, fixed_fan_in, use_backend

pytestmark = pytest.mark.skipif(cpu_select.library() is None, reason="no C compiler")


def sorted_topk(scores: torch.Tensor, k: int):
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def _layer(d, L, fan_in, kind, seed=0):
    clf = create_classifier("ffi", d, L, fan_in=fan_in, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if kind == "ties":  # few distinct weights and inputs: scores repeat across labels
            clf.values.copy_(torch.randint(-1, 2, clf.values.shape, generator=g).float())
            clf.bias.copy_(torch.randint(0, 2, clf.bias.shape, generator=g).float())
        else:
            clf.bias.normal_(generator=g)
    return clf


def _features(B, d, kind, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(-1, 2, (B, d), generator=g).float()
    h = torch.randn(B, d, generator=g)
    if kind == "special" and B >= 4:
        h[0, :] = float("nan")  # every score of row 0 NaN
        h[1, 3] = float("inf")  # +inf, -inf and NaN (inf − inf) scores
        h[1, 4] = -float("inf")
        h[2, 5] = -float("inf")
        h[3, :] = 0.0  # an all-equal row (the bias is zeroed too)
    return h


@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("B,d,L,fan_in,k", [(37, 20, 1000, 6, 5), (70, 64, 3000, 16, 10), (1, 8, 300, 3, 3),
                                           (5, 8, 7, 2, 12), (16, 32, 600, 8, 1), (65, 12, 2100, 4, 40)])
def test_select_equals_stable_sort(kind, B, d, L, fan_in, k):
    clf = _layer(d, L, fan_in, kind)
    h = _features(B, d, kind)
    if kind == "special":
        with torch.no_grad():
            clf.bias.zero_()
    with torch.no_grad():
        full = fixed_fan_in(h, clf.values, clf.indices) + clf.bias  # the compiled forward's scores
    want_s, want_i = sorted_topk(full, min(k, L))
    got_s, got_i = cpu_select.ffi_topk(h, clf.values, clf.indices, clf.bias, k)
    assert torch.equal(got_i, want_i)
    assert torch.equal(got_s.view(torch.int32), want_s.view(torch.int32))  # bit for bit, NaN included
    # the classifier takes this path, and the torch path agrees
    assert torch.equal(clf.topk(h, k)[1], want_i)
    assert torch.equal(Classifier.topk(clf, h, k)[1], want_i)


@pytest.mark.parametrize("threads", [1, 3])
def test_any_thread_count_gives_the_same_ranking(threads):
    clf = _layer(16, 5000, 4, "ties")
    h = _features(23, 16, "ties")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = cpu_select.ffi_topk(h, clf.values, clf.indices, clf.bias, 7)
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():
        want = sorted_topk(fixed_fan_in(h, clf.values, clf.indices) + clf.bias, 7)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_other_backends_and_dtypes_take_the_torch_path():
    clf = _layer(16, 700, 4, "ties")
    h = _features(9, 16, "ties")
    want = clf.topk(h, 5)
    with use_backend("reference"):
        assert torch.equal(clf.topk(h, 5)[1], want[1])
    assert torch.equal(clf.topk(h.double(), 5)[1], want[1])
    bf = create_classifier("ffi", 16, 700, fan_in=4, dtype="bfloat16")
    s, i = bf.topk(h, 5)
    assert s.dtype == torch.float32 and i.shape == (9, 5)


def _group_layer(d, L, fan_in, g, kind, seed=0):
    clf = create_classifier("ffi-group", d, L, fan_in=fan_in, group_size=g, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if kind == "ties":
            clf.values.copy_(torch.randint(-1, 2, clf.values.shape, generator=gen).float())
            clf.bias.copy_(torch.randint(0, 2, clf.bias.shape, generator=gen).float())
        else:
            clf.bias.normal_(generator=gen)
    return clf


@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("B,d,L,fan_in,g,k", [(37, 20, 1000, 6, 8, 5), (70, 64, 3000, 16, 32, 10),
                                             (1, 8, 300, 3, 7, 3), (5, 8, 7, 2, 3, 12), (19, 32, 999, 8, 40, 1),
                                             (65, 12, 2100, 4, 1, 40)])
def test_group_select_equals_stable_sort(kind, B, d, L, fan_in, g, k):
    from bench.kernels.group_fan_in import group_fan_in

    clf = _group_layer(d, L, fan_in, g, kind)
    h = _features(B, d, kind)
    if kind == "special":
        with torch.no_grad():
            clf.bias.zero_()
    with torch.no_grad():
        full = group_fan_in(h, clf.values, clf.group_indices, g) + clf.bias  # the compiled forward's scores
    want_s, want_i = sorted_topk(full, min(k, L))
    got_s, got_i = cpu_select.group_topk(h, clf.values, clf.group_indices, g, clf.bias, k)
    assert torch.equal(got_i, want_i)
    assert torch.equal(got_s.view(torch.int32), want_s.view(torch.int32))
    assert torch.equal(clf.topk(h, k)[1], want_i)
    assert torch.equal(Classifier.topk(clf, h, k)[1], want_i)
    with use_backend("reference"):
        assert torch.equal(clf.topk(h, k)[1], Classifier.topk(clf, h, k)[1])
