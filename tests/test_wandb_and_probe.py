"""W&B without a network, W&B's run folder and resume, and the machine-speed probe in records
and reports (issue 17, items 8, 12 and 14).

No test talks to a W&B server: "online" runs point ``WANDB_BASE_URL`` at a closed local port."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from bench.cli import main
from bench.record import append_record, read_records, records_path

DUMMY_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, as W&B's keys


def _closed_port() -> int:
    with socket.socket() as sock:  # a port the OS just handed out and nobody listens on
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_wandb(overrides: list[str], mode: str, wandb_dir: Path) -> list[str]:
    return [*(o for o in overrides if not o.startswith("tracking.wandb=")), f"tracking.wandb={mode}",
            f"tracking.wandb_dir={wandb_dir}"]


def _run_folders(wandb_dir: Path) -> list[Path]:
    return sorted(p for p in (wandb_dir / "wandb").iterdir() if p.is_dir() and "run-" in p.name)


def _cli(args: list[str], env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    """``xmc-bench run ARGS`` in a process of its own, with a W&B service of its own (an in-process
    test's wandb leaves its service's address in the environment, which children would share)."""
    env = {k: v for k, v in env.items() if k != "WANDB_SERVICE"}
    return subprocess.run([sys.executable, "-m", "bench.cli", "run", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


# -- 8: online W&B without a network ----------------------------------------------------------

def test_online_wandb_without_a_server_falls_back_to_offline(tiny_overrides, tmp_path):
    env = dict(os.environ, WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}", WANDB_API_KEY=DUMMY_KEY)
    env.pop("WANDB_MODE", None)  # the run's own tracking.wandb=online decides
    wandb_dir = tmp_path / "wb"
    # W&B's own retries would take 90 s here; the fallback needs a connection refused, at once
    done = _cli(["method=dense", *_with_wandb(tiny_overrides, "online", wandb_dir)], env, timeout=80)
    assert done.returncode == 0, done.stderr
    (record,) = read_records(records_path(tmp_path / "results"))
    assert record["status"] == "ok"
    assert record["tracking"]["wandb"] == "offline"
    (folder,) = _run_folders(wandb_dir)
    assert folder.name.startswith("offline-run-") and str(folder) == record["wandb_dir"]
    assert f"wandb sync {folder}" in record["tracking"]["note"] and "not reachable" in record["tracking"]["note"]
    assert f"wandb sync {folder}" in done.stderr  # said on the console too
    assert (folder / "files" / "wandb-summary.json").exists()  # the run's W&B data is kept


def test_reachability_is_an_http_answer_of_any_status():
    import http.server
    import threading

    from bench.tracking import unreachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert unreachable(f"http://127.0.0.1:{server.server_port}/") is None
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert unreachable(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.5) is not None
    assert "refused" in unreachable(f"http://127.0.0.1:{_closed_port()}/")


# -- 12: what W&B receives --------------------------------------------------------------------

def test_a_run_shorter_than_log_every_logs_its_first_and_last_loss(tiny_overrides, monkeypatch):
    from bench import tracking

    logged = []
    monkeypatch.setattr(tracking.Tracker, "log", lambda self, values, step: logged.append((step, values)))
    assert main(["run", "method=dense", *tiny_overrides, "train.log_every=50"]) == 0  # 7 steps
    assert [s for s, v in logged if "train/loss" in v] == [1, 7]


def test_offline_run_folder_holds_config_and_summary(tiny_overrides, tmp_path):
    wandb_dir = tmp_path / "wb"
    assert main(["run", "method=dense", *_with_wandb(tiny_overrides, "offline", wandb_dir)]) == 0
    (record,) = read_records(records_path(tmp_path / "results"))
    files = Path(record["wandb_dir"]) / "files"
    config = yaml.safe_load((files / "config.yaml").read_text())
    assert config["method"] == {"value": "dense"} and config["train"]["value"]["epochs"] == 1
    summary = json.loads((files / "wandb-summary.json").read_text())
    assert summary["status"] == "ok" and summary["P@1"] == record["metrics"]["P@1"]
    assert summary["train_samples_per_s"] == record["throughput"]["train_samples_per_s"]
    assert "train/loss" in summary  # the last logged value of the series
    assert record["tracking"] == {"wandb": "offline", "wandb_id": record["run_id"]}


KILL_HOOK = """
import os
import signal

from bench.train import add_step_hook

add_step_hook(lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == 5 else None)
"""


def test_a_resumed_run_continues_its_wandb_run(tiny_overrides, tmp_path):
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(KILL_HOOK)
    env = dict(os.environ, WANDB_MODE="offline")
    wandb_dir = tmp_path / "wb"
    args = ["method=dense", *_with_wandb(tiny_overrides, "offline", wandb_dir), "checkpoint.every=3"]
    killed = _cli(args, dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (first,) = _run_folders(wandb_dir)
    resumed = _cli(args, env)
    assert resumed.returncode == 0, resumed.stderr
    (record,) = read_records(records_path(tmp_path / "results"))
    assert record["resumed_from"]["step"] == 3
    first_id = first.name.split("-", 3)[-1]  # offline-run-DATE_TIME-<W&B run id>
    assert record["tracking"]["wandb_id"] == first_id != record["run_id"]
    assert record["tracking"]["resumed_wandb_run"] is True
    assert {p.name.split("-", 3)[-1] for p in _run_folders(wandb_dir)} == {first_id}  # one W&B run, two attempts


# -- 14: machine-speed probes and steady step time ----------------------------------------------

def test_a_record_has_its_probes_and_steady_step_time(tiny_overrides, tmp_path):
    assert main(["run", "method=dense", *tiny_overrides]) == 0
    (record,) = read_records(records_path(tmp_path / "results"))
    for when in ("start", "end"):
        assert set(record["probe"][when]) == {"gemm_gflops", "memory_gbps"}
        assert all(v > 0 for v in record["probe"][when].values())
    throughput = record["throughput"]
    assert throughput["steady_steps"] == 6  # 7 steps, the first left out
    assert 0 < throughput["steady_step_s"] <= throughput["train_seconds"]


def _record(method, seed, rate, probe=None, finished="2026-01-01T00:00:00"):
    record = {"run_id": f"{method}-{seed}", "method": method, "num_labels": 100, "seed": seed, "status": "ok",
              "finished_at": finished, "dataset": {"name": "bibtex"}, "config": {"model": {}, "data": {}},
              "metrics": {"P@1": 0.5}, "memory": {"peak_bytes": 2**30},
              "throughput": {"train_samples_per_s": rate, "train_seconds": 10.0, "steady_step_s": 64 / rate,
                             "steady_steps": 90},
              "epochs": [{"epoch": 1, "step": 100}]}
    if probe is not None:
        record["probe"] = {"start": {"gemm_gflops": probe, "memory_gbps": 10.0},
                           "end": {"gemm_gflops": probe, "memory_gbps": 10.0}}
    return record


def _rows(text: str) -> dict:
    return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}


def test_report_marks_throughput_measured_on_a_differently_fast_machine(tmp_path):
    path = tmp_path / "results" / "runs.jsonl"
    append_record(path, _record("ffi-set-aux", 0, 20000.0, probe=200.0))  # fastest: the reference
    append_record(path, _record("ffi-set-aux", 1, 19000.0, probe=190.0))
    append_record(path, _record("dense", 0, 1000.0, probe=100.0))  # a machine at half the speed
    append_record(path, _record("dense", 1, 1100.0, probe=110.0))
    append_record(path, _record("ffi-set", 0, 5000.0, probe=195.0))  # a like-for-like comparison
    append_record(path, _record("ffi-static", 0, 3000.0))  # recorded before probes
    out = tmp_path / "r.md"
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    text = out.read_text()
    rows = _rows(text)
    assert "1,050 †" in rows["dense"] and "| 2 |" in rows["dense"]  # marked; two runs behind it
    assert "†" not in rows["ffi-set"] and "†" not in rows["ffi-static"] and "†" not in rows["ffi-set-aux"]
    assert "**19,500**" in rows["ffi-set-aux"]
    assert "† throughput measured on a machine running more than 10%" in text
    assert "1 row(s) have no machine-speed probe" in text
    assert "how many runs" in text  # the repeats behind each number are explained


def test_report_of_records_without_probes_has_no_marks(tmp_path):
    path = tmp_path / "results" / "runs.jsonl"
    append_record(path, _record("dense", 0, 1000.0))
    append_record(path, _record("ffi-set", 0, 5000.0))
    out = tmp_path / "r.md"
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "†" not in text and "2 row(s) have no machine-speed probe" in text
    for fmt in ("latex", "html"):
        assert main(["report", "--results", str(tmp_path / "results"), "--format", fmt,
                     "--out", str(tmp_path / f"r.{fmt}")]) == 0
