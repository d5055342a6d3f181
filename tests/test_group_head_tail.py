"""`ffi-group` against the `ffi` reference (a group-shared layer is an ffi layer whose rows repeat
their group's ids), its DST (exactly k per group, zero regrowth for every label of the group,
optimiser state reset), and `head-tail` (head choice, original label order, SET on the tail).
The contract and fused-loss tests already run over both registrations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import losses
from bench.classifiers import GroupFanInClassifier, HeadTailClassifier
from bench.classifiers.head_tail import head_label_ids
from bench.config import DSTConfig
from bench.dst import Rewirer, connectivity_of
from bench.kernels import reference
from bench.kernels.group_fan_in import group_fan_in
from bench.sparse import CSR, SparseTargets

D, B = 16, 6


def targets(num_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [sorted(torch.randperm(num_labels, generator=g)[:4].tolist()) for _ in range(B)]
    return SparseTargets.from_csr(CSR.from_rows(rows, num_labels))


@pytest.mark.parametrize("num_labels, g", [(50, 4), (48, 8), (7, 32), (13, 1)])  # ragged, exact, one group, ffi
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_op_equals_ffi_with_repeated_rows(num_labels, g, dtype):
    gen = torch.Generator().manual_seed(g)
    groups = -(-num_labels // g)
    ids = torch.stack([torch.randperm(D, generator=gen)[:5] for _ in range(groups)]).to(torch.int16)
    x = torch.randn(B, D, generator=gen).to(dtype).requires_grad_()
    values = torch.randn(num_labels, 5, generator=gen).to(dtype).requires_grad_()
    grad = torch.randn(B, num_labels, generator=gen).to(dtype)
    out = group_fan_in(x, values, ids, g)
    out.backward(grad)
    rows = ids.repeat_interleave(g, dim=0)[:num_labels]
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    assert out.dtype == dtype and x.grad.dtype == dtype and values.grad.dtype == dtype
    torch.testing.assert_close(out, reference.ffi_forward(x.detach(), values.detach(), rows), **tol)
    torch.testing.assert_close(x.grad, reference.ffi_grad_input(grad, values.detach(), rows, D), **tol)
    torch.testing.assert_close(values.grad, reference.ffi_grad_values(grad, x.detach(), rows), **tol)


def test_group_op_gradcheck():
    ids = torch.tensor([[0, 3, 5], [1, 2, 7], [4, 6, 9]])
    x = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    values = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)  # last group ragged (1 label)
    assert torch.autograd.gradcheck(lambda a, v: group_fan_in(a, v, ids, 4), (x, values))


def test_group_layer_shares_indices_and_any_slice_matches():
    clf = GroupFanInClassifier(D, 50, fan_in=5, group_size=4, seed=1)
    assert clf.group_indices.shape == (13, 5) and clf.group_indices.dtype == torch.int16
    assert clf.memory_bytes()["indices"] == 13 * 5 * 2  # L/g rows, not L
    clf.check_connectivity()
    h = torch.randn(B, D)
    with torch.no_grad():
        clf.bias.normal_()
        full = clf(h)
        torch.testing.assert_close(full, h @ clf.to_dense_weight().t() + clf.bias)
        for lo, hi in [(0, 1), (3, 9), (5, 6), (47, 50), (8, 16)]:
            torch.testing.assert_close(clf.logits(h, lo, hi), full[:, lo:hi])


def _momentum_optimizer(clf):
    opt = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9)
    clf.loss(torch.randn(B, D), targets(clf.num_labels)).backward()
    opt.step()
    return opt


@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_group_rewire_keeps_k_per_group_and_zeroes_regrown(regrow):
    clf = GroupFanInClassifier(D, 50, fan_in=5, group_size=4, seed=2)
    opt = _momentum_optimizer(clf)
    before = clf.group_indices.clone()
    cfg = DSTConfig(regrow=regrow, fraction=0.4, interval=1, start=0.0, end=1.0, decay="constant")
    rewirer = Rewirer(clf, cfg, total_steps=10, optimizer=opt, seed=0)
    assert rewirer.conn.num_labels == 13  # rows of the protocol are groups
    h = torch.randn(B, D)
    stats = rewirer.rewire(0, h, targets(50))
    assert stats["connections_changed"] == 13 * 2  # floor(0.4 * 5) per group
    clf.check_connectivity()
    momentum = opt.state[clf.values]["momentum_buffer"]
    for group in range(13):
        new = set(clf.group_indices[group].tolist()) - set(before[group].tolist())
        assert len(new) == 2
        labels = slice(4 * group, min(4 * group + 4, 50))
        for slot in range(5):
            if int(clf.group_indices[group, slot]) in new:  # every label of the group starts at zero
                assert (clf.values[labels, slot] == 0).all() and (momentum[labels, slot] == 0).all()


def test_group_prunes_by_summed_magnitude_and_rigl_by_summed_gradient():
    clf = GroupFanInClassifier(D, 8, fan_in=3, group_size=4, seed=3)
    with torch.no_grad():  # slot 1 small for one label but large in sum; slot 2 small in sum
        clf.values.copy_(torch.tensor([[1.0, 0.01, 0.3]] + [[1.0, 1.0, 0.1]] * 3 + [[1.0, 1.0, 0.5]] * 4))
    conn = connectivity_of(clf)
    magnitude, in_use = conn.slots(0, 2)
    torch.testing.assert_close(magnitude, torch.tensor([[4.0, 3.01, 0.6], [4.0, 4.0, 2.0]]))
    h, t = torch.randn(B, D), targets(8)
    scores = conn.gradient_scores(0, 2, h, t, losses.DEFAULT)  # [G, d]
    per_label = []
    for label in range(8):  # |dL/dw[l, i]| of the dense equivalent, summed over the group
        w = clf.to_dense_weight().requires_grad_()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            h @ w.t() + clf.bias.detach(), t.dense(), reduction="sum") / B
        per_label.append(torch.autograd.grad(loss, w)[0][label].abs())
    want = torch.stack([sum(per_label[:4]), sum(per_label[4:])])
    torch.testing.assert_close(scores, want, rtol=1e-4, atol=1e-6)


# --- head-tail -----------------------------------------------------------------------------


def test_head_by_count_fraction_and_rank():
    counts = np.array([1, 50, 3, 30, 0, 16])
    assert head_label_ids(6, head_labels=2, label_counts=counts).tolist() == [1, 3]
    # of 100 positives label 1 holds 50, labels 1 and 3 hold 80
    assert head_label_ids(6, head_fraction=0.5, label_counts=counts).tolist() == [1]
    assert head_label_ids(6, head_fraction=0.51, label_counts=counts).tolist() == [1, 3]
    assert head_label_ids(6, head_fraction=0.0, label_counts=counts).tolist() == []
    assert head_label_ids(6, head_fraction=0.8, label_counts=counts).tolist() == [1, 3]
    assert head_label_ids(6, head_fraction=0.81, label_counts=counts).tolist() == [1, 3, 5]
    assert head_label_ids(6, head_labels=3).tolist() == [0, 1, 2]  # no counts: ids are ranks


def test_head_tail_output_in_original_order():
    counts = np.array([5, 0, 9, 1, 7, 2, 0, 8, 3, 4])
    clf = HeadTailClassifier(D, 10, fan_in=4, head_labels=3, label_counts=counts, seed=0)
    assert (clf.num_head, clf.num_tail) == (3, 7)
    head = [2, 4, 7]
    h = torch.randn(B, D)
    with torch.no_grad():
        clf.bias.normal_()
        full = clf(h)
        for row, label in enumerate(head):
            torch.testing.assert_close(full[:, label], h @ clf.head_weight[row] + clf.bias[label])
        tail = [label for label in range(10) if label not in head]
        want = reference.ffi_forward(h, clf.tail_values, clf.tail_indices)
        torch.testing.assert_close(full[:, tail], want + clf.bias[tail])
        torch.testing.assert_close(clf.logits(h, 3, 8), full[:, 3:8])


def test_head_tail_set_rewires_the_tail_only():
    clf = HeadTailClassifier(D, 30, fan_in=5, head_labels=4, seed=1)
    opt = _momentum_optimizer(clf)
    head, tail_ids = clf.head_weight.detach().clone(), clf.tail_indices.clone()
    cfg = DSTConfig(regrow="random", fraction=0.4, interval=1, start=0.0, end=1.0, decay="constant")
    stats = Rewirer(clf, cfg, total_steps=10, optimizer=opt, seed=0).rewire(0)
    assert stats["connections_changed"] == 26 * 2
    clf.check_connectivity()
    assert torch.equal(clf.head_weight, head) and not torch.equal(clf.tail_indices, tail_ids)
    with pytest.raises(TypeError, match="SET only"):
        Rewirer(clf, DSTConfig(regrow="gradient"), total_steps=10).rewire(0, torch.randn(B, D), targets(30))


def test_kernels_benchmark_times_group_rows(tmp_path):
    from bench.bench_kernels import run_kernels

    rows = run_kernels(batch=4, dim=16, fan_ins=(3,), labels=(50,), warmup=0, repeats=1,
                       layers=["dense", "ffi-group"], out_dir=tmp_path, log=lambda s: None)
    assert [r.layer for r in rows] == ["dense", "ffi-group/g8", "ffi-group/g32", "ffi-group/g128"]
    assert all(r.fwdbwd_ms > 0 and r.vs_dense_fwdbwd for r in rows)


# --- groups from label clusters ----------------------------------------------------------------


def test_relabel_columns_is_a_renaming():
    rng = np.random.default_rng(0)
    y = CSR.from_dense((rng.random((30, 11)) < 0.3).astype(np.float32), binary=True)
    new_id = rng.permutation(11)
    renamed = y.relabel_columns(new_id)
    np.testing.assert_array_equal(renamed.to_dense()[:, new_id], y.to_dense())
    for i in range(renamed.num_rows):  # ids stay sorted within rows
        assert np.all(np.diff(renamed.row(i)) > 0)


def test_cluster_groups_have_exactly_g_labels_and_the_run_renames_labels(tiny_overrides, tmp_path):
    from bench.cli import main
    from bench.resolve import resolve
    from bench.data.catalog import load_dataset
    from bench.data.clusters import cluster_label_order, group_sizes
    from bench.record import read_records

    assert group_sizes(70, 16).tolist() == [16, 16, 16, 16, 6]
    cfg = resolve([*tiny_overrides, "method=ffi-group-cluster-set", "model.group_size=16", "data.num_labels=70"])
    dataset = load_dataset(cfg.data)
    new_id, how, _ = cluster_label_order(dataset, cfg.data, 16, use_cache=False)
    assert sorted(new_id.tolist()) == list(range(70)) and how["by"] == "cluster"
    relabelled = dataset.relabel(new_id, how)
    np.testing.assert_array_equal(relabelled.test_y.to_dense()[:, new_id], dataset.test_y.to_dense())
    assert relabelled.train_y.nnz == dataset.train_y.nnz and relabelled.meta["label_order"] == how

    assert main(["run", *tiny_overrides, "method=ffi-group-cluster-set", "model.group_size=16",
                 "data.num_labels=70"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["label_order"]["group_size"] == 16
    assert 0 < record["metrics"]["P@1"] <= 1


def test_cluster_groups_need_the_group_classifier():
    from bench.resolve import resolve
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="group_order"):
        resolve(["method=ffi-set", "model.group_order=cluster"])


# --- head-tail with an ffi-group tail ----------------------------------------------------------


def test_head_tail_group_tail_equals_ffi_with_repeated_group_ids():
    counts = np.array([5, 0, 9, 1, 7, 2, 0, 8, 3, 4, 6])
    clf = HeadTailClassifier(D, 11, fan_in=4, head_labels=3, label_counts=counts, seed=0, tail="ffi-group",
                             group_size=3)
    assert clf.tail_group_indices.shape == (3, 4)  # 8 tail rows in groups of 3 (the last ragged)
    assert not hasattr(clf, "tail_indices")
    h = torch.randn(B, D)
    with torch.no_grad():
        clf.bias.normal_()
        full = clf(h)
        tail = [label for label in range(11) if label not in (2, 4, 7)]  # the 3 most frequent are the head
        repeated = clf.tail_group_indices.repeat_interleave(3, dim=0)[:8]
        want = reference.ffi_forward(h, clf.tail_values, repeated)
        torch.testing.assert_close(full[:, tail], want + clf.bias[tail])
        torch.testing.assert_close(clf.logits(h, 2, 9), full[:, 2:9])
    ffi_tail = HeadTailClassifier(D, 11, fan_in=4, head_labels=3, label_counts=counts, seed=0)
    assert clf.memory_bytes()["indices"] < ffi_tail.memory_bytes()["indices"]


def test_head_tail_group_tail_set_rewires_groups_only():
    clf = HeadTailClassifier(D, 40, fan_in=5, head_labels=4, seed=1, tail="ffi-group", group_size=4)
    opt = _momentum_optimizer(clf)
    head, ids = clf.head_weight.detach().clone(), clf.tail_group_indices.clone()
    cfg = DSTConfig(regrow="random", fraction=0.4, interval=1, start=0.0, end=1.0, decay="constant")
    stats = Rewirer(clf, cfg, total_steps=10, optimizer=opt, seed=0).rewire(0)
    assert stats["connections_changed"] == 9 * 2  # 36 tail rows = 9 groups, 2 of 5 inputs each
    clf.check_connectivity()
    assert torch.equal(clf.head_weight, head) and not torch.equal(clf.tail_group_indices, ids)
    with pytest.raises(TypeError, match="SET only"):
        Rewirer(clf, DSTConfig(regrow="gradient"), total_steps=10).rewire(0, torch.randn(B, D), targets(40))


def test_head_tail_group_set_from_the_cli(tiny_overrides, tmp_path):
    from bench.cli import main
    from bench.record import read_records

    assert main(["run", *tiny_overrides, "method=head-tail-group-set", "model.group_size=4", "dst.interval=2"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["config"]["model"]["tail"] == "ffi-group"
    assert record["dst"]["connections_changed"] > 0


@pytest.mark.parametrize("tail", ["ffi", "ffi-group"])
@pytest.mark.parametrize("kind", ["ties", "special"])
def test_head_tail_kernel_topk_equals_the_torch_path(tail, kind):
    """The tail's score-and-select merged with the head's selection: the same labels and scores
    as ``Classifier.topk`` (label chunks, stable ranking), ties, NaN and ±inf included."""
    from bench.classifiers import create_classifier
    from bench.classifiers.base import Classifier

    clf = create_classifier("head-tail", 12, 700, fan_in=4, head_labels=40, tail=tail, group_size=8)
    clf.label_chunk = 128
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        clf.bias.copy_(torch.randint(0, 2, clf.bias.shape, generator=g).float())
        if kind == "ties":
            clf.tail_values.copy_(torch.randint(-1, 2, clf.tail_values.shape, generator=g).float())
            clf.head_weight.copy_(torch.randint(-1, 2, clf.head_weight.shape, generator=g).float())
            h = torch.randint(-1, 2, (9, 12), generator=g).float()
        else:
            h = torch.randn(9, 12, generator=g)
            h[0, :] = float("nan")
            h[1, 3], h[2, 5] = float("inf"), -float("inf")
            h[3, :] = 0.0
        for k in (1, 5, 45, 700):
            got_s, got_i = clf.topk(h, k)
            want_s, want_i = Classifier.topk(clf, h, k)
            assert torch.equal(got_i, want_i), (k, got_i[:3], want_i[:3])
            torch.testing.assert_close(got_s, want_s, equal_nan=True)
