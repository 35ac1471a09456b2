"""The evaluation report, reports/evaluation.md: ``fastinterp evaluate`` with its defaults plus the
hand-written reading (benchmarks/evaluation_reading.md), and how the shipped checkpoints it
evaluates were made.

    python benchmarks/evaluate.py            # the committed report (~30 min on the 2-core dev VM)
    python benchmarks/evaluate.py --quick    # seconds: every cell filled, numbers meaningless

Extra arguments go to ``fastinterp evaluate`` (e.g. ``--cnn checkpoints/zoo/resnet18_digits.safetensors``
to add the local zoo CNNs, ``--generator fast=path``, ``--n 64``).

The shipped checkpoints (package data, ``fastinterp/pretrained/``), each made by commands of this
repository on the dev VM, one torch thread per command:
- digits CNN + ``fast`` generator: ``fastinterp/pretrained/demo/README.md``.
- ``fast-fo`` (forward-only representation): the activation generator of
  ``python experiments/eval_forward_only.py`` (out/forward_only/activation/generator), 1,500 steps.
- ``gsft`` and ``lsft`` (the paper's generators): ``fastinterp train-generator --kind gsft|lsft``
  on the demo generator's training set (6,144 digits explained by mobilenet_v3_small, resnet18 and
  vgg13_bn; built by ``experiments/eval_generators.py``), 400 steps of batch 16, lr 2e-4,
  l1-warmup 100: the README's equal-budget comparison setting (the fast generator had 1,500 x 32).
- textured-shapes CNN: ``fastinterp zoo --archs mobilenet_v3_small --dataset shapes --input-size 64
  --threads 1``. No generator was trained on shapes: that CNN tests the generators on a dataset and
  a CNN they never saw.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    args = sys.argv[1:]
    out = "out/evaluation_quick" if "--quick" in args else "reports"
    command = [sys.executable, "-m", "fastinterp", "evaluate", "--out", out, "--threads", "2"]
    if "--quick" not in args:
        command += ["--reading", "benchmarks/evaluation_reading.md"]
        # the sections the experiments wrote (experiments/distill.py, experiments/generalisation.py)
        for section in sorted((ROOT / "reports" / "sections").glob("*.md")):
            command += ["--section", str(section.relative_to(ROOT))]
    print("$ " + " ".join(command + args), flush=True)
    return subprocess.run(command + args, cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
