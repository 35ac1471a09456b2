"""The command line: a thin layer over library calls. ``fastinterp --version`` and the subcommands
of ``commands.COMMANDS``, one module each (``demo``, ``zoo``, ``build_dataset``,
``train_generator``, ``eval_generator``, ``evaluate``, ``export``) with its ``main(argv)``;
``bench`` is the ``fastinterp-bench`` console script; ``args`` holds the shared argument types.

Errors a command meets after parsing (a missing checkpoint, a folder without a manifest, a file
that is not safetensors, a refused representation...) print one line,
``fastinterp <command>: error: ...``, and exit with status 2, as argparse does for its own
errors; FASTINTERP_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fastinterp._version import __version__
from fastinterp.cli.commands import COMMANDS

__all__ = ["COMMANDS", "main", "run_command", "version_line"]


def version_line() -> str:
    """``fastinterp --version``: the version and how the CPU kernel was built."""
    try:
        from fastinterp import _C
    except ImportError as error:
        kernel = f"C++ extension missing ({error})"
    else:
        info = _C.build_info()
        kernel = (f"C++ kernel: OpenMP, {info['threads']} threads" if info["openmp"]
                  else "C++ kernel: serial (built without OpenMP)")
        kernel += ", AVX2" if info["avx2"] else ""
    return f"fastinterp {__version__} ({kernel})"


def run_command(name: str, argv: list[str]) -> int:
    """Run subcommand ``name``; an error it raises becomes one line on stderr and status 2."""
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module).main(argv)
    except (ValueError, TypeError, OSError, RuntimeError, ModuleNotFoundError) as error:
        if os.environ.get("FASTINTERP_DEBUG") == "1":
            raise
        hint = "" if isinstance(error, ModuleNotFoundError) else " (FASTINTERP_DEBUG=1 shows the traceback)"
        print(f"fastinterp {name}: error: {error}{hint}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="fastinterp", description="Fast explanations of CNN image classifiers (arXiv 2301.08067).",
        epilog="`fastinterp <command> --help` lists a command's options.")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    for name, (_, description) in COMMANDS.items():
        sub.add_parser(name, help=description, add_help=False)
    parser.parse_args(argv)  # --help, --version, or an unknown command (exit 2)
    parser.print_help()
    return 0
