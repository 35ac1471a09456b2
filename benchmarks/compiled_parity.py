"""The compiled backends on full-size torchvision CNNs: compile time, .pt2 size, and agreement
with the eager torch backend (the tests use small family members; this runs the real ones).

    python benchmarks/compiled_parity.py [--models resnet18 ...] [--size 224] [--kinds gradient activation] [--json FILE]

Per model and representation kind (random weights, randomised BatchNorm statistics, a fresh fast
generator k=8 (vgg11_bn: 4) size 64): ``compile(..., backend="inductor")`` and its first call at
batch 2 (wall time), ``Explainer.export_pt2`` (wall time, file size) and ``load_pt2``; then on 2
random images (one draw, seed 0) each against the eager backend: max |maps diff|, max |CGM diff|
(inductor), targets equal, logits max relative diff. Results: benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import fastinterp
from fastinterp.generator.networks import build_generator

sys.path.insert(0, str(Path(__file__).parent))
from onnx_export import MODELS, random_cnn  # noqa: E402  the same models, built the same way


def measure(name: str, kind: str, size: int, folder: Path) -> dict:
    cnn = random_cnn(name)
    torch.manual_seed(1)
    generator = build_generator("fast", k=4 if name.startswith("vgg11") else 8, size=64)
    eager = fastinterp.compile(cnn, generator, input_size=size, representation=kind)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ref = eager.explain(images, return_cgm=True)
    row = {"model": name, "kind": kind}
    start = time.perf_counter()
    compiled = fastinterp.compile(cnn, generator, input_size=size, representation=kind, backend="inductor")
    got = compiled.explain(images, return_cgm=True)
    row["inductor_compile_s"] = time.perf_counter() - start
    row["inductor_maps_diff"] = float((got.maps - ref.maps).abs().max())
    row["inductor_cgm_diff"] = float((got.cgm - ref.cgm).abs().max())
    row["inductor_targets_equal"] = bool((got.targets == ref.targets).all())
    row["inductor_logits_rel"] = float((got.logits - ref.logits).abs().max() / ref.logits.abs().max())
    start = time.perf_counter()
    path = eager.export_pt2(folder / f"{name}-{kind}.pt2")
    row["pt2_compile_s"] = time.perf_counter() - start
    row["pt2_mb"] = path.stat().st_size / 1e6
    start = time.perf_counter()
    loaded = fastinterp.load_pt2(path)
    out = loaded.explain(images.numpy(), return_cgm=True)
    row["pt2_load_first_s"] = time.perf_counter() - start
    row["pt2_maps_diff"] = float(np.abs(out.maps - ref.maps.numpy()).max())
    row["pt2_targets_equal"] = bool((out.targets == ref.targets.numpy()).all())
    row["pt2_logits_rel"] = float(np.abs(out.logits - ref.logits.numpy()).max() / ref.logits.abs().max())
    path.unlink()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS[:-1])
    parser.add_argument("--kinds", nargs="+", default=["gradient"], choices=("gradient", "activation"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for kind in args.kinds:
                rows.append(measure(name, kind, args.size, Path(folder)))
                r = rows[-1]
                print(f"| {name} | {kind} | {r['inductor_compile_s']:.1f} | {r['inductor_maps_diff']:.1e} | "
                      f"{r['inductor_cgm_diff']:.1e} | {r['inductor_targets_equal']} | {r['pt2_compile_s']:.1f} | "
                      f"{r['pt2_mb']:.1f} | {r['pt2_load_first_s']:.2f} | {r['pt2_maps_diff']:.1e} | "
                      f"{r['pt2_targets_equal']} |", flush=True)
    print(f"\n{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, "
          "columns: model | kind | inductor compile+first s | maps diff | CGM diff | targets equal | pt2 compile s | "
          "MB | load+first s | maps diff | targets equal")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
