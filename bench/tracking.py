"""W&B for a run (offline by default): its time series while it trains, then its summary.

The local record (``bench.record``) is the store of record: ``Tracker.finish`` appends it
before mirroring it to W&B, and W&B's failures are warnings, never lost runs."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

from bench.record import append_record


def _finite(value: Any) -> Any:
    # W&B's JSON has no NaN/Inf; keep the summary valid and the fact visible.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Tracker:
    """Mirrors a run to W&B: its time series, then its final record's summary (after the record
    itself is appended locally)."""

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
            # W&B puts its run folders in <dir>/wandb/: hand it the parent of a folder named wandb
            # so they land in wandb_dir itself (<results_dir>/wandb/run-...), not wandb_dir/wandb/
            root = wandb_dir.parent if wandb_dir.name == "wandb" else wandb_dir
            run = wandb.init(
                mode=mode, dir=str(root), project=project, id=run_id, name=name or run_id,
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
