"""``fastinterp-bench``: what ``explain()`` costs beside the CNN's plain forward
(``runtime.bench.run_bench``), as a markdown table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import torch

from fastinterp import pretrained
from fastinterp.cli.args import normalize
from fastinterp.generator.networks import GENERATOR_KINDS
from fastinterp.maps.options import KINDS
from fastinterp.runtime.bench import PYTHON_MS, BenchConfig, markdown, run_bench

__all__ = ["main", "parser"]

_PROG = "fastinterp-bench"
BACKENDS = ("torch", "inductor", "onnxruntime", "pt2")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Profile Explainer.explain against the CNN's plain "
                                "forward, fastinterp.gradcam and pytorch-grad-cam, in one run: a torchvision model "
                                "with random weights (--model), your own CNN (--cnn) or a checkpoint pair "
                                "(--checkpoints), with a generator checkpoint (--generator) or a fresh one.",
                                epilog=PYTHON_MS)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="torchvision classifier, random weights (default resnet50)")
    which.add_argument("--cnn", metavar="SPEC", default=None,
                       help="your CNN, as `fastinterp fit --cnn` takes it: a zoo checkpoint (.safetensors), a shipped "
                            f"CNN ({', '.join(['demo', *pretrained.names('cnn')])}), torchvision:NAME (with "
                            "--num-classes), path/to/file.py:factory or package.module:factory")
    which.add_argument("--checkpoints", default=None,
                       help="'demo' (the shipped CNN + generator) or a folder with cnn.safetensors and "
                            "generator.safetensors")
    p.add_argument("--weights", type=Path, default=None,
                   help="the --cnn's state dict: .safetensors, or .pt/.pth (read with weights_only=True)")
    p.add_argument("--num-classes", type=int, default=None, help="outputs of a --cnn torchvision:NAME model")
    p.add_argument("--normalize", type=normalize, default=None, metavar="imagenet|none|M1,M2,M3/S1,S2,S3",
                   help="what the CNN expects of [0, 1] images, where the generator records nothing (a generator "
                        "made by `fastinterp fit` records it); in front of every method, the forward included")
    p.add_argument("--size", type=int, default=None,
                   help="input side in pixels (default: the generator's recorded input size, else the CNN's "
                        "input_size attribute, else 224)")
    p.add_argument("--classes", type=int, default=None, help="outputs of --model (default 1000)")
    p.add_argument("--generator", metavar="NAME|PATH", default=None,
                   help="a generator checkpoint: a shipped generator "
                        f"({', '.join(['demo', *pretrained.names('generator')])}) or a .safetensors path; "
                        "default: a fresh generator of --fresh-generator's kind")
    p.add_argument("--fresh-generator", default=None, choices=GENERATOR_KINDS,
                   help="kind of the fresh (untrained) generator used without --generator (default fast)")
    p.add_argument("--representations", nargs="+", default=None, choices=KINDS,
                   help="default: a --generator checkpoint's own kind; both for a fresh generator or --checkpoints")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads (default: torch's)")
    p.add_argument("--iters", type=int, default=15, help="timed rounds (default 15)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=("float32", "bfloat16", "float16"),
                   help="explain() in each (bfloat16/float16: autocast; the baselines stay float32)")
    p.add_argument("--no-pytorch-grad-cam", dest="pytorch_grad_cam", action="store_false",
                   help="skip pytorch-grad-cam even if installed")
    p.add_argument("--backends", nargs="+", default=["torch"], choices=BACKENDS,
                   help="onnxruntime: also export the CNN and each float32 pipeline to ONNX and time them in ONNX "
                        "Runtime (needs fastinterp[onnx]); inductor: compile(..., backend='inductor'), beside a "
                        "torch.compile'd forward; pt2: a package from Explainer.export_pt2 run by load_pt2; the "
                        "torch backend always runs (the reference)")
    p.add_argument("--backend", dest="backends", action="append", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--no-compile-times", dest="compile_times", action="store_false",
                   help="inductor/pt2: skip timing each compile in fresh processes (cold, then warm Inductor "
                        "cache; minutes for resnet50); --quick skips it too")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="CPU: skip measuring each method's peak memory in a fresh process of its own (one child "
                        "per method and batch size, seconds each)")
    p.add_argument("--ort-providers", nargs="+", default=None,
                   help="ONNX Runtime execution providers (default: CPU; CUDA then CPU with --device cuda)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument("--quick", action="store_true", help="a tiny run (batch 2, 3 rounds; --model: resnet18 at 64 px): "
                                                        "checks the tool, not the numbers")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say itself: flags that belong to another flag, and --generator KIND."""
    for flag in ("weights", "num_classes"):
        if getattr(args, flag) is not None and args.cnn is None:
            p.error(f"--{flag.replace('_', '-')}: only with --cnn")
    if args.normalize is not None and args.checkpoints is not None:
        p.error("--normalize: not with --checkpoints (a zoo CNN normalises inside)")
    if args.classes is not None and (args.cnn is not None or args.checkpoints is not None):
        p.error("--classes: only with --model (the outputs of --cnn torchvision:NAME are --num-classes)")
    generator = args.generator
    if generator is not None and generator not in ("demo", *pretrained.names("generator")) and \
            not Path(generator).is_file() and generator in GENERATOR_KINDS:
        # before --fresh-generator, --generator took a fresh kind; "fast" and "gsft" are shipped checkpoints now
        if args.fresh_generator is not None:
            p.error(f"--generator {generator}: a generator kind; give --fresh-generator alone")
        print(f"{_PROG}: note: --generator {generator} is a generator kind, not a checkpoint: using a fresh "
              f"{generator} generator; say --fresh-generator {generator} (--generator now takes a checkpoint)",
              file=sys.stderr)
        args.generator, args.fresh_generator = None, generator
    if args.generator is not None and args.fresh_generator is not None:
        p.error("--fresh-generator: not with --generator (a checkpoint); give one of them")
    if args.generator is not None and args.checkpoints is not None:
        p.error("--generator: not with --checkpoints (it holds the generator); give one of them")
    for name in ("iters", "warmup", "size", "classes", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')}: expected a positive int, got {value}")
    if any(b < 1 for b in args.batch_sizes) or any(t < 1 for t in args.threads):
        p.error("--batch-sizes and --threads take ints >= 1")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.threads = args.threads or [torch.get_num_threads()]
    _check(p, args)
    args.model, args.classes = args.model or "resnet50", args.classes or 1000
    args.fresh_generator = args.fresh_generator or "fast"
    config = BenchConfig(**{f.name: getattr(args, f.name) for f in fields(BenchConfig)})
    if args.quick:
        config = config.quick()
    try:
        report = run_bench(config, progress=not args.no_progress)
    except ValueError as error:  # it names a BenchConfig field: the flag of that name
        field, sep, rest = str(error).partition(":")
        flag = f"--{field.replace('_', '-')}" if sep and field in {f.name for f in fields(BenchConfig)} else field
        raise SystemExit(f"{_PROG}: error: {flag}{sep}{rest}") from None
    print(markdown(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
