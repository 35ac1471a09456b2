"""``fastinterp build-dataset``: ``datasets.build.build_dataset`` over zoo checkpoints, in one
process, as ``--processes N`` local workers, or as the ranks of ``torchrun``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fastinterp.baselines import BASELINES
from fastinterp.cli.args import checkpoint_file, command_parser, key_values
from fastinterp.datasets.build import ASSIGN, STORE_DTYPES, TARGETS, build_dataset, rank_device, rank_world
from fastinterp.datasets.images import DATASETS, image_folder
from fastinterp.datasets.reader import MANIFEST
from fastinterp.datasets.zoo import load_cnn
from fastinterp.maps.formulas import METHODS
from fastinterp.maps.options import KINDS, ORDERS, PRESETS

__all__ = ["main"]


def _load_cnns(paths: Sequence[Path], device: str | torch.device = "cpu") -> list[tuple[str, nn.Module]]:
    """(id, model) of each zoo checkpoint; the id is its file name stem."""
    cnns = []
    for path in paths:
        model, _ = load_cnn(path, map_location=device)
        cnns.append((Path(path).stem, model))
    return cnns


def _spawned_build(rank: int, world: int, args: argparse.Namespace) -> None:
    """One worker of ``--processes N``: builds the shards ``s % N == rank`` and records them in its
    rank file (no process group: the parent writes the manifest once every worker is done)."""
    _run_build(args, part=(rank, world))


def main(argv: list[str] | None = None) -> int:
    """``fastinterp build-dataset``: explain a dataset with zoo CNNs into a sharded training set."""
    parser = command_parser("build-dataset")
    parser.add_argument("--cnn", type=checkpoint_file, nargs="+", required=True, metavar="CHECKPOINT",
                        help="zoo checkpoints (.safetensors); the id of each is its file name stem")
    parser.add_argument("--dataset", required=True,
                        help=f"{' or '.join(sorted(DATASETS))} (synthetic), or a folder <class>/<image>")
    parser.add_argument("--n", "--examples", dest="n", type=int, required=True,
                        help="number of examples (--examples under torchrun, whose parser takes --n for its own)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it exists)")
    parser.add_argument("--split", default="train", choices=("train", "test"), help="synthetic split")
    parser.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    parser.add_argument("--k", type=int, default=8, help="cumulative maps per example")
    parser.add_argument("--size", type=int, default=64, help="generator resolution (maps and stored image)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="representation preset (the options below override it): 'default' is what the "
                             "shipped generator was trained on, 'paper' the released code of arXiv 2301.08067, "
                             "'activation' the forward-only representation")
    parser.add_argument("--representation", dest="kind", choices=KINDS,
                        help="'gradient' (Grad-CAM-like maps of every conv: forward + backward at explain time) or "
                             "'activation' (forward only: activation maps and the head's CAM)")
    parser.add_argument("--method", choices=sorted(METHODS))
    parser.add_argument("--order", choices=ORDERS)
    parser.add_argument("--teacher", help="'pooled' (the feature map the head pools: the default preset's), 'last' (the last "
                                             "conv: the activation preset's and the shipped generators'), 'first' or a "
                                             "module name")
    parser.add_argument("--teacher-method", choices=BASELINES,
                        help="the explanation the generator learns (default: --method's map of the --teacher layer); "
                             "score-cam at the --teacher layer, rise of the whole model")
    parser.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of --teacher-method, e.g. n_masks=1000 (rise) or batch_size=128; repeatable")
    parser.add_argument("--skip-1x1", dest="skip_1x1", action=argparse.BooleanOptionalAction,
                        help="leave out layers with a 1x1 output (squeeze-excitation convs)")
    parser.add_argument("--allow-teacher-input", action="store_true",
                        help="build even if a CGM equals the teacher map (refused by default)")
    parser.add_argument("--target", default="predicted", choices=TARGETS)
    parser.add_argument("--assign", default="round_robin", choices=ASSIGN)
    parser.add_argument("--dtype", default="float16", choices=sorted(STORE_DTYPES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    parser.add_argument("--processes", type=int, default=1,
                        help="split the shards over this many local processes (rank r computes shards s with "
                             "s %% N == r); under torchrun, leave it at 1: the ranks come from torchrun")
    parser.add_argument("--device", default=None,
                        help="where the CNNs run (default: each rank's own GPU when CUDA is there, else cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: torch's, or the cores / --processes)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error(f"--processes: expected an int >= 1, got {args.processes}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected an int >= 1, got {args.threads}")
    teacher_options = key_values(parser, args.teacher_option, "--teacher-option")
    if teacher_options and args.teacher_method is None:
        parser.error("--teacher-option: needs --teacher-method")
    args.teacher_options = teacher_options or None
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.processes > 1 and torchrun:
        parser.error("--processes: under torchrun the ranks come from torchrun; leave --processes at 1")
    if args.processes > 1:
        if args.threads is None:
            args.threads = max(1, (os.cpu_count() or 1) // args.processes)
        mp.spawn(_spawned_build, args=(args.processes, args), nprocs=args.processes, join=True)
        _run_build(args, finish=True)  # verifies every worker's shards, writes the manifest
        return _report(args)
    if torchrun and not dist.is_initialized():
        dist.init_process_group("gloo")  # env:// from torchrun; only shard lists travel over it
        try:
            _run_build(args)
        finally:
            dist.destroy_process_group()
        return _report(args) if int(os.environ.get("RANK", "0")) == 0 else 0
    _run_build(args)
    return _report(args)


def _run_build(args: argparse.Namespace, part: tuple[int, int] | None = None, finish: bool = False) -> None:
    """This process's part of ``fastinterp build-dataset``: all of it alone, its ranks' shards
    under torch.distributed or as ``part``, or (``finish``) only the verification and manifest
    after the parts."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rank = part[0] if part is not None else rank_world()[0]
    cnns = _load_cnns(args.cnn, torch.device("cpu") if finish else rank_device(args.device, rank))
    dataset: object = args.dataset
    if args.dataset not in DATASETS:
        sizes = {getattr(m, "input_size", None) for _, m in cnns}
        if len(sizes) != 1:
            raise ValueError(f"--cnn: the CNNs take different input sizes {sorted(sizes)}")
        dataset = image_folder(args.dataset, sizes.pop())
    rep = {key: value for key, value in PRESETS[args.preset].items() if key in ("kind", "method", "order", "teacher", "skip_1x1")}
    rep.update({key: getattr(args, key) for key in rep if getattr(args, key) is not None})
    build_dataset(cnns, dataset, args.n, args.out, k=args.k, size=args.size, batch_size=args.batch_size,
                  shard_size=args.shard_size, seed=args.seed, split=args.split, **rep,
                  allow_teacher_input=args.allow_teacher_input,
                  teacher_method=args.teacher_method, teacher_options=args.teacher_options,
                  target=args.target, assign=args.assign,
                  dtype=args.dtype, progress=not (args.no_progress or finish),
                  max_shards=0 if finish else args.max_shards, part=part)


def _report(args: argparse.Namespace) -> int:
    state = json.loads((args.out / MANIFEST).read_text())
    done = sum(s["count"] for s in state["shards"])
    print(f"{done} of {args.n} examples in {len(state['shards'])} of {state['num_shards']} shards -> "
          f"{args.out / MANIFEST}")
    return 0
