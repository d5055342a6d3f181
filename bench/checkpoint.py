"""Training checkpoints of one configuration: save, list, load the newest good one, prune, remove.

A configuration's checkpoints live in ``<results_dir>/checkpoints/<config_hash>/step-XXXXXXXX.pt``
(``config_hash`` leaves out ``results_dir``, ``tracking`` and ``checkpoint``, so a rerun of the same
experiment finds them). What goes into one is the training loop's business (``bench.train``);
this module stores a dict of tensors and plain values and hands it back:

- writes are atomic: ``torch.save`` to a temporary file in the same folder, ``fsync``, then
  ``os.replace`` — a kill mid-write leaves the previous checkpoints intact;
- the newest ``keep`` checkpoints are kept;
- loading tries the newest first; a damaged file is reported and the one before it is tried.

``RunLock`` keeps a second process from running a configuration while one runs it (two runs
sharing one checkpoint folder would overwrite each other's checkpoints and record twice).

The RNG states of the process (torch CPU and CUDA, Python ``random``) are captured here too, so
a resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.config import RunConfig, config_hash
from bench.errors import RunningElsewhere

FORMAT = 1  # bumped when the contents change incompatibly; other formats are skipped with a warning
_NAME = re.compile(r"step-(\d{8,})\.pt")


@dataclass(frozen=True)
class Loaded:
    state: dict  # what was saved
    path: Path  # the file it came from


class Checkpoints:
    """The checkpoint folder of one configuration."""

    def __init__(self, folder: str | Path, keep: int = 2, config_hash: str = ""):
        self.folder, self.keep, self.config_hash = Path(folder), keep, config_hash
        self.wandb_id: str | None = None  # the run's W&B id, saved with every checkpoint: a resume continues that W&B run

    @classmethod
    def of(cls, cfg: RunConfig) -> "Checkpoints":
        digest = config_hash(cfg)
        return cls(Path(cfg.results_dir) / "checkpoints" / digest, cfg.checkpoint.keep, digest)

    def paths(self) -> list[Path]:
        """Finished checkpoint files, oldest first (temporary files of unfinished writes are not listed)."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, state: dict, step: int) -> Path:
        """Write ``state`` as the checkpoint of optimiser step ``step`` and prune older ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step-{step:08d}.pt"
        tmp = self.folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            with tmp.open("wb") as fh:
                extra = {"wandb_id": self.wandb_id} if self.wandb_id else {}
                torch.save({"format": FORMAT, "config_hash": self.config_hash, "step": step, **extra, **state}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.folder)  # the rename itself survives a power cut
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> Loaded | None:
        """The newest checkpoint that loads and belongs to this configuration; damaged ones are
        reported (and left in place for inspection). None when there is none."""
        for path in reversed(self.paths()):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                problem = _mismatch(state, self.config_hash)
            except Exception as err:  # noqa: BLE001 — any unreadable file is skipped the same way
                problem = f"{type(err).__name__}: {err}"
            if problem is None:
                return Loaded(state, path)
            warnings.warn(f"checkpoint {path} cannot be resumed from ({problem}); trying the one before it",
                          stacklevel=2)
        return None

    def remove(self) -> None:
        """Delete this configuration's checkpoints (and the ``checkpoints`` folder once empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:  # other configurations still have checkpoints there
            pass


class RunLock:
    """At most one process runs a configuration at a time: an exclusive ``flock`` on
    ``<results_dir>/checkpoints/<config_hash>.lock`` (beside the configuration's checkpoint
    folder, so that removing the checkpoints never removes the lock), held for the whole run.
    The kernel releases it when its process dies, however it dies; the file is removed on
    ``release``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    @classmethod
    def of(cls, cfg: RunConfig) -> "RunLock":
        return cls(Path(cfg.results_dir) / "checkpoints" / f"{config_hash(cfg)}.lock")

    def acquire(self) -> "RunLock":
        """Take the lock, or raise ``RunningElsewhere`` at once when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunningElsewhere(
                    f"this configuration is being run by another process now (it holds {self.path}); "
                    "not starting a second run of it") from None
            try:  # the holder before us may have removed the file after we opened it: lock the one in place
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
                return self
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file (while still holding it), drop the lock, and remove the
        ``checkpoints`` folder when nothing else is left in it."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        try:
            self.path.parent.rmdir()
        except OSError:  # checkpoints or other configurations' locks are still there
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _mismatch(state, digest: str) -> str | None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return f"not a format-{FORMAT} checkpoint"
    if digest and state.get("config_hash") != digest:
        return f"written for config {state.get('config_hash')}, not {digest}"
    return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """The process-wide generators training draws from (dropout, init): torch CPU, CUDA, Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
