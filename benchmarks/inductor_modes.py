"""Which TorchInductor mode the CPU should use for the explain graph: the default against
"max-autotune-no-cudagraphs" (which benchmarks GEMM/conv templates while compiling), on the graph
``compile(..., backend="inductor")`` compiles (``build_explain_graph``, the custom op for the maps),
same process, interleaved rounds (medians), compile time of each.

    python benchmarks/inductor_modes.py [--model resnet50] [--size 224] [--batch 8] [--kind activation]

Results: benchmarks/NOTES.md ("The compiled runtime").
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision

from fastinterp.export.graph import build_explain_graph
from fastinterp.generator.networks import build_generator
from fastinterp.maps.options import ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--kind", default="activation", choices=("gradient", "activation"))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--modes", nargs="+", default=["default", "max-autotune-no-cudagraphs"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    cnn = getattr(torchvision.models, args.model)(num_classes=1000).eval()
    generator = build_generator("fast", k=8, size=64).eval()
    rep = {**(DEFAULT_REPRESENTATION if args.kind == "gradient" else ACTIVATION_REPRESENTATION), "k": 8, "size": 64}
    built = build_explain_graph(cnn, generator, rep, args.size, fused_op=True)
    images, targets = built.example_inputs(args.batch)
    program = torch.export.export(built.module, (images, targets))
    graphs, times = {}, {}
    with torch.no_grad():
        for mode in args.modes:
            graph = torch.compile(program.module(), dynamic=False, fullgraph=True,
                                  mode=None if mode == "default" else mode)
            start = time.perf_counter()
            graph(images, targets)
            print(f"{mode}: compile + first call {time.perf_counter() - start:.1f} s", flush=True)
            graphs[mode], times[mode] = graph, []
        for _ in range(args.rounds):
            for mode, graph in graphs.items():
                start = time.perf_counter()
                graph(images, targets)
                times[mode].append(1e3 * (time.perf_counter() - start))
    base = statistics.median(times[args.modes[0]])
    for mode, values in times.items():
        print(f"{mode}: {statistics.median(values):.1f} ms (x {statistics.median(values) / base:.3f} of {args.modes[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
