"""The loss keys (train.loss, train.loss_reduction, aux.loss, aux.loss_reduction) reach every
place the training loss is taken: the classifier's fused and unfused paths, RigL's scores, the
aux branch, and a label shard's share under torchrun."""

import numpy as np
import pytest
import torch

from bench import config, create_classifier, losses
from bench.resolve import resolve
from bench.cli import main
from bench.distributed import Parallel, keep_label_rows, label_shard, shard_loss
from bench.errors import ConfigError
from bench.kernels import cpu, fused_loss
from bench.record import read_records
from bench.sparse import SparseTargets


def _records(tmp_path):
    return list(read_records(tmp_path / "results" / "runs.jsonl"))


def test_config_names_are_the_loss_registry_names():
    assert sorted(config.LOSSES) == losses.list_losses()
    assert config.LOSS_REDUCTIONS == losses.REDUCTIONS
    with pytest.raises(ConfigError, match="did you mean 'squared_hinge'"):
        resolve(["train.loss=squared-hinge"])


def test_prior_bias_is_refused_with_hinge():
    with pytest.raises(ConfigError, match="model.bias_init=zero"):
        resolve(["train.loss=squared_hinge"])
    with pytest.raises(ConfigError, match="aux.loss"):
        resolve(["aux.loss=squared_hinge", "aux.scale=0.4"])
    resolve(["aux.loss=squared_hinge"])  # no aux branch: its loss is never used
    resolve(["train.loss=squared_hinge", "model.bias_init=zero"])


class _Calls:
    """Which loss (name, reduction) each consumer used, told apart by the label count it passes."""

    def __init__(self, monkeypatch):
        self.seen = set()
        for method in ("value", "grad", "block"):
            original = getattr(losses.Loss, method)

            def spy(loss, z, targets, lo, hi, num_labels, _original=original, _method=method):
                self.seen.add((_method, num_labels, loss.name, loss.reduction))
                return _original(loss, z, targets, lo, hi, num_labels)

            monkeypatch.setattr(losses.Loss, method, spy)
        # the fused ffi loss runs in the compiled kernel, told the loss by name and the reduction by scale
        original_kernel = fused_loss.ffi_loss

        def kernel(x, values, indices, bias, targets, loss, scale, backend=None):
            batch, labels = x.shape[0], values.shape[0]
            reduction = next(r for r in losses.REDUCTIONS if fused_loss.scale_for(r, batch, labels) == scale)
            self.seen.add(("kernel", labels, loss, reduction))
            return original_kernel(x, values, indices, bias, targets, loss, scale, backend)

        monkeypatch.setattr(fused_loss, "ffi_loss", kernel)


@pytest.mark.parametrize("fused", [True, False])
def test_hinge_run_uses_hinge_everywhere(fused, tiny_overrides, tmp_path, monkeypatch):
    calls = _Calls(monkeypatch)
    assert main(["run", "method=ffi-rigl", *tiny_overrides, "train.loss=squared_hinge", "train.loss_reduction=mean",
                 "model.bias_init=zero", "aux.scale=0.4", "aux.num_clusters=4", "aux.loss_reduction=mean",
                 f"train.fused_loss={str(fused).lower()}", "dst.interval=2", "train.epochs=2"]) == 0
    (record,) = _records(tmp_path)
    assert record["status"] == "ok" and record["dst"]["connections_changed"] > 0
    losses_by_epoch = [e["train_loss"] for e in record["epochs"]]
    assert losses_by_epoch[1] < losses_by_epoch[0]  # it trains
    classifier = ("value" if not fused else "block" if cpu.library() is None else "kernel", 64, "squared_hinge",
                  "mean")
    rigl = ("grad", 64, "squared_hinge", "mean")
    aux = ("value", 4, "bce", "mean")
    assert calls.seen == {classifier, rigl, aux}


def test_defaults_spelled_out_change_nothing(tiny_overrides, tmp_path):
    """Every new key at its default gives the same run, float for float, as leaving it out."""
    defaults = ["train.loss=bce", "train.loss_reduction=sum_over_labels", "train.optimizer_classifier=sgd",
                "train.optimizer_encoder=adamw", "train.no_decay=none", "train.intermediate_joins=encoder",
                "train.lr_intermediate=-1", "train.weight_decay_intermediate=-1", "train.aux_joins=classifier",
                "train.lr_aux=-1", "train.weight_decay_aux=-1", "train.grad_accum=1", "dst.threshold_floor=0",
                "dst.optimizer_state=reset", "aux.loss=bce", "aux.loss_reduction=sum_over_labels"]
    common = [*tiny_overrides, "method=ffi-set-aux", "model.intermediate=16", "aux.num_clusters=4", "dst.interval=2"]
    assert main(["run", *common]) == 0
    assert main(["run", *common, *defaults]) == 0
    implicit, explicit = _records(tmp_path)
    assert implicit["config_hash"] == explicit["config_hash"]
    for key in ("metrics", "epochs", "memory"):
        if key == "memory":
            implicit[key] = {k: v for k, v in implicit[key].items() if isinstance(v, dict)}
            explicit[key] = {k: v for k, v in explicit[key].items() if isinstance(v, dict)}
        assert implicit[key] == explicit[key]
    assert implicit["dst"]["rewires"] and [
        {k: v for k, v in r.items() if k != "seconds"} for r in implicit["dst"]["rewires"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in explicit["dst"]["rewires"]]


# --- a label shard's share of the loss (torchrun's pieces, in one process) --------------------

D, L, B = 10, 23, 6


def _problem():
    torch.manual_seed(0)
    clf = create_classifier("dense", D, L)
    h = torch.randn(B, D)
    labels = [torch.randperm(L)[: 1 + i % 3] for i in range(B)]
    indptr = torch.tensor([0] + [len(x) for x in labels]).cumsum(0)
    return clf, h, SparseTargets(indptr, torch.cat(labels).long(), L)


def _shard_targets(targets, shard):
    """The targets of the shard's labels, ids relative to its first (as gather_targets gives them)."""
    dense = targets.dense()[:, shard.lo : shard.hi]
    rows, cols = dense.nonzero(as_tuple=True)
    indptr = torch.zeros(B + 1, dtype=torch.int64)
    indptr[1:] = torch.bincount(rows, minlength=B).cumsum(0)
    return SparseTargets(indptr, cols, shard.num_labels)


@pytest.mark.parametrize("name", losses.list_losses())
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_shard_losses_add_up_to_the_whole_loss(name, reduction, fused):
    clf, h, targets = _problem()
    criterion = losses.create(name, reduction)
    whole = clf.loss(h, targets, fused=fused, criterion=criterion)
    whole.backward()
    shares = []
    for rank in range(2):
        shard = label_shard(L, rank, 2)
        assert shard.total == L
        part = keep_label_rows(clf, create_classifier("dense", D, shard.num_labels), shard)
        share = part.loss(h, _shard_targets(targets, shard), fused=fused, criterion=shard_loss(criterion, shard))
        share.backward()
        shares.append(share.detach())
        torch.testing.assert_close(part.weight.grad, clf.weight.grad[shard.lo : shard.hi])
        # RigL on the shard scores with the whole loss's gradient
        grad = Parallel(shard).criterion(criterion).grad(part(h), _shard_targets(targets, shard), 0,
                                                         shard.num_labels, shard.num_labels)
        torch.testing.assert_close(grad, criterion.grad(clf(h), targets, 0, L, L)[:, shard.lo : shard.hi])
    torch.testing.assert_close(sum(shares), whole.detach())


@pytest.mark.parametrize("reduction, factor", [("sum_over_labels", 0.4), ("mean", 0.4), ("sum", 1.0)])
def test_a_ranks_aux_loss_share_follows_the_reduction(reduction, factor):
    parallel = Parallel(label_shard(50, 1, 2))
    assert len(parallel.local_rows(np.arange(5))) == 2 and parallel.global_batch == 5  # rank 1: 2 of 5 rows
    loss = torch.tensor(3.0)
    assert parallel.local_share(loss, losses.create("bce", reduction), 7).item() == pytest.approx(3.0 * factor)
