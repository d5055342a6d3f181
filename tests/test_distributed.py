"""Label-sharded classifier + data-parallel encoder on 2 gloo processes equals one process on
the same global batch (loss, encoder gradients, classifier gradients, top-k); and whole runs
under torchrun from the CLI."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench import create_classifier
from bench.distributed import keep_label_rows, label_shard, sharded_loss, sharded_topk, sum_encoder_grads
from bench.sparse import SparseTargets
from helpers import run_records

D, L, B, IN = 12, 23, 10, 7  # L odd: unequal shards; B split 6 + 4


def _problem(name):
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(IN, D), torch.nn.Tanh())
    classifier = create_classifier(name, D, L, **({"fan_in": 4} if name == "ffi" else {}))
    x = torch.randn(B, IN)
    labels = [torch.randperm(L)[: 1 + i % 3] for i in range(B)]
    return encoder, classifier, x, labels


def _targets(labels):
    indptr = torch.tensor([0] + [len(l) for l in labels]).cumsum(0)
    return SparseTargets(indptr, torch.cat(labels).long(), L)


def _shard_of(classifier, name, shard):
    part = create_classifier(name, D, shard.num_labels, **({"fan_in": 4} if name == "ffi" else {}))
    return keep_label_rows(classifier, part, shard)


def _worker(rank, world, name, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    encoder, classifier, x, labels = _problem(name)
    shard = label_shard(L, rank, world)
    mine = _shard_of(classifier, name, shard)
    rows = slice(0, 6) if rank == 0 else slice(6, B)
    loss = sharded_loss(encoder(x[rows]), mine, _targets(labels[rows]), shard)
    loss.backward()
    sum_encoder_grads(encoder)
    total = loss.detach().clone()
    dist.all_reduce(total)
    scores, ids = sharded_topk(encoder(x).detach(), mine, shard, 5)
    torch.save({"loss": total, "encoder": [p.grad for p in encoder.parameters()],
                "classifier": {n: p.grad for n, p in mine.named_parameters()}, "shard": (shard.lo, shard.hi),
                "topk": (scores, ids)}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["dense", "ffi"])
def test_two_gloo_ranks_equal_one_process(name, tmp_path):
    mp.spawn(_worker, args=(2, name, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    encoder, classifier, x, labels = _problem(name)
    loss = classifier.loss(encoder(x), _targets(labels))
    loss.backward()
    for got in ranks:
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-5)
        for mine, ref in zip(got["encoder"], encoder.parameters()):
            torch.testing.assert_close(mine, ref.grad, rtol=1e-5, atol=1e-6)
        lo, hi = got["shard"]
        for n, p in classifier.named_parameters():
            torch.testing.assert_close(got["classifier"][n], p.grad[lo:hi], rtol=1e-5, atol=1e-6)
    assert [r["shard"] for r in ranks] == [(0, 12), (12, 23)]
    scores, ids = classifier.topk(encoder(x).detach(), 5)
    for got in ranks:
        assert torch.equal(got["topk"][1], ids)
        torch.testing.assert_close(got["topk"][0], scores)


# --- whole runs: `torchrun --nproc_per_node 2 -m bench.cli run ...` on CPU (gloo) ---------------


def _torchrun(overrides, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bench.cli", "run", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _records(tmp_path):
    return run_records(tmp_path / "results")


def test_torchrun_run_equals_one_process(tiny_overrides, tmp_path):
    """With every rank cutting its shard from the full layer (XMC_SHARD_INIT=full), 2 ranks
    train what one process trains: same losses (up to float summation order), same metrics."""
    from bench.cli import main

    overrides = [*tiny_overrides, "method=ffi-static", "train.epochs=2"]
    _torchrun(overrides, {"XMC_SHARD_INIT": "full"})
    assert main(["run", *overrides]) == 0
    two, one = _records(tmp_path)
    assert two["distributed"]["world"] == 2 and two["distributed"]["label_shards"] == [[0, 32], [32, 64]]
    assert "distributed" not in one
    assert [e["train_loss"] for e in two["epochs"]] == pytest.approx([e["train_loss"] for e in one["epochs"]],
                                                                     rel=1e-6)
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-9)
    assert two["memory"]["classifier"]["total"] * 2 == one["memory"]["classifier"]["total"]  # half the labels


def test_torchrun_run_with_rigl_and_aux(tiny_overrides, tmp_path):
    """Shards initialised on their own, RigL rewiring from the gathered features, the aux branch
    data-parallel: one ok record (rank 0's), every rewire logged, the aux branch on."""
    _torchrun([*tiny_overrides, "method=ffi-rigl", "aux.scale=0.4", "aux.num_clusters=8", "dst.interval=2",
               "train.epochs=2"])
    (record,) = _records(tmp_path)
    assert record["status"] == "ok" and record["distributed"]["shard_init"] == "own"
    assert record["aux"]["active_steps"] > 0 and len(record["dst"]["rewires"]) >= 3
    assert record["steps"] == 14 and 0 < record["metrics"]["P@1"] <= 1
