"""Benchmark of fastinterp.ops.cumulative_average backends at realistic shapes (not a timed test).

Shapes: the per-layer conv output shapes of torchvision resnet50 (53 maps) and vgg16 (13 maps)
at a 224x224 input (found at start-up on the meta device: no weights, no downloads), K = 8
positions by ``fastinterp.paper_positions``, batch 1 / 8 / 32, output 64x64 and 224x224,
float32 maps.

For each backend: median time, effective GB/s (floor bytes / time), speed-up over the PyTorch
reference ("torch" backend) measured in the same run, and time / floor where
    floor = (bytes of packed maps read + B*K*H*W*4 bytes written) / copy bandwidth,
the bandwidth being measured here by a large tensor copy (read + write bytes / time).
On CPU the timer is a median of N calls after warm-up (the minimum is printed too: the dev
box is shared, and another job's threads stall OpenMP barriers); on CUDA
``triton.testing.do_bench`` (median; no minimum). The Triton backend is only timed on CUDA (TRITON_INTERPRET is a test tool, not a
performance path). "triton-kernel" times the two launches alone on pre-packed maps (no packing,
no host sync, no argument checks).

    python benchmarks/bench_ops.py                        # all shapes, device cuda if present
    python benchmarks/bench_ops.py --device cpu --batches 8 --sizes 224 --models resnet50
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import fastinterp
from fastinterp.ops import constant_rtol, cumulative_average
from fastinterp.ops.packing import pack_maps

K = 8


# What layer_shapes() finds (torchvision 0.29), for machines without torchvision.
KNOWN_SHAPES = {
    "resnet50": [112] + [56] * 11 + [28] * 13 + [14] * 19 + [7] * 9,
    "vgg16": [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3,
}


def layer_shapes(name: str) -> list[tuple[int, int]]:
    """(h, w) of every conv layer's output, in execution order, for a 224x224 input."""
    try:
        import torchvision
    except ImportError:
        print(f"# torchvision not installed: using the recorded {name} shapes")
        return [(s, s) for s in KNOWN_SHAPES[name]]
    model = getattr(torchvision.models, name)().eval()  # random init, no download
    names = fastinterp.conv_layers(model, torch.zeros(1, 3, 32, 32))  # execution order (cheap input)
    model = model.to("meta")  # shapes at 224 without computing anything
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(output.shape[-2:]))  # returns None: output unchanged
        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in names]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    for h in hooks:
        h.remove()
    return [shapes[n] for n in names]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


LAST_MIN = [float("nan")]  # the fastest call of the last cpu_median (a shared, noisy machine)


def cpu_median(fn, min_repeats: int = 7, budget_s: float = 2.0, warmup: int = 2) -> float:
    """Median seconds of fn() over at least ``min_repeats`` calls (more while within budget);
    the minimum goes to LAST_MIN[0]."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start_all < budget_s and len(times) < 50):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    LAST_MIN[0] = min(times)
    return statistics.median(times)


def timer(device: str):
    if device == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e-3
    return cpu_median


def copy_bandwidth(device: str, time_fn) -> float:
    """Bytes/s of a large copy (read + write counted), the memory roof of this machine."""
    n = (1 << 28) if device == "cuda" else (1 << 26)  # 1 GiB / 256 MiB of float32
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src))
    del src, dst
    return 2 * n * 4 / t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument("--backends", nargs="+", default=None,
                        help="default: torch cpp on cpu; torch triton triton-kernel on cuda")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    device = args.device
    backends = args.backends or (["torch", "cpp"] if device == "cpu" else ["torch", "triton", "triton-kernel"])
    time_fn = timer(device)
    bandwidth = copy_bandwidth(device, time_fn)
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    try:
        from fastinterp import _C

        build = _C.build_info()
    except ImportError:  # an unbuilt source tree (the GPU check stages one): no "cpp" backend
        build = "not built"
    print(f"# cumulative_average on {device} ({name}), torch {torch.__version__}, {threads} threads, _C {build}")
    print(f"# copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write); K = {K}; float32 maps")
    print("| model | B | HxW | backend | median ms | min ms | GB/s | vs torch | floor ms | x floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        shapes = layer_shapes(model)
        positions = fastinterp.paper_positions(len(shapes), K)
        used = positions[-1] + 1
        for batch in args.batches:
            g = torch.Generator().manual_seed(0)
            maps = [torch.randn(batch, h, w, generator=g).to(device) for h, w in shapes]
            read = sum(batch * h * w * 4 for h, w in shapes[:used])
            for side in args.sizes:
                size = (side, side)
                written = batch * K * side * side * 4
                floor = (read + written) / bandwidth
                out = torch.empty(batch, K, side, side, device=device)
                ref_t = None
                for backend in backends:
                    if backend == "triton-kernel":
                        from fastinterp.kernels import cumulative_average as kernels

                        packed = pack_maps(maps, used, torch.float32)

                        def fn(packed=packed):
                            kernels.cumulative_average(packed.data, packed.table, batch, positions, out,
                                                       rtol=constant_rtol(torch.float32))
                    else:
                        def fn(backend=backend):
                            cumulative_average(maps, size, positions, backend=backend, out=out)
                            sync(device)
                    LAST_MIN[0] = float("nan")
                    t = time_fn(fn)
                    fastest = LAST_MIN[0]
                    if backend == "torch":
                        ref_t = t
                    row = dict(model=model, L=len(shapes), batch=batch, size=side, backend=backend, ms=t * 1e3,
                               min_ms=fastest * 1e3,
                               gbps=(read + written) / t / 1e9, speedup=(ref_t / t) if ref_t else None,
                               floor_ms=floor * 1e3, x_floor=t / floor)
                    rows.append(row)
                    speed = f"{row['speedup']:.1f}x" if row["speedup"] else "-"
                    print(f"| {model} | {batch} | {side}x{side} | {backend} | {row['ms']:.3f} | {row['min_ms']:.3f} | "
                          f"{row['gbps']:.1f} | "
                          f"{speed} | {row['floor_ms']:.3f} | {row['x_floor']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=device, name=name, bandwidth=bandwidth, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
