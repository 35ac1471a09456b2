"""Command line: ``fastinterp --version``, ``fastinterp demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastinterp._version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastinterp", description="Fast explanations of CNN image classifiers.")
    parser.add_argument("--version", action="version", version=f"fastinterp {__version__}")
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser("demo", help="explain images of the project's own synthetic shapes; write a PNG")
    demo.add_argument("--out", type=Path, default=Path("out/demo_representation.png"), help="PNG to write")
    demo.add_argument("--images", type=int, default=4, help="how many images to explain")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fastinterp.demo import run_demo

        run_demo(args.out, num_images=args.images, seed=args.seed)
        return 0
    parser.print_help()
    return 0
