import pytest

from bench.config import RunConfig, apply_overrides, config_hash, field_docs, from_dict, resolve, to_dict
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
    with pytest.raises(ConfigError, match=r"'train.epochs' expects a int, got 'three'"):
        resolve(["train.epochs=three"])
    with pytest.raises(ConfigError, match="'train.epochs' expects a int"):
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


def test_every_field_is_documented():
    for key, (_, _, doc) in field_docs().items():
        assert doc, f"config field {key} has no comment"


def test_propensity_parameters_come_from_config_then_card_then_default():
    from bench.experiment import propensity_parameters

    assert propensity_parameters(resolve([]), "synthetic") == {"A": 0.55, "B": 1.5, "source": "default"}
    assert propensity_parameters(resolve([]), "amazon-670k") == {"A": 0.6, "B": 2.6, "source": "card"}
    cfg = resolve(["eval.propensity_a=0.5", "eval.propensity_b=0.4"])
    assert propensity_parameters(cfg, "amazon-670k") == {"A": 0.5, "B": 0.4, "source": "config"}
