#!/usr/bin/env bash
# The GPU check (one CUDA device, < 8 minutes on an H200): the CUDA tests, then the layer,
# full-step and top-k tables on CUDA in float32 and bfloat16 at 131K, 1M and 3M labels.
#
#   PYTHON=/path/to/python bash scripts/gpu_check.sh     # a Python with CUDA torch + triton
#
# The package is imported from this checkout (PYTHONPATH), so nothing is installed; records go
# to $OUT (default results/kernels-gpu) and the printed tables to $OUT/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-results/kernels-gpu}
LABELS="131072 1048576 2812281"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
"$PYTHON" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py tests/test_kernels_triton.py \
    tests/test_topk_select.py tests/test_precision.py 2>&1 | tail -5 || echo "GPU TESTS FAILED (tables follow)"
  for dtype in float32 bfloat16; do
    echo; echo "## $dtype: fixed fan-in layer against dense, masked and CSR (d = 768, k = 32, B = 256)"
    "$PYTHON" -m bench.cli kernels --device cuda --dtype "$dtype" --labels $LABELS --fan-in 32 --dim 768 \
      --repeats 5 --layers dense csr ffi/triton ffi-group --out "$OUT"
    echo; echo "## $dtype: full training step (fused loss + backward + SGD momentum), d = 768"
    "$PYTHON" -m bench.cli kernels --step --device cuda --dtype "$dtype" --labels $LABELS --fan-in 32 \
      --dim 768 --repeats 5 --out "$OUT"
    echo; echo "## $dtype: top-5 by selection against scoring alone (d = 256, 1,024 points)"
    "$PYTHON" -m bench.cli kernels --topk --device cuda --dtype "$dtype" --topk-labels $LABELS \
      --repeats 5 --out "$OUT"
  done
} 2>&1 | tee "$OUT/gpu_check.md"
