"""train.precision (autocast, fp16's GradScaler) and model.classifier_dtype: tiny runs train and
give finite metrics, the analytic memory follows the storage dtype, fp32 stays the default,
and unsupported combinations are clear errors naming the key."""

import contextlib
import math

import pytest
import torch

from bench.classifiers import create_classifier, register_classifier
from bench.classifiers.base import CLASSIFIERS, autocast_operands
from bench.classifiers.dense import DenseClassifier
from bench.cli import main
from bench.config import ModelConfig, config_hash, resolve
from bench.errors import ConfigError
from bench.models.xmc import build_classifier
from bench.record import read_records
from bench.train import autocast, make_scaler, training_state


def _record(tmp_path):
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    return record


def _run(tiny_overrides, tmp_path, *overrides):
    assert main(["run", *tiny_overrides, "checkpoint.enabled=false", *overrides]) == 0
    record = _record(tmp_path)
    (tmp_path / "results" / "runs.jsonl").unlink()
    return record


def _finite(record):
    assert record["status"] == "ok", record.get("error")
    assert math.isfinite(record["final_train_loss"])
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in record["metrics"].values())


# -- defaults: fp32 is today's behaviour ------------------------------------------------------

def test_fp32_defaults_keep_the_config_hash_and_build_nothing():
    assert resolve([]).train.precision == "fp32" and resolve([]).model.classifier_dtype == "float32"
    explicit = resolve(["train.precision=fp32", "model.classifier_dtype=float32"])
    assert config_hash(explicit) == config_hash(resolve([]))  # defaults are not hashed
    assert isinstance(autocast("fp32", torch.device("cpu")), contextlib.nullcontext)
    assert make_scaler("fp32", torch.device("cpu")) is None and make_scaler("bf16", torch.device("cpu")) is None
    clf = build_classifier(ModelConfig(classifier="ffi", fan_in=4, embed_dim=16), 32, seed=0)
    assert {p.dtype for p in clf.parameters()} == {torch.float32}


def test_fp32_run_is_the_same_with_or_without_the_keys(tiny_overrides, tmp_path):
    plain = _run(tiny_overrides, tmp_path, "method=ffi-set")
    explicit = _run(tiny_overrides, tmp_path, "method=ffi-set", "train.precision=fp32", "model.classifier_dtype=float32")
    assert plain["config_hash"] == explicit["config_hash"]
    assert plain["metrics"] == explicit["metrics"] and plain["final_train_loss"] == explicit["final_train_loss"]


# -- bf16 autocast and bf16 storage train -----------------------------------------------------

@pytest.mark.parametrize("method", ["dense", "ffi-set", "ffi-static"])
def test_bf16_autocast_and_bf16_storage_train(method, tiny_overrides, tmp_path):
    fp32 = _run(tiny_overrides, tmp_path, f"method={method}")
    bf16 = _run(tiny_overrides, tmp_path, f"method={method}", "train.precision=bf16", "model.classifier_dtype=bfloat16")
    _finite(fp32)
    _finite(bf16)
    assert bf16["config"]["train"]["precision"] == "bf16"
    # parameters, gradients and optimiser state halve with the storage; indices stay as they are
    full, half = fp32["memory"]["classifier"], bf16["memory"]["classifier"]
    for part in ("parameters", "gradients", "optimizer"):
        assert half[part] * 2 == full[part]
    assert half["indices"] == full["indices"]
    assert half["total"] == sum(v for k, v in half.items() if k != "total")


@pytest.mark.parametrize("overrides", [["train.precision=bf16"], ["model.classifier_dtype=bfloat16"],
                                       ["train.precision=fp16"]])
def test_precision_and_storage_apart(overrides, tiny_overrides, tmp_path):
    """bf16 autocast over float32 storage, bfloat16 storage in float32 compute, and fp16 with its
    GradScaler (torch's CPU autocast and GradScaler take float16 too)."""
    for method in ("dense", "ffi-set"):
        _finite(_run(tiny_overrides, tmp_path, f"method={method}", *overrides))


@pytest.mark.parametrize("name", ["dense", "ffi", "masked", "dense-bottleneck", "ffi-group", "head-tail"])
def test_storage_dtype_halves_the_analytic_memory(name):
    options = {"seed": 0} | ({"rank": 4} if name == "dense-bottleneck" else {}) \
        | ({"fan_in": 4} if name in ("ffi", "ffi-group", "head-tail") else {}) \
        | ({"label_counts": torch.arange(48, 0, -1).numpy()} if name == "head-tail" else {})
    full = create_classifier(name, 16, 48, **options)
    half = create_classifier(name, 16, 48, dtype="bfloat16", **options)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    a, b = full.memory_bytes(optimizer_slots=2), half.memory_bytes(optimizer_slots=2)
    for part in ("parameters", "gradients", "optimizer"):
        assert b[part] * 2 == a[part]
    assert b["indices"] == a["indices"]
    # the same initial weights, rounded
    for (_, p), (_, q) in zip(full.named_parameters(), half.named_parameters()):
        torch.testing.assert_close(q, p.to(torch.bfloat16), rtol=0, atol=0)


def test_optimiser_state_is_stored_in_the_parameter_dtype():
    """The analytic optimiser bytes assume the state takes the parameter's dtype: check torch does."""
    clf = DenseClassifier(8, 16, seed=0, dtype=torch.bfloat16)
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    clf(torch.randn(4, 8)).float().sum().backward()
    opt.step()
    state = opt.state[clf.weight]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == clf.weight.grad.dtype == torch.bfloat16


def test_the_fan_in_ops_run_in_the_autocast_dtype():
    """Custom autograd ops are outside autocast's reach: the ffi layer casts its operands itself,
    and only under autocast."""
    x = torch.randn(4, 16)
    clf = create_classifier("ffi", 16, 32, fan_in=4, seed=0)
    assert autocast_operands(x)[0] is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast, idx = autocast_operands(x, torch.arange(3))
        assert cast.dtype == torch.bfloat16 and idx.dtype == torch.int64
        out = clf.logits(x, 0, 32)
    exact = clf.logits(x, 0, 32)
    assert exact.dtype == torch.float32 and out.dtype == torch.float32  # bf16 scores + float32 bias
    assert not torch.equal(out, exact)
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)


# -- errors for what cannot work ---------------------------------------------------------------

def test_float16_storage_under_fp16_is_refused():
    with pytest.raises(ConfigError, match="model.classifier_dtype.*GradScaler"):
        resolve(["train.precision=fp16", "model.classifier_dtype=float16"])


def test_unknown_precision_and_dtype_name_the_key():
    with pytest.raises(ConfigError, match="train.precision"):
        resolve(["train.precision=fp8"])
    with pytest.raises(ConfigError, match="model.classifier_dtype"):
        resolve(["model.classifier_dtype=float64"])
    with pytest.raises(ConfigError, match="'dtype'"):
        create_classifier("dense", 8, 8, dtype="int8")


def test_a_classifier_without_dtype_rejects_another_storage_dtype():
    from bench.classifiers.dense import DenseClassifier as Dense

    @register_classifier("test-fp32-only")
    def fp32_only(in_features: int, num_labels: int, seed: int = 0):
        return Dense(in_features, num_labels, seed=seed)

    try:
        cfg = ModelConfig(classifier="test-fp32-only", embed_dim=8)
        assert build_classifier(cfg, 4, seed=0).weight.dtype == torch.float32  # float32: fine as before
        with pytest.raises(ConfigError, match="model.classifier_dtype.*test-fp32-only"):
            build_classifier(ModelConfig(classifier="test-fp32-only", embed_dim=8, classifier_dtype="bfloat16"),
                             4, seed=0)
    finally:
        CLASSIFIERS._entries.pop("test-fp32-only", None)  # other tests list the registry


def test_cli_reports_the_refused_combination(tiny_overrides, capsys):
    assert main(["run", "method=dense", *tiny_overrides, "train.precision=fp16", "model.classifier_dtype=float16"]) == 2
    assert "model.classifier_dtype" in capsys.readouterr().err


def test_the_checkpoint_keeps_the_grad_scaler():
    clf = DenseClassifier(4, 4, seed=0)
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    scaler = make_scaler("fp16", torch.device("cpu"))
    from bench.train import Progress, TrainResult

    state = training_state(clf, [opt], [], None, Progress(), TrainResult(), scaler)
    assert state["scaler"]["scale"] == scaler.get_scale()
    assert "scaler" not in training_state(clf, [opt], [], None, Progress(), TrainResult())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast + GradScaler on CUDA needs a CUDA device")
def test_fp16_with_grad_scaler_on_cuda(tiny_overrides, tmp_path):
    for method in ("dense", "ffi-set"):
        record = _run(tiny_overrides, tmp_path, f"method={method}", "train.device=cuda", "train.precision=fp16")
        _finite(record)
