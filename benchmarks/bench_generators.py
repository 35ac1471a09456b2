"""Size and CPU latency of each explanation generator at its default configuration.

    python benchmarks/bench_generators.py               # K = 8, 64x64, 1 thread, batch 1 and 16

Parameters, FLOPs per sample (torch FlopCounterMode: 2 x multiply-adds, convolutions) and the
median latency per image of a no-grad forward.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from fastinterp.generator.networks import GENERATOR_KINDS, build_discriminator, build_generator, count_flops, count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, K={args.k}, {args.size}x{args.size}")
    print(f"{'model':<14}{'params':>11}{'GFLOP/sample':>14}" + "".join(f"{f'ms/img b={b}':>13}" for b in args.batches))
    for kind in (*GENERATOR_KINDS, "discriminator"):
        torch.manual_seed(0)
        net = (build_discriminator(size=args.size) if kind == "discriminator"
               else build_generator(kind, k=args.k, size=args.size)).eval()
        one = [torch.rand(1, 3, args.size, args.size),
               torch.rand(1, 1 if kind == "discriminator" else args.k, args.size, args.size)]
        flops = count_flops(net, *one)
        cells = []
        for batch in args.batches:
            inputs = [t.expand(batch, -1, -1, -1).contiguous() for t in one]
            with torch.no_grad():
                net(*inputs)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    net(*inputs)
                    times.append(time.perf_counter() - start)
            cells.append(f"{1e3 * statistics.median(times) / batch:>13.2f}")
        print(f"{kind:<14}{count_parameters(net):>11,}{flops / 1e9:>14.3f}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
