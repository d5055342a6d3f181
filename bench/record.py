"""The run record: one JSON line per run in ``<results_dir>/runs.jsonl``, ``ok`` or ``failed``.

Here are its id, its building (every record starts with the same header; ``mark_ok`` and
``mark_failed`` complete it), the atomic append and the tolerant read, and the columns a table
of records has. ``docs/records.md`` lists every key. Nothing here imports torch: a sweep's
parent process and the reports read and write records without it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from bench.config import RunConfig, config_hash, to_dict
from bench.errors import BenchError

RECORDS_FILE = "runs.jsonl"
METRIC_COLUMNS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")
SELECTIONS = ("last", "best")  # which epoch's metrics a table shows
PROBE_KEYS = ("gemm_gflops", "memory_gbps")  # what ``bench.measure.machine_speed`` measures


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-`` (UTC) and 8 random hex digits: sortable by start, unique across processes."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def records_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / RECORDS_FILE


# -- building ---------------------------------------------------------------------------------

def utc_time(seconds: float | None = None) -> str:
    """ISO 8601 time in UTC of ``seconds`` since the epoch (now when None)."""
    when = dt.datetime.now(dt.timezone.utc) if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    return when.isoformat()


def new_record(cfg: RunConfig, run_id: str, group: str = "", sweep: str = "", **fields) -> dict:
    """The header every record starts with (what ran, labelled by its sweep invocation ``group``
    and ``sweep`` name), then ``fields``."""
    from bench.data.cards import card_overrides  # here, not at the top: the data rooms load torch

    return {"run_id": run_id, "config_hash": config_hash(cfg), "method": cfg.method or cfg.model.classifier,
            "group": group, "sweep": sweep, "config": to_dict(cfg), "seed": cfg.seed,
            "card_overrides": card_overrides(cfg), **fields}


def mark_ok(record: dict, result, log_every: int, memory: dict) -> dict:
    """Complete ``record`` as ``ok`` from a finished training's ``bench.train.TrainResult`` and
    the run's memory; an ``aux`` entry (the meta-classifier's clusters) gains the branch's cost."""
    record.update(
        status="ok",
        metrics=result.metrics,
        best=result.best,
        stopped_early=result.stopped_early,
        epochs=result.epochs,
        steps=result.steps,
        final_train_loss=result.final_loss,
        # the encoder's gradient norm every train.log_every steps (per-epoch mean/min/max in `epochs`)
        gradient_flow={"every": log_every, "steps": result.grad_norm_steps, "encoder_grad_norm": result.grad_norms},
        dst={
            "rewires": result.rewires,
            "connections_changed": sum(r["connections_changed"] for r in result.rewires),
            "seconds": sum(r["seconds"] for r in result.rewires),
        },
        throughput={
            "train_samples_per_s": result.train_samples / max(result.train_seconds, 1e-9),
            "inference_samples_per_s": result.eval_samples / max(result.eval_seconds, 1e-9),
            "train_seconds": result.train_seconds,
            "inference_seconds": result.eval_seconds,
        },
        memory=memory,
    )
    if "aux" in record:
        record["aux"] = record["aux"] | {"active_steps": result.aux_steps, "train_seconds": result.aux_seconds}
    return record


def mark_failed(record: dict, reason: str, **fields) -> dict:
    """Complete ``record`` as ``failed``: ``reason`` is ``nan``, ``oom`` or the error in one line;
    ``fields`` add what is known (``error`` traceback, ``memory``, kept ``checkpoint``)."""
    record.update(status="failed", reason=reason, **fields)
    return record


def mark_finished(record: dict, started: float) -> dict:
    """Stamp the wall time since ``started`` (``time.time()``) and the finishing time."""
    record["wall_time_s"] = time.time() - started
    record["finished_at"] = utc_time()
    return record


# -- the JSONL file ---------------------------------------------------------------------------

def check_writable(results_dir: str | Path) -> None:
    """Fail now, naming the folder, if a record could not be appended in ``results_dir`` later
    (read-only, or missing and impossible to create): a run checks this before it trains."""
    folder = Path(results_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = records_path(folder)
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:  # a probe file, so that a run killed before its record leaves no empty records file
            probe = folder / f".write-test-{os.getpid()}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            probe.unlink()
    except OSError as err:
        raise BenchError(f"results directory {folder} is not writable ({err.strerror or err}: "
                         f"{err.filename or folder}); set results_dir= to a folder this user can write") from None


def existing_records_path(results_dir: str | Path) -> Path:
    """``results_dir``'s records file; an error saying what is missing when there is none
    (a mistyped ``--results`` must not read as "no finished runs")."""
    folder = Path(results_dir)
    path = records_path(folder)
    if not folder.is_dir():
        raise BenchError(f"results directory {folder} does not exist")
    if not path.is_file():
        raise BenchError(f"results directory {folder} holds no {RECORDS_FILE} (no run has been recorded there)")
    return path


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON line atomically: a file lock plus a single ``write`` of the whole line, so
    concurrent writers never interleave. A line left unfinished by a crashed writer is closed
    with a newline first, so it costs only itself and the new record stays readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=_json_default) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size  # read under the lock: no other writer is mid-line now
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file (none when it does not exist); each damaged line (e.g. a crash
    mid-write) is reported with its line number as a warning and skipped, never rewritten."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:  # bytes: a line cut inside a UTF-8 character is one damaged line, not a dead file
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
                warnings.warn(f"{path}:{number}: skipping a damaged record ({getattr(err, 'msg', err)})",
                              stacklevel=2)
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


# -- records as a table -----------------------------------------------------------------------

def selected_metrics(record: dict, select: str = "last") -> tuple[dict, int | None]:
    """``(metrics, epoch)`` of the epoch ``select`` names: ``last`` (the record's ``metrics``) or
    ``best`` (its ``best`` entry; a record written before ``best`` existed reads as its last)."""
    if select not in SELECTIONS:
        raise BenchError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    epochs = record.get("epochs") or []
    evaluated = [e for e in epochs if e.get("metrics")]
    last_epoch = evaluated[-1].get("epoch") if evaluated else None
    best = record.get("best")
    if select == "best" and best:
        return best.get("metrics") or {}, best.get("epoch")
    return record.get("metrics") or {}, last_epoch


def frame_row(record: dict, select: str = "last") -> dict:
    """The table columns of one ``ok`` record (reports and figures read these, not the record);
    the metric columns are those of the ``select`` epoch (``selected_metrics``)."""
    memory, throughput, config = record.get("memory") or {}, record.get("throughput") or {}, record.get("config") or {}
    epochs = record.get("epochs") or []
    metrics, metrics_epoch = selected_metrics(record, select)
    return {
        "run_id": record["run_id"], "group": record.get("group", ""), "sweep": record.get("sweep", ""),
        "finished_at": record.get("finished_at", ""), "method": record["method"],
        "dataset": (record.get("dataset") or {}).get("name", config.get("data", {}).get("name", "")),
        "labels": record.get("num_labels"), "seed": record.get("seed"),
        "fan_in": config.get("model", {}).get("fan_in"), "embed_dim": config.get("model", {}).get("embed_dim"),
        **{m: metrics.get(m) for m in METRIC_COLUMNS},
        "metrics_epoch": metrics_epoch,
        "peak_bytes": memory.get("peak_bytes"),
        "classifier_bytes": (memory.get("classifier") or {}).get("total"),
        "train_samples_per_s": throughput.get("train_samples_per_s"),
        "inference_samples_per_s": throughput.get("inference_samples_per_s"),
        "steady_step_s": throughput.get("steady_step_s"),
        # the machine's speed during the run: mean of its start and end probes (None: recorded before probes)
        **{f"probe_{k}": run_probe(record).get(k) for k in PROBE_KEYS},
        "epoch_time_s": throughput.get("train_seconds", float("nan")) / max(1, len(epochs)),
        "wall_time_s": record.get("wall_time_s"),
        "epochs": epochs,
        "gradient_flow": record.get("gradient_flow") or {},
    }


def run_probe(record: dict) -> dict:
    """The machine speed a run saw: each probe key's mean over its ``probe.start`` and
    ``probe.end`` ({} for a record without probes)."""
    probes = [p for p in ((record.get("probe") or {}).get(when) for when in ("start", "end")) if p]
    if not probes:
        return {}
    return {k: sum(p[k] for p in probes) / len(probes) for k in PROBE_KEYS if all(p.get(k) for p in probes)}


def probe_spread(probes: list[dict]) -> float:
    """Largest relative difference between machine-speed probes (each key compared on its own):
    0.1 means the slowest of them ran 10 % below the fastest. Missing probes do not count."""
    spread = 0.0
    for key in PROBE_KEYS:
        values = [p[key] for p in probes if p and p.get(key)]
        if len(values) > 1:
            spread = max(spread, 1 - min(values) / max(values))
    return spread


def records_frame(records: Iterable[dict], select: str = "last"):
    """A ``pandas.DataFrame`` with one row per finished (``ok``) run, its metrics those of the
    ``select`` epoch (``last`` or ``best``)."""
    import pandas as pd  # here, not at the top: a training process writes records without pandas

    return pd.DataFrame([frame_row(r, select) for r in records if r.get("status") == "ok"])
