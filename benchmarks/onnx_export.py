"""ONNX export of full-size torchvision CNNs: export time, file size, and agreement with the torch
backend and with a float64 reference (the tests use small members of some families; this runs
the real ones).

    python benchmarks/onnx_export.py [--models resnet18 densenet121 ...] [--size 224] [--json FILE]

Per model (random weights, randomised BatchNorm statistics, a fresh fast generator k=8 size 64,
gradient representation): ``Explainer.export_onnx`` wall time and file size, then on 2 random
images (one draw, seed 0) ONNX Runtime (CPU EP) vs the torch backend: max |maps diff|, max |CGM
diff|, targets equal, logits max relative diff; and the torch backend's and ONNX Runtime's CGMs
vs the CNN's maps computed in float64 (the torch backend's own float32 error, for scale).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import fastinterp
from fastinterp.generator.networks import build_generator
from fastinterp.maps.representation import cnn_representation

MODELS = ["resnet18", "vgg11_bn", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_y_400mf", "resnet50"]


def random_cnn(name: str) -> nn.Module:
    torch.manual_seed(0)
    cnn = getattr(torchvision.models, name)(num_classes=1000)
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return cnn.eval()


def measure(name: str, size: int, folder: Path) -> dict:
    cnn = random_cnn(name)
    torch.manual_seed(1)
    k = 4 if name.startswith("vgg11") else 8
    generator = build_generator("fast", k=k, size=64)
    explainer = fastinterp.compile(cnn, generator, input_size=size, representation="gradient")
    start = time.perf_counter()
    path = explainer.export_onnx(folder / f"{name}.onnx")
    export_s = time.perf_counter() - start
    loaded = fastinterp.load_onnx(path, providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ref = explainer.explain(images, return_cgm=True)
    got = loaded.explain(images.numpy(), return_cgm=True)
    o = explainer.representation
    exact = cnn_representation(copy.deepcopy(cnn).double(), images.double(), k=o["k"], size=o["size"],
                               order=o["order"], teacher=None).cgm.numpy()
    row = {
        "model": name, "export_s": export_s, "mb": path.stat().st_size / 1e6,
        "maps_diff": float(np.abs(got.maps - ref.maps.numpy()).max()),
        "cgm_diff": float(np.abs(got.cgm - ref.cgm.numpy()).max()),
        "targets_equal": bool((got.targets == ref.targets.numpy()).all()),
        "logits_rel": float(np.abs(got.logits - ref.logits.numpy()).max() / np.abs(ref.logits.numpy()).max()),
        "torch_cgm_vs_float64": float(np.abs(ref.cgm.numpy() - exact).max()),
        "ort_cgm_vs_float64": float(np.abs(got.cgm - exact).max()),
    }
    path.unlink()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(measure(name, args.size, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"ONNX export at {args.size}x{args.size}, gradient representation, fast generator; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, {platform.machine()} {platform.processor()}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| model | export s | file MB | max maps diff | max CGM diff | targets equal | logits rel diff | "
          "torch CGM vs float64 | ORT CGM vs float64 |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['export_s']:.1f} | {r['mb']:.1f} | {r['maps_diff']:.1e} | {r['cgm_diff']:.1e} | "
              f"{r['targets_equal']} | {r['logits_rel']:.1e} | {r['torch_cgm_vs_float64']:.1e} | "
              f"{r['ort_cgm_vs_float64']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
