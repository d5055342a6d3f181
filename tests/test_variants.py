"""The variants that restore gradient flow: intermediate layer, dense bottleneck, auxiliary
meta-classifier; and the encoder gradient-norm series."""

from __future__ import annotations

import pytest
import torch

from bench.cli import main
from bench.config import resolve
from bench.errors import ConfigError
from bench.models.xmc import build_model
from bench.tracking import read_records
from bench.train import make_optimizers


def _records(tmp_path):
    return list(read_records(tmp_path / "results" / "runs.jsonl"))


# --- intermediate layer ----------------------------------------------------------------------


@pytest.mark.parametrize("classifier", ["dense", "masked", "ffi"])
def test_intermediate_layer_feeds_any_classifier(classifier):
    cfg = resolve([f"model.classifier={classifier}", "model.embed_dim=16", "model.intermediate=24",
                   "model.fan_in=4", "model.intermediate_dropout=0.1"])
    model = build_model(cfg.model, num_features=50, num_labels=30, seed=0)
    assert model.intermediate.in_features == 16 and model.intermediate.out_features == 24
    assert model.classifier.in_features == 24
    encoder_opt, classifier_opt = make_optimizers(model, cfg)
    adamw = {id(p) for g in encoder_opt.param_groups for p in g["params"]}
    assert {id(p) for p in model.intermediate.parameters()} <= adamw  # trained with the encoder's AdamW
    assert not adamw & {id(p) for p in model.classifier.parameters()}
    mem = model.part_memory_bytes()["intermediate"]
    params = (16 * 24 + 24) * 4
    assert mem == {"parameters": params, "gradients": params, "optimizer": 2 * params, "indices": 0,
                   "total": 4 * params}


def test_no_intermediate_by_default():
    cfg = resolve(["model.embed_dim=16"])
    model = build_model(cfg.model, num_features=50, num_labels=30, seed=0)
    assert model.intermediate is None and model.classifier.in_features == 16
    assert model.part_memory_bytes() == {}


@pytest.mark.parametrize("override", ["model.intermediate=-1", "model.intermediate_dropout=1.0",
                                      "model.intermediate_activation=swish"])
def test_bad_intermediate_config(override):
    with pytest.raises(ConfigError, match="intermediate"):
        resolve([override])


def test_intermediate_run_records_its_memory(tiny_overrides, tmp_path):
    assert main(["run", "method=ffi-set-intermediate", *tiny_overrides, "model.intermediate=48"]) == 0
    (record,) = _records(tmp_path)
    assert record["status"] == "ok"
    assert record["memory"]["intermediate"]["parameters"] == (32 * 48 + 48) * 4
    assert record["config"]["model"]["intermediate"] == 48


# --- dense bottleneck ------------------------------------------------------------------------


@pytest.mark.parametrize("d, num_labels, k", [(256, 4096, 32), (768, 131072, 32), (64, 1000, 8), (16, 50, 5)])
@pytest.mark.parametrize("slots", [1, 2])
def test_bottleneck_rank_matches_the_ffi_memory_budget(d, num_labels, k, slots):
    from bench.classifiers.bottleneck import DenseBottleneckClassifier, ffi_memory_total
    from bench.registry import create_classifier

    budget = ffi_memory_total(d, num_labels, k, slots)
    if num_labels <= 4096:  # the analytic ffi budget is the real layer's memory
        assert create_classifier("ffi", d, num_labels, fan_in=k).memory_bytes(slots)["total"] == budget
        clf = create_classifier("dense-bottleneck", d, num_labels, match_fan_in=k, optimizer_slots=slots)
        assert clf.memory_bytes(slots)["total"] <= budget
        r = clf.rank
    else:
        from bench.classifiers.bottleneck import matching_rank

        r = matching_rank(d, num_labels, k, slots)
    per_param = 4 * (2 + slots)
    assert (r * (d + num_labels) + num_labels) * per_param <= budget  # fits ...
    assert ((r + 1) * (d + num_labels) + num_labels) * per_param > budget  # ... and r + 1 would not
    assert DenseBottleneckClassifier(d, 20, rank=3).rank == 3  # a given rank wins


def test_bottleneck_method_uses_model_fan_in(tiny_overrides, tmp_path):
    assert main(["run", "method=dense-bottleneck", *tiny_overrides]) == 0
    (record,) = _records(tmp_path)
    from bench.classifiers.bottleneck import ffi_memory_total

    assert record["memory"]["classifier"]["total"] <= ffi_memory_total(32, 64, 8, 1)
    with pytest.raises(ConfigError, match="rank"):
        resolve(["model.rank=-1"])
