"""Build and load the compiled CPU kernels (``cpu``: fixed fan-in, ``cpu_group``: group-shared
fixed fan-in) from their C sources in ``csrc/`` (package data): compiled once with the system C
compiler (``-march=native``, warnings on), cached on disk by a hash of the sources, compiler,
flags and CPU features, loaded through ctypes.

``csrc/common.h`` holds the helpers both kernels include; ``csrc/ffi.c`` and ``csrc/group.c``
are one translation unit each. ``command`` gives the exact compiler call, so a source builds on
its own too (see docs/kernels.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")  # the C sources (package data)
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared", "-pthread", "-std=gnu11"]
WARNINGS = ["-Wall", "-Wextra"]  # the sources build warning-free (tests/test_csrc.py: with -Werror)
CACHE_ENV = "XMC_KERNEL_CACHE"  # where built libraries are kept (default ~/.cache/xmc-dst-bench/kernels)


def _cpu_signature() -> str:
    """The CPU's feature flags: the build uses -march=native, so a cached library must not move
    to a machine with other instructions."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def compiler() -> str:
    """The C compiler: ``$CC``, else gcc, else cc."""
    found = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if found is None:
        raise RuntimeError("no C compiler found (install gcc, or set CC)")
    return found


def command(source: str, output: str | Path, cc: str | None = None) -> list[str]:
    """The compiler call that builds ``csrc/<source>`` into the shared library ``output``."""
    return [cc or compiler(), *FLAGS, *WARNINGS, str(CSRC / source), "-o", str(output)]


def _digest(source: str, cc: str) -> str:
    """Key of a build: the source and every header beside it (a header change rebuilds), the
    compiler, its flags and the CPU."""
    texts = [(CSRC / source).read_text(), *(h.read_text() for h in sorted(CSRC.glob("*.h")))]
    return hashlib.sha256("\0".join([*texts, cc, *FLAGS, *WARNINGS, _cpu_signature()]).encode()).hexdigest()[:16]


def build(source: str) -> Path:
    """The shared library compiled from ``csrc/<source>`` (built once, then found in the cache)."""
    cc = compiler()
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xmc-dst-bench" / "kernels")
    target = cache / f"{Path(source).stem}-{_digest(source, cc)}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        lib = Path(tmp) / target.name
        run = subprocess.run(command(source, lib, cc), capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{cc} failed on {source}:\n{run.stderr[-2000:]}")
        if run.stderr.strip():  # built, but this compiler finds something to say: show it once
            warnings.warn(f"{cc} warned building {source}:\n{run.stderr[-2000:]}", RuntimeWarning, stacklevel=3)
        os.replace(lib, target)  # atomic: concurrent builders leave one complete file
    return target


def load(source: str, what: str) -> ctypes.CDLL | None:
    """``build`` ``csrc/<source>`` and load it; ``None`` with one warning naming ``what`` falls
    back, and why."""
    try:
        return ctypes.CDLL(str(build(source)))
    except Exception as err:  # noqa: BLE001 — any failure means: fall back, and say why
        warnings.warn(f"{what} CPU backend unavailable, using the slow pure-torch reference instead: {err}",
                      RuntimeWarning, stacklevel=3)
        return None


def declare(lib: ctypes.CDLL, names, argtypes, restype=None) -> None:
    """Give the C functions ``names`` of ``lib`` their argument and result types."""
    for name in names:
        getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype


# --- operands as the C kernels read them ------------------------------------------------------


def kernel_ids(indices: torch.Tensor) -> torch.Tensor:
    """Input ids as the kernels read them: int16/int32 as they are, wider ids narrowed to int32
    (input ids are < d < 2^31); contiguous."""
    return indices.contiguous() if indices.dtype in (torch.int16, torch.int32) else indices.to(torch.int32).contiguous()


def float32(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as contiguous float32 (``None`` stays ``None``: an absent bias)."""
    return None if t is None else t.to(torch.float32).contiguous()
