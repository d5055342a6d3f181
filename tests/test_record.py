"""The run record (``bench.record``): building ok and failed records, the JSONL file (atomic
appends, damaged lines, a crash mid-write), the results folder checked before training, and
that the module and the sweep driver work without torch."""

import json
import multiprocessing as mp
import os
import subprocess
import sys
import warnings

import pytest

from bench.cli import main
from bench.config import config_hash, resolve, to_dict
from bench.errors import BenchError
from bench.record import (
    append_record,
    check_writable,
    mark_failed,
    new_record,
    read_records,
    records_frame,
    records_path,
)

HEADER = {"run_id", "config_hash", "method", "group", "sweep", "config", "seed"}
# every key of an ok record of a run with the aux branch (docs/records.md describes each)
OK_KEYS = HEADER | {"started_at", "environment", "dataset", "num_labels", "propensity", "aux", "status", "metrics",
                    "epochs", "steps", "final_train_loss", "gradient_flow", "dst", "throughput", "memory",
                    "wall_time_s", "finished_at", "best", "stopped_early"}
FAILED_KEYS = HEADER | {"started_at", "environment", "dataset", "num_labels", "propensity", "status", "reason",
                        "error", "memory", "checkpoint", "wall_time_s", "finished_at"}


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
        fh.write('{"run_id": "b", "trunc\n')  # damaged by some other tool
    append_record(path, {"run_id": "c"})
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: skipping a damaged record") as caught:
        records = list(read_records(path))
    assert [r["run_id"] for r in records] == ["a", "c"] and len(caught) == 1
    assert path.read_bytes() == before  # never rewritten


def test_a_crash_mid_write_costs_only_the_line_being_written(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"run_id": "a"})
    with path.open("ab") as fh:
        fh.write(b'{"run_id": "killed", "metr')  # a writer died here: no newline
    append_record(path, {"run_id": "b"})
    append_record(path, {"run_id": "c"})
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: skipping a damaged record") as caught:
        assert [r["run_id"] for r in read_records(path)] == ["a", "b", "c"]
    assert len(caught) == 1
    assert path.read_bytes().count(b"\n") == 4  # the broken line got its newline; nothing else was added


def test_a_line_cut_inside_a_utf8_character_is_one_damaged_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_bytes('{"note": "caf'.encode() + "é".encode()[:1] + b"\n")
    append_record(path, {"run_id": "a"})
    with pytest.warns(UserWarning, match=r"runs.jsonl:1: skipping a damaged record"):
        assert [r["run_id"] for r in read_records(path)] == ["a"]


def test_reading_a_missing_file_gives_no_records(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(read_records(tmp_path / "none.jsonl")) == []


def test_a_failed_record_of_a_dead_process_has_the_header_reason_and_label_count(tmp_path):
    cfg = resolve(["method=ffi-set", "data.num_labels=128", f"results_dir={tmp_path}"])
    record = mark_failed(new_record(cfg, "r1", "g", "s", num_labels=cfg.data.num_labels), "process exited")
    assert record == {"run_id": "r1", "config_hash": config_hash(cfg), "method": "ffi-set", "group": "g",
                      "sweep": "s", "config": to_dict(cfg), "seed": 0, "num_labels": 128, "status": "failed",
                      "reason": "process exited"}
    # without a method, the classifier names the run (as in the run's own record)
    assert new_record(resolve(["model.classifier=dense"]), "r2")["method"] == "dense"


def test_ok_and_failed_records_of_a_run_have_every_documented_key(tiny_overrides, tmp_path):
    assert main(["run", "method=ffi-set-aux", *tiny_overrides]) == 0
    assert main(["run", "method=dense", *tiny_overrides, "train.epochs=2", "train.lr_classifier=1e10",
                 "train.warmup_steps=0", "checkpoint.every=1"]) == 1
    ok, failed = read_records(records_path(tmp_path / "results"))
    assert set(ok) == OK_KEYS and ok["status"] == "ok" and ok["method"] == "ffi-set-aux"
    assert {"active_steps", "train_seconds", "num_clusters"} <= set(ok["aux"])
    assert set(failed) == FAILED_KEYS and failed["reason"] == "nan"
    frame = records_frame([ok, failed])  # failed runs are not table rows
    assert list(frame["run_id"]) == [ok["run_id"]] and frame["P@1"][0] == ok["metrics"]["P@1"]


def test_an_uncreatable_results_dir_stops_the_run_before_training(tiny_overrides, tmp_path, monkeypatch, capsys):
    import bench.experiment

    monkeypatch.setattr(bench.experiment, "load_dataset", lambda *a: pytest.fail("the run must not start"))
    (tmp_path / "a-file").write_text("")
    results = tmp_path / "a-file" / "results"
    overrides = [o for o in tiny_overrides if not o.startswith("results_dir")]
    assert main(["run", "method=dense", *overrides, f"results_dir={results}"]) == 2
    err = capsys.readouterr().err
    assert f"results directory {results} is not writable" in err and "Traceback" not in err


def test_a_records_file_that_cannot_be_appended_to_is_found_first(tmp_path):
    (tmp_path / "runs.jsonl").mkdir()  # not a file: every append would fail
    with pytest.raises(BenchError, match=f"results directory {tmp_path} is not writable"):
        check_writable(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_results_dir_is_found_first(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        with pytest.raises(BenchError, match="is not writable"):
            check_writable(results)
    finally:
        results.chmod(0o755)


def test_check_writable_creates_the_folder_and_leaves_no_file(tmp_path):
    check_writable(tmp_path / "new" / "results")
    assert list((tmp_path / "new" / "results").iterdir()) == []


def test_a_sweep_into_an_uncreatable_results_dir_starts_nothing(tmp_path):
    from bench.sweep import run_configs

    (tmp_path / "a-file").write_text("")
    with pytest.raises(BenchError, match="is not writable"):
        run_configs("s", [["method=dense", f"results_dir={tmp_path / 'a-file' / 'r'}"]])
    assert not (tmp_path / "a-file" / "r").exists()


def test_records_and_the_sweep_driver_do_not_import_torch():
    code = ("import sys, bench.record, bench.sweep, bench.report; "
            "print(sorted(m for m in ('torch', 'bench.experiment') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
