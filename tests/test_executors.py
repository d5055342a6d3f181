"""Sweeps beyond local processes: submitit job arrays (its local executor) and W&B sweep agents
(the sweep config and the agent step; no W&B server here)."""

import pytest

from bench.cli import main
from bench.executors import agent_step, wandb_sweep_config
from bench.sweep import SweepSpec
from bench.record import read_records


def test_submitit_local_job_array_runs_each_configuration_once(tiny_overrides, tmp_path, capsys):
    pytest.importorskip("submitit")
    path = tmp_path / "arr.yaml"
    path.write_text("name: arr\ngrid:\n  method: [dense, ffi-static]\n")
    args = ["sweep", str(path), *tiny_overrides, "--executor", "submitit", "--cluster", "local",
            "--submitit-dir", str(tmp_path / "jobs"), "--report", str(tmp_path / "arr.md")]
    assert main(args) == 0
    records = list(read_records(tmp_path / "results" / "runs.jsonl"))
    assert sorted(r["method"] for r in records) == ["dense", "ffi-static"]
    assert {r["sweep"] for r in records} == {"arr"} and all(r["status"] == "ok" for r in records)
    assert main(args) == 0  # again: both recorded ok, so nothing is submitted
    assert "submitted 0 jobs" in capsys.readouterr().out
    assert len(list(read_records(tmp_path / "results" / "runs.jsonl"))) == 2


def test_wandb_sweep_config_keeps_every_configuration():
    spec = SweepSpec("s", grid={"method": ["dense", "ffi-set"]}, zip={"seed": [0, 1], "model.fan_in": [8, 16]})
    runs = spec.expand(["data.num_labels=64"])
    config = wandb_sweep_config("s", runs, "proj")
    assert config["method"] == "grid"
    assert config["parameters"]["run_index"]["values"] == [0, 1, 2, 3]
    assert config["parameters"]["configurations"]["value"] == runs  # zipped axes stay zipped


def test_agent_step_runs_a_configuration_once(tiny_overrides, tmp_path):
    runs = SweepSpec("s", grid={"method": ["dense"]}).expand(tiny_overrides)
    handed = {"run_index": 0, "configurations": runs, "sweep_name": "s"}
    record = agent_step(handed, tmp_path / "logs")
    assert record["status"] == "ok" and record["sweep"] == "s"
    assert agent_step(handed, tmp_path / "logs") is None  # the local record says it ran: skipped
