"""Sweeps: expand a base config and axes (grid × zipped lists) into configurations, run each
in its own process (so that its peak RSS is its own), skip those that already have an ``ok``
record with the same resolved config, and record failures like any other run.

The local records decide what has run (keyed by ``config_hash``); W&B only mirrors them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.config import config_dict_hash, config_hash, flatten, parse_override
from bench.errors import ConfigError, RunningElsewhere
from bench.record import (append_record, check_writable, mark_failed, mark_finished, new_record, new_run_id,
                          read_records, records_path, utc_time)
from bench.resolve import resolve

SHIPPED_DIR = Path(__file__).parent / "sweeps"


# `xmc-bench run` without a method runs this shipped sweep (bench/sweeps/default.yaml).
DEFAULT_SWEEP = "default"


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file: ``base`` overrides for every run, ``grid`` axes (cartesian product) and
    ``zip`` axes (equal-length lists advanced together, crossed with the grid). Each configuration
    is one run; one without ``method`` is a plain run of ``model.classifier`` (recorded under the
    classifier's name), never the default suite that ``xmc-bench run`` without a method starts."""

    name: str
    description: str = ""
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    zip: dict = field(default_factory=dict)

    def expand(self, user_overrides: list[str]) -> list[list[str]]:
        base = [_override(k, v) for k, v in self.base.items()]
        zipped = list(zip(*self.zip.values())) if self.zip else [()]
        runs = []
        for combo in itertools.product(*self.grid.values()):
            for row in zipped:
                axes = [_override(k, v) for k, v in zip(self.grid, combo)]
                axes += [_override(k, v) for k, v in zip(self.zip, row)]
                runs.append(base + axes + user_overrides)
        return runs


def _override(key: str, value) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    return f"{key}={value}"


def load_sweep(name_or_path: str) -> SweepSpec:
    """A shipped sweep by name (``xmc-bench sweep --list``) or a YAML file."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SHIPPED_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown sweep {name_or_path!r}; shipped sweeps: {', '.join(list_sweeps())}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"sweep file {path} is not UTF-8 text ({err.reason} at byte {err.start}): "
                          "expected a YAML mapping with base/grid/zip") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping with base/grid/zip, got {type(values).__name__}")
    unknown = set(values) - {"name", "description", "base", "grid", "zip"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown section(s) {', '.join(sorted(unknown))}; "
                          "expected name, description, base, grid, zip")
    axes = {}
    for section in ("grid", "zip"):
        if not isinstance(values.get(section) or {}, dict):
            raise ConfigError(f"sweep file {path}: {section} must be a mapping of config keys to lists of values, "
                              f"got {type(values[section]).__name__}")
        axes[section] = flatten(values.get(section) or {})
        for key, options in axes[section].items():
            if not isinstance(options, list) or not options:
                raise ConfigError(f"sweep file {path}: {section}.{key} must be a non-empty list")
    lengths = {len(v) for v in axes["zip"].values()}
    if len(lengths) > 1:
        raise ConfigError(f"sweep file {path}: zip lists must have equal lengths, got "
                          + ", ".join(f"{k}: {len(v)}" for k, v in axes["zip"].items()))
    return SweepSpec(name=str(values.get("name") or path.stem), description=str(values.get("description", "")),
                     base=_base(path, values.get("base") or {}), grid=axes["grid"], zip=axes["zip"])


def _base(path: Path, base) -> dict:
    """A sweep's ``base``: a mapping of config keys, or a list of ``key=value`` overrides as on
    the command line."""
    if isinstance(base, dict):
        return flatten(base)
    if isinstance(base, list) and all(isinstance(item, str) and "=" in item for item in base):
        return dict(parse_override(item) for item in base)
    raise ConfigError(f"sweep file {path}: base must be a mapping of config keys (key: value) or a list of "
                      f"'key=value' strings, got {base!r:.80}")


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def finished_hashes(results_dir: str | Path) -> set[str]:
    """Hashes of the configs with an ``ok`` record, recomputed from each record's config with
    today's ``config_hash`` (records written before a config field existed still count)."""
    return {config_dict_hash(r["config"]) if isinstance(r.get("config"), dict) else r["config_hash"]
            for r in read_records(records_path(results_dir))
            if r.get("status") == "ok" and ("config" in r or "config_hash" in r)}


def unfinished(runs: list[list[str]], configs: list) -> list[list[str]]:
    """The override lists whose resolved config has no ``ok`` record in its results dir yet."""
    done = set().union(*(finished_hashes(d) for d in {c.results_dir for c in configs}))
    return [o for o, c in zip(runs, configs) if config_hash(c) not in done]


def run_isolated(overrides: list[str], group: str, log_dir: Path, sweep: str = "") -> dict | None:
    """Run one configuration in a fresh Python process and return its record. A process that
    dies without writing one (killed, crashed interpreter) gets a failed record here; ``None``
    when another process is running the configuration now (its lock, ``bench.checkpoint.RunLock``):
    not run, not failed. The child dies with this process. The child
    runs exactly this configuration (``--single``): one without ``method`` is a plain
    ``model.classifier`` run, never the default suite."""
    cfg = resolve(overrides)
    run_id = new_run_id()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{run_id}.log"
    cmd = [sys.executable, "-m", "bench.cli", "run", *overrides, "--single", "--run-id", run_id,
           "--group", group, "--sweep", sweep]
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent())
    if proc.returncode == RunningElsewhere.exit_code:  # another process holds the configuration's lock
        return None
    path = records_path(cfg.results_dir)
    for record in read_records(path):
        if record.get("run_id") == run_id:
            return record
    record = mark_failed(new_record(cfg, run_id, group, sweep, started_at=utc_time(started),
                                    num_labels=cfg.data.num_labels),
                         f"process exited with code {proc.returncode} without a record (log: {log_path})")
    append_record(path, mark_finished(record, started))
    return record


def _die_with_parent():
    """A ``preexec_fn`` that has the kernel kill the child when the process that started it
    dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so that a killed sweep leaves no
    configuration running unwatched; ``None`` (nothing to do) where there is no prctl. libc is
    looked up here, in the parent, so the child between fork and exec only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, pr_set_pdeathsig, kill = os.getpid(), 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would kill us
            os._exit(1)

    return preexec


def run_configs(name: str, runs: list[list[str]], workers: int = 1, skip_finished: bool = False,
                out=None) -> tuple[str, list[dict], int]:
    """Run override lists as one sweep invocation; returns (group id, new records, skipped):
    skipped are the configurations already finished and those another process was running."""
    configs = [resolve(o) for o in runs]  # a bad key fails here, before minutes are spent
    for results_dir in dict.fromkeys(c.results_dir for c in configs):  # so does a folder records cannot go to
        check_writable(results_dir)
    todo = unfinished(runs, configs) if skip_finished else runs
    group = f"{name}-{new_run_id()}"
    records: list[dict] = []
    if not todo:
        return group, records, len(runs)
    log_dir = Path(configs[0].results_dir) / "logs"
    bar = tqdm(total=len(todo), desc=f"sweep {name}", unit="run", file=out)
    busy = 0  # configurations another process was running: skipped, like finished ones
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_isolated, o, group, log_dir, name): o for o in todo}
        for future in as_completed(futures):
            record = future.result()
            bar.update(1)
            if record is None:
                busy += 1
                bar.write(f"skipped (another process is running it now): {' '.join(futures[future])}")
                continue
            records.append(record)
            p1 = (record.get("metrics") or {}).get("P@1")
            where = f" at step {record['failed_at_step']}" if "failed_at_step" in record else ""
            status = f"P@1={p1:.4f}" if p1 is not None else f"FAILED ({record.get('reason')}{where})"
            bar.write(f"{record['method']:>16} L={record.get('num_labels')} seed={record.get('seed')}: {status} "
                      f"({record.get('wall_time_s', 0):.1f}s)")
    bar.close()
    return group, records, len(runs) - len(todo) + busy
