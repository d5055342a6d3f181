"""Sweeps: expansion, shipped files, skip of finished runs, failures recorded, parallel workers."""

import pytest

from bench.cli import main
from bench.resolve import resolve
from bench.errors import ConfigError
from bench.sweep import SweepSpec, list_sweeps, load_sweep, run_configs
from bench.record import read_records


def test_grid_times_zip_expansion():
    spec = SweepSpec("s", base={"train.epochs": 1},
                     grid={"method": ["dense", "ffi-set"], "seed": [0, 1]},
                     zip={"model.fan_in": [8, 16], "model.density": [0.1, 0.2]})
    runs = spec.expand(["data.num_labels=64"])
    assert len(runs) == 2 * 2 * 2
    assert runs[0] == ["train.epochs=1", "method=dense", "seed=0", "model.fan_in=8", "model.density=0.1",
                       "data.num_labels=64"]
    assert runs[1][-3:-1] == ["model.fan_in=16", "model.density=0.2"]  # zipped, not crossed
    assert runs[-1][1:3] == ["method=ffi-set", "seed=1"]


@pytest.mark.parametrize("name", list_sweeps())
def test_every_shipped_sweep_resolves(name):
    spec = load_sweep(name)
    runs = spec.expand([])
    assert runs
    for overrides in runs:
        resolve(overrides)  # every key and value is valid


def test_bad_sweep_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("grid:\n  method: dense\n")
    with pytest.raises(ConfigError, match="grid.method must be a non-empty list"):
        load_sweep(str(path))
    path.write_text("zip:\n  seed: [1, 2]\n  model.fan_in: [8]\n")
    with pytest.raises(ConfigError, match="equal lengths"):
        load_sweep(str(path))
    path.write_text("axes:\n  seed: [1]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_sweep(str(path))
    with pytest.raises(ConfigError, match="unknown sweep 'nope'"):
        load_sweep("nope")


def test_sweep_skips_finished_runs_records_failures_and_continues(tiny_overrides, tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(
        "name: mini\n"
        "grid:\n  method: [dense, ffi-static]\n"
        "zip:\n  train.lr_classifier: [0.5, 1.0e+38]\n  train.warmup_steps: [20, 0]\n"  # 2nd: NaN loss
    )
    report = tmp_path / "mini.md"
    assert main(["sweep", str(path), *tiny_overrides, "--workers", "2", "--report", str(report)]) == 1
    records = list(read_records(tmp_path / "results" / "runs.jsonl"))
    assert sorted(r["status"] for r in records) == ["failed", "failed", "ok", "ok"]
    assert all(r["sweep"] == "mini" for r in records)
    assert "| dense |" in report.read_text() and "| ffi-static |" in report.read_text()
    # again: the two ok configurations are skipped, the failed ones run again
    _, new, skipped = run_configs("mini", load_sweep(str(path)).expand(tiny_overrides), skip_finished=True)
    assert skipped == 2 and len(new) == 2 and all(r["reason"] == "nan" for r in new)


def test_sweep_list(capsys):
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "label-scaling", "fan-in", "rewire-ablation"):
        assert name in out


def test_records_from_before_a_new_config_field_still_count_as_finished(tmp_path):
    """A field added later with a default that keeps the old behaviour must not orphan the
    records written before it existed: an old record's config simply lacks the field."""
    from bench.config import config_dict_hash, config_hash, to_dict
    from bench.sweep import finished_hashes
    from bench.record import append_record

    cfg = resolve(["method=ffi-set-aux", "data.num_labels=2048", f"results_dir={tmp_path}"])
    old = to_dict(cfg)
    del old["aux"]["centroids"], old["model"]["group_order"]  # as a record written before them stores it
    assert config_dict_hash(old) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(resolve(["method=ffi-set-aux", "data.num_labels=2048", "aux.centroids=encoder"]))
    assert config_hash(cfg) == config_hash(resolve(["method=ffi-set-aux", "data.num_labels=2048", "results_dir=x"]))
    append_record(tmp_path / "runs.jsonl", {"status": "ok", "config": old, "config_hash": "from-an-older-version"})
    assert finished_hashes(tmp_path) == {config_hash(cfg)}


def test_default_suite_is_a_shipped_sweep_with_the_same_configurations():
    """`xmc-bench run` without a method runs bench/sweeps/default.yaml: the 18 configurations
    (and so the checkpoints and skip keys) it had when it was defined in Python."""
    from bench.config import config_hash
    from bench.sweep import DEFAULT_SWEEP

    runs = load_sweep(DEFAULT_SWEEP).expand([])
    assert runs[0] == ["data.num_train=12000", "data.num_test=3000", "train.epochs=2", "data.num_labels=1024",
                       "method=dense"]
    assert [config_hash(resolve(o)) for o in runs] == [
        "c1da2f29ab5ba07a", "22375bd3a9eaa93d", "f6cb063047752dc1", "ef850052a5f69030", "ad7ab4c34ac2c1e4",
        "1589b9aad191013f", "182b19c5972ab60f", "c15626cf3938eb30", "6fbd62e291f5ed63", "cad6a6fc2e464fa0",
        "ddbd691332b7b4eb", "1cc12471852ab0f6", "8419f57faf391a47", "ae3b8f1cdd4304aa", "e34862167e61fe47",
        "341a1e6a93c7b89d", "dfc33a11cc866690", "85a755d607ce5018"]


def test_sweep_configuration_without_method_runs_once_and_writes_under_results_dir(tiny_overrides, tmp_path,
                                                                                   monkeypatch):
    """A configuration without `method` is one plain `model.classifier` run (not the default
    suite inside it), and the sweep's table goes under results_dir, not the working tree's reports/."""
    clone = tmp_path / "clone"
    (clone / "reports").mkdir(parents=True)
    monkeypatch.chdir(clone)
    path = tmp_path / "nomethod.yaml"
    path.write_text("grid:\n  model.classifier: [ffi]\n")
    assert main(["sweep", str(path), *tiny_overrides]) == 0
    records = list(read_records(tmp_path / "results" / "runs.jsonl"))
    assert [(r["status"], r["method"], r["sweep"]) for r in records] == [("ok", "ffi", "nomethod")]
    assert "| ffi |" in (tmp_path / "results" / "reports" / "nomethod.md").read_text()
    assert not any((clone / "reports").iterdir()) and not (clone / "results").exists()
