"""The cumulative stage inside a compiled graph (issue 23): the custom op
``torch.ops.fastinterp.cumulative_average`` (the C++ kernel) against what TorchInductor generates
from the reference formula (``ExplainGraph.cumulative_maps``: float32 min-max, bilinear resize,
running mean), on the CPU, side by side in one process: interleaved rounds (the order reversed every
other round), each round a variant's median call over ~30 ms of calls, then the median over rounds
and the median of the per-round ratios (paired). Every variant is checked against the reference first.

    python benchmarks/custom_op.py                    # both cases
    python benchmarks/custom_op.py resnet50           # (a) only; mobilenet: (b); mobilenet_b1, mobilenet_b8
    python benchmarks/custom_op.py --threads 1        # torch and the C++ kernel on 1 thread (default 2)

Cases (random float32 maps of the conv layers' output shapes, found with forward hooks on
nn.Conv2d; K = 8 positions = ``paper_positions(L, 8)``; output 64x64; 2 threads for torch and
the C++ kernel, or --threads):
    (a) resnet50 at 224 px, batch 8: 53 maps, 112x112 ... 7x7, 61,397 values per sample
    (b) mobilenet_v3_small at 64 px (the demo), batch 1 and 8: 52 maps, 32x32 ... 1x1, 2,470 values
Variants: eager reference ("torch" backend, float64 normalisation), eager C++ (public API, backend
"cpp"), eager custom op, ``torch.compile(dynamic=False)`` of the formula, ``torch.compile`` of a
function calling the custom op. Compile time = the first call's, with an empty Inductor cache
(cold; a fresh TORCHINDUCTOR_CACHE_DIR unless one is set) and again after ``torch._dynamo.reset()``
(warm cache).

Floors (written before measuring; ~40 GB/s copy, 2 cores x ~3 GHz x 2 FMA pipes x 4 lanes (SSE2)
= ~96 GFLOP/s):
    (a) bytes: maps read 8 x 61,397 x 4 B = 1.96 MB + output written 8 x 8 x 64 x 64 x 4 B =
        1.05 MB = 3.0 MB -> 0.075 ms. FLOPs: running sum 4 per output pixel per layer
        (8 x 4,096 x 53 x 4 = 6.9 M) + min/max and normalisation of the maps (~4 per value, 2.0 M)
        + K divisions (0.26 M) = ~9.2 MFLOP -> 0.10 ms (0.05 ms with AVX2). Floor ~0.1 ms.
    (b) b1: 9.9 KB read + 131 KB written -> 3.5 us; 4,096 x 52 x 4 = 0.85 MFLOP -> 9 us.
        b8: 79 KB + 1.05 MB -> 28 us; 6.8 MFLOP -> 71 us. At this size the floor of any Python
        call is the real one: touching 52 tensors costs ~50 us.
Results and the decision: benchmarks/NOTES.md ("The fused op inside the compiled graph").
"""

from __future__ import annotations

import os
import sys
import tempfile

THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # the C++ kernel's OpenMP runtime reads it (torch's is set below)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="custom_op_inductor_"))

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from fastinterp.maps.representation import paper_positions  # noqa: E402
from fastinterp.ops import constant_rtol, cumulative_average, cumulative_average_op  # noqa: E402

SIZE = (64, 64)
K = 8
ROUNDS = 21
ROUND_MS = 30.0  # each variant's share of a round, roughly
COPY_GBS = None  # measured once


def conv_map_shapes(arch: str, side: int) -> list[tuple[int, int]]:
    """(h, w) of every nn.Conv2d output of torchvision ``arch`` at side x side, execution order."""
    model = getattr(torchvision.models, arch)(num_classes=1000).eval()
    shapes: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[-2:])))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return shapes


RTOL_FLOAT32 = constant_rtol(torch.float32)


def formula(maps: list[torch.Tensor], size: tuple[int, int], positions: list[int]) -> torch.Tensor:
    """``ExplainGraph.cumulative_maps`` (fastinterp/export/graph.py), copied: (B, h_l, w_l) maps ->
    (B, K, H, W) cumulative averages, float32 normalisation. What Inductor generates kernels for."""
    running, cgm = None, []
    for j, m in enumerate(maps[: positions[-1] + 1]):
        lo = m.amin(dim=(1, 2), keepdim=True)
        hi = m.amax(dim=(1, 2), keepdim=True)
        span = hi - lo
        varies = span > RTOL_FLOAT32 * torch.maximum(lo.abs(), hi.abs())
        normalised = torch.where(varies, (m - lo) / torch.where(varies, span, torch.ones_like(span)), 0.0)
        up = F.interpolate(normalised[:, None], size=size, mode="bilinear", align_corners=False)
        running = up if running is None else running + up
        if j in positions:
            cgm.append(running / (j + 1))
    return torch.cat(cgm, dim=1)


def copy_bandwidth_gbs(mib: int = 64) -> float:
    """Large-copy bandwidth, read + write bytes / s, median of 7."""
    src = torch.ones(mib * 2**18)
    dst = torch.empty_like(src)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


def calls_per_round(fn, maps) -> int:
    t = time.perf_counter()
    fn(maps)
    once_ms = 1e3 * (time.perf_counter() - t)
    return max(1, min(200, int(ROUND_MS / max(once_ms, 1e-3))))


def compile_seconds(fn, maps) -> tuple[float, float]:
    """(cold, warm) seconds of the first call of torch.compile(fn): empty cache, then after a reset."""
    out = []
    for _ in range(2):
        torch._dynamo.reset()
        compiled = torch.compile(fn, dynamic=False, fullgraph=True)
        t = time.perf_counter()
        compiled(maps)
        out.append(time.perf_counter() - t)
    return out[0], out[1]


def run_case(arch: str, side: int, batch: int) -> None:
    shapes = conv_map_shapes(arch, side)
    positions = paper_positions(len(shapes), K)
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(batch, h, w, generator=g) * 3 + 1 for h, w in shapes]
    values = sum(h * w for h, w in shapes)
    read_b, write_b = batch * values * 4, batch * K * SIZE[0] * SIZE[1] * 4
    floor_ms = 1e3 * (read_b + write_b) / (COPY_GBS * 1e9)
    print(f"\n## {arch} at {side} px, batch {batch}: {len(shapes)} maps, {values:,} values per sample, "
          f"positions {positions}, output {SIZE[0]}x{SIZE[1]}")
    print(f"bytes floor {floor_ms:.3f} ms ({(read_b + write_b) / 1e6:.2f} MB at {COPY_GBS:.0f} GB/s copy)")

    def reference(ms):
        return cumulative_average(ms, SIZE, positions, backend="torch")

    def cpp(ms):
        return cumulative_average(ms, SIZE, positions, backend="cpp")

    def op(ms):
        return cumulative_average_op(ms, SIZE, positions)

    def inductor_formula(ms):
        return formula(ms, SIZE, positions)

    with torch.no_grad():
        cold_f, warm_f = compile_seconds(inductor_formula, maps)
        cold_o, warm_o = compile_seconds(op, maps)
        torch._dynamo.reset()
        variants = {
            "eager reference (torch backend)": reference,
            "eager C++ (public API, cpp)": cpp,
            "eager custom op": op,
            "compiled formula (Inductor's kernels)": torch.compile(inductor_formula, dynamic=False, fullgraph=True),
            "compiled custom op": torch.compile(op, dynamic=False, fullgraph=True),
        }
        names = list(variants)
        base = names[3]
        expected = reference(maps)
        for name, fn in variants.items():
            fn(maps)  # compile (warm cache) / warm up
            diff = (fn(maps) - expected).abs().max().item()
            assert diff <= 1e-5, f"{name}: max |diff| {diff:.1e} from the reference"
        counts = {name: calls_per_round(fn, maps) for name, fn in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in names}  # per round: the median call, ms
        for r in range(ROUNDS):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                fn, calls = variants[name], []
                for _ in range(counts[name]):
                    t = time.perf_counter()
                    fn(maps)
                    calls.append(1e3 * (time.perf_counter() - t))
                times[name].append(statistics.median(calls))
    print(f"compile, first call: formula {cold_f:.1f} s cold / {warm_f:.1f} s warm cache; "
          f"custom op {cold_o:.1f} s cold / {warm_o:.1f} s warm cache")
    print("| variant | median ms | min ms | x compiled formula (paired median) | x floor |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        paired = statistics.median(a / b for a, b in zip(times[name], times[base]))
        med = statistics.median(times[name])
        print(f"| {name} | {med:.3f} | {min(times[name]):.3f} | {paired:.2f} | {med / floor_ms:.0f} |")


def main() -> None:
    global COPY_GBS
    torch.set_num_threads(THREADS)
    args = sys.argv[1:]
    if "--threads" in args:
        del args[args.index("--threads"): args.index("--threads") + 2]
    cases = {"resnet50": [("resnet50", 224, 8)],
             "mobilenet": [("mobilenet_v3_small", 64, 1), ("mobilenet_v3_small", 64, 8)],
             "mobilenet_b1": [("mobilenet_v3_small", 64, 1)], "mobilenet_b8": [("mobilenet_v3_small", 64, 8)]}
    which = args or ["resnet50", "mobilenet"]
    unknown = set(which) - set(cases)
    if unknown:
        raise SystemExit(f"cases: expected some of {sorted(cases)}, got {sorted(unknown)}")
    COPY_GBS = copy_bandwidth_gbs()
    torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(4))  # one-time Inductor start-up, outside the timings
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Inductor cache "
          f"{os.environ['TORCHINDUCTOR_CACHE_DIR']}, {ROUNDS} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for case in which:
        for arch, side, batch in cases[case]:
            run_case(arch, side, batch)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
