"""W&B for a run (offline by default): its time series while it trains, then its summary.

The local record (``bench.record``) is the store of record: ``Tracker.finish`` appends it
before mirroring it to W&B, and W&B's failures are warnings, never lost runs.

Online mode first asks the W&B server whether it is there (a few seconds at most): without a
network W&B would otherwise retry for ``init_timeout`` (90 s) and then drop the run's data.
An unreachable server means the run logs offline instead, says so on the console and in the
record's ``tracking`` entry, with the ``wandb sync`` command that uploads it later.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import sys
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from bench.record import append_record

REACH_TIMEOUT_S = 5.0  # how long the online check waits for the W&B server to answer


def _finite(value: Any) -> Any:
    # W&B's JSON has no NaN/Inf; keep the summary valid and the fact visible.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def wandb_base_url() -> str:
    """The W&B server the installed wandb would talk to (``WANDB_BASE_URL``, its settings files,
    else its default)."""
    if os.environ.get("WANDB_BASE_URL"):  # read now: wandb's own settings are fixed at its first setup
        return os.environ["WANDB_BASE_URL"]
    import wandb

    return str(wandb.setup().settings.base_url)


def unreachable(url: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the server at ``url`` gave no HTTP answer within ``timeout`` seconds, or None when it
    answered (any status: an error page still means the server is there). Proxies set in the
    environment are used, as wandb uses them. The request runs in a thread of its own because a
    name lookup without a network ignores socket timeouts."""
    answer: list = []
    asking = threading.Thread(target=lambda: answer.append(_ask(url, timeout)), daemon=True)
    asking.start()
    asking.join(timeout + 1.0)
    return answer[0] if answer else f"no answer within {timeout:.0f} s"


def _ask(url: str, timeout: float) -> str | None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as err:
        return str(err.reason)
    except (OSError, ValueError, http.client.HTTPException) as err:
        return f"{type(err).__name__}: {err}"
    return None


class Tracker:
    """Mirrors a run to W&B: its time series, then its final record's summary (after the record
    itself is appended locally).

    W&B starts when the tracker is made, or with ``start=False`` at ``start(resume_id)``: a run
    that continues from a checkpoint passes the W&B run id stored there, so that W&B continues
    the same run rather than opening a new one. ``finish`` starts it if nothing did, so a run
    that failed before training is mirrored too."""

    def __init__(self, records_path: str | Path | None, wandb_mode: str, wandb_dir: str | Path,
                 project: str, run_id: str, config: dict, group: str = "", name: str = "", start: bool = True):
        # None: write no record (the non-zero ranks of a torchrun run; rank 0 records it)
        self.records_path = None if records_path is None else Path(records_path)
        self.mode = wandb_mode  # the mode asked for; ``info["wandb"]`` is the one used
        self._init = {"wandb_dir": Path(wandb_dir), "project": project, "run_id": run_id, "config": config,
                      "group": group, "name": name}
        self._wandb = None
        self._started = wandb_mode == "disabled"
        self.wandb_dir = None
        self.wandb_id = None  # the W&B run id once started (a checkpoint stores it)
        self.info: dict = {}  # the record's ``tracking`` entry
        if start:
            self.start()

    def start(self, resume_id: str | None = None) -> None:
        """Start W&B (once); with ``resume_id`` continue that W&B run."""
        if self._started:
            return
        self._started = True
        mode, note = self.mode, None
        if mode == "online":
            url = wandb_base_url()
            why = unreachable(url)
            if why is not None:
                mode, note = "offline", f"W&B server {url} not reachable ({why})"
        run = self._start_wandb(mode, resume_id)
        if run is None and mode == "online":  # reachable, yet init failed: keep the data offline
            mode, note = "offline", "W&B online start failed"
            run = self._start_wandb(mode, resume_id)
        self._wandb = run
        self.info = {"wandb": mode if run is not None else "failed", "wandb_id": self.wandb_id}
        if resume_id:
            self.info["resumed_wandb_run"] = True
        if note is not None and run is not None:
            self.info["note"] = (f"{note}; logged offline to {self.wandb_dir}. "
                                 f"Upload later with: wandb sync {self.wandb_dir}")
            print(f"xmc-bench: {self.info['note']}", file=sys.stderr, flush=True)

    def _start_wandb(self, mode, resume_id):
        a = self._init
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            if os.environ.get("WANDB_MODE") == "":  # set but empty: wandb rejects it; our mode decides
                del os.environ["WANDB_MODE"]
            import wandb

            a["wandb_dir"].mkdir(parents=True, exist_ok=True)
            # W&B puts its run folders in <dir>/wandb/: hand it the parent of a folder named wandb
            # so they land in wandb_dir itself (<results_dir>/wandb/run-...), not wandb_dir/wandb/
            root = a["wandb_dir"].parent if a["wandb_dir"].name == "wandb" else a["wandb_dir"]
            run = wandb.init(
                mode=mode, dir=str(root), project=a["project"], id=resume_id or a["run_id"],
                resume="allow" if resume_id else None, name=a["name"] or a["run_id"],
                group=a["group"] or None, config=a["config"], reinit="finish_previous",
                settings=wandb.Settings(console="off", quiet=True),
            )
            self.wandb_dir = str(Path(run.dir).parent)
            self.wandb_id = run.id
            return run
        except Exception as err:  # noqa: BLE001 — W&B must never cost the run
            warnings.warn(f"W&B ({mode}) could not start, continuing with the local record only: {err}")
            if mode == "online":
                try:  # the failed run still holds its id in wandb's service; an offline retry needs it free
                    import wandb

                    wandb.teardown()
                except Exception:  # noqa: BLE001
                    pass
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
        self.start()
        if self.wandb_dir:
            record["wandb_dir"] = self.wandb_dir
        if self.info:
            record["tracking"] = dict(self.info)
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
            if self._wandb.settings.mode == "offline":
                # the summary holds the explicit keys and each logged key's last value
                write_run_files(Path(self._wandb.dir), self._wandb.config.as_dict(), dict(self._wandb.summary))
            self._wandb.finish(exit_code=0 if record["status"] == "ok" else 1)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"W&B finish failed; the local record at {self.records_path} is complete: {err}")


def write_run_files(files_dir: Path, config: dict, summary: dict) -> None:
    """``config.yaml`` and ``wandb-summary.json`` in an offline run's ``files`` folder, as W&B
    writes them for an online run (offline, wandb keeps both only inside its binary log):
    each config key as ``{value: ...}``, the summary as one JSON object."""
    import yaml

    files_dir.mkdir(parents=True, exist_ok=True)
    (files_dir / "config.yaml").write_text(
        yaml.safe_dump({k: {"value": v} for k, v in config.items()}, sort_keys=False))
    (files_dir / "wandb-summary.json").write_text(json.dumps(summary, sort_keys=True, default=str))
