"""The last lines of ``bash benchmarks/gpu_check.sh``: the cuda tests' status and the headline of
each GPU benchmark, read from the JSON files in its log folder.

    python benchmarks/gpu_summary.py LOGDIR TESTS_EXIT_STATUS     # exits with that status
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(folder: Path, name: str) -> dict | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def main() -> int:
    folder, status = Path(sys.argv[1]), int(sys.argv[2])
    print(f"cuda tests: {'passed' if status == 0 else 'FAILED'} (exit {status}; {folder / 'cuda_tests.log'})")
    sweep, kernel, runtime, onnx = (load(folder, name) for name in
                                    ("sweep.json", "bench.json", "bench_runtime.json", "onnx_gpu.json"))
    if sweep:
        best = min(sweep["rows"], key=lambda r: r["us"])
        print(f"best tile: {best['block_h']}x{best['block_w']} warps {best['num_warps']}: {best['us']:.1f} us = "
              f"{best['x_floor']:.2f}x floor (kernel alone; default 16x32 w4: {sweep['rows'][0]['x_floor']:.2f}x)")
    if kernel:
        print(f"copy bandwidth {kernel['bandwidth'] / 1e9:.0f} GB/s")
        for r in kernel["rows"]:
            if r["model"] == "resnet50" and r["batch"] == 32 and r["size"] == 224:
                speedup = f", {r['speedup']:.1f}x vs torch" if r["speedup"] else ""
                print(f"resnet50 B=32 224x224 {r['backend']:>13}: {r['ms'] * 1e3:8.1f} us, {r['x_floor']:.2f}x "
                      f"floor{speedup}")
    if runtime:
        for r in runtime["rows"]:
            if r["method"].startswith("explain") or r["method"] == "forward":
                print(f"bench {r['method']:>18} batch {r['batch']}: p50 {r['p50_ms']:.2f} ms, "
                      f"{r['ratio_to_forward']:.2f}x forward")
    if onnx:
        for r in onnx["rows"]:
            print(f"onnx gpu {r['backend']:>14} batch {r['batch']}: p50 {r['p50_ms']:.2f} ms")
    else:
        print("onnx gpu: SKIPPED or DID NOT RUN (onnxruntime-gpu)")
    print(f"logs: {folder}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
