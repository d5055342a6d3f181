"""DST: schedule, invariants after rewiring, prune/regrow choices, optimiser state, RigL, seeds."""

import dataclasses

import pytest
import torch

from bench import create_classifier
from bench.config import DSTConfig
from bench.dst import Rewirer, RewireSchedule
from bench.sparse import SparseTargets

D, L, K = 20, 33, 6


def _cfg(**kw):
    return dataclasses.replace(DSTConfig(regrow="random", interval=1, start=0.0, end=1.0, decay="constant"), **kw)


def _targets(batch, num_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (batch, 3), generator=g)
    return SparseTargets(torch.arange(0, 3 * batch + 1, 3), labels.reshape(-1), num_labels)


def _train_step(clf, opt, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(8, D, generator=g)
    targets = _targets(8, clf.num_labels, seed)
    opt.zero_grad()
    clf.loss(h, targets).backward()
    opt.step()
    return h, targets


def make(name, **kw):
    options = {"ffi": {"fan_in": K}, "masked": {"density": K / D}}[name]
    return create_classifier(name, D, L, **options, **kw)


@pytest.mark.parametrize("name", ["ffi", "masked"])
@pytest.mark.parametrize("regrow", ["random", "gradient"])
@pytest.mark.parametrize("prune", ["fraction", "threshold"])
def test_invariants_hold_after_many_rewires(name, regrow, prune):
    clf = make(name)
    opt = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rewirer = Rewirer(clf, _cfg(regrow=regrow, prune=prune, fraction=0.5, threshold=0.2), 100, opt, seed=0)
    rows_before = clf.mask.sum(1).clone() if name == "masked" else None
    changed = 0
    for step in range(1, 31):
        h, targets = _train_step(clf, opt, step)
        assert rewirer.schedule.due(step)
        changed += rewirer.rewire(step, h, targets)["connections_changed"]
        if name == "ffi":
            clf.check_connectivity()  # exactly k distinct, in-range inputs per label
            assert clf.indices.shape == (L, K)
        else:
            assert torch.equal(clf.mask.sum(1), rows_before)  # density constant per label and layer
            assert (clf.weight[~clf.mask] == 0).all()  # off-mask weights exactly zero
    assert changed > 0


def test_pruned_weights_are_the_smallest_and_regrown_start_at_zero_with_zero_momentum():
    clf = make("ffi")
    opt = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9)
    _train_step(clf, opt, 0)  # creates momentum buffers
    momentum = opt.state[clf.values]["momentum_buffer"]
    with torch.no_grad():
        momentum.fill_(1.0)
        magnitudes = torch.arange(1, K + 1, dtype=torch.float32).repeat(L, 1)  # slot j has |w| = j + 1
        clf.values.copy_(magnitudes * torch.where(torch.rand(L, K) < 0.5, -1.0, 1.0))
    before = clf.indices.clone()
    stats = Rewirer(clf, _cfg(fraction=0.5), 10, opt).rewire(1)
    changed = clf.indices != before  # [L, K]
    assert torch.equal(changed, torch.tensor([True] * 3 + [False] * 3).repeat(L, 1))  # the 3 smallest
    assert (clf.values[changed] == 0).all() and (clf.values[~changed].abs() >= 4).all()
    assert (momentum[changed] == 0).all() and (momentum[~changed] == 1).all()
    assert stats["connections_changed"] == 3 * L
    assert stats["pruned_mean_abs_weight"] == pytest.approx(2.0)  # mean of 1, 2, 3
    # regrown inputs were not connected before the rewire
    for row in range(L):
        assert not set(clf.indices[row, :3].tolist()) & set(before[row].tolist())


def test_masked_pruned_leave_no_state_and_regrown_are_zero():
    clf = make("masked")
    opt = torch.optim.AdamW(clf.parameters(), lr=0.01)
    _train_step(clf, opt, 0)
    mask_before, weight_before = clf.mask.clone(), clf.weight.detach().clone()
    Rewirer(clf, _cfg(fraction=0.5), 10, opt).rewire(1)
    dropped, grown = mask_before & ~clf.mask, ~mask_before & clf.mask
    assert dropped.any() and dropped.sum() == grown.sum()
    for buf in ("exp_avg", "exp_avg_sq"):
        state = opt.state[clf.weight][buf]
        assert (state[dropped | grown] == 0).all()
    assert (clf.weight[grown] == 0).all() and (clf.weight[dropped] == 0).all()
    # the smallest active weights of each row went
    kept_min = weight_before.abs().masked_fill(~(mask_before & clf.mask), float("inf")).min(1).values
    dropped_max = weight_before.abs().masked_fill(~dropped, -1).max(1).values
    assert (dropped_max <= kept_min).all()


def test_threshold_prunes_only_below_threshold():
    clf = make("ffi")
    with torch.no_grad():
        clf.values.fill_(1.0)
        clf.values[:, 0] = 0.05
    before = clf.indices.clone()
    stats = Rewirer(clf, _cfg(prune="threshold", threshold=0.1), 10).rewire(1)
    assert torch.equal(clf.indices != before, torch.tensor([True] + [False] * (K - 1)).repeat(L, 1))
    assert stats["threshold"] == pytest.approx(0.1) and stats["fraction"] is None


def test_schedule_values_at_chosen_steps():
    sched = RewireSchedule(DSTConfig(regrow="random", interval=10, start=0.1, end=0.5, fraction=0.3), 200)
    assert (sched.start_step, sched.end_step) == (20, 100)
    assert [s for s in range(1, 201) if sched.due(s)] == [30, 40, 50, 60, 70, 80, 90]
    assert sched.fraction(20) == pytest.approx(0.3)
    assert sched.fraction(60) == pytest.approx(0.15)  # half-way: cosine at pi/2
    assert sched.fraction(100) == pytest.approx(0.0, abs=1e-12)
    assert sched.threshold(60) == pytest.approx(0.005)
    const = RewireSchedule(DSTConfig(regrow="random", decay="constant", fraction=0.3), 100)
    assert const.fraction(50) == 0.3
    static = RewireSchedule(DSTConfig(regrow="none", interval=1), 100)
    assert not any(static.due(s) for s in range(1, 101))


def test_rigl_regrows_the_inputs_with_largest_gradient():
    # one label, d = 6, connected to inputs {0, 1}; one input pruned per rewire.
    clf = create_classifier("ffi", 6, 1, fan_in=2)
    with torch.no_grad():
        clf.indices.copy_(torch.tensor([[0, 1]], dtype=clf.indices.dtype))
        clf.values.copy_(torch.tensor([[0.01, 2.0]]))  # input 0 is the smallest: pruned
        clf.bias.zero_()
    # one example, positive label: dL/dz = sigmoid(z) - 1 < 0, so |dL/dw_i| ∝ |h_i|
    h = torch.tensor([[0.0, 0.0, 0.3, -5.0, 1.0, 0.2]])
    targets = SparseTargets(torch.tensor([0, 1]), torch.tensor([0]), 1)
    Rewirer(clf, _cfg(regrow="gradient", fraction=0.5), 10).rewire(1, h, targets)
    assert sorted(clf.indices[0].tolist()) == [1, 3]  # input 3 has the largest |h|, hence |grad|


def test_rewiring_is_repeatable_under_a_fixed_seed():
    def run(seed):
        clf = make("ffi", seed=0)
        opt = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9)
        rewirer = Rewirer(clf, _cfg(fraction=0.3), 100, opt, seed=seed)
        for step in range(1, 6):
            _train_step(clf, opt, step)
            rewirer.rewire(step)
        return clf.indices.clone()

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_dense_classifier_cannot_be_rewired():
    with pytest.raises(TypeError, match="no sparse connectivity"):
        Rewirer(create_classifier("dense", D, L), _cfg(), 10)


def test_rewires_are_recorded_from_the_cli(tiny_overrides, tmp_path):
    from bench.cli import main
    from bench.record import read_records

    assert main(["run", "method=ffi-set", *tiny_overrides, "dst.interval=2", "train.epochs=2"]) == 0
    assert main(["run", "method=dense", *tiny_overrides, "dst.regrow=random"]) == 1
    ok, failed = read_records(tmp_path / "results" / "runs.jsonl")
    assert ok["dst"]["rewires"] and ok["dst"]["connections_changed"] > 0
    first = ok["dst"]["rewires"][0]
    assert {"step", "fraction", "connections_changed", "pruned_mean_abs_weight", "seconds"} <= set(first)
    assert failed["status"] == "failed" and "needs a sparse classifier" in failed["reason"]


def test_random_regrowth_is_uniform_over_allowed_inputs():
    from bench.dst.rewire import random_per_row

    g = torch.Generator().manual_seed(0)
    allowed = torch.ones(4000, 10, dtype=torch.bool)
    allowed[:, :3] = False  # inputs 0-2 are taken
    allowed[-1] = False
    allowed[-1, 9] = True  # a nearly full row: only one candidate
    counts = torch.full((4000,), 2)
    counts[-1] = 1
    picked = random_per_row(allowed, counts, g)
    assert torch.equal(picked.sum(1), counts)
    assert not (picked & ~allowed).any()
    freq = picked[:-1].float().mean(0)[3:]  # each of 7 inputs chosen with probability 2/7
    assert torch.allclose(freq, torch.full((7,), 2 / 7), atol=0.03)
