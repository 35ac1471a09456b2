"""``fastinterp fit``: ``fitting.fit`` from the command line (a CNN specification, a folder of images)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch.distributed as dist

from fastinterp.cli.args import command_parser, image_size, key_values, normalize, positive_int
from fastinterp.fitting.pipeline import DEFAULT_REPRESENTATION_KIND, DEFAULT_TEACHER, TEACHERS, fit
from fastinterp.generator.training import AUGMENTATIONS
from fastinterp.maps.options import KINDS

__all__ = ["main"]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fastinterp fit: warning: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("fit")
    parser.add_argument("--cnn", required=True, metavar="SPEC",
                        help="a zoo checkpoint (.safetensors), a shipped CNN name, torchvision:NAME (with --num-classes), "
                             "path/to/file.py:factory or package.module:factory (a callable returning the nn.Module)")
    parser.add_argument("--weights", type=Path, help="the CNN's state dict: .safetensors, or .pt/.pth (read with "
                                                     "weights_only=True)")
    parser.add_argument("--num-classes", type=positive_int, help="outputs of a torchvision:NAME model")
    parser.add_argument("--images", required=True, type=Path,
                        help="a folder of images: <class>/<image> (labels known) or flat (each explained for its "
                             "predicted class); anything Pillow reads")
    parser.add_argument("--val-images", type=Path, help="held-out images for the report (default: a seeded 10%% of "
                                                        "--images)")
    parser.add_argument("--normalize", type=normalize, default=None, metavar="imagenet|none|M1,M2,M3/S1,S2,S3",
                        help="what the CNN expects of [0, 1] images (default none); recorded in the generator, "
                             "applied by fastinterp.compile")
    parser.add_argument("--input-size", type=image_size, metavar="H[xW]",
                        help="the CNN's input size (default: its input_size attribute, else 224)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--representation", choices=KINDS, default=DEFAULT_REPRESENTATION_KIND,
                        help="'activation': forward only at explain time (default); 'gradient': forward + backward")
    parser.add_argument("--teacher-method", choices=TEACHERS, default=DEFAULT_TEACHER,
                        help="the explanation the generator learns (of the feature map the head pools; rise: of the "
                             f"whole model); default {DEFAULT_TEACHER}")
    parser.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of --teacher-method, e.g. batch_size=128 or n_masks=2000; repeatable")
    parser.add_argument("--examples", type=positive_int, help="training examples (default: every training image)")
    parser.add_argument("--steps", type=positive_int, default=1000, help="generator training steps")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="generator training batch")
    parser.add_argument("--augment", nargs="+", default=[], choices=AUGMENTATIONS,
                        help="'flip': image, CGMs and teacher mirrored together; 'cgm-gain': each CGM times a gain")
    parser.add_argument("--report-images", type=positive_int, default=96,
                        help="held-out images scored by deletion and insertion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="where the CNN runs (default: cuda when there, else cpu)")
    parser.add_argument("--processes", type=positive_int, default=1,
                        help="build the datasets in this many local processes")
    parser.add_argument("--no-progress", action="store_true", help="one line per stage instead of progress bars")
    args = parser.parse_args(argv)
    options = key_values(parser, args.teacher_option, "--teacher-option")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if torchrun and args.processes > 1:
        parser.error("--processes: under torchrun the ranks come from torchrun; leave --processes at 1")
    if torchrun and not dist.is_initialized():
        dist.init_process_group("gloo")  # env:// from torchrun; shard lists and gradients travel over it
        try:
            return _run(parser, args, options)
        finally:
            dist.destroy_process_group()
    return _run(parser, args, options)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict) -> int:
    try:
        with warnings.catch_warnings():  # each warning as one line, when it happens (before a long build)
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            path = fit(args.cnn, args.images, out=args.out, weights=args.weights, num_classes=args.num_classes,
                       val_images=args.val_images, preprocess=args.normalize, input_size=args.input_size,
                       representation=args.representation, teacher=args.teacher_method, teacher_options=options or None,
                       examples=args.examples, steps=args.steps, batch_size=args.batch_size, augment=tuple(args.augment),
                       report_images=args.report_images, seed=args.seed, device=args.device, processes=args.processes,
                       progress=not args.no_progress)
    except (ValueError, TypeError) as error:
        parser.exit(2, f"fastinterp fit: error: {error}\n")
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"wrote {path} and {args.out / 'report.md'}")
    return 0
