"""Suites of runs: expand methods × label-space sizes into configurations and run each in its
own process (so that its peak RSS is its own), recording failures like any other run."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.config import config_hash, resolve, to_dict
from bench.experiment import new_run_id
from bench.tracking import RECORDS_FILE, append_record, read_records


@dataclass(frozen=True)
class Suite:
    name: str
    methods: tuple[str, ...]
    num_labels: tuple[int, ...]
    overrides: dict = field(default_factory=dict)  # applied to every run (before the user's)

    def expand(self, user_overrides: list[str]) -> list[list[str]]:
        """One override list per run: suite base, then the method and size, then the user's."""
        base = [f"{k}={v}" for k, v in self.overrides.items()]
        return [
            base + [f"method={m}", f"data.num_labels={n}"] + user_overrides
            for n in self.num_labels
            for m in self.methods
        ]


# Sized to finish within ten minutes on a 2-core CPU (README has the measured time).
DEFAULT_SUITE = Suite(
    name="default",
    methods=("dense", "masked-static", "ffi-static", "ffi-set"),
    num_labels=(1024, 4096, 16384),
    overrides={"data.num_train": 12000, "data.num_test": 3000, "train.epochs": 2},
)


def run_isolated(overrides: list[str], group: str, log_dir: Path) -> dict:
    """Run one configuration in a fresh Python process and return its record. A process that
    dies without writing one (killed, crashed interpreter) gets a failed record here."""
    cfg = resolve(overrides)
    run_id = new_run_id()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{run_id}.log"
    cmd = [sys.executable, "-m", "bench.cli", "run", *overrides, "--run-id", run_id, "--group", group]
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    records_path = Path(cfg.results_dir) / RECORDS_FILE
    for record in read_records(records_path):
        if record.get("run_id") == run_id:
            return record
    record = {
        "run_id": run_id,
        "config_hash": config_hash(cfg),
        "method": cfg.method,
        "group": group,
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "num_labels": cfg.data.num_labels,
        "status": "failed",
        "reason": f"process exited with code {proc.returncode} without a record (log: {log_path})",
    }
    append_record(records_path, record)
    return record


def run_suite(suite: Suite, user_overrides: list[str]) -> tuple[str, list[dict]]:
    """Run every configuration of ``suite``; returns (the suite's group id, the records)."""
    runs = suite.expand(user_overrides)
    for overrides in runs:  # fail on a bad key before spending minutes on the first runs
        resolve(overrides)
    group = f"{suite.name}-{new_run_id()}"
    log_dir = Path(resolve(runs[0]).results_dir) / "logs"
    records = []
    bar = tqdm(runs, desc=f"suite {suite.name}", unit="run")
    for overrides in bar:
        record = run_isolated(overrides, group, log_dir)
        records.append(record)
        p1 = (record.get("metrics") or {}).get("P@1")
        status = f"P@1={p1:.4f}" if p1 is not None else f"FAILED ({record.get('reason')})"
        bar.write(f"{record['method']:>16} L={record.get('num_labels')}: {status} "
                  f"({record.get('wall_time_s', 0):.1f}s)")
    return group, records
