"""The C sources in ``bench/kernels/csrc``: each compiles on its own with the build's flags and
``-Werror``, ships as package data, and is what the build's cache key covers."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import tomllib
import warnings
from pathlib import Path

import pytest

from bench.kernels import native

SOURCES = sorted(p.name for p in native.CSRC.glob("*.c"))
HEADERS = sorted(p.name for p in native.CSRC.glob("*.h"))


def _compiler():
    try:
        return native.compiler()
    except RuntimeError:
        pytest.skip("no C compiler")


def test_sources_found():
    assert {"ffi.c", "group.c"} <= set(SOURCES) and "common.h" in HEADERS


@pytest.mark.parametrize("source", SOURCES)
def test_source_builds_warning_free(source, tmp_path):
    """The exact build command (``native.command``) plus ``-Werror``: a warning fails here
    rather than printing on a user's first run."""
    run = subprocess.run([*native.command(source, tmp_path / "lib.so", _compiler()), "-Werror"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


@pytest.mark.parametrize("header", HEADERS)
def test_header_stands_alone(header):
    """A header includes what it uses (its static helpers are used by the sources that include
    it, which the test above builds with ``-Werror``)."""
    cc = _compiler()
    run = subprocess.run([cc, *native.FLAGS, *native.WARNINGS, "-Werror", "-fsyntax-only", "-x", "c",
                          str(native.CSRC / header)], capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


def test_every_file_is_package_data():
    """pyproject's package-data patterns cover every file in csrc/, so a wheel can build them."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["bench.kernels"]
    for path in native.CSRC.iterdir():
        assert any(fnmatch.fnmatch(f"csrc/{path.name}", p) for p in patterns), f"{path.name} is not package data"


def test_cache_key_covers_source_and_headers(monkeypatch, tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(native.CSRC, csrc)
    monkeypatch.setattr(native, "CSRC", csrc)
    key = native._digest("ffi.c", "cc")
    assert native._digest("group.c", "cc") != key and native._digest("ffi.c", "gcc") != key
    (csrc / "common.h").write_text((csrc / "common.h").read_text() + "\n/* changed */\n")
    assert native._digest("ffi.c", "cc") != key
    key = native._digest("ffi.c", "cc")
    (csrc / "ffi.c").write_text((csrc / "ffi.c").read_text() + "\n/* changed */\n")
    assert native._digest("ffi.c", "cc") != key


def test_build_caches_and_reports_compiler_warnings(monkeypatch, tmp_path):
    """A library is compiled once per key; what the compiler says on a successful build comes
    back as one RuntimeWarning."""
    cc = _compiler()
    csrc, cache = tmp_path / "csrc", tmp_path / "cache"
    csrc.mkdir()
    (csrc / "tiny.c").write_text("int tiny(int a) { int unused; return a + 1; }\n")
    monkeypatch.setattr(native, "CSRC", csrc)
    monkeypatch.setenv(native.CACHE_ENV, str(cache))
    monkeypatch.setenv("CC", cc)
    with pytest.warns(RuntimeWarning, match="warned building tiny.c"):
        lib = native.build("tiny.c")
    assert lib.parent == cache and lib.name.startswith("tiny-") and list(cache.iterdir()) == [lib]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # found in the cache: no second compile, so no warning
        assert native.build("tiny.c") == lib
