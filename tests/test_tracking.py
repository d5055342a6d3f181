import json
import multiprocessing as mp

import pytest

from bench.tracking import Tracker, append_record, read_records


def _writer(path, worker, count):
    for i in range(count):
        append_record(path, {"worker": worker, "i": i, "pad": "x" * 500})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    procs = [mp.get_context("fork").Process(target=_writer, args=(path, w, 200)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 8 * 200
    seen = {(r["worker"], r["i"]) for r in map(json.loads, lines)}
    assert len(seen) == 8 * 200


def test_damaged_line_is_reported_and_skipped(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"run_id": "a"})
    with path.open("a") as fh:
        fh.write('{"run_id": "b", "trunc')  # a crash mid-write by some other tool
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: skipping a damaged record"):
        records = list(read_records(path))
    assert [r["run_id"] for r in records] == ["a"]
    assert path.read_bytes() == before  # never rewritten


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
    with pytest.warns(UserWarning, match="W&B .* could not start"):
        tracker = Tracker(tmp_path / "runs.jsonl", "online", tmp_path / "wandb", "p", "run2", {})
    tracker.finish({"run_id": "run2", "status": "ok"})
    assert [r["run_id"] for r in read_records(tmp_path / "runs.jsonl")] == ["run2"]
