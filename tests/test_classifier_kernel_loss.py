"""The classifiers' training loss through the fused loss kernels (``ffi``, ``ffi-group`` and
head-tail's tail: ``loss`` → ``bench.kernels.fused_loss``) against the torch route (``Classifier.loss``, label
chunk by label chunk): values and every gradient for both losses × three reductions, the loss
weight of a mixed objective, the routing rules (reference backend, unfused, float64, custom
loss, a label shard's global ``mean``), and runs from the CLI."""

from __future__ import annotations

import pytest
import torch

from bench import losses
from bench.classifiers.base import Classifier
from bench.classifiers.fixed_fan_in import FixedFanInClassifier
from bench.classifiers.group_fan_in import GroupFanInClassifier
from bench.classifiers.head_tail import HeadTailClassifier
from bench.kernels import cpu, cpu_group, fused_loss
from bench.kernels.ops import use_backend
from tests.helpers import random_targets, run_records, small_classifier

compiled = pytest.mark.skipif(cpu.library() is None or cpu_group.library() is None,
                              reason="no C compiler: the compiled kernels are unavailable")

B, D, L = 19, 24, 150
METHODS = {"ffi": {}, "ffi-group": {"group_size": 4}}
HEAD_TAIL = {"head-tail": {"head_labels": 20}, "head-tail-group": {"head_labels": 21, "tail": "ffi-group",
                                                                     "group_size": 4}}
ALL = list(METHODS) + list(HEAD_TAIL)


def layer(name, label_chunk=40):
    if name in HEAD_TAIL:
        clf = small_classifier("head-tail", D, L, label_chunk=label_chunk, fan_in=6, **HEAD_TAIL[name])
    else:
        clf = small_classifier(name, D, L, label_chunk=label_chunk, fan_in=6, **METHODS[name])
    with torch.no_grad():
        clf.bias.copy_(torch.randn(L, generator=torch.Generator().manual_seed(3)) * 0.3)
    return clf


def grads(clf, h, targets, weight=1.0, route=None, **kwargs):
    """``(value, grad_h, every parameter's gradient)`` of ``weight · loss`` on ``route``
    (default: the classifier's own ``loss``)."""
    clf.zero_grad()
    h = h.detach().clone().requires_grad_(True)
    value = clf.loss(h, targets, **kwargs) if route is None else route(clf, h, targets, **kwargs)
    (value * weight).backward()
    return (value.detach(), h.grad, *(p.grad.clone() for p in clf.parameters()))


def assert_close(got, want):
    for g, w in zip(got, want):
        scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
        torch.testing.assert_close(g.float(), w.float(), rtol=1e-4, atol=1e-5 * scale)


def spy(monkeypatch):
    """Counts the fused kernel calls."""
    calls = []
    for name in ("ffi_loss", "group_loss"):
        real = getattr(fused_loss, name)
        monkeypatch.setattr(fused_loss, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    return calls


@compiled
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("loss", ["bce", "squared_hinge"])
@pytest.mark.parametrize("reduction", ["sum_over_labels", "mean", "sum"])
def test_kernel_loss_equals_the_torch_route(name, loss, reduction, monkeypatch):
    clf, criterion = layer(name), losses.create(loss, reduction)
    h, targets = torch.randn(B, D), random_targets(B, L, seed=5, max_per_row=6)
    calls = spy(monkeypatch)
    got = grads(clf, h, targets, criterion=criterion)
    assert calls, "the fused kernel did not run"
    assert_close(got, grads(clf, h, targets, route=Classifier.loss, criterion=criterion))
    with use_backend("reference"):  # the forced reference keeps the torch route
        before = len(calls)
        assert_close(got, grads(clf, h, targets, criterion=criterion))
        assert len(calls) == before
    assert_close(got, grads(clf, h, targets, criterion=criterion, fused=False))


@compiled
@pytest.mark.parametrize("name", ALL)
def test_loss_weight_scales_the_gradients(name):
    clf, criterion = layer(name), losses.create("bce", "mean")
    h, targets = torch.randn(B, D), random_targets(B, L, seed=6)
    value, *full = grads(clf, h, targets, criterion=criterion)
    mixed_value, *mixed = grads(clf, h, targets, weight=0.6, criterion=criterion)
    assert torch.equal(value, mixed_value)
    for g, w in zip(mixed, full):
        torch.testing.assert_close(g, w * 0.6)
    _, *torch_route = grads(clf, h, targets, weight=0.6, route=Classifier.loss, criterion=criterion)
    assert_close(mixed, torch_route)


@compiled
@pytest.mark.parametrize("name", list(METHODS))
def test_what_stays_on_the_torch_route(name, monkeypatch):
    clf = layer(name)
    h, targets = torch.randn(B, D), random_targets(B, L, seed=7)
    calls = spy(monkeypatch)

    class Scaled(losses.BCE):  # a subclass may change the formula: the kernels do not know it
        pass

    clf.loss(h, targets, fused=False)
    clf.loss(h, targets, criterion=Scaled("sum"))
    clf.double().loss(h.double(), targets)
    assert not calls
    clf.float().loss(h, targets)
    assert calls


class _Shard:
    """What ``bench.distributed.ShardLoss`` offers: a loss reduced over ``num_labels`` labels."""

    def __init__(self, loss, num_labels):
        self.loss, self.num_labels, self.name, self.reduction = loss, num_labels, loss.name, loss.reduction

    def divisor(self, batch, num_labels):
        return self.loss.divisor(batch, self.num_labels)

    def reduce(self, total, batch, num_labels):
        return self.loss.reduce(total, batch, self.num_labels)

    def block(self, z, targets, lo, hi, num_labels):
        return self.loss.block(z, targets, lo, hi, self.num_labels)

    def value(self, z, targets, lo, hi, num_labels):
        return self.loss.value(z, targets, lo, hi, self.num_labels)


@compiled
@pytest.mark.parametrize("name", ALL)
def test_a_label_shard_mean_divides_by_the_global_label_count(name, monkeypatch):
    from bench.distributed import ShardLoss

    clf = layer(name)
    h, targets = torch.randn(B, D), random_targets(B, L, seed=8)
    calls = spy(monkeypatch)
    for wrapper in (_Shard(losses.create("squared_hinge", "mean"), 4 * L),
                    ShardLoss(losses.create("squared_hinge", "mean"), 4 * L)):
        got = grads(clf, h, targets, criterion=wrapper)
        assert_close(got, grads(clf, h, targets, route=Classifier.loss, criterion=wrapper))
        plain = grads(clf, h, targets, criterion=losses.create("squared_hinge", "mean"))
        torch.testing.assert_close(got[0] * 4, plain[0])
    assert calls


def _run(overrides, method, tmp_path, tag):
    from bench.cli import main

    results = tmp_path / tag
    args = [o for o in overrides if not o.startswith("results_dir=")]
    assert main(["run", *args, f"results_dir={results}", f"method={method}"]) == 0
    (record,) = run_records(results)
    assert record["status"] == "ok"
    return record


@compiled
@pytest.mark.parametrize("method", ["ffi-set", "ffi-group-set", "head-tail-set"])
def test_cli_run_through_the_kernel_is_close_to_the_torch_route(method, tiny_overrides, tmp_path, monkeypatch):
    extra = ["dst.interval=2", "model.group_size=4"] if method == "ffi-group-set" else ["dst.interval=2"]
    extra += ["model.head_labels=10"] if method == "head-tail-set" else []
    calls = spy(monkeypatch)
    kernel = _run([*tiny_overrides, *extra], method, tmp_path, "kernel")
    assert calls
    for cls in (FixedFanInClassifier, GroupFanInClassifier, HeadTailClassifier):
        monkeypatch.setattr(cls, "loss", Classifier.loss)
    reference = _run([*tiny_overrides, *extra], method, tmp_path, "torch")
    assert kernel["final_train_loss"] == pytest.approx(reference["final_train_loss"], rel=1e-3)
    for key, value in reference["metrics"].items():
        if isinstance(value, float) and "time" not in key and "per_s" not in key and "samples" not in key:
            assert kernel["metrics"][key] == pytest.approx(value, abs=0.05), key


@compiled
def test_rigl_still_scores_through_the_loss(tiny_overrides):
    from bench.cli import main

    assert main(["run", *tiny_overrides, "method=ffi-set", "dst.regrow=gradient", "dst.interval=2"]) == 0
    results = next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("results_dir="))
    (record,) = run_records(results)
    assert record["status"] == "ok" and record["dst"]["connections_changed"] > 0
