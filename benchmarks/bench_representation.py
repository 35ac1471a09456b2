"""Cost of the per-layer maps against a plain forward and against the released per-layer loop.

For each model and batch size, measured side by side in one run:
  (a) plain forward         model(x) under torch.no_grad()  (what production runs anyway)
  (f) forward with graph    model(x) with autograd recording (what a backward needs)
  (b) layer_maps            fastinterp.layer_maps(model, x): every conv layer, 1 fwd + 1 bwd
  (c) naive loop            one forward + backward per conv layer (the released code's approach)
  (v) eval view             fastinterp.maps.eval_view.eval_view(model): the per-call copy of the module
                            tree that (b) runs on (thread safety, model untouched); part of (b)

Targets (issue 2): (b)/(a) <= 2.6 for resnet50 at batch 8 (stretch 2.3); (c)/(b) >= 0.7 * L.

    python benchmarks/bench_representation.py                 # resnet50 + vgg16, batch 1 and 8
    python benchmarks/bench_representation.py --models resnet50 --batches 8 --naive-repeats 0
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import fastinterp
from fastinterp.maps.eval_view import eval_view


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=1, help="0 skips the naive loop")
    args = parser.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fastinterp {fastinterp.__version__}")
    header = (f"{'model':<10}{'B':>3}{'L':>4}{'GFLOP':>8}{'(a) fwd s':>11}{'GFLOP/s':>9}{'(f) graph s':>12}"
              f"{'(b) maps s':>11}{'(c) naive s':>12}{'b/a':>6}{'f/a':>6}{'c/b':>7}{'0.7L':>6}{'(v) view ms':>12}"
              f"{'v/a %':>7}")
    print(header)
    for arch in args.models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)().eval()
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size)
            names = fastinterp.conv_layers(model, x[:1])
            flops = forward_flops(model, x)

            def plain():
                with torch.no_grad():
                    model(x)

            def with_graph():
                model(x)

            t_a = median_time(plain, args.repeats)
            t_f = median_time(with_graph, args.repeats)
            t_b = median_time(lambda: fastinterp.layer_maps(model, x), args.repeats)
            t_v = median_time(lambda: eval_view(model), 20 * args.repeats)
            with torch.no_grad():
                targets = model(x).argmax(1)
            t_c = median_time(lambda: fastinterp.layer_maps_reference(model, x, names, targets),
                              args.naive_repeats, warmup=0) \
                if args.naive_repeats else float("nan")
            print(f"{arch:<10}{batch:>3}{len(names):>4}{flops / 1e9:>8.1f}{t_a:>11.3f}{flops / 1e9 / t_a:>9.1f}"
                  f"{t_f:>12.3f}{t_b:>11.3f}{t_c:>12.2f}{t_b / t_a:>6.2f}{t_f / t_a:>6.2f}{t_c / t_b:>7.1f}"
                  f"{0.7 * len(names):>6.1f}{t_v * 1e3:>12.2f}{100 * t_v / t_a:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
