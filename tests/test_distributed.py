"""Label-sharded classifier + data-parallel encoder on 2 gloo processes equals one process on
the same global batch (loss, encoder gradients, classifier gradients, top-k)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench import create_classifier
from bench.distributed import label_shard, sharded_loss, sharded_topk, sum_encoder_grads
from bench.sparse import SparseTargets

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
    with torch.no_grad():
        for (key, full), (_, mine) in zip(classifier.state_dict().items(), part.state_dict().items()):
            mine.copy_(full[shard.lo : shard.hi])  # every label tensor has L first
    return part


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
