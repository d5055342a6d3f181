"""W&B mirroring (``bench.tracking``): the local record is written whatever W&B does."""

import pytest

from bench.record import read_records
from bench.tracking import Tracker


def test_tracker_writes_local_record_when_wandb_disabled(tmp_path):
    tracker = Tracker(tmp_path / "runs.jsonl", "disabled", tmp_path / "wandb", "p", "run1", {"a": 1})
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish({"run_id": "run1", "status": "ok", "metrics": {"P@1": float("nan")}})
    (record,) = read_records(tmp_path / "runs.jsonl")
    assert record["run_id"] == "run1"
    assert not (tmp_path / "wandb").exists()


def test_wandb_failure_is_a_warning_and_the_record_survives(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # online mode checks the server: a local closed port
    with pytest.warns(UserWarning, match="W&B .* could not start"):
        tracker = Tracker(tmp_path / "runs.jsonl", "online", tmp_path / "wandb", "p", "run2", {})
    tracker.finish({"run_id": "run2", "status": "ok"})
    assert [r["run_id"] for r in read_records(tmp_path / "runs.jsonl")] == ["run2"]
