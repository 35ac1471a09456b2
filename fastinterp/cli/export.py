"""``fastinterp export``: a CNN + generator as one ONNX file (``Explainer.export_onnx``) and the
generator alone (``export.onnx.export_generator``), then checked in ONNX Runtime against the torch
backend."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from fastinterp import pretrained
from fastinterp.cli.args import command_parser, positive_int
from fastinterp.datasets.zoo import load_cnn
from fastinterp.export.onnx import export_generator
from fastinterp.generator.checkpoint import load_generator
from fastinterp.runtime.compiler import compile as compile_explainer
from fastinterp.runtime.onnx_backend import load_onnx

__all__ = ["main"]


def _export_cnn(spec: str, num_classes: int):
    """--cnn: a zoo checkpoint (.safetensors) -> (model, metadata), or a torchvision model name
    (random weights, for a try-out) -> (model, {})."""
    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--cnn: no checkpoint file at {path}")
        return load_cnn(path)
    builders = torchvision.models.list_models(module=torchvision.models)
    if spec not in builders:
        raise ValueError(f"--cnn: {spec!r} is neither a zoo checkpoint (.safetensors) nor a torchvision classification "
                         f"model (e.g. resnet50, mobilenet_v3_small, efficientnet_b0)")
    return torchvision.models.get_model(spec, weights=None, num_classes=num_classes).eval(), {}


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("export")
    parser.add_argument("--cnn", required=True,
                        help="a zoo CNN checkpoint (.safetensors) or a torchvision model name (random weights)")
    parser.add_argument("--generator", default="demo",
                        help="a generator checkpoint (.safetensors), 'demo' (default) or a shipped generator's name")
    parser.add_argument("--out", type=Path, required=True, help="folder for explainer.onnx and generator.onnx")
    parser.add_argument("--input-size", type=positive_int, nargs="+",
                        help="H [W] of the exported images (default: the zoo CNN's, or 224)")
    parser.add_argument("--num-classes", type=positive_int, default=1000, help="classes of a torchvision model")
    parser.add_argument("--representation", choices=("gradient", "activation"),
                        help="override the generator's representation kind")
    parser.add_argument("--dynamic-size", action="store_true", help="any H and W (default: fixed)")
    parser.add_argument("--static-batch", action="store_true", help="batch fixed to 2 (default: any)")
    parser.add_argument("--opset", type=positive_int, help="ONNX opset (default 18)")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute (GPU providers)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the file in ONNX Runtime against the torch backend")
    args = parser.parse_args(argv)

    cnn, meta = _export_cnn(args.cnn, args.num_classes)
    if args.input_size is not None and len(args.input_size) > 2:
        parser.error("--input-size: expected H or H W")
    size = None if args.input_size is None else (args.input_size * 2)[:2]
    path = pretrained.generator_path(args.generator)
    if not path.is_file():
        raise FileNotFoundError(f"--generator: no checkpoint file at {path}")
    generator, _ = load_generator(path)
    explainer = compile_explainer(cnn, generator, input_size=size, representation=args.representation)
    args.out.mkdir(parents=True, exist_ok=True)
    classes = meta.get("classes")
    value_range = "RGB in [0, 1] (the zoo CNN normalises inside)" if meta else None
    start = time.perf_counter()
    path = explainer.export_onnx(args.out / "explainer.onnx", dynamic_batch=not args.static_batch,
                                 dynamic_size=args.dynamic_size, opset=args.opset, fp16=args.fp16,
                                 class_names=classes, value_range=value_range)
    seconds = time.perf_counter() - start
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, exported in {seconds:.1f} s): {explainer!r}")
    generator_path = export_generator(generator, args.out / "generator.onnx", opset=args.opset, fp16=args.fp16)
    print(f"wrote {generator_path} ({generator_path.stat().st_size / 1e6:.2f} MB)")
    if not args.no_check:
        h, w = explainer.input_size
        images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        if meta.get("input_size") is None:  # a torchvision model: ImageNet-like normalised input
            images = (images - 0.45) / 0.225
        reference = explainer.explain(images)
        loaded = load_onnx(path, providers=["CPUExecutionProvider"])
        got = loaded.explain(images.numpy())
        print(f"checked in ONNX Runtime ({', '.join(loaded.providers)}) against the torch backend on 2 random images: "
              f"max |maps diff| {float(np.abs(got.maps - reference.maps.numpy()).max()):.2e}, "
              f"targets equal: {bool((got.targets == reference.targets.numpy()).all())}")
    return 0
