"""The variants that restore gradient flow: intermediate layer, dense bottleneck, auxiliary
meta-classifier; and the encoder gradient-norm series."""

from __future__ import annotations

import math

import pytest
import torch

from bench.cli import main
from bench.resolve import resolve
from bench.errors import ConfigError
from bench.models.xmc import build_model
from bench.train import make_optimizers
from helpers import run_records


def _records(tmp_path):
    return run_records(tmp_path / "results")


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


def test_unknown_encoder_is_a_clear_error():
    import dataclasses

    cfg = dataclasses.replace(resolve(["model.embed_dim=16"]).model, encoder="bwo")
    with pytest.raises(ConfigError, match="model.encoder.*did you mean 'bow'"):
        build_model(cfg, num_features=50, num_labels=30, seed=0)


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
    from bench.classifiers import create_classifier

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


# --- auxiliary meta-classifier ---------------------------------------------------------------


def _clustered_data():
    from bench.data.synthetic import make_synthetic

    return make_synthetic(num_labels=203, num_train=1500, num_test=10, num_features=800, seed=2)


@pytest.mark.parametrize("num_clusters", [1, 2, 7, 16, 203])
def test_clusters_are_balanced_and_cover_every_label(num_clusters):
    from bench.data.clusters import balanced_clusters, label_centroids

    data = _clustered_data()
    centroids = label_centroids(data.train_x, data.train_y, dim=16, seed=0)
    assert centroids.shape == (203, 16)
    clusters = balanced_clusters(centroids, num_clusters, iters=4, seed=0)
    assert clusters.shape == (203,)  # every label in exactly one cluster
    sizes = __import__("numpy").bincount(clusters, minlength=num_clusters)
    assert len(sizes) == num_clusters and sizes.sum() == 203
    assert sizes.max() - sizes.min() <= 1
    again = balanced_clusters(centroids, num_clusters, iters=4, seed=0)
    assert (clusters == again).all()  # deterministic by seed


def test_clusters_group_labels_that_share_points():
    """Labels of one synthetic topic co-occur, so a cluster's labels share more training points
    than random groups of the same sizes do."""
    import numpy as np

    from bench.data.clusters import balanced_clusters, label_centroids

    data = _clustered_data()
    clusters = balanced_clusters(label_centroids(data.train_x, data.train_y, dim=32, seed=0), 16, seed=0)

    def purity(assign):  # mean over points of the largest share of its labels in one cluster
        shares = []
        for i in range(data.num_train):
            labels = data.train_y.row(i)
            if len(labels) > 1:
                shares.append(np.bincount(assign[labels]).max() / len(labels))
        return np.mean(shares)

    shuffled = np.random.default_rng(0).permutation(clusters)
    assert purity(clusters) > purity(shuffled) + 0.1


def test_bad_number_of_clusters():
    import numpy as np

    from bench.data.clusters import balanced_clusters

    with pytest.raises(ConfigError, match="num_clusters"):
        balanced_clusters(np.ones((5, 3), np.float32), 6)


def test_aux_weight_schedule():
    from bench.train import aux_weight

    steps = 100  # cutoff 0.4: α reaches 0 at step 40
    assert aux_weight(0, steps, 0.5, 0.4) == pytest.approx(0.5)
    assert aux_weight(20, steps, 0.5, 0.4) == pytest.approx(0.25)  # cosine: half way
    assert aux_weight(30, steps, 0.5, 0.4) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert aux_weight(40, steps, 0.5, 0.4) == 0.0 and aux_weight(99, steps, 0.5, 0.4) == 0.0
    assert aux_weight(20, steps, 0.5, 0.4, "linear") == pytest.approx(0.25)
    assert aux_weight(30, steps, 0.5, 0.4, "linear") == pytest.approx(0.125)
    assert aux_weight(39, steps, 0.5, 0.4, "constant") == 0.5
    assert aux_weight(0, steps, 0.0, 0.4) == 0.0
    values = [aux_weight(s, steps, 0.5, 0.4) for s in range(steps)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases


def test_meta_classifier_cluster_targets_and_memory():
    import numpy as np

    from bench.models.meta import MetaClassifier
    from bench.sparse import CSR, SparseTargets

    meta = MetaClassifier(8, np.array([0, 0, 1, 2, 2, 1]), 3)
    targets = SparseTargets.from_csr(CSR.from_rows([[0, 1], [2, 4], []], 6))
    assert meta.cluster_targets(targets).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    params = (8 * 3 + 3) * 4
    assert meta.memory_bytes() == {"parameters": params, "gradients": params, "optimizer": 2 * params,
                                   "indices": 6 * 4, "total": 4 * params + 24}


@pytest.mark.parametrize("method", ["ffi-set-aux", "spartex aux.scale=0.4"])  # spartex: aux is per dataset (presets)
def test_aux_run_records_branch_and_reuses_cached_clusters(method, tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "aux.num_clusters=8", "train.epochs=2"]
    for seed in (0, 1):
        assert main(["run", f"method={method.split()[0]}", *method.split()[1:], *overrides, f"seed={seed}", "model.intermediate=40"]) == 0
    first, second = _records(tmp_path)
    for record in (first, second):
        aux = record["aux"]
        assert record["status"] == "ok" and aux["num_clusters"] == 8
        assert aux["cluster_size_min"] == aux["cluster_size_max"] == 8  # 64 labels / 8
        steps = record["steps"]  # cutoff 0.5: the branch runs for the first half of training only
        assert aux["active_steps"] == math.ceil(0.5 * steps) and aux["train_seconds"] > 0
        assert record["memory"]["aux"]["parameters"] == (32 * 8 + 8) * 4
        assert record["memory"]["intermediate"]["parameters"] == (32 * 40 + 40) * 4
    assert not first["aux"]["clusters_from_cache"] and second["aux"]["clusters_from_cache"]
    assert list((tmp_path / "cache" / "clusters").glob("synthetic-C8-*.npy"))


def test_aux_cutoff_in_epochs(tiny_overrides, tmp_path):
    from bench.train import aux_cutoff_fraction

    assert aux_cutoff_fraction(resolve(["aux.cutoff=1.5", "aux.cutoff_unit=epochs"]).aux, 70, 7) == pytest.approx(0.15)
    assert aux_cutoff_fraction(resolve(["aux.cutoff=0.3"]).aux, 70, 7) == 0.3
    assert main(["run", "method=ffi-set-aux", *tiny_overrides, "aux.num_clusters=8", "train.epochs=3",
                 "aux.cutoff=1", "aux.cutoff_unit=epochs"]) == 0
    (record,) = _records(tmp_path)
    assert record["steps"] == 3 * 7  # 400 points, batches of 64
    assert record["aux"]["active_steps"] == 7  # on for exactly the first epoch


def test_mean_feature_per_label_by_hand():
    import numpy as np

    from bench.data.clusters import mean_feature_per_label
    from bench.sparse import CSR

    y = CSR(np.array([0, 2, 3, 3]), np.array([0, 1, 1]), None, 3)  # point 0: labels 0, 1; point 1: 1
    features = torch.tensor([[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]])
    centroids = mean_feature_per_label(features, y)
    np.testing.assert_allclose(centroids, [[1, 0], [0.6, 0.8], [0, 0]], atol=1e-6)  # label 2: no points


def test_encoder_feature_centroids(tiny_overrides, tmp_path):
    base = ["run", "method=ffi-set-aux", *tiny_overrides, "aux.num_clusters=8", "aux.centroids=encoder"]
    for seed in (0, 0, 1):
        assert main([*base, f"seed={seed}"]) == 0
    records = _records(tmp_path)
    for record in records:
        aux = record["aux"]
        assert record["status"] == "ok" and aux["centroids"] == "encoder"
        assert aux["cluster_size_min"] == aux["cluster_size_max"] == 8
    # the features of the encoder as initialised key the cache: same seed reuses it, another does not
    assert [r["aux"]["clusters_from_cache"] for r in records] == [False, True, False]
    assert main(["run", "method=ffi-set-aux", *tiny_overrides, "aux.num_clusters=8"]) == 0
    assert not _records(tmp_path)[-1]["aux"]["clusters_from_cache"]  # TF-IDF centroids: a cache of their own


def test_aux_branch_changes_training_only_while_on(tiny_overrides, tmp_path):
    base = [*tiny_overrides, "method=ffi-static", "aux.num_clusters=4"]
    assert main(["run", *base]) == 0
    assert main(["run", *base, "aux.scale=0.5"]) == 0
    plain, with_aux = _records(tmp_path)
    assert "aux" not in plain and plain["final_train_loss"] != with_aux["final_train_loss"]


# --- gradient flow ---------------------------------------------------------------------------


def test_encoder_gradient_norm_is_recorded(tiny_overrides, tmp_path):
    assert main(["run", "method=ffi-set-aux", *tiny_overrides, "train.epochs=2", "train.log_every=2",
                 "aux.num_clusters=4"]) == 0
    (record,) = _records(tmp_path)
    flow = record["gradient_flow"]
    steps = record["steps"]  # 400 points / 64 per batch = 7 steps per epoch
    assert flow["every"] == 2 and flow["steps"] == list(range(2, steps + 1, 2))
    assert len(flow["encoder_grad_norm"]) == len(flow["steps"])
    assert all(math.isfinite(g) and g > 0 for g in flow["encoder_grad_norm"])
    for entry in record["epochs"]:
        stats = entry["encoder_grad_norm"]
        assert 0 < stats["min"] <= stats["mean"] <= stats["max"]


def test_grad_norm_of_a_module():
    from bench.train import grad_norm

    layer = torch.nn.Linear(3, 2)
    assert grad_norm(layer) == 0.0
    layer.weight.grad = torch.full((2, 3), 1.0)
    layer.bias.grad = torch.tensor([3.0, 3.0])
    assert grad_norm(layer) == pytest.approx(math.sqrt(6 + 18))


def test_encoder_gradient_norm_goes_to_wandb(tiny_overrides, tmp_path, monkeypatch):
    from bench import tracking

    logged = []
    monkeypatch.setattr(tracking.Tracker, "log", lambda self, values, step: logged.append((step, values)))
    assert main(["run", "method=ffi-static", *tiny_overrides]) == 0
    steps = [s for s, v in logged if "train/encoder_grad_norm" in v]
    assert steps == list(range(1, 8))  # every step


def test_meta_classifier_trains_with_the_classifier_sgd():
    import numpy as np

    from bench.models.meta import MetaClassifier

    cfg = resolve(["model.embed_dim=16", "aux.scale=0.4"])
    model = build_model(cfg.model, num_features=50, num_labels=30, seed=0)
    model.aux = MetaClassifier(16, np.arange(30) % 3, 3)
    adamw, sgd = make_optimizers(model, cfg)
    in_sgd = {id(p) for g in sgd.param_groups for p in g["params"]}
    assert {id(p) for p in model.aux.parameters()} <= in_sgd
    assert not {id(p) for g in adamw.param_groups for p in g["params"]} & in_sgd
    assert model.part_memory_bytes()["aux"]["optimizer"] == (16 * 3 + 3) * 4  # 1 slot: momentum


def test_meta_classifier_bias_starts_at_the_cluster_prior():
    import numpy as np

    from bench.models.meta import MetaClassifier
    from bench.models.xmc import init_bias_to_prior
    from bench.sparse import CSR, SparseTargets

    labels = CSR(np.array([0, 2, 3]), np.array([0, 1, 3]), None, 4)  # point 0: labels 0, 1; point 1: 3
    meta = MetaClassifier(8, np.array([0, 0, 1, 2]), 3)  # labels 0 and 1 share cluster 0
    assert meta.cluster_positive_fraction(labels) == pytest.approx(2 / 6)  # (0, c0), (1, c2) of 2 × 3
    init_bias_to_prior(meta.linear, meta.cluster_positive_fraction(labels))
    assert torch.allclose(meta.linear.bias, torch.full((3,), math.log(0.5)))  # logit(1/3)
    # at z = 0 the logits are the prior: 2 positive pairs at -log(1/3), 4 negatives at -log(2/3), per point
    expected = (2 * -math.log(1 / 3) + 4 * -math.log(2 / 3)) / 2
    assert meta.loss(torch.zeros(2, 8), SparseTargets.from_csr(labels)).item() == pytest.approx(expected, rel=1e-5)


def test_aux_run_starts_its_meta_bias_at_the_prior(tiny_overrides, tmp_path):
    from bench.resolve import resolve
    from bench.data.catalog import load_dataset
    from bench.experiment import build_aux

    cfg = resolve([*tiny_overrides, "method=ffi-set-aux", "aux.num_clusters=8"])
    dataset = load_dataset(cfg.data)
    model = build_model(cfg.model, dataset.num_features, dataset.num_labels, 0)
    meta, _ = build_aux(cfg, dataset, model, torch.device("cpu"))
    p = meta.cluster_positive_fraction(dataset.train_y)
    assert torch.allclose(meta.linear.bias, torch.full((8,), math.log(p / (1 - p))))
