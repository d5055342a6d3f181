"""A classifier is one file: a sparse layer defined here alone (registration, derived options,
its own DST connectivity) and a method naming it train with SET from `xmc-bench run`.
(`run` without `method=` starts the default suite, so the single run names a method.)"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.classifiers.base import Classifier, dense_memory_bytes, register_classifier
from bench.cli import main
from bench.methods import register_method
from bench.record import read_records

NAME = "test-gather-fan-in"
METHOD = "test-gather-set"
CREATED: list["GatherFanIn"] = []  # what the factory built, to inspect after the run


class GatherFanIn(Classifier):
    """Fixed fan-in by a plain gather: label l scores Σ_j values[l, j] · h[:, ids[l, j]]."""

    def __init__(self, in_features: int, num_labels: int, fan_in: int, seed: int):
        super().__init__()
        self.in_features, self.num_labels, self.fan_in = in_features, num_labels, fan_in
        g = torch.Generator().manual_seed(seed)
        ids = torch.rand(num_labels, in_features, generator=g).topk(fan_in, dim=1).indices
        self.register_buffer("ids", ids)  # [L, k] int64
        self.values = nn.Parameter(torch.empty(num_labels, fan_in).uniform_(-1, 1, generator=g) / math.sqrt(fan_in))
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def logits(self, h, lo, hi):
        return (h[:, self.ids[lo:hi]] * self.values[lo:hi]).sum(-1) + self.bias[lo:hi]  # [B, n, k] -> [B, n]

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        return dense_memory_bytes(self.parameters(), optimizer_slots, index_bytes=self.ids.numel() * 8)

    def connectivity(self):
        return GatherConnectivity(self)


class GatherConnectivity:
    def __init__(self, clf: GatherFanIn):
        self.clf, self.param = clf, clf.values
        self.num_labels, self.in_features = clf.num_labels, clf.in_features

    def active(self, lo, hi):
        return torch.zeros(hi - lo, self.in_features, dtype=torch.bool).scatter_(1, self.clf.ids[lo:hi], True)

    def slots(self, lo, hi):
        magnitude = self.clf.values[lo:hi].detach().abs()
        return magnitude, torch.ones_like(magnitude, dtype=torch.bool)

    @torch.no_grad()
    def replace(self, lo, hi, drop, grow, init, optimizer):
        rows, cols = drop.nonzero(as_tuple=True)
        self.clf.ids[lo:hi][rows, cols] = grow.nonzero(as_tuple=True)[1]  # row-major: same rows in order
        self.clf.values[lo:hi][rows, cols] = init
        for state in optimizer.state.get(self.param, {}).values():
            if torch.is_tensor(state) and state.shape == self.param.shape:
                state[lo:hi][rows, cols] = 0


@register_classifier(NAME)
def gather_fan_in(in_features: int, num_labels: int, fan_in: int = 32, seed: int = 0) -> GatherFanIn:
    CREATED.append(GatherFanIn(in_features, num_labels, min(fan_in, in_features), seed))
    return CREATED[-1]


register_method(METHOD, "the gather fan-in layer rewired with SET", **{"model.classifier": NAME})


def test_a_classifier_defined_in_one_file_trains_with_set(tiny_overrides, tmp_path):
    assert main(["run", f"method={METHOD}", "dst.regrow=random", "dst.interval=2", "train.epochs=2",
                 *tiny_overrides]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["config"]["model"]["classifier"] == NAME
    assert record["dst"]["rewires"] and record["dst"]["connections_changed"] > 0
    trained = CREATED[-1]
    assert trained.fan_in == 8  # model.fan_in reached the factory by its name
    fresh = GatherFanIn(trained.in_features, trained.num_labels, trained.fan_in, seed=0)
    changed = (trained.ids.sort(1).values != fresh.ids.sort(1).values).any(1)
    assert changed.any()  # SET replaced connections ...
    for row in trained.ids:  # ... and every label still has k distinct inputs
        assert row.unique().numel() == trained.fan_in
