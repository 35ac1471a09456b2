"""How the exported backward convolutions run in ONNX Runtime: stride-1 conv backward as a
convolution with the flipped kernel (what fastinterp exports) vs every conv backward as a
ConvTranspose (the first version), side by side.

    python experiments/onnx_conv_backward.py [--model resnet50] [--size 224] [--batch-sizes 1 8]

Both gradient pipelines and the CNN's plain forward are exported, then timed in ONNX Runtime (CPU
EP, spinning off) in interleaved rounds; prints p50 ms and the ratio to the ORT forward, the max
|maps difference| between the two files, and (largest batch) where the exported pipeline's time
goes: ONNX Runtime's profiler, summed per op type.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision

import fastinterp
from fastinterp.export import decompositions
from fastinterp.generator.networks import build_generator

aten = torch.ops.aten


def _conv_transpose_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                             output_padding, groups, output_mask):
    """The first version: every conv backward as a ConvTranspose, whatever the stride."""
    grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True,
                                  [s - 1 for s in stride], groups)
    return grad_input[:, :, : input.shape[2], : input.shape[3]], None, None


def profile_op_types(path: Path, images: np.ndarray, threads: int, runs: int = 3) -> None:
    """ONNX Runtime's profiler: ms per op type per run (mean of ``runs``) and share of the total."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images, "targets": np.full(images.shape[0], -1, np.int64)}
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
            count[event["args"]["op_name"]] += 1 / runs
    total = sum(per_op.values())
    print(f"\nWhere the gradient pipeline's time goes (batch {images.shape[0]}, ONNX Runtime profiler, ms per run, "
          f"mean of {runs} runs; profiling slows them; total {total:.0f} ms):\n")
    print("| op type | nodes | ms | share |\n|---|---:|---:|---:|")
    for op, ms in per_op.most_common(8):
        print(f"| {op} | {count[op]:.0f} | {ms:.1f} | {ms / total:.1%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    cnn = getattr(torchvision.models, args.model)().eval()
    explainer = fastinterp.compile(cnn, build_generator("fast", k=8, size=64), input_size=args.size, representation="gradient")
    folder = Path(tempfile.mkdtemp(prefix="fastinterp-conv-backward-"))
    files = {}
    key = aten.convolution_backward.default
    current = decompositions.DECOMPOSITIONS[key]
    for name, rule in (("flipped-conv", current), ("conv-transpose", _conv_transpose_backward)):
        decompositions.DECOMPOSITIONS[key] = rule
        try:
            files[name] = explainer.export_onnx(folder / f"{name}.onnx")
        finally:
            decompositions.DECOMPOSITIONS[key] = current
    with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(cnn, (torch.rand(2, 3, args.size, args.size),), None, dynamo=True,
                                    input_names=["images"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    program.save(str(folder / "forward.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    forward = ort.InferenceSession(str(folder / "forward.onnx"), options, providers=["CPUExecutionProvider"])
    loaded = {name: fastinterp.load_onnx(path, providers=["CPUExecutionProvider"], threads=args.threads,
                                         config={"session.intra_op.allow_spinning": "0"})
              for name, path in files.items()}
    print(f"{args.model} at {args.size}, onnxruntime {ort.__version__} CPU EP, {args.threads} threads, "
          f"{args.iters} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| batch | method | p50 ms | x ORT forward |\n|---:|---|---:|---:|")
    for batch in args.batch_sizes:
        images = np.random.default_rng(0).random((batch, 3, args.size, args.size), dtype=np.float32)
        methods = {"ORT forward": lambda: forward.run(None, {"images": images}),
                   **{f"explain, {name}": (lambda e=e: e.explain(images)) for name, e in loaded.items()}}
        times = {name: [] for name in methods}
        for method in methods.values():
            method()
        for _ in range(args.iters):
            for name, method in methods.items():
                start = time.perf_counter()
                method()
                times[name].append(1e3 * (time.perf_counter() - start))
        base = statistics.median(times["ORT forward"])
        for name, values in times.items():
            print(f"| {batch} | {name} | {statistics.median(values):.1f} | {statistics.median(values) / base:.3f} |")
        diff = np.abs(loaded["flipped-conv"].explain(images).maps - loaded["conv-transpose"].explain(images).maps)
        print(f"| {batch} | max abs maps difference between the two files | {diff.max():.1e} | |")
    profile_op_types(files["flipped-conv"], images, args.threads)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
