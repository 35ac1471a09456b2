"""Python work of one ``explain()`` call beyond the CNN's forward, counted in instructions with
callgrind: deterministic, so it can show a change of a few percent that the wall-clock "Python ms"
of ``fastinterp-bench`` (a call's wall time minus the time inside its aten ops) cannot resolve on a noisy machine.

    python benchmarks/python_instructions.py                      # the installed fastinterp
    python benchmarks/python_instructions.py --tree /path/to/old  # an older checkout's package
                                                                  # (its fastinterp/ with _C and kernels/ in it)

On the shipped demo pair (mobilenet_v3_small + fast generator, 64x64, batch 1, one thread), four
runs under ``valgrind --tool=callgrind``, each after the same warm-up: no call, then ``--calls``
calls of the plain forward (inference mode), of explain (gradient) and of explain (activation).
Per call = (run - no-call run) / calls, per object file: libpython (the interpreter), libtorch_python
(torch's bindings), libtorch_cpu + libc10 (ops and dispatch), the rest. Python's cyclic garbage
collector is reported apart (which call pays for a collection is chance). Each run takes ~4 min
(importing torch under valgrind); two run at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODES = ("none", "forward", "gradient", "activation")
GROUPS = {"python": ("libpython",), "torch bindings": ("libtorch_python",),
          "torch ops + dispatch": ("libtorch_cpu", "libc10")}
NAME = re.compile(r"(c?(?:ob|fn|fl|fi|fe))=\((\d+)\)(?: (.*))?")


def workload(mode: str, calls: int) -> None:
    """What runs under callgrind: the demo pair, the same warm-up whatever the mode, then the calls."""
    import warnings

    warnings.simplefilter("ignore")
    import torch

    import fastinterp

    torch.set_num_threads(1)
    try:  # this layout
        from fastinterp import pretrained
        from fastinterp.datasets.zoo import load_cnn

        cnn, _ = load_cnn(pretrained.path("digits-mobilenet_v3_small"))
        generator, _ = fastinterp.load_generator(pretrained.path("fast"))
    except ImportError:  # the flat layout before it
        from fastinterp.demo import demo_checkpoints
        from fastinterp.zoo import load_cnn

        with demo_checkpoints() as (cnn_path, generator_path):
            cnn, _ = load_cnn(cnn_path)
            generator, _ = fastinterp.load_generator(generator_path)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    explainers = {kind: fastinterp.compile(cnn, generator, representation=kind) for kind in ("gradient", "activation")}

    def forward():
        with torch.inference_mode():
            cnn(x)

    methods = {"forward": forward, **{kind: (lambda e=e: e.explain(x)) for kind, e in explainers.items()}}
    for method in methods.values():
        for _ in range(3):
            method()
    for _ in range(calls if mode != "none" else 0):
        methods[mode]()


def per_object(path: Path) -> tuple[dict[str, int], int]:
    """Self instructions per object file of a callgrind output, and the inclusive instructions of
    Python's garbage collector (gc_collect_main)."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    totals: dict[str, int] = defaultdict(int)
    ob = fn = None
    gc, in_call = 0, False
    with open(path) as handle:
        for line in handle:
            if line[:1].isalpha():
                match = NAME.match(line.strip())
                if match:
                    kind, ident, name = match.groups()
                    table = "ob" if kind in ("ob", "cob") else "fn" if kind in ("fn", "cfn") else None
                    if table and name:
                        names[table][ident] = name
                    if kind == "ob":
                        ob = names["ob"].get(ident, ident)
                    elif kind == "fn":
                        fn = names["fn"].get(ident, ident)
                elif line.startswith("calls="):
                    in_call = True  # the next cost line is the call's inclusive cost
                continue
            parts = line.split()
            if len(parts) < 2 or not (line[:1].isdigit() or line[:1] in "+-*"):
                continue
            cost = int(parts[1])
            if fn is not None and "gc_collect_main" in fn:
                gc += cost
            if in_call:
                in_call = False
                continue
            totals[ob] += cost
    return totals, gc


def group(ob: str) -> str:
    return next((g for g, keys in GROUPS.items() if any(k in ob for k in keys)), "other")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=None, help="measure this folder's fastinterp package instead")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("out/python_instructions"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workload", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        workload(args.workload[0], int(args.workload[1]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    python = [sys.executable]
    if args.tree is not None:  # that tree first, then this environment's packages; no site hooks
        env["PYTHONPATH"] = f"{args.tree.resolve()}:{sysconfig.get_paths()['purelib']}"
        python.append("-S")

    def run(mode: str) -> Path:
        path = args.out / f"{mode}.callgrind"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}", *python,
                        str(Path(__file__).resolve()), "--workload", mode, str(args.calls)],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path

    with ThreadPoolExecutor(2) as pool:
        paths = dict(zip(MODES, pool.map(run, MODES)))
    base, base_gc = per_object(paths["none"])
    report = {}
    for mode in MODES[1:]:
        totals, gc = per_object(paths[mode])
        row: dict[str, float] = defaultdict(float)
        for ob in set(base) | set(totals):
            row[group(ob)] += (totals.get(ob, 0) - base.get(ob, 0)) / args.calls
        row["garbage collector"] = (gc - base_gc) / args.calls
        row["python"] -= row["garbage collector"]
        report[mode] = dict(row)
    for mode, row in report.items():
        print(f"{mode:>10}: " + ", ".join(f"{g} {v / 1e6:.2f} M" for g, v in row.items()))
    for kind in ("gradient", "activation"):
        beyond = {g: report[kind][g] - report["forward"][g] for g in ("python", "torch bindings")}
        print(f"explain ({kind}) beyond the forward: Python {beyond['python'] / 1e6:.2f} M instructions, "
              f"torch bindings {beyond['torch bindings'] / 1e6:.2f} M")
    if args.json is not None:
        args.json.write_text(json.dumps({"tree": str(args.tree or "installed"), "calls": args.calls,
                                         "per_call": report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
