"""Honest measurements: peak memory, analytic bytes, throughput timers, environment.

Peak memory on CUDA is the caching allocator's peak after a reset. On CPU it is the peak
resident set size (``ru_maxrss``) of the process, which is only meaningful when the process
runs one configuration — the suite therefore runs each configuration in its own process.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


class PeakMemory:
    """Measures the peak memory of the code run between ``start()`` and ``stop()``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline_bytes = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline_bytes = current_rss_bytes()

    def stop(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {
                "peak_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                "peak_kind": "cuda_allocator_peak",
                "baseline_bytes": int(self.baseline_bytes),
            }
        return {
            # the kernel updates the high-water mark lazily; the current RSS is a lower bound
            "peak_bytes": max(peak_rss_bytes(), current_rss_bytes()),
            "peak_kind": "cpu_peak_rss_process",
            # RSS when measurement began (interpreter + libraries): subtract for the run's own share
            "baseline_bytes": int(self.baseline_bytes),
        }


class Stopwatch:
    """Accumulates wall time over several timed sections (CUDA-synchronised)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self):
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds += time.perf_counter() - self._t0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
