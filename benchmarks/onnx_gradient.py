"""ONNX Runtime's gradient explain pipeline against ONNX Runtime's forward of the same CNN (issue 23).

    python benchmarks/onnx_gradient.py [--variants before mask nchwc] [--batch 8] [--rounds 15]
                                       [--folder DIR] [--profile]

Exports torchvision resnet50 (random init, 1000 classes, seed 0; fresh fast generator, gradient
representation, 224 px) once per variant of the export's decompositions, and the CNN's plain
forward, then times them in ONNX Runtime (CPU EP, 2 intra-op threads, spinning off, as the bench)
in interleaved rounds (the order rotates each round). Prints per method the median wall ms, the
median process CPU ms (less moved by other processes on the machine than wall time), the
ratios to the forward (of the medians, and the median of the per-round ratios), and the fastest
run of each and their ratio (on a shared machine: the nearest to an idle one). Then the max
|maps| and |CGM| difference of each variant from the first, and with ``--profile`` where each
file's time goes (ONNX Runtime's profiler, per op type: the sum over nodes of each node's median
over the profiled runs).

Variants (the export's decompositions, set for the export only):
    before   as before issue 23: the ReLU backward as ``Where(y <= 0, 0, g)``
    mask     the default now: the ReLU backward as ``g * (y > 0)`` (Greater, Cast, Mul)
    nchwc    under ``decompositions.nchwc_layout()``: the gradient chain in ops that ONNX
             Runtime's NCHWc transformer keeps in its blocked layout (ReLU mask clamp(2^126 y, 0, 1)
             and batch-norm scale as depthwise 1x1 convs, an identity depthwise conv after each
             ConvTranspose, Grad-CAM's spatial mean as an AveragePool)
``--folder`` keeps the exported files and reuses them on the next run (an export takes ~1 min).
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch._decomp
import torchvision

import fastinterp
from fastinterp.export import decompositions
from fastinterp.generator.networks import build_generator

aten = torch.ops.aten
CONFIG = {"session.intra_op.allow_spinning": "0"}


@contextlib.contextmanager
def _variant(name: str) -> Iterator[None]:
    """The export's decompositions as variant ``name`` has them (the table patched, the layout
    switch set), for the export only."""
    table = {}
    if name == "before":  # the stock ReLU backward: Where(y <= 0, 0, g)
        table = torch._decomp.get_decompositions([aten.threshold_backward])
    saved = {key: decompositions.DECOMPOSITIONS[key] for key in table}
    decompositions.DECOMPOSITIONS.update(table)
    try:
        with decompositions.nchwc_layout(name == "nchwc"):
            yield
    finally:
        decompositions.DECOMPOSITIONS.update(saved)


VARIANTS = ["before", "mask", "nchwc"]


def export(cnn: torch.nn.Module, folder: Path, variants: list[str]) -> dict[str, Path]:
    torch.manual_seed(1)
    explainer = fastinterp.compile(cnn, build_generator("fast"), representation="gradient", input_size=224)
    files = {"forward": folder / "forward.onnx"}
    if not files["forward"].is_file():
        with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(cnn, (torch.rand(2, 3, 224, 224),), None, dynamo=True, input_names=["images"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
        program.save(str(files["forward"]))
    for name in variants:
        files[name] = folder / f"{name}.onnx"
        if not files[name].is_file():
            start = time.perf_counter()
            with _variant(name):
                explainer.export_onnx(files[name])
            print(f"exported {name} in {time.perf_counter() - start:.0f} s")
    return files


def session(path: Path, threads: int, profile: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    for key, value in CONFIG.items():
        options.add_session_config_entry(key, value)
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed(sess: ort.InferenceSession, images: np.ndarray) -> dict[str, np.ndarray]:
    names = {i.name for i in sess.get_inputs()}
    return {"images": images, **({"targets": np.full(len(images), -1, np.int64)} if "targets" in names else {})}


def profile(path: Path, images: np.ndarray, threads: int, runs: int = 5) -> None:
    sess = session(path, threads, profile=str(path.with_suffix("")))
    for _ in range(runs):
        sess.run(None, feed(sess, images))
    trace = Path(sess.end_profiling())
    per_node, op_of = collections.defaultdict(list), {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"]].append(event["dur"] / 1e3)
            op_of[event["name"]] = event["args"]["op_name"]
    trace.unlink()
    per_op, count = collections.Counter(), collections.Counter()
    for name, times in per_node.items():
        per_op[op_of[name]] += statistics.median(times[1:])  # the first run allocates
        count[op_of[name]] += 1
    total = sum(per_op.values())
    print(f"\n{path.stem}: {len(per_node)} nodes, sum of node medians {total:.0f} ms (runs 2-{runs}, profiled)\n")
    print("| op type | nodes | ms | share |\n|---|---:|---:|---:|")
    for op, ms in per_op.most_common(10):
        print(f"| {op} | {count[op]} | {ms:.1f} | {ms / total:.1%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="keep (and reuse) the exported files here")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    cnn = torchvision.models.resnet50(num_classes=1000).eval()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="fastinterp-onnx-gradient-"))
    folder.mkdir(parents=True, exist_ok=True)
    files = export(cnn, folder, args.variants)
    images = np.random.default_rng(0).random((args.batch, 3, 224, 224), dtype=np.float32)
    sessions = {name: session(path, args.threads) for name, path in files.items()}
    outputs = {name: sess.run(None, feed(sess, images)) for name, sess in sessions.items()}  # and warm-up
    wall = {name: [] for name in sessions}
    cpu = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sess, inputs = sessions[name], feed(sessions[name], images)
            start, start_cpu = time.perf_counter(), time.process_time()
            sess.run(None, inputs)
            cpu[name].append(1e3 * (time.process_time() - start_cpu))
            wall[name].append(1e3 * (time.perf_counter() - start))
    print(f"\nresnet50 224 px, batch {args.batch}, onnxruntime {ort.__version__} CPU EP, {args.threads} threads, "
          f"spinning off, {args.rounds} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| method | wall ms | x forward | per-round x forward | CPU ms | x forward (CPU) | min wall ms | "
          "x forward (min) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    base_wall, base_cpu = statistics.median(wall["forward"]), statistics.median(cpu["forward"])
    for name in names:
        per_round = statistics.median(w / f for w, f in zip(wall[name], wall["forward"]))
        print(f"| {name} | {statistics.median(wall[name]):.0f} | {statistics.median(wall[name]) / base_wall:.3f} | "
              f"{per_round:.3f} | {statistics.median(cpu[name]):.0f} | "
              f"{statistics.median(cpu[name]) / base_cpu:.3f} | {min(wall[name]):.0f} | "
              f"{min(wall[name]) / min(wall['forward']):.3f} |")
    first = args.variants[0]
    for name in args.variants[1:]:
        maps = np.abs(outputs[name][2] - outputs[first][2]).max()
        cgm = np.abs(outputs[name][3] - outputs[first][3]).max()
        print(f"\n{name} vs {first}: max |maps diff| {maps:.1e}, max |CGM diff| {cgm:.1e}, targets equal: "
              f"{bool((outputs[name][1] == outputs[first][1]).all())}")
    if args.profile:
        for name in names:
            profile(files[name], images, args.threads)
    if args.folder is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
