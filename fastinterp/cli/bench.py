"""``fastinterp-bench``: what ``explain()`` costs beside the CNN's plain forward
(``runtime.bench.run_bench``), as a markdown table."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch

from fastinterp.maps.options import KINDS
from fastinterp.runtime.bench import BenchConfig, markdown, run_bench

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastinterp-bench", description="Profile Explainer.explain against the "
                                "CNN's plain forward, fastinterp.gradcam and pytorch-grad-cam, in one run.")
    p.add_argument("--model", default="resnet50", help="torchvision classifier, random weights (default resnet50)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--generator", default="fast", choices=("fast", "gsft", "lsft"), help="fresh generator kind")
    p.add_argument("--checkpoints", default=None,
                   help="'demo' (the shipped CNN + generator) or a folder with cnn.safetensors and "
                        "generator.safetensors, instead of --model")
    p.add_argument("--representations", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads (default: torch's)")
    p.add_argument("--iters", type=int, default=15, help="timed rounds (default 15)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=("float32", "bfloat16", "float16"),
                   help="explain() in each (bfloat16/float16: autocast; the baselines stay float32)")
    p.add_argument("--no-pytorch-grad-cam", dest="pytorch_grad_cam", action="store_false",
                   help="skip pytorch-grad-cam even if installed")
    p.add_argument("--backends", nargs="+", default=["torch"], choices=("torch", "onnxruntime"),
                   help="onnxruntime: also export the CNN and each float32 pipeline to ONNX and time them in ONNX "
                        "Runtime (needs fastinterp[onnx]); the torch backend always runs (the reference)")
    p.add_argument("--backend", dest="backends", action="append", choices=("torch", "onnxruntime"),
                   help=argparse.SUPPRESS)
    p.add_argument("--ort-providers", nargs="+", default=None,
                   help="ONNX Runtime execution providers (default: CPU; CUDA then CPU with --device cuda)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument("--quick", action="store_true", help="a tiny run (resnet18 at 64 px, batch 2, 3 rounds): "
                                                        "checks the tool, not the numbers")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.threads = args.threads or [torch.get_num_threads()]
    for name in ("iters", "warmup", "size", "classes"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise SystemExit(f"fastinterp-bench: error: --{name}: expected a positive int, got {getattr(args, name)}")
    if any(b < 1 for b in args.batch_sizes) or any(t < 1 for t in args.threads):
        raise SystemExit("fastinterp-bench: error: --batch-sizes and --threads take ints >= 1")
    config = BenchConfig(**{f.name: getattr(args, f.name) for f in fields(BenchConfig)})
    if args.quick:
        config = config.quick()
    try:
        report = run_bench(config, progress=not args.no_progress)
    except ValueError as error:
        raise SystemExit(f"fastinterp-bench: error: {error}") from None
    print(markdown(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
