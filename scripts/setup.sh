#!/usr/bin/env bash
# Creates .venv and installs the package with its test extra. torch is installed first and
# pinned to the CPU wheel (torch==2.13.0) so that pip never pulls a multi-GB CUDA build here;
# the package itself accepts any recent torch (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import bench, torch; print('xmc-dst-bench ready: torch', torch.__version__)"
