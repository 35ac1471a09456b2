"""``fastinterp zoo``: ``datasets.zoo.train_cnn`` for several architectures on a synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import torch

from fastinterp.cli.args import command_parser, positive_int
from fastinterp.datasets.images import DATASETS
from fastinterp.datasets.zoo import ARCHS, DEFAULT_ZOO, STORED_DTYPES, train_cnn

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``fastinterp zoo``: train several architectures on a synthetic dataset and save them."""
    parser = command_parser("zoo")
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ZOO), choices=ARCHS, metavar="ARCH",
                        help=f"architectures to train, from {', '.join(ARCHS)} (default: %(default)s)")
    parser.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    parser.add_argument("--input-size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the arch's recipe (RECIPES)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="distinct training images per epoch (default: the arch's recipe)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the arch's recipe")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate of the one-cycle schedule (default: the arch's recipe)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float16", choices=sorted(STORED_DTYPES),
                        help="stored weight dtype (accuracy is measured on the stored weights)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/zoo"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for arch in args.archs:
        _, meta = train_cnn(arch, args.dataset, input_size=args.input_size, epochs=args.epochs,
                            train_size=args.train_size, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, test_size=args.test_size, seed=args.seed,
                            out=args.out, dtype=args.dtype, progress=not args.no_progress)
        path = args.out / f"{arch}_{args.dataset}.safetensors"
        print(f"{arch:20s} {args.dataset}: test accuracy {meta['test_accuracy']:.2%} "
              f"({meta['test_size']} images), trained in {meta['train_seconds']:.0f} s -> {path} "
              f"({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return 0
