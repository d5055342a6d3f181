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


# Machine-speed probe: the shared VM's speed drifts (±25 % within seconds), so every run times
# the same small fixed workload at its start and end; runs whose probes differ are not
# compared as if they were measured side by side (``bench.record.probe_spread``).
PROBE_GEMM = 512  # [n, n] @ [n, n] float32: compute-bound, cache-resident
PROBE_BYTES = 32 << 20  # one in-place pass over 32 MiB: bandwidth-bound, larger than the last-level cache
PROBE_REPEATS = 10


def machine_speed(device: torch.device | None = None) -> dict:
    """``{"gemm_gflops", "memory_gbps"}`` of a fixed GEMM and a fixed memory pass, each the
    best of a few repeats (the best is the least disturbed by other work on the machine).
    Its own generator: the run's random draws are untouched. The pass is in place, so the
    probe adds one ``PROBE_BYTES`` buffer to the process's memory, not two."""
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(PROBE_GEMM, PROBE_GEMM, generator=gen).to(device)
    b = torch.rand(PROBE_GEMM, PROBE_GEMM, generator=gen).to(device)
    buf = torch.ones(PROBE_BYTES // 4, device=device)
    gemm = _best_seconds(lambda: torch.mm(a, b), device)
    sweep = _best_seconds(lambda: buf.add_(1.0), device)
    return {"gemm_gflops": 2 * PROBE_GEMM ** 3 / gemm / 1e9,
            "memory_gbps": 2 * PROBE_BYTES / sweep / 1e9}  # read + write


def _best_seconds(fn, device: torch.device) -> float:
    fn()  # first use: allocation, kernel selection
    best = float("inf")
    for _ in range(PROBE_REPEATS):
        with Stopwatch(device) as watch:
            fn()
        best = min(best, watch.seconds)
    return max(best, 1e-9)


def warmup_steps(num_steps: int) -> int:
    """How many first steps the steady-state step time leaves out: the first tenth, at least
    one (none of a single step, which is all there is)."""
    return max(1, num_steps // 10) if num_steps > 1 else 0


def steady_step_seconds(step_seconds: list[float]) -> float | None:
    """Median time of a training step once warm: the first steps (first use of kernels,
    compilation, allocator growth) are left out (``warmup_steps``)."""
    if not step_seconds:
        return None
    warm = sorted(step_seconds[warmup_steps(len(step_seconds)):])
    mid = len(warm) // 2
    return warm[mid] if len(warm) % 2 else (warm[mid - 1] + warm[mid]) / 2


def steady_throughput(step_seconds: list[float]) -> dict:
    """The record's ``throughput`` entries of per-step times: ``steady_step_s`` (median step once
    warm) and ``steady_steps`` (how many steps that median is over)."""
    return {"steady_step_s": steady_step_seconds(step_seconds),
            "steady_steps": len(step_seconds) - warmup_steps(len(step_seconds))}


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
