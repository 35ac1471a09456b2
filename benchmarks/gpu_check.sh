#!/usr/bin/env bash
# GPU check of the Triton cumulative_average kernels, on a lent CUDA machine:
#   1. correctness: the Triton backend against the PyTorch reference on CUDA tensors, many
#      random ragged shapes (fp32 / fp16 / bf16 / fp64, NaN-poisoned outputs, non-finite input);
#   2. a tile-size sweep of the kernel alone at resnet50 shapes, B = 32, 224x224, K = 8;
#   3. the benchmark table (benchmarks/bench_ops.py, torch vs triton vs triton kernel-only);
#   4. the runtime on CUDA: Explainer.explain against the same pipeline run on the CPU (both
#      representations), then fastinterp-bench --device cuda (resnet50, 224, batch 1 and 8,
#      float32 and bfloat16 autocast);
#   4b. ONNX on the GPU (when onnxruntime-gpu is installed): resnet50's explain pipeline exported
#      (fp32 and fp16), run by the CUDA EP (and TensorRT EP, fp16), p50 at batch 1 and 32 vs the
#      torch CUDA backend, maps compared with it;
#   5. a short summary, printed last.
#
#     bash benchmarks/gpu_check.sh            # from the repository root
#
# Needs a python with torch (CUDA) and triton: $PYTHON, else ./.venv/bin/python, else python3 /
# python on PATH. Nothing is built or downloaded: the package is staged from the source tree
# into a temporary folder (fastinterp/ + kernels/ as fastinterp/kernels), which is all the
# Triton path needs (the C++ module is only imported by the "cpp" backend). Logs and JSON go
# to $OUT (if set) or to a temporary folder. Exit status 0 iff every correctness check passed.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGDIR=${OUT:-$(mktemp -d)}
mkdir -p "$LOGDIR"

PY=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
  [ -n "$candidate" ] || continue
  command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
  if "$candidate" -c "import torch, triton; assert torch.cuda.is_available()" >/dev/null 2>&1; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no python with torch (CUDA available) and triton found; set PYTHON=/path/to/python" >&2
  for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c "import torch; print('  ', '$candidate', 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>/dev/null >&2
  done
  exit 2
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -r "$ROOT/fastinterp" "$STAGE/fastinterp"
rm -rf "$STAGE/fastinterp/kernels"
cp -r "$ROOT/kernels" "$STAGE/fastinterp/kernels"
export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

echo "== gpu_check: $PY ($("$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'))"

echo "== 1. correctness: triton vs reference on CUDA"
"$PY" - "$LOGDIR/correctness.json" <<'EOF' 2>&1 | tee "$LOGDIR/correctness.log"
import json, random, sys, time
import torch
from fastinterp.ops import cumulative_average, cumulative_average_reference

print("fastinterp from", __import__("fastinterp").__file__)
dev = "cuda"
rng = random.Random(0)
fails, worst, n = [], 0.0, 0
start = time.time()
cases = [("float32", 200), ("float16", 30), ("bfloat16", 30), ("float64", 30)]
for dtype_name, count in cases:
    dtype = getattr(torch, dtype_name)
    exponents = (-2, 3) if dtype == torch.float16 else (-30, 30)  # finite after the cast
    for i in range(count):
        L = rng.randint(1, 60); B = rng.randint(1, 6)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        maps = []
        for _ in range(L):
            h, w = rng.randint(1, 120), rng.randint(1, 120)
            m = torch.randn(B, h, w, generator=g) * 10.0 ** rng.randint(*exponents)
            if rng.random() < 0.1:
                m = torch.full((B, h, w), rng.uniform(-5, 5))
            maps.append(m.to(dtype))
        size = (rng.randint(1, 300), rng.randint(1, 300))
        k = rng.randint(1, L)
        positions = sorted(rng.sample(range(L), k))
        ref = cumulative_average_reference(maps, size, positions)
        out = torch.full((B, k, *size), float("nan"), device=dev)
        cumulative_average([m.to(dev) for m in maps], size, positions, backend="triton", out=out)
        err = (out.cpu() - ref).abs().max().item()
        n += 1
        bad = not (err <= 1e-5)  # NaN (an unwritten element) fails too
        worst = max(worst, err) if err == err else float("inf")
        if bad:
            fails.append(dict(dtype=dtype_name, L=L, B=B, size=size, positions=positions, err=err))
for bad_value in (float("nan"), float("inf")):
    maps = [torch.randn(2, 9, 9, device=dev) for _ in range(3)]
    maps[1][0, 3, 3] = bad_value
    try:
        cumulative_average(maps, 32, [0, 2], backend="triton")
        fails.append(dict(case=f"non-finite {bad_value} accepted"))
    except ValueError as e:
        ok = "maps[1]" in str(e)
        n += 1
        if not ok:
            fails.append(dict(case=f"non-finite message: {e}"))
# the batch beyond CUDA's 65,535 limit of grid axis 1 (folded into axis 0), a near-constant map
# (one ulp of noise: zeros, as the reference), a float64 map whose span overflows (exact values)
maps = [torch.rand(70_000, 2, 3, device=dev), torch.rand(70_000, 1, 1, device=dev)]
out = torch.full((70_000, 2, 5, 4), float("nan"), device=dev)
cumulative_average(maps, (5, 4), [0, 1], backend="triton", out=out)
err = (out.cpu() - cumulative_average_reference([m.cpu() for m in maps], (5, 4), [0, 1])).abs().max().item()
n += 1
if not err <= 1e-5:
    fails.append(dict(case="batch 70,000", err=err))
noisy = torch.full((2, 5, 6), 3.7, device=dev)
noisy[0, 1, 2] = torch.nextafter(noisy[0, 1, 2], torch.tensor(9.0, device=dev))
big = torch.finfo(torch.float64).max
huge = torch.tensor([[[-big, big], [0.0, big / 2]]], dtype=torch.float64, device=dev)
for name, m, expected in (("near-constant", noisy, torch.zeros(2, 1, 5, 6)),
                          ("float64 span overflow", huge, torch.tensor([[[[0.0, 1.0], [0.5, 0.75]]]]))):
    got = cumulative_average([m], tuple(m.shape[1:]), [0], backend="triton").cpu()
    n += 1
    if not torch.equal(got, expected):
        fails.append(dict(case=name, got=got.flatten()[:8].tolist()))
print(f"{n} checks, {len(fails)} failures, worst |err| {worst:.2e}, {time.time() - start:.1f} s")
for f in fails[:10]:
    print("FAIL", f)
json.dump(dict(checks=n, failures=fails, worst=worst), open(sys.argv[1], "w"), indent=1)
EOF

echo "== 2. tile sweep: kernel alone, resnet50 shapes, B=32, 224x224, K=8"
"$PY" - "$LOGDIR/sweep.json" "$ROOT/benchmarks" <<'EOF' 2>&1 | tee "$LOGDIR/sweep.log"
import json, sys
import torch, triton.testing
sys.path.insert(0, sys.argv[2])
import bench_ops
import fastinterp
from fastinterp.kernels import cumulative_average as kernels
from fastinterp.ops.packing import pack_maps

shapes = bench_ops.layer_shapes("resnet50")
positions = fastinterp.paper_positions(len(shapes), 8)
B, S = 32, 224
maps = [torch.randn(B, h, w, device="cuda") for h, w in shapes]
packed = pack_maps(maps, len(shapes), torch.float32)
out = torch.empty(B, 8, S, S, device="cuda")
bw = bench_ops.copy_bandwidth("cuda", bench_ops.timer("cuda"))
floor = (packed.data.numel() * 4 + out.numel() * 4) / bw
rows = []
for bh, bw_, nw in [(16, 32, 4), (8, 32, 2), (8, 64, 4), (16, 64, 4), (32, 32, 4), (32, 32, 8), (16, 128, 8), (32, 64, 8)]:
    fn = lambda: kernels.cumulative_average(packed.data, packed.table, B, positions, out, rtol=2.0**-19,
                                            block_h=bh, block_w=bw_, num_warps=nw)
    t = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e-3
    rows.append(dict(block_h=bh, block_w=bw_, num_warps=nw, us=t * 1e6, x_floor=t / floor))
    print(f"BLOCK {bh:>2}x{bw_:<3} warps {nw}: {t * 1e6:8.1f} us  {t / floor:5.2f}x floor ({floor * 1e6:.1f} us)")
json.dump(dict(floor_us=floor * 1e6, bandwidth=bw, rows=rows), open(sys.argv[1], "w"), indent=1)
EOF

echo "== 3. benchmark table"
"$PY" "$ROOT/benchmarks/bench_ops.py" --device cuda --json "$LOGDIR/bench.json" 2>&1 | tee "$LOGDIR/bench.log"

echo "== 4. runtime on CUDA: explain() vs the CPU pipeline, then fastinterp-bench"
"$PY" - "$LOGDIR/runtime.json" <<'EOF' 2>&1 | tee "$LOGDIR/runtime.log"
import json, sys
import torch, torchvision
import fastinterp
from fastinterp.generator.networks import build_generator

fails, rows = [], []
for arch in ("resnet18", "mobilenet_v3_small", "densenet121", "vgg13"):
    torch.manual_seed(0)
    cnn = getattr(torchvision.models, arch)(num_classes=10).eval()
    gen = build_generator("fast", k=8, size=64).eval()
    x = torch.rand(3, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    for kind in ("gradient", "activation"):
        cpu = fastinterp.compile(cnn, gen, representation=kind, input_size=80, backend="torch").explain(x)
        # device="cuda" (no index): the explainer copies the CPU CNN there and normalises the device
        gpu_ex = fastinterp.compile(cnn, gen, representation=kind, input_size=80, device="cuda")
        assert next(cnn.parameters()).device.type == "cpu"  # the user's CNN stays where it was
        out = gpu_ex.explain(x.cuda())
        err = (out.maps.cpu() - cpu.maps).abs().max().item()
        same = torch.equal(out.targets.cpu(), cpu.targets)
        rows.append(dict(arch=arch, kind=kind, max_abs_err=err, same_targets=same))
        print(f"{arch:20s} {kind:10s} max |maps - cpu maps| {err:.2e}  targets equal {same}")
        if not (err <= 1e-3 and same):  # cuDNN vs CPU convolutions: rounding differs; NaN fails
            fails.append(rows[-1])
json.dump(dict(rows=rows, failures=fails), open(sys.argv[1], "w"), indent=1)
EOF
"$PY" -m fastinterp.runtime.bench --device cuda --batch-sizes 1 8 --iters 30 --no-progress \
    --dtypes float32 bfloat16 --json "$LOGDIR/bench_runtime.json" 2>&1 | tee "$LOGDIR/bench_runtime.log"

echo "== 4b. ONNX on the GPU: CUDA EP and TensorRT EP (fp16) vs the torch CUDA backend (needs onnxruntime-gpu)"
"$PY" - "$LOGDIR/onnx_gpu.json" "$LOGDIR" <<'EOF' 2>&1 | tee "$LOGDIR/onnx_gpu.log"
import json, statistics, sys, time
import numpy as np, torch, torchvision
import fastinterp
from fastinterp.generator.networks import build_generator
try:
    import onnxruntime as ort
    available = ort.get_available_providers()
except ModuleNotFoundError:
    available = []
if "CUDAExecutionProvider" not in available:
    print(f"SKIPPED: onnxruntime with CUDAExecutionProvider not installed (have {available}); pip install 'fastinterp[gpu]'")
    json.dump(dict(skipped=True, providers=available), open(sys.argv[1], "w"))
    sys.exit(0)
torch.manual_seed(0)
cnn = torchvision.models.resnet50(num_classes=1000).eval()
gen = build_generator("fast", k=8, size=64).eval()
rows, fails = [], []
torch_ex = fastinterp.compile(cnn, gen, input_size=224, device="cuda")
files = {"fp32": torch_ex.export_onnx(f"{sys.argv[2]}/resnet50.onnx"),
         "fp16": torch_ex.export_onnx(f"{sys.argv[2]}/resnet50-fp16.onnx", fp16=True)}
def p50(fn, iters=30):
    fn(); fn(); torch.cuda.synchronize(); times = []
    for _ in range(iters):
        start = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)
configs = [("cuda-fp32", files["fp32"], ["CUDAExecutionProvider"]), ("cuda-fp16", files["fp16"], ["CUDAExecutionProvider"])]
if "TensorrtExecutionProvider" in available:
    configs.append(("tensorrt-fp16", files["fp32"], None))  # default providers: TensorRT (fp16 allowed) first
for batch in (1, 32):
    x = torch.rand(batch, 3, 224, 224, device="cuda")
    ref = torch_ex.explain(x)
    t_torch = p50(lambda: torch_ex.explain(x))
    rows.append(dict(backend="torch-cuda", batch=batch, p50_ms=t_torch))
    for name, path, providers in configs:
        ex = fastinterp.load_onnx(path, providers=providers)
        xn = x.cpu().numpy()
        got = ex.explain(xn)
        err = float(np.abs(got.maps - ref.maps.cpu().numpy()).max())
        t = p50(lambda: ex.explain(xn))
        rows.append(dict(backend=name, batch=batch, p50_ms=t, max_abs_err=err, providers=list(ex.providers)))
        print(f"batch {batch:3d} {name:14s} p50 {t:8.2f} ms ({t / t_torch:.2f}x torch CUDA {t_torch:.2f} ms), "
              f"max |maps - torch| {err:.1e}, providers {ex.providers}")
        if not err <= (1e-3 if name == "cuda-fp32" else 5e-2):
            fails.append(rows[-1])
json.dump(dict(rows=rows, failures=fails), open(sys.argv[1], "w"), indent=1)
EOF

echo "== 5. summary"
"$PY" - "$LOGDIR" <<'EOF'
import json, os, sys
d = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(d, name)))
    except Exception as e:
        return None
c, s, b = load("correctness.json"), load("sweep.json"), load("bench.json")
rt, rb = load("runtime.json"), load("bench_runtime.json")
if c:
    print(f"correctness: {c['checks']} checks, {len(c['failures'])} failures, worst |err| {c['worst']:.2e} (limit 1e-5)")
else:
    print("correctness: DID NOT RUN")
if s:
    best = min(s["rows"], key=lambda r: r["us"])
    print(f"best tile: {best['block_h']}x{best['block_w']} warps {best['num_warps']}: {best['us']:.1f} us = "
          f"{best['x_floor']:.2f}x floor (kernel alone; default 16x32 w4: {s['rows'][0]['x_floor']:.2f}x)")
if b:
    print(f"copy bandwidth {b['bandwidth'] / 1e9:.0f} GB/s")
    for r in b["rows"]:
        if r["model"] == "resnet50" and r["batch"] == 32 and r["size"] == 224:
            sp = f", {r['speedup']:.1f}x vs torch" if r["speedup"] else ""
            print(f"resnet50 B=32 224x224 {r['backend']:>13}: {r['ms'] * 1e3:8.1f} us, {r['x_floor']:.2f}x floor{sp}"
                  + ("  (target <= 1.6x)" if r["backend"].startswith("triton") else ""))
if rt:
    print(f"runtime on CUDA: {len(rt['rows'])} explain() checks against the CPU pipeline, {len(rt['failures'])} failures, "
          f"worst |err| {max(r['max_abs_err'] for r in rt['rows']):.2e} (limit 1e-3)")
else:
    print("runtime on CUDA: DID NOT RUN")
if rb:
    for r in rb["rows"]:
        if r["method"].startswith("explain") or r["method"] == "forward":
            print(f"bench {r['method']:>18} batch {r['batch']}: p50 {r['p50_ms']:.2f} ms, {r['ratio_to_forward']:.2f}x forward")
og = load("onnx_gpu.json")
if og and not og.get("skipped"):
    for r in og["rows"]:
        print(f"onnx gpu {r['backend']:>14} batch {r['batch']}: p50 {r['p50_ms']:.2f} ms"
              + (f", max |err| {r['max_abs_err']:.1e}" if "max_abs_err" in r else ""))
else:
    print("onnx gpu: SKIPPED or DID NOT RUN (onnxruntime-gpu)")
print(f"logs: {d}")
sys.exit(0 if c and not c["failures"] and rt and not rt["failures"] else 1)
EOF
