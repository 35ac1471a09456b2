"""``fastinterp demo``: the main job (``fastinterp.demo.run_demo``)."""

from __future__ import annotations

from pathlib import Path

from fastinterp.cli.args import command_parser, positive_int
from fastinterp.demo import run_demo

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("demo")
    parser.add_argument("--out", type=Path, default=Path("out/demo_explanations.png"), help="PNG to write")
    parser.add_argument("--images", type=positive_int, default=6, help="how many images to explain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.out, num_images=args.images, seed=args.seed)
    return 0
