"""Checkpoints: atomic writes, pruning, damaged files, and exact resume after a SIGKILL.

Runs are killed by a step hook (``bench.train.add_step_hook``) that a ``sitecustomize`` module
written by the test installs in every Python process it starts, sweep children included: the
process SIGKILLs itself right after optimiser step N and its checkpoint, as a preempted job
dies. Then the same command runs again; the resumed record must equal an uninterrupted run's bit
for bit (CPU, float32).
"""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench.checkpoint import Checkpoints
from bench.cli import main
from bench.record import read_records

# 400 training points in batches of 64: 7 steps per epoch, 14 in all; a checkpoint every 3 steps
# (3, 6, 9, 12) and at the end of epoch 1 (7). SET rewires every 2 steps until the end, never
# decaying to 0 connections, so the rewirer's generator matters after any resume point.
RESUMABLE = ["train.epochs=2", "checkpoint.every=3", "dst.interval=2", "dst.end=1.0", "dst.decay=constant"]


def _state(step: int) -> dict:
    return {"weights": torch.full((3, 2), float(step)), "shuffle": np.random.default_rng(step).bit_generator.state,
            "python": random.Random(step).getstate()}


def test_save_load_round_trip_keeps_the_newest(tmp_path):
    ckpt = Checkpoints(tmp_path / "ck", keep=2, config_hash="abc")
    assert ckpt.paths() == [] and ckpt.load_latest() is None
    for step in (1, 2, 10, 11):
        ckpt.save(_state(step), step)
    assert [p.name for p in ckpt.paths()] == ["step-00000010.pt", "step-00000011.pt"]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-00000010.pt", "step-00000011.pt"]
    loaded = ckpt.load_latest()
    assert loaded.path == ckpt.latest() and loaded.state["step"] == 11
    assert torch.equal(loaded.state["weights"], _state(11)["weights"])
    assert loaded.state["shuffle"] == _state(11)["shuffle"] and loaded.state["python"] == _state(11)["python"]
    ckpt.remove()
    assert not (tmp_path / "ck").exists()


def test_interrupted_write_leaves_the_previous_checkpoints(tmp_path, monkeypatch):
    ckpt = Checkpoints(tmp_path / "ck", keep=2)
    ckpt.save(_state(1), 1)

    def dies_midway(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(_state(2), 2)
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["step-00000001.pt"]  # no temporary file left
    assert ckpt.load_latest().state["step"] == 1


def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    ckpt = Checkpoints(tmp_path / "ck", keep=3, config_hash="abc")
    for step in (3, 6, 9):
        ckpt.save(_state(step), step)
    ckpt.paths()[-1].write_bytes(b"truncated")
    Checkpoints(tmp_path / "ck", keep=3, config_hash="other").save(_state(12), 12)  # another config's
    with pytest.warns(UserWarning, match="cannot be resumed from") as caught:
        loaded = ckpt.load_latest()
    assert loaded.state["step"] == 6 and len(caught) == 2


KILL_HOOK = """\
import os
import signal

from bench.train import add_step_hook

add_step_hook(lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == {kill_at} else None)
"""


def _run(args: list[str], results: Path, kill_at: int = 0, command: str = "run") -> subprocess.CompletedProcess:
    """``xmc-bench COMMAND ARGS`` in a fresh process; with ``kill_at``, every Python process it
    starts kills itself after that optimiser step."""
    env = dict(os.environ)
    if kill_at:
        hook_dir = results.parent / f"kill-at-{kill_at}"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "sitecustomize.py").write_text(KILL_HOOK.format(kill_at=kill_at))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))
    extra = ["--report", str(results.parent / "report.md")] if command == "sweep" else []
    return subprocess.run([sys.executable, "-m", "bench.cli", command, *args, f"results_dir={results}", *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def _last_record(results: Path) -> dict:
    return list(read_records(results / "runs.jsonl"))[-1]


@pytest.mark.parametrize("method, extra, kill_at, resumed_at", [
    # dropout draws from torch's RNG; SET draws from the rewirer's generator; the intermediate
    # layer trains with AdamW. Killed mid-epoch 2 two steps after the checkpoint of step 9.
    ("ffi-set-intermediate", ["model.intermediate=16", "model.dropout=0.3", "model.intermediate_dropout=0.2"], 11, 9),
    # the aux branch (its α and its steps) while it is on; killed mid-epoch 1
    ("ffi-set-aux", [], 5, 3),
])
def test_killed_run_resumes_to_the_same_record(method, extra, kill_at, resumed_at, tiny_overrides, tmp_path):
    args = [f"method={method}", *[o for o in tiny_overrides if not o.startswith("results_dir")], *RESUMABLE, *extra]
    killed = _run(args, tmp_path / "killed", kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed" / "runs.jsonl").exists()
    resumed = _run(args, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = _run(args, tmp_path / "straight")
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    got, want = _last_record(tmp_path / "killed"), _last_record(tmp_path / "straight")
    assert got["resumed_from"]["step"] == resumed_at and "resumed_from" not in want
    assert got["config_hash"] == want["config_hash"]
    for key in ("metrics", "epochs", "steps", "final_train_loss", "gradient_flow"):
        assert got[key] == want[key], key  # bitwise: same floats, not approximately
    assert [(r["step"], r["connections_changed"]) for r in got["dst"]["rewires"]] \
        == [(r["step"], r["connections_changed"]) for r in want["dst"]["rewires"]]
    assert any(r["step"] > resumed_at and r["connections_changed"] for r in want["dst"]["rewires"])
    if method == "ffi-set-aux":
        assert got["aux"]["active_steps"] == want["aux"]["active_steps"] > resumed_at
    assert not (tmp_path / "killed" / "checkpoints").exists()  # an ok run deletes its checkpoints


def test_nan_keeps_the_last_good_checkpoint(tiny_overrides, tmp_path):
    # a learning rate that overflows the weights within a few steps (NaN at step 7 here)
    args = ["run", "method=dense", *tiny_overrides, "train.epochs=2", "train.lr_classifier=1e10",
            "train.warmup_steps=0", "checkpoint.every=1"]
    assert main(args) == 1
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "failed" and record["reason"] == "nan"
    kept = Path(record["checkpoint"])
    state = torch.load(kept, weights_only=True)
    failed_at = int(record["error"].rsplit("at step ", 1)[1].split()[0])
    assert 1 <= state["step"] < failed_at
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # run again: it resumes from that state and fails at the same step
    assert main(args) == 1
    again = list(read_records(tmp_path / "results" / "runs.jsonl"))[-1]
    assert again["reason"] == "nan" and again["resumed_from"] == {"step": state["step"], "path": str(kept)}
    assert f"at step {failed_at}" in again["error"] and again["checkpoint"] == str(kept)


def test_resume_never_starts_afresh(tiny_overrides, tmp_path):
    args = ["run", "method=dense", *tiny_overrides, "train.epochs=2"]
    assert main([*args, "train.lr_classifier=1e10", "train.warmup_steps=0", "checkpoint.every=1"]) == 1
    stale = Path(_last_record(tmp_path / "results")["checkpoint"])
    # same config hash (checkpoint.* is not part of it): `never` must ignore and delete the old files
    assert main([*args, "train.lr_classifier=1e10", "train.warmup_steps=0", "checkpoint.resume=never"]) == 1
    record = _last_record(tmp_path / "results")
    assert "resumed_from" not in record and not stale.exists()


def test_killed_sweep_records_every_configuration_once(tiny_overrides, tmp_path):
    sweep = tmp_path / "mini.yaml"
    sweep.write_text(yaml.safe_dump({"name": "mini", "base": {"method": "ffi-set"},
                                     "grid": {"train.epochs": [1, 2]}}))
    overrides = [o for o in tiny_overrides if not o.startswith(("results_dir", "train.epochs"))]
    overrides += [o for o in RESUMABLE if not o.startswith("train.epochs")]
    results = tmp_path / "results"
    # the 2-epoch configuration (14 steps) dies at step 10; the 1-epoch one (7 steps) finishes
    first = _run([str(sweep), *overrides], results, kill_at=10, command="sweep")
    assert first.returncode == 1 and "1 failed" in first.stdout, first.stdout + first.stderr
    second = _run([str(sweep), *overrides], results, command="sweep")
    assert second.returncode == 0 and "1 already finished" in second.stdout, second.stdout + second.stderr

    records = list(read_records(results / "runs.jsonl"))
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == len({r["config_hash"] for r in ok}) == 2  # every configuration exactly once
    # the killed attempt has an honest failed record (written by the sweep), then its resumed ok one
    (failed,) = [r for r in records if r["status"] == "failed"]
    assert "without a record" in failed["reason"]
    (resumed,) = [r for r in ok if "resumed_from" in r]
    assert resumed["config_hash"] == failed["config_hash"] and resumed["resumed_from"]["step"] == 9


def test_step_hooks_see_every_optimiser_step_once(tiny_overrides):
    from bench.train import add_step_hook

    steps = []
    remove = add_step_hook(steps.append)
    try:
        assert main(["run", "method=dense", *tiny_overrides, "train.epochs=2"]) == 0
    finally:
        remove()
    assert steps == list(range(1, 15))  # 400 points in batches of 64: 7 steps per epoch
    assert main(["run", "method=dense", *tiny_overrides, "seed=1"]) == 0
    assert steps == list(range(1, 15))  # removed: not called again
