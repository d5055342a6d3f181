"""One Tracker API with two backends: the local JSONL record (always) and W&B (offline by
default). W&B mirrors what is recorded locally; its failures are warnings, never lost runs."""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

RECORDS_FILE = "runs.jsonl"


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON line atomically: a file lock plus a single ``write`` of the whole line,
    so concurrent writers never interleave and a crash never leaves half a line from us."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=_json_default) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file; a damaged line (e.g. a crash mid-write by another tool) is
    reported with its line number and skipped, never rewritten."""
    path = Path(path)
    if not path.exists():
        return
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                warnings.warn(f"{path}:{number}: skipping a damaged record ({err.msg})", stacklevel=2)
                continue
            if isinstance(record, dict):
                yield record
            else:
                warnings.warn(f"{path}:{number}: skipping a record that is not a JSON object", stacklevel=2)


def _json_default(obj: Any):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot record a {type(obj).__name__}")


def _finite(value: Any) -> Any:
    # JSON has no NaN/Inf; keep the record valid and the fact visible.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Tracker:
    """Collects a run's time series and writes its final record locally, then to W&B."""

    def __init__(self, records_path: str | Path | None, wandb_mode: str, wandb_dir: str | Path,
                 project: str, run_id: str, config: dict, group: str = "", name: str = ""):
        # None: write no record (the non-zero ranks of a torchrun run; rank 0 records it)
        self.records_path = None if records_path is None else Path(records_path)
        self._wandb = None
        self.wandb_dir = None
        if wandb_mode != "disabled":
            self._wandb = self._start_wandb(wandb_mode, Path(wandb_dir), project, run_id, config, group, name)

    def _start_wandb(self, mode, wandb_dir, project, run_id, config, group, name):
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            wandb_dir.mkdir(parents=True, exist_ok=True)
            run = wandb.init(
                mode=mode, dir=str(wandb_dir), project=project, id=run_id, name=name or run_id,
                group=group or None, config=config, reinit="finish_previous",
                settings=wandb.Settings(console="off", quiet=True),
            )
            self.wandb_dir = str(Path(run.dir).parent)
            return run
        except Exception as err:  # noqa: BLE001 — W&B must never cost the run
            warnings.warn(f"W&B ({mode}) could not start, continuing with the local record only: {err}")
            return None

    def log(self, values: dict, step: int) -> None:
        if self._wandb is None:
            return
        try:
            self._wandb.log({k: _finite(v) for k, v in values.items()}, step=step)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"W&B log failed, continuing with the local record only: {err}")
            self._wandb = None

    def finish(self, record: dict) -> None:
        """Write the record locally first, then mirror its summary to W&B."""
        if self.wandb_dir:
            record["wandb_dir"] = self.wandb_dir
        if self.records_path is not None:
            append_record(self.records_path, record)
        if self._wandb is None:
            return
        try:
            summary = {"status": record["status"]}
            for section in ("metrics", "throughput"):
                summary.update(record.get(section) or {})
            memory = record.get("memory") or {}
            summary["peak_memory_bytes"] = memory.get("peak_bytes")
            summary["classifier_bytes"] = (memory.get("classifier") or {}).get("total")
            for key, value in summary.items():
                self._wandb.summary[key] = _finite(value)
            self._wandb.finish(exit_code=0 if record["status"] == "ok" else 1)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"W&B finish failed; the local record at {self.records_path} is complete: {err}")
