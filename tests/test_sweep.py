"""Sweeps: expansion, shipped files, skip of finished runs, failures recorded, parallel workers."""

import pytest

from bench.cli import main
from bench.config import resolve
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
