"""What each memory saving of the gradient pipeline buys (issue 24).

Variants of Explainer.explain (gradient representation), each adding one saving to the previous:

    before       autograd saves what it always does; every layer's gradient is returned and held
                 until all CAMs are computed (the pipeline before issue 24)
    streaming    each layer's CAM computed in the backward as its gradient completes; no gradient
                 held, each output released once the backward is past it (capture(reduce=...))
    input        (shipped) a widening 1x1 conv keeps its (at most half as large) input, not its
                 output, and its Grad-CAM is computed from the input; eval batch_norm saves a (C,)
                 scale, not its input (fastinterp.maps.lean_autograd.lean_batch_norms)

The savings measured and left out (lean conv/relu/max-pool saves, bit-packed relu masks,
malloc_trim during the pass) are variants of this script at commit e604813; their numbers are in
benchmarks/NOTES.md.

Memory: each variant (and the inference-mode forward) in a fresh process, with
``fastinterp.runtime.bench_memory.measure``: after a warm-up call and malloc_trim(0), the peak
resident memory (VmHWM) of one call, absolute and minus what the process held before the call.
Time (--time): the variants interleaved in one process, p50 of each, ratio to "before".

    python benchmarks/gradient_memory.py --batch-sizes 8 32 [--time --rounds 5]

resnet50, random weights, 224 px, 2 threads, a fresh fast generator (as the issue measured).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import subprocess
import sys
import time
import warnings

VARIANTS = ["before", "streaming", "input"]


@contextlib.contextmanager
def variant(name: str):
    """Undo the savings that come after ``name`` in VARIANTS (monkeypatches, restored on exit)."""
    from fastinterp.maps import representation

    capture_module = importlib.import_module("fastinterp.maps.capture")
    level = VARIANTS.index(name)
    saved = (capture_module.lean_batch_norms, representation.capture, capture_module._widening_1x1_input)
    try:
        if level < 2:
            capture_module.lean_batch_norms = lambda view: None
            capture_module._widening_1x1_input = lambda *args: None
        if level < 1:
            plain = saved[1]
            representation.capture = lambda *args, reduce=None, **kwargs: plain(*args, **kwargs)
        yield
    finally:
        capture_module.lean_batch_norms, representation.capture, capture_module._widening_1x1_input = saved


def setup(batch: int, threads: int):
    import torch
    import torchvision

    import fastinterp
    from fastinterp.generator.networks import build_generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cnn = torchvision.models.resnet50(weights=None).eval()
    generator = build_generator("fast", k=8, size=64).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = fastinterp.compile(cnn, generator, representation="gradient", input_size=224)
    images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return cnn, explainer, images


def child(name: str, batch: int, threads: int) -> dict:
    import torch

    from fastinterp.runtime.bench_memory import measure

    cnn, explainer, images = setup(batch, threads)
    if name == "forward":
        def call():
            with torch.inference_mode():
                cnn(images)
        return measure(call)
    with variant(name):
        return measure(lambda: explainer.explain(images))


def child_time(name: str, batch: int, threads: int, calls: int = 4) -> float:
    """The median seconds of ``calls`` calls after a warm-up, in this (fresh) process."""
    cnn, explainer, images = setup(batch, threads)
    with variant(name):
        explainer.explain(images)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            explainer.explain(images)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(batch: int, threads: int, rounds: int, variants: list[str]) -> dict[str, float]:
    """p50 seconds of the forward and each variant, interleaved in this process."""
    import torch

    cnn, explainer, images = setup(batch, threads)
    times: dict[str, list[float]] = {name: [] for name in ["forward", *variants]}
    for round_ in range(rounds + 1):  # the first round warms up
        for name in times:
            with contextlib.nullcontext() if name == "forward" else variant(name):
                start = time.perf_counter()
                if name == "forward":
                    with torch.inference_mode():
                        cnn(images)
                else:
                    explainer.explain(images)
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--time", action="store_true", help="also time the variants, interleaved in one process")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--time-variants", nargs="+", default=VARIANTS, choices=VARIANTS, metavar="VARIANT",
                   help="the variants --time interleaves (default: all)")
    p.add_argument("--child-time", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads)))
        return
    if args.child_time:
        print(json.dumps(child_time(args.child_time[0], int(args.child_time[1]), args.threads)))
        return
    print("| batch | variant | peak RSS MB | x forward | call MB (peak - held) | x forward |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch in args.batch_sizes:
        results = {}
        for name in ["forward", *VARIANTS]:
            run = subprocess.run([sys.executable, __file__, "--child", name, str(batch), "--threads",
                                  str(args.threads)], capture_output=True, text=True, check=True)
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            r, f = results[name], results["forward"]
            print(f"| {batch} | {name} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / f['peak_rss_mb']:.2f} | "
                  f"{r['peak_mb']:.0f} | {r['peak_mb'] / f['peak_mb']:.2f} |", flush=True)
    if args.time:
        for batch in args.batch_sizes:
            t = timings(batch, args.threads, args.rounds, args.time_variants)
            print(f"\nbatch {batch}, p50 of {args.rounds} interleaved rounds: "
                  + ", ".join(f"{name} {1e3 * s:.0f} ms ({s / t['before']:.3f}x before)" for name, s in t.items()))


if __name__ == "__main__":
    main()
