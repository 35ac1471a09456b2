"""The exported resnet50 explain pipeline in ONNX Runtime's GPU providers against the torch CUDA
backend, side by side: p50 latency at batch 1 and 32 (fp32 and fp16 files on the CUDA execution
provider; fp16 through TensorRT when onnxruntime-gpu has it). Correctness is
tests/test_cuda.py's; this only times.

    python benchmarks/onnx_gpu.py --out DIR [--json FILE]    # needs CUDA and onnxruntime-gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision

import fastinterp
from fastinterp.generator.networks import build_generator


def p50(fn, iters: int = 30) -> float:
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the exported files")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        print(f"SKIPPED: onnxruntime has no CUDAExecutionProvider (has {available}); pip install 'fastinterp[gpu]'")
        return 0
    torch.manual_seed(0)
    cnn = torchvision.models.resnet50(num_classes=1000).eval()
    explainer = fastinterp.compile(cnn, build_generator("fast", k=8, size=64).eval(), input_size=224, device="cuda", representation="gradient")
    args.out.mkdir(parents=True, exist_ok=True)
    files = {"fp32": explainer.export_onnx(args.out / "resnet50.onnx"),
             "fp16": explainer.export_onnx(args.out / "resnet50-fp16.onnx", fp16=True)}
    configs = [("cuda-fp32", files["fp32"], ["CUDAExecutionProvider"]),
               ("cuda-fp16", files["fp16"], ["CUDAExecutionProvider"])]
    if "TensorrtExecutionProvider" in available:
        configs.append(("tensorrt-fp16", files["fp32"], None))  # default providers: TensorRT (fp16 allowed) first
    rows = []
    for batch in (1, 32):
        x = torch.rand(batch, 3, 224, 224, device="cuda")
        torch_ms = p50(lambda: explainer.explain(x))
        rows.append({"backend": "torch-cuda", "batch": batch, "p50_ms": torch_ms})
        for name, path, providers in configs:
            served = fastinterp.load_onnx(path, providers=providers)
            array = x.cpu().numpy()
            ms = p50(lambda: served.explain(array))
            rows.append({"backend": name, "batch": batch, "p50_ms": ms, "providers": list(served.providers)})
            print(f"batch {batch:3d} {name:14s} p50 {ms:8.2f} ms ({ms / torch_ms:.2f}x torch CUDA {torch_ms:.2f} ms), "
                  f"providers {served.providers}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
