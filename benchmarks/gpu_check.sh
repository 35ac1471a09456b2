#!/usr/bin/env bash
# GPU check, on a lent CUDA machine: the tests that need CUDA, then the GPU benchmarks.
#   1. correctness: the `cuda` tests (tests/test_cuda.py): the Triton kernel against the PyTorch
#      reference on ragged shapes (fp32/fp16/bf16/fp64, NaN-poisoned outputs, non-finite input, a
#      batch beyond the grid limit), explain() on CUDA against the CPU pipeline (both
#      representations), the exported pipeline in ONNX Runtime's GPU providers (when
#      onnxruntime-gpu is there) against the torch CUDA backend, the inductor backend with CUDA graphs
#      and a CUDA .pt2 package against the eager CUDA backend;
#   2. the Triton kernel's tile sweep (benchmarks/triton_tiles.py);
#   3. the kernel table (benchmarks/bench_ops.py: torch vs triton vs triton kernel-only);
#   4. fastinterp-bench --device cuda (resnet50, 224, batch 1 and 8, float32 and bfloat16 autocast);
#      then the compiled backends (compile(..., backend="inductor") with CUDA graphs, a CUDA .pt2
#      package) against the eager CUDA backend and a torch.compile'd forward, batch 1 and 32;
#   5. ONNX Runtime's GPU providers timed against the torch CUDA backend (benchmarks/onnx_gpu.py);
#   6. a short summary, printed last.
#
#     bash benchmarks/gpu_check.sh            # from the repository root
#
# Needs a python with torch (CUDA), triton and pytest: $PYTHON, else ./.venv/bin/python, else
# python3 / python on PATH. Nothing is built or downloaded: the package is staged from the source
# tree into a temporary folder (fastinterp/ + kernels/ as fastinterp/kernels), which is all the
# Triton path needs (the C++ module is only imported by the "cpp" backend). Logs and JSON go to
# $OUT (if set) or to a temporary folder. Exit status 0 iff the correctness tests passed.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGDIR=${OUT:-$(mktemp -d)}
mkdir -p "$LOGDIR"

PY=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
  [ -n "$candidate" ] || continue
  command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
  if "$candidate" -c "import torch, triton, pytest; assert torch.cuda.is_available()" >/dev/null 2>&1; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no python with torch (CUDA available), triton and pytest found; set PYTHON=/path/to/python" >&2
  exit 2
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -r "$ROOT/fastinterp" "$STAGE/fastinterp"
rm -rf "$STAGE/fastinterp/kernels"
cp -r "$ROOT/kernels" "$STAGE/fastinterp/kernels"
# the staged package, never the checkout's (PYTHONSAFEPATH: the working directory is not on sys.path)
export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

echo "== gpu_check: $PY ($("$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'))"

echo "== 1. correctness: the cuda tests"
"$PY" -m pytest -q -p no:cacheprovider -m cuda "$ROOT/tests/test_cuda.py" "$ROOT/tests/test_custom_op.py" --junitxml="$LOGDIR/cuda_tests.xml" 2>&1 \
  | tee "$LOGDIR/cuda_tests.log"
tests_status=${PIPESTATUS[0]}

echo "== 2. tile sweep: kernel alone, resnet50 shapes, B=32, 224x224, K=8"
"$PY" "$ROOT/benchmarks/triton_tiles.py" --json "$LOGDIR/sweep.json" 2>&1 | tee "$LOGDIR/sweep.log"

echo "== 3. kernel table"
"$PY" "$ROOT/benchmarks/bench_ops.py" --device cuda --json "$LOGDIR/bench.json" 2>&1 | tee "$LOGDIR/bench.log"

echo "== 4. fastinterp-bench on CUDA"
"$PY" -m fastinterp.cli.bench --device cuda --batch-sizes 1 8 --iters 30 --no-progress \
    --dtypes float32 bfloat16 --json "$LOGDIR/bench_runtime.json" 2>&1 | tee "$LOGDIR/bench_runtime.log"

echo "== 4b. the compiled backends on CUDA (inductor with CUDA graphs, .pt2), batch 1 and 32"
"$PY" -m fastinterp.cli.bench --device cuda --batch-sizes 1 32 --iters 30 --no-progress --backends torch inductor pt2 \
    --no-compile-times --no-pytorch-grad-cam --json "$LOGDIR/bench_compiled.json" 2>&1 | tee "$LOGDIR/bench_compiled.log"

echo "== 5. ONNX Runtime GPU providers vs the torch CUDA backend (needs onnxruntime-gpu)"
"$PY" "$ROOT/benchmarks/onnx_gpu.py" --out "$LOGDIR/onnx" --json "$LOGDIR/onnx_gpu.json" 2>&1 | tee "$LOGDIR/onnx_gpu.log"

echo "== 6. summary"
"$PY" "$ROOT/benchmarks/gpu_summary.py" "$LOGDIR" "$tests_status"
