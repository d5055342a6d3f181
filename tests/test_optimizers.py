"""Optimiser groups and DST optimiser details (issue 16): each new key changes what it should,
and the defaults build exactly today's optimisers."""

import dataclasses

import numpy as np
import pytest
import torch

from bench import create_classifier
from bench.config import DSTConfig
from bench.resolve import resolve
from bench.data.catalog import load_dataset
from bench.dst import Rewirer, RewireSchedule
from bench.errors import ConfigError
from bench.models.meta import MetaClassifier
from bench.models.xmc import build_model
from bench.record import read_records
from bench.sparse import SparseTargets
from bench.train import make_optimizers, optimizer_slots, train

D, L, K = 20, 33, 6


def _model(overrides=(), aux=True):
    cfg = resolve(["model.embed_dim=16", "model.intermediate=12", "model.classifier=ffi", "model.fan_in=4",
                   "aux.scale=0.4", *overrides])
    model = build_model(cfg.model, num_features=50, num_labels=30, seed=0)
    if aux:
        model.aux = MetaClassifier(16, np.arange(30) % 3, 3)
    return cfg, model


def _ids(params):
    return {id(p) for p in params}


def _groups(opt):
    return [(_ids(g["params"]), g["lr"], g["weight_decay"]) for g in opt.param_groups]


def test_defaults_build_todays_two_single_group_optimisers():
    cfg, model = _model()
    encoder, classifier = make_optimizers(model, cfg)
    assert type(encoder) is torch.optim.AdamW and type(classifier) is torch.optim.SGD
    assert _groups(encoder) == [(_ids([*model.encoder.parameters(), *model.intermediate.parameters()]),
                                 cfg.train.lr_encoder, cfg.train.weight_decay_encoder)]
    assert _groups(classifier) == [(_ids([*model.classifier.parameters(), *model.aux.parameters()]),
                                    cfg.train.lr_classifier, cfg.train.weight_decay_classifier)]
    # same parameter order as the plain lists the optimisers were built on before
    assert encoder.param_groups[0]["params"] == [*model.encoder.parameters(), *model.intermediate.parameters()]
    assert classifier.param_groups[0]["momentum"] == cfg.train.momentum
    assert optimizer_slots(cfg) == {"encoder": 2, "classifier": 1, "intermediate": 2, "aux": 1}


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                        ("adamw", torch.optim.AdamW)])
def test_classifier_optimiser_choice(name, kind):
    cfg, model = _model([f"train.optimizer_classifier={name}", "train.optimizer_encoder=adam"])
    encoder, classifier = make_optimizers(model, cfg)
    assert type(classifier) is kind and type(encoder) is torch.optim.Adam
    assert optimizer_slots(cfg)["classifier"] == (1 if name == "sgd" else 2)
    assert optimizer_slots(cfg)["aux"] == optimizer_slots(cfg)["classifier"]  # the aux branch joins it


def test_sgd_without_momentum_keeps_no_optimiser_state():
    cfg, _ = _model(["train.momentum=0"])
    assert optimizer_slots(cfg)["classifier"] == 0


def test_no_decay_exempts_biases_and_norm_weights():
    cfg, model = _model(["train.no_decay=encoder"])
    model.encoder.norm = torch.nn.LayerNorm(16)  # a norm weight like a transformer's
    encoder, classifier = make_optimizers(model, cfg)
    wd = cfg.train.weight_decay_encoder
    decayed = {id(p) for g in encoder.param_groups if g["weight_decay"] == wd for p in g["params"]}
    free = {id(p) for g in encoder.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert free == _ids([model.encoder.bias, model.encoder.norm.weight, model.encoder.norm.bias,
                         model.intermediate.linear.bias])
    assert decayed == _ids([model.encoder.embedding.weight, model.intermediate.linear.weight])
    assert all(g["weight_decay"] == cfg.train.weight_decay_classifier for g in classifier.param_groups)

    cfg, model = _model(["train.no_decay=all"])
    _, classifier = make_optimizers(model, cfg)
    free = {id(p) for g in classifier.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert free == _ids([model.classifier.bias, model.aux.linear.bias])


def test_intermediate_and_aux_take_their_own_settings_and_optimiser():
    cfg, model = _model(["train.intermediate_joins=classifier", "train.lr_intermediate=0.01",
                         "train.weight_decay_intermediate=0", "train.aux_joins=encoder", "train.lr_aux=5e-4",
                         "train.optimizer_classifier=adamw"])
    encoder, classifier = make_optimizers(model, cfg)
    t = cfg.train
    assert _groups(encoder) == [(_ids(model.encoder.parameters()), t.lr_encoder, t.weight_decay_encoder),
                                (_ids(model.aux.parameters()), 5e-4, t.weight_decay_encoder)]
    assert _groups(classifier) == [(_ids(model.classifier.parameters()), t.lr_classifier, t.weight_decay_classifier),
                                   (_ids(model.intermediate.parameters()), 0.01, 0.0)]
    assert optimizer_slots(cfg) == {"encoder": 2, "classifier": 2, "intermediate": 2, "aux": 2}
    # the schedule scales every group from its own learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(encoder, lambda step: 0.5)
    assert sched.get_last_lr() == [t.lr_encoder * 0.5, 5e-4 * 0.5]


def test_own_settings_are_minus_one_or_a_value():
    with pytest.raises(ConfigError, match="train.lr_aux"):
        resolve(["train.lr_aux=-0.5"])
    with pytest.raises(ConfigError, match="train.lr_intermediate"):
        resolve(["train.lr_intermediate=-2"])


# --- dst.optimizer_state ---------------------------------------------------------------------


def _step(clf, opt, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(8, D, generator=g)
    labels = torch.randint(0, clf.num_labels, (8, 3), generator=g)
    targets = SparseTargets(torch.arange(0, 25, 3), labels.reshape(-1), clf.num_labels)
    opt.zero_grad()
    clf.loss(h, targets).backward()
    opt.step()


def _dst(**kw):
    return dataclasses.replace(DSTConfig(regrow="random", interval=1, start=0.0, end=1.0, decay="constant",
                                         fraction=0.5), **kw)


@pytest.mark.parametrize("state", ["reset", "keep"])
def test_rewire_resets_or_keeps_the_changed_slots_adam_state(state):
    clf = create_classifier("ffi", D, L, fan_in=K)
    opt = torch.optim.AdamW(clf.parameters(), lr=0.01)
    for seed in range(3):
        _step(clf, opt, seed)
    before = {k: v.clone() for k, v in opt.state[clf.values].items() if torch.is_tensor(v) and v.dim() == 2}
    indices = clf.indices.clone()
    Rewirer(clf, _dst(optimizer_state=state), 10, opt, seed=0).rewire(1)
    changed = clf.indices != indices  # [L, k] the refilled slots
    assert changed.any()
    for name, old in before.items():
        now = opt.state[clf.values][name]
        assert torch.equal(now[~changed], old[~changed])
        if state == "reset":
            assert (now[changed] == 0).all()
        else:
            assert torch.equal(now[changed], old[changed]) and (old[changed] != 0).any()


def test_masked_keep_still_zeroes_dropped_weights_state():
    """A masked layer's dropped weights must stay exactly zero, so their momentum goes even with keep."""
    clf = create_classifier("masked", D, L, density=K / D)
    opt = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9)
    rewirer = Rewirer(clf, _dst(optimizer_state="keep"), 10, opt, seed=0)
    for step in range(1, 6):
        _step(clf, opt, step)
        rewirer.rewire(step)
        assert (clf.weight[~clf.mask] == 0).all()
    _step(clf, opt, 99)
    assert (clf.weight[~clf.mask] == 0).all()


def test_keep_needs_a_layer_that_can_keep():
    class OldConnectivity:  # a protocol implementation written before keep_state existed
        num_labels, in_features, param = L, D, torch.zeros(1)

        def replace(self, lo, hi, drop, grow, init, optimizer):
            pass

    class Old(torch.nn.Module):
        def connectivity(self):
            return OldConnectivity()

    Rewirer(Old(), _dst(), 10)  # reset: the old protocol still works
    with pytest.raises(TypeError, match="keep_state"):
        Rewirer(Old(), _dst(optimizer_state="keep"), 10)


def test_adamw_ffi_set_run_keeps_fan_in_and_records_adam_memory(tiny_overrides, tmp_path):
    from bench.cli import main

    assert main(["run", "method=ffi-set", *tiny_overrides, "train.optimizer_classifier=adamw",
                 "train.lr_classifier=0.01", "dst.optimizer_state=keep", "dst.interval=2", "train.epochs=2"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["dst"]["connections_changed"] > 0  # checked k distinct each rewire
    memory = record["memory"]["classifier"]
    assert memory["optimizer"] == 2 * memory["parameters"]  # Adam's two moments


# --- dst.threshold_floor ---------------------------------------------------------------------


def test_threshold_decays_to_the_floor():
    cfg = DSTConfig(regrow="random", prune="threshold", threshold=0.01, start=0.0, end=1.0, decay="cosine")
    plain = RewireSchedule(cfg, 100)
    floored = RewireSchedule(dataclasses.replace(cfg, threshold_floor=1e-4), 100)
    assert plain.threshold(0) == floored.threshold(0) == 0.01
    assert plain.threshold(100) == 0.0 and floored.threshold(100) == pytest.approx(1e-4)
    assert floored.threshold(50) == pytest.approx(1e-4 + (0.01 - 1e-4) / 2)
    # floor 0 is the plain decay, float for float
    assert all(plain.threshold(s) == 0.01 * plain.decay_factor(s) for s in range(101))
    with pytest.raises(ConfigError, match="threshold_floor"):
        resolve(["dst.prune=threshold", "dst.threshold=0.01", "dst.threshold_floor=0.02"])


# --- train.grad_accum ------------------------------------------------------------------------


class _NoTracker:
    def log(self, *args, **kwargs):
        pass


def _trained_weights(overrides):
    cfg = resolve(["data.num_labels=40", "data.num_train=10", "data.num_test=6", "data.num_features=60",
                   "model.embed_dim=8", "train.epochs=1", "train.warmup_steps=0", "eval.every_epoch=false",
                   "checkpoint.enabled=false", *overrides])
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_features, data.num_labels, seed=0)
    result = train(model, data, cfg, torch.device("cpu"), _NoTracker(), np.ones(data.num_labels))
    return result, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("reduction", ["sum_over_labels", "mean", "sum"])
def test_accumulating_half_batches_equals_full_batches(reduction):
    """10 points: batches of 8 + 2 against batches of 4 + 4 | 2 with two per step: the same two
    optimiser steps on the same points (the step's loss is that of all its points)."""
    full, want = _trained_weights(["train.batch_size=8", f"train.loss_reduction={reduction}"])
    half, got = _trained_weights(["train.batch_size=4", "train.grad_accum=2", f"train.loss_reduction={reduction}"])
    assert full.steps == half.steps == 2 and full.train_samples == half.train_samples == 10
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert half.final_loss == pytest.approx(full.final_loss, rel=1e-5)


def test_accumulating_run_resumes_mid_epoch_to_the_same_record(tiny_overrides, tmp_path):
    """7 batches per epoch, two per step: the checkpoint of step 3 lies after batch 6, so the
    resumed run starts with the epoch's last, lone batch."""
    import signal

    from test_checkpoint import RESUMABLE, _last_record, _run

    args = ["method=ffi-set-aux", *[o for o in tiny_overrides if not o.startswith("results_dir")], *RESUMABLE,
            "train.grad_accum=2"]
    killed = _run(args, tmp_path / "killed", kill_at=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _run(args, tmp_path / "killed").returncode == 0
    assert _run(args, tmp_path / "straight").returncode == 0
    got, want = _last_record(tmp_path / "killed"), _last_record(tmp_path / "straight")
    assert got["resumed_from"]["step"] == 3 and want["steps"] == 8
    for key in ("metrics", "epochs", "steps", "final_train_loss", "gradient_flow"):
        assert got[key] == want[key], key
    assert got["aux"]["active_steps"] == want["aux"]["active_steps"] > 3
