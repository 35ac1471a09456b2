#!/usr/bin/env bash
# The package as a user installs it, away from the checkout:
#   1. build the wheel (pip, build isolation) and install it in a fresh virtual environment;
#   2. from another directory: `fastinterp demo` with the core dependencies only (matplotlib and
#      Pillow are core: overlays and `fastinterp explain`); a smoke test of the installed package
#      (representation, compile/explain of a PIL photo) and `fastinterp-bench --quick`;
#      `fastinterp export` with the onnx extra, and the exported file run by load_onnx and by
#      `fastinterp explain --onnx` in a venv with onnxruntime, numpy, Pillow, matplotlib and tqdm
#      only (no torch, no safetensors); `fastinterp evaluate --quick` with the eval extra;
#   3. build the same wheel with OpenMP off, install it over the first, check that
#      `fastinterp --version` says so, and run the kernel tests against it (C++ serial fallback;
#      the Triton kernels through the interpreter, from the wheel's fastinterp.kernels).
# Called by .ci/run after the README's `make test`. Needs python3 with venv and pip, a compiler,
# and the package registry. Exit status 0 iff every step passed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PYTHON=${PYTHON:-python3}
PIP=(--disable-pip-version-check -q)

echo "== wheel_check 1: build the wheel, install it in a fresh venv ($WORK/venv)"
"$PYTHON" -m pip wheel "${PIP[@]}" --no-deps -w "$WORK/dist" -Cbuild-dir="$WORK/build" "$ROOT"
"$PYTHON" -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" "$WORK"/dist/fastinterp-*.whl
cd "$WORK"  # nothing of the checkout is on sys.path from here

echo "== wheel_check 2a: fastinterp demo with the core dependencies"
"$V/fastinterp" demo --out "$WORK/demo.png"
test -s "$WORK/demo.png"

echo "== wheel_check 2c: smoke test of the installed package"
"$V/fastinterp" --version
"$V/python" - <<'PY'
import importlib.util, sysconfig
from pathlib import Path

import torch, torchvision
import fastinterp
from fastinterp.kernels import cumulative_average as kernels

site = Path(sysconfig.get_paths()["purelib"]).resolve()
assert Path(fastinterp.__file__).resolve().is_relative_to(site), fastinterp.__file__
assert Path(kernels.__file__).resolve().is_relative_to(site), kernels.__file__
assert importlib.util.find_spec("kernels") is None, "a top-level kernels package is importable"
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=5).eval()
images = torch.rand(2, 3, 64, 64)
fast = fastinterp.cnn_representation(model, images, backend="cpp")
reference = fastinterp.cnn_representation(model, images, backend="torch")
assert fast.cgm.shape == (2, 8, 64, 64) and fast.teacher_cgm is None
assert (fast.cgm - reference.cgm).abs().max() <= 1e-5
from fastinterp.generator.networks import build_generator
with fastinterp.compile(model, build_generator("fast"), input_size=64, representation="gradient") as explainer:
    out = explainer.explain(images.numpy())
assert out.maps.shape == (2, 64, 64) and 0 <= out.maps.min() <= out.maps.max() <= 1
from PIL import Image
photo = Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
with fastinterp.compile(model, build_generator("fast"), input_size=64, representation="gradient") as explainer:
    one = explainer.explain(photo)
assert one.overlay(photo.resize((96, 80))).shape == (1, 80, 96, 3)
print("smoke test passed:", fastinterp.__file__)
PY
"$V/fastinterp-bench" --quick --no-progress | tail -3  # the console script, from the wheel

echo "== wheel_check 2d: fastinterp export with the onnx extra, then load_onnx in a venv without torch"
"$V/python" -m pip install "${PIP[@]}" "$(ls "$WORK"/dist/fastinterp-*.whl)[onnx]"
"$V/fastinterp" export --cnn resnet18 --num-classes 10 --input-size 32 --out "$WORK/onnx" | tee "$WORK/export.log"
grep -q "targets equal: True" "$WORK/export.log"
"$PYTHON" -m venv "$WORK/venv-ort"
"$WORK/venv-ort/bin/python" -m pip install "${PIP[@]}" numpy onnxruntime pillow matplotlib tqdm
"$WORK/venv-ort/bin/python" -m pip install "${PIP[@]}" --no-deps "$WORK"/dist/fastinterp-*.whl
"$WORK/venv-ort/bin/python" - "$WORK/onnx/explainer.onnx" <<'PY'
import importlib.util, sys
import numpy as np
assert importlib.util.find_spec("torch") is None, "torch is installed in the onnxruntime-only venv"
import fastinterp
explainer = fastinterp.load_onnx(sys.argv[1])
out = explainer.explain(np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32))
assert out.maps.shape == (3, 32, 32) and 0 <= out.maps.min() <= out.maps.max() <= 1, out.maps.shape
print("load_onnx without torch passed:", explainer)
from PIL import Image
folder = __import__("pathlib").Path(sys.argv[1]).parent / "photos"
folder.mkdir()
for i in range(3):
    Image.fromarray(np.random.default_rng(i).integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
PY
"$WORK/venv-ort/bin/fastinterp" explain --onnx "$WORK/onnx/explainer.onnx" "$WORK/onnx/photos" --out "$WORK/explained" \
    --no-progress
test -s "$WORK/explained/2.png" && test -s "$WORK/explained/2.npy" && test -s "$WORK/explained/predictions.json"
"$WORK/venv-ort/bin/python" -c "import importlib.util as u; assert u.find_spec('safetensors') is None"

echo "== wheel_check 2e: fastinterp evaluate --quick with the eval extra (the shipped checkpoints are package data)"
"$V/python" -m pip install "${PIP[@]}" "$(ls "$WORK"/dist/fastinterp-*.whl)[eval]"
"$V/fastinterp" evaluate --quick --no-progress --out "$WORK/evaluation" | tail -1
grep -q "## shapes-mobilenet_v3_small" "$WORK/evaluation/evaluation.md"

echo "== wheel_check 3: the same wheel built without OpenMP"
"$PYTHON" -m pip wheel "${PIP[@]}" --no-deps -w "$WORK/dist-serial" -Cbuild-dir="$WORK/build-serial" \
    -Ccmake.define.FASTINTERP_OPENMP=OFF "$ROOT"
"$V/python" -m pip install "${PIP[@]}" --force-reinstall --no-deps "$WORK"/dist-serial/fastinterp-*.whl
"$V/fastinterp" --version | tee "$WORK/version"
grep -q "serial (built without OpenMP)" "$WORK/version"
"$V/python" -m pip install "${PIP[@]}" "pytest>=8" "hypothesis>=6.100"
FASTINTERP_EXPECT_OPENMP=0 TRITON_INTERPRET=1 "$V/python" -m pytest -q -p no:cacheprovider \
    "$ROOT/tests/test_ops_cumulative_average.py" "$ROOT/tests/test_cumulative_average_reference.py"
echo "== wheel_check: all passed"
