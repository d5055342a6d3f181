import dataclasses
import json
from dataclasses import dataclass

import pytest

from bench.cli import main, parse_args
from bench.config import KEYS, RunConfig, apply_overrides, check, config_hash, from_dict, knob, to_dict
from bench.resolve import resolve
from bench.errors import ConfigError, UnknownNameError


def test_overrides_are_typed_and_nested():
    cfg = resolve(["data.num_labels=2048", "train.epochs=1", "model.fan_in=16", "seed=3",
                   "eval.every_epoch=false", "train.lr_classifier=0.1", "tracking.wandb=disabled"])
    assert cfg.data.num_labels == 2048 and cfg.train.epochs == 1 and cfg.model.fan_in == 16
    assert cfg.seed == 3 and cfg.eval.every_epoch is False and cfg.train.lr_classifier == 0.1
    assert RunConfig().data.num_labels != 2048  # defaults untouched (frozen copies)


def test_data_alias():
    assert resolve(["data=synthetic"]).data.name == "synthetic"


def test_method_preset_applies_before_user_overrides():
    cfg = resolve(["method=ffi-static"])
    assert cfg.model.classifier == "ffi"
    cfg = resolve(["method=ffi-static", "model.classifier=dense"])
    assert cfg.model.classifier == "dense"


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.num_label'.*data.num_labels"):
        resolve(["data.num_label=5"])


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an int, got 'three'"):
        resolve(["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"'train.lr_classifier' expects a float, got 'fast'"):
        resolve(["train.lr_classifier=fast"])
    with pytest.raises(ConfigError, match="'train.epochs' expects an int"):
        apply_overrides(RunConfig(), {"train.epochs": 1.5})
    with pytest.raises(ConfigError, match="tracking.wandb"):
        resolve(["tracking.wandb=sometimes"])


def test_impossible_values_are_rejected():
    with pytest.raises(ConfigError, match="data.num_labels"):
        resolve(["data.num_labels=0"])
    with pytest.raises(ConfigError, match="nothing would train"):
        resolve(["train.epochs=0", "train.max_steps=0"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        resolve(["epochs"])


def test_unknown_method_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'ffi-static'"):
        resolve(["method=ffi-statik"])


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: dense\ndata:\n  num_labels: 512\ntrain:\n  epochs: 1\n")
    cfg = resolve(["train.epochs=2"], path)
    assert cfg.model.classifier == "dense" and cfg.data.num_labels == 512 and cfg.train.epochs == 2
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve([], path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve([], tmp_path / "missing.yaml")


def test_round_trip_and_hash():
    cfg = resolve(["method=dense", "data.num_labels=1000"])
    assert from_dict(to_dict(cfg)) == cfg
    assert config_hash(from_dict(to_dict(cfg))) == config_hash(cfg)
    assert config_hash(resolve(["seed=1"])) != config_hash(resolve(["seed=2"]))


def test_every_key_is_declared_with_a_doc_and_a_default_it_allows():
    assert len(KEYS) > 80 and "model.fan_in" in KEYS and "data.name" in KEYS
    for name, key in KEYS.items():
        assert key.knob.doc, f"config key {name} has no doc"
        key.knob.check(name, key.default)
    check(RunConfig())


@pytest.mark.parametrize("override, message", [
    ("data.num_labels=0", r"'data.num_labels' must be positive, got 0$"),
    ("train.epochs=-1", r"'train.epochs' must be >= 0, got -1$"),
    ("checkpoint.keep=0", r"'checkpoint.keep' must be >= 1, got 0$"),
    ("model.dropout=1", r"'model.dropout' must be in \[0, 1\), got 1.0$"),
    ("dst.fraction=1.5", r"'dst.fraction' must be in \[0, 1\], got 1.5$"),
    ("model.density=nan", r"'model.density' must be in \[0, 1\], got nan$"),
    ("model.activation=swish", r"'model.activation' must be one of relu, gelu, tanh, none; got 'swish'$"),
    ("tracking.wandb=ofline", r"must be one of offline, online, disabled; got 'ofline'; did you mean 'offline'\?$"),
])
def test_bounds_and_choices_come_from_the_declaration(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve([override])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"'dst.start' and 'dst.end' must satisfy start <= end, got start=0.5, end=0.4"):
        resolve(["dst.start=0.5", "dst.end=0.4"])
    with pytest.raises(ConfigError, match="needs model.classifier=ffi-group, got 'dense'"):
        resolve(["method=dense", "model.group_order=cluster"])
    assert resolve(["method=ffi-group-cluster-set"]).model.group_order == "cluster"
    with pytest.raises(ConfigError, match=r"'aux.cutoff' must be in \(0, 1\] \(a fraction of training\), got 2.0"):
        resolve(["aux.cutoff=2"])
    assert resolve(["aux.cutoff=2", "aux.cutoff_unit=epochs"]).aux.cutoff == 2.0
    with pytest.raises(ConfigError, match="'aux.cutoff' must be positive"):
        resolve(["aux.cutoff=0", "aux.cutoff_unit=epochs"])


def test_a_knob_declares_a_new_key_in_one_place():
    @dataclass(frozen=True)
    class Extra:
        rate: float = knob(0.1, "a rate", above=0, below=1)
        mode: str = knob("a", "a mode", choices=("a", "b"))
        count: int = knob(3, "a count", high=8)

    rate, mode, count = (f.metadata["knob"] for f in dataclasses.fields(Extra))
    assert Extra() == Extra(0.1, "a", 3)
    assert (rate.allowed(), mode.allowed(), count.allowed()) == ("in (0, 1)", "one of a | b", "<= 8")
    rate.check("extra.rate", 0.5)
    with pytest.raises(ConfigError, match=r"'extra.rate' must be in \(0, 1\), got 1$"):
        rate.check("extra.rate", 1)
    with pytest.raises(ConfigError, match="'extra.mode' must be one of a, b; got 'c'"):
        mode.check("extra.mode", "c")


def test_help_config_lists_docs_and_allowed_values(capsys):
    assert main(["run", "--help-config"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(KEYS)
    assert "dropout on the encoder output [in [0, 1)]" in lines["model.dropout"]
    assert "[one of relu | gelu | tanh | none]" in lines["model.activation"]
    assert "[positive]" in lines["data.num_labels"] and " 4096 " in lines["data.num_labels"]


def test_config_file_may_stand_anywhere_among_the_overrides(tmp_path, tiny_overrides):
    path = tmp_path / "my.yaml"
    path.write_text("seed: 1\ntrain:\n  epochs: 2\n")
    args = parse_args(["run", "method=dense", "--config", str(path), "seed=2", "data.num_labels=512"])
    assert args.config == str(path) and args.overrides == ["method=dense", "seed=2", "data.num_labels=512"]
    cfg = resolve(args.overrides, args.config)
    assert (cfg.method, cfg.seed, cfg.train.epochs, cfg.data.num_labels) == ("dense", 2, 2, 512)  # later key=value wins
    with pytest.raises(SystemExit):
        parse_args(["run", "method=dense", "--config", str(path), "--no-such-option"])
    assert main(["run", "method=dense", "--config", str(path), *tiny_overrides, "seed=2"]) == 0
    record = json.loads((tmp_path / "results" / "runs.jsonl").read_text().splitlines()[0])
    assert record["seed"] == 2 and record["config"]["train"]["epochs"] == 1  # tiny's epochs=1 came after the file


def test_propensity_parameters_come_from_config_then_card_then_default():
    from bench.experiment import propensity_parameters

    assert propensity_parameters(resolve([]), "synthetic") == {"A": 0.55, "B": 1.5, "source": "default"}
    assert propensity_parameters(resolve([]), "amazon-670k") == {"A": 0.6, "B": 2.6, "source": "card"}
    cfg = resolve(["eval.propensity_a=0.5", "eval.propensity_b=0.4"])
    assert propensity_parameters(cfg, "amazon-670k") == {"A": 0.5, "B": 0.4, "source": "config"}
