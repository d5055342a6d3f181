"""The classifier contract, tested over every registered classifier, then what is particular
to `masked` (off-mask weights stay zero) and `ffi` (index storage and connectivity).

A new registration is tested here without editing this file: ``helpers.small_classifier``
gives it the small options (fan-in, density, ...) its factory takes.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.classifiers import FixedFanInClassifier, MaskedClassifier
from bench.classifiers import fixed_fan_in as ffi_module
from bench.errors import ConfigError, UnknownNameError
from bench.classifiers import create_classifier, list_classifiers
from bench.sparse import CSR, SparseTargets
from helpers import MaxTensorSize, random_targets, small_classifier

D, L, B = 16, 50, 6


def make(name, in_features=D, num_labels=L, label_chunk=7):
    return small_classifier(name, in_features, num_labels, label_chunk=label_chunk)


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


ALL = list_classifiers()


def test_builtins_are_registered():
    assert {"dense", "masked", "ffi"} <= set(ALL)


# --- the contract, for every registered classifier -----------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_forward_shape_and_attributes(name):
    clf = make(name)
    assert (clf.in_features, clf.num_labels) == (D, L)
    assert clf(torch.randn(B, D)).shape == (B, L)


@pytest.mark.parametrize("name", ALL)
def test_topk_equals_full_sort_with_ties_to_lower_id(name):
    clf = make(name)
    bias = getattr(clf, "bias", None)
    if isinstance(bias, torch.Tensor):
        with torch.no_grad():  # three distinct values over 50 labels: ties inside and across chunks
            bias.copy_(torch.randint(0, 3, bias.shape, generator=torch.Generator().manual_seed(5)))
    h = torch.randn(B, D, generator=torch.Generator().manual_seed(6))
    h[:2] = 0  # rows whose scores are the bias alone: ties everywhere
    with torch.no_grad():
        full = clf(h).float()  # [B, L]
    assert full[0].unique().numel() < L  # the tie case is real
    order = torch.sort(full, dim=1, descending=True, stable=True)
    for k in (1, 5, 13, L, L + 3):
        scores, ids = clf.topk(h, k)
        kk = min(k, L)
        assert ids.shape == (B, kk)
        assert torch.equal(ids, order.indices[:, :kk])
        torch.testing.assert_close(scores, order.values[:, :kk])


@pytest.mark.parametrize("name", ALL)
def test_loss_is_bce_summed_over_labels_mean_over_batch(name):
    clf = make(name)
    h = torch.randn(B, D)
    targets = random_targets(B, L)
    want = F.binary_cross_entropy_with_logits(clf(h).float(), targets.dense(), reduction="sum") / B
    torch.testing.assert_close(clf.loss(h, targets), want)


@pytest.mark.parametrize("name", ALL)
def test_gradients_flow_to_the_input(name):
    clf = make(name)
    h = torch.randn(B, D, requires_grad=True)
    clf.loss(h, random_targets(B, L)).backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_memory_bytes_matches_the_tensors(name):
    clf = make(name)
    mem = clf.memory_bytes()
    assert set(mem) == {"parameters", "gradients", "optimizer", "indices", "total"}
    assert mem["total"] == sum(v for key, v in mem.items() if key != "total")
    assert mem["parameters"] == nbytes(clf.parameters())
    assert mem["indices"] == nbytes(clf.buffers())
    assert clf.memory_bytes(optimizer_slots=0)["optimizer"] == 0

    # gradients and optimiser state as they are really allocated
    clf.loss(torch.randn(B, D), random_targets(B, L)).backward()
    assert mem["gradients"] == nbytes(p.grad for p in clf.parameters() if p.grad is not None)
    for optimizer, slots in [(torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9), 1),
                             (torch.optim.AdamW(clf.parameters(), lr=0.1), 2)]:
        optimizer.step()
        state = [t for s in optimizer.state.values() for key, t in s.items()
                 if key != "step" and isinstance(t, torch.Tensor)]  # Adam's step counter is a scalar
        assert clf.memory_bytes(optimizer_slots=slots)["optimizer"] == nbytes(state)


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_is_a_config_error(name):
    with pytest.raises(ConfigError, match="no_such_option.*accepts"):
        create_classifier(name, D, L, no_such_option=1)


def test_unknown_name_suggests_a_close_one():
    with pytest.raises(UnknownNameError, match="unknown classifier 'ffl' — did you mean 'ffi'"):
        create_classifier("ffl", D, L)


def test_misspelt_option_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="fanin.*accepts: fan_in, seed, dtype"):
        create_classifier("ffi", D, L, fanin=4)


# --- masked --------------------------------------------------------------------------------


def train(clf, optimizer, steps=20):
    g = torch.Generator().manual_seed(7)
    for step in range(steps):
        optimizer.zero_grad()
        clf.loss(torch.randn(B, D, generator=g), random_targets(B, L, seed=step)).backward()
        optimizer.step()


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-2),
}


@pytest.mark.parametrize("copied", [False, True], ids=["original", "deepcopy"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_masked_off_mask_weights_stay_exactly_zero(optimizer, copied):
    clf = MaskedClassifier(D, L, density=0.3, seed=1)
    if copied:  # the gradient mask must survive copies (checkpoint/EMA/sweep code)
        clf = copy.deepcopy(clf)
    off = ~clf.mask
    assert off.any() and clf.mask.any()
    assert (clf.weight[off] == 0).all()
    start = clf.weight.detach().clone()
    train(clf, OPTIMIZERS[optimizer](clf.parameters()))
    assert (clf.weight[off] == 0).all()
    assert not torch.equal(clf.weight[clf.mask], start[clf.mask])  # on-mask weights did train


def test_masked_apply_mask_and_realised_density():
    clf = MaskedClassifier(D, 400, density=0.25, seed=2)
    assert clf.density == pytest.approx(0.25, abs=0.03)
    with torch.no_grad():
        clf.weight.fill_(1.0)
    clf.apply_mask_()
    assert torch.equal(clf.weight != 0, clf.mask)
    assert MaskedClassifier(D, 10, density=1.0).mask.all()


def test_masked_is_deterministic_by_seed():
    a, b, c = (MaskedClassifier(D, L, density=0.3, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight)
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("density", [-0.1, 1.5, float("nan"), "dense"])
def test_masked_bad_density(density):
    with pytest.raises(ConfigError, match="density"):
        create_classifier("masked", D, L, density=density)


def test_masked_density_zero_means_the_ffi_sparsity():
    # the classifier derives its own default: fan_in / d (capped at 1), an ffi layer's sparsity
    assert create_classifier("masked", 40, 200, fan_in=10, seed=0).density == pytest.approx(0.25, abs=0.04)
    assert create_classifier("masked", 8, 10, fan_in=32).mask.all()


# --- ffi -----------------------------------------------------------------------------------


@pytest.mark.parametrize("d, dtype", [(16, torch.int16), (32767, torch.int16), (32768, torch.int32)])
def test_ffi_index_dtype_follows_the_input_size(d, dtype):
    clf = FixedFanInClassifier(d, 3, fan_in=4)
    assert clf.indices.dtype == dtype
    assert clf.memory_bytes()["indices"] == 3 * 4 * dtype.itemsize
    clf.check_connectivity()


def test_ffi_rows_are_distinct_sorted_and_in_range():
    clf = FixedFanInClassifier(D, 300, fan_in=7, seed=8)
    idx = clf.indices.long()
    assert idx.shape == (300, 7)
    assert ((idx >= 0) & (idx < D)).all()
    assert (idx[:, 1:] > idx[:, :-1]).all()  # strictly increasing: sorted and distinct
    clf.check_connectivity()
    full = FixedFanInClassifier(D, 5, fan_in=D)  # k = d connects everything
    assert torch.equal(full.indices.long(), torch.arange(D).expand(5, -1))


def test_ffi_is_deterministic_by_seed():
    a, b, c = (FixedFanInClassifier(D, L, fan_in=5, seed=s) for s in (9, 9, 10))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    assert not torch.equal(a.indices, c.indices)


def test_ffi_matches_its_dense_weight():
    clf = FixedFanInClassifier(D, L, fan_in=5, seed=11)
    with torch.no_grad():
        clf.bias.normal_()
    weight = clf.to_dense_weight()  # [L, d]
    assert ((weight != 0).sum(1) == 5).all()
    h = torch.randn(B, D)
    torch.testing.assert_close(clf(h), F.linear(h, weight, clf.bias))


def test_ffi_check_connectivity_catches_broken_rows():
    clf = FixedFanInClassifier(D, 10, fan_in=4)
    with torch.no_grad():
        clf.indices[3, 1] = clf.indices[3, 0]
    with pytest.raises(AssertionError, match="label 3 has a repeated input id"):
        clf.check_connectivity()
    for bad in (-1, D):
        clf = FixedFanInClassifier(D, 10, fan_in=4)
        clf.indices[6, 2] = bad
        with pytest.raises(AssertionError, match=r"label 6 has an input id outside \[0, 16\)"):
            clf.check_connectivity()


@pytest.mark.parametrize("fan_in", [0, D + 1, 2.5, True])
def test_ffi_bad_fan_in(fan_in):
    with pytest.raises(ConfigError, match=rf"fan_in.*\[1, {D}\].*d = {D}"):
        create_classifier("ffi", D, L, fan_in=fan_in)


def test_ffi_bfloat16_values():
    clf = create_classifier("ffi", D, L, fan_in=5, dtype="bfloat16")
    assert clf.values.dtype == clf.bias.dtype == torch.bfloat16
    h = torch.randn(B, D, requires_grad=True)
    clf.loss(h, random_targets(B, L)).backward()
    assert clf.values.grad.dtype == torch.bfloat16 and h.grad.dtype == torch.float32
    assert clf.memory_bytes()["parameters"] == (L * 5 + L) * 2
    with pytest.raises(ConfigError, match="dtype"):
        create_classifier("ffi", D, L, fan_in=5, dtype="int8")


def test_ffi_init_never_builds_a_dense_weight(monkeypatch):
    num_labels, d, k = 2000, 64, 5
    monkeypatch.setattr(ffi_module, "INIT_CHUNK_ELEMENTS", 8 * d)  # 8 labels per chunk
    monkeypatch.setattr(ffi_module, "CHECK_CHUNK_ELEMENTS", 8 * k)
    with MaxTensorSize() as probe:
        clf = FixedFanInClassifier(d, num_labels, fan_in=k, seed=12)
        clf.check_connectivity()
    assert probe.max_numel <= num_labels * k < num_labels * d
    assert clf.indices.shape == (num_labels, k)
    assert math.isclose(clf.values.abs().max().item(), 1 / math.sqrt(k), rel_tol=0.05)


def test_registries_import_nothing_above_them():
    # registry and methods are read by config (no torch); classifiers register on their own import
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, bench.registry, bench.methods, bench.config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not any(m.startswith('bench.classifiers') for m in sys.modules); "
            "print(len(bench.methods.list_methods()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
