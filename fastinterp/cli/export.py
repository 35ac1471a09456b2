"""``fastinterp export``: a CNN + generator as one ONNX file (``Explainer.export_onnx``) and the
generator alone (``export.onnx.export_generator``), or with ``--format pt2`` as one AOTInductor
package (``Explainer.export_pt2``); then the file is run (ONNX Runtime / ``load_pt2``) against the
torch backend."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from fastinterp import pretrained
from fastinterp.cli.args import command_parser, normalize, positive_int, shipped_checkpoint, shipped_names
from fastinterp.datasets.zoo import load_cnn as load_zoo_cnn
from fastinterp.export.onnx import export_generator
from fastinterp.fitting.cnn import load_cnn
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.preprocess import preprocess_of, with_preprocess
from fastinterp.runtime.compiler import compile as compile_explainer
from fastinterp.runtime.onnx_backend import load_onnx
from fastinterp.runtime.pt2_backend import load_pt2

__all__ = ["main"]


def _export_cnn(spec: str, weights: Path | None, num_classes: int | None):
    """--cnn (``fitting.cnn.load_cnn``'s specs; a bare torchvision name is torchvision:NAME, random
    weights unless --weights) -> (model, metadata): a zoo checkpoint's metadata (class names, input
    size), else {}."""
    shipped = shipped_checkpoint(spec, "cnn")
    zoo = shipped[1] if shipped is not None else Path(spec) if spec.endswith(".safetensors") else None
    if weights is None and zoo is not None and zoo.is_file():
        try:
            return load_zoo_cnn(zoo)
        except ValueError:
            pass  # load_cnn says what is wrong with it, as `fastinterp fit` does
    builders = torchvision.models.list_models(module=torchvision.models)
    unknown = not zoo.is_file() if zoo is not None else ":" not in spec and not Path(spec).is_file()
    if unknown:  # a name (or a missing file): torchvision's, for backward compatibility
        if spec not in builders:
            raise ValueError(f"--cnn: {spec!r} is neither a file, a shipped CNN ({shipped_names('cnn')}) nor a "
                             "torchvision classification model (e.g. resnet50, mobilenet_v3_small, efficientnet_b0); "
                             "also taken: torchvision:NAME, path/to/file.py:factory, package.module:factory")
        spec = f"torchvision:{spec}"
    if spec.startswith("torchvision:") and num_classes is None:
        num_classes = 1000
    return load_cnn(spec, weights, num_classes, argument="--cnn"), {}


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("export")
    parser.add_argument("--cnn", required=True, metavar="SPEC",
                        help="a zoo CNN checkpoint (.safetensors), a shipped CNN (" + shipped_names("cnn") + "), a "
                             "torchvision model name (random weights unless --weights; also torchvision:NAME), "
                             "path/to/file.py:factory or package.module:factory")
    parser.add_argument("--weights", type=Path, help="the CNN's state dict: .safetensors, or .pt/.pth (read with "
                                                     "weights_only=True)")
    parser.add_argument("--normalize", type=normalize, default=None, metavar="imagenet|none|M1,M2,M3/S1,S2,S3",
                        help="what the CNN expects of [0, 1] images, where the generator records nothing (default: "
                             "the CNN takes the exported file's input as it is)")
    parser.add_argument("--generator", default="demo",
                        help="a generator checkpoint (.safetensors), 'demo' (default) or a shipped generator ("
                             + shipped_names("generator") + ")")
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                        help="onnx (default): explainer.onnx + generator.onnx, run by ONNX Runtime (no torch needed); "
                             "pt2: explainer.pt2, the pipeline compiled ahead of time by AOTInductor for --device "
                             "(fastinterp.load_pt2: torch, no model code, no compile; compiling takes minutes on a CPU)")
    parser.add_argument("--device", default="cpu", help="pt2: the device the package runs on (cpu or cuda)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for explainer.onnx and generator.onnx (or explainer.pt2)")
    parser.add_argument("--input-size", type=positive_int, nargs="+",
                        help="H [W] of the exported images (default: the zoo CNN's, or 224)")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes of a torchvision model (default 1000)")
    parser.add_argument("--representation", choices=("gradient", "activation"),
                        help="override the generator's representation kind")
    parser.add_argument("--dynamic-size", action="store_true", help="onnx: any H and W (default: fixed)")
    parser.add_argument("--static-batch", action="store_true", help="batch fixed to 2 (default: any)")
    parser.add_argument("--opset", type=positive_int, help="onnx: ONNX opset (default 18)")
    parser.add_argument("--fp16", action="store_true", help="onnx: float16 weights and compute (GPU providers)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the file (ONNX Runtime / load_pt2) against the torch backend")
    args = parser.parse_args(argv)

    if args.input_size is not None and len(args.input_size) > 2:
        parser.error("--input-size: expected H or H W")
    if args.format == "pt2":
        for flag in ("dynamic_size", "fp16", "opset"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')}: only with --format onnx (a .pt2 package is float32 at a "
                             "fixed image size)")
    elif args.device != "cpu":
        parser.error("--device: only with --format pt2 (an ONNX file picks its device when loaded)")
    path = pretrained.generator_path(args.generator)
    if not path.is_file():
        raise FileNotFoundError(f"--generator: no checkpoint file at {path}, nor a shipped generator "
                                f"({shipped_names('generator')})")
    cnn, meta = _export_cnn(args.cnn, args.weights, args.num_classes)
    size = None if args.input_size is None else (args.input_size * 2)[:2]
    generator, metadata = load_generator(path)
    recorded = preprocess_of(metadata)
    if args.normalize is not None and recorded is not None and args.normalize != recorded:
        parser.error(f"--normalize: the generator records the CNN's normalisation ({recorded['normalize']}), which "
                     "the explainer applies; leave out --normalize")
    if recorded is None:  # compile applies a recorded one itself
        cnn = with_preprocess(cnn, args.normalize)
    preprocess = recorded if recorded is not None else args.normalize
    explainer = compile_explainer(cnn, generator, input_size=size, representation=args.representation,
                                  device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    classes = meta.get("classes")
    value_range = ("RGB in [0, 1] (the zoo CNN normalises inside)" if meta else
                   "RGB in [0, 1] (normalised before the CNN)" if preprocess is not None else None)
    start = time.perf_counter()
    if args.format == "pt2":
        path = explainer.export_pt2(args.out / "explainer.pt2", dynamic_batch=not args.static_batch,
                                    class_names=classes, value_range=value_range)
    else:
        path = explainer.export_onnx(args.out / "explainer.onnx", dynamic_batch=not args.static_batch,
                                     dynamic_size=args.dynamic_size, opset=args.opset, fp16=args.fp16,
                                     class_names=classes, value_range=value_range)
    seconds = time.perf_counter() - start
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {'compiled' if args.format == 'pt2' else 'exported'} "
          f"in {seconds:.1f} s): {explainer!r}")
    if args.format == "onnx":
        generator_path = export_generator(generator, args.out / "generator.onnx", opset=args.opset, fp16=args.fp16)
        print(f"wrote {generator_path} ({generator_path.stat().st_size / 1e6:.2f} MB)")
    if not args.no_check:
        h, w = explainer.input_size
        images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        if not meta and preprocess is None:  # a CNN taking normalised input: ImageNet-like values
            images = (images - 0.45) / 0.225
        reference = explainer.explain(images.to(explainer.device))
        if args.format == "pt2":
            loaded, runs_on = load_pt2(path), "load_pt2"
        else:
            loaded = load_onnx(path, providers=["CPUExecutionProvider"])
            runs_on = f"ONNX Runtime ({', '.join(loaded.providers)})"
        got = loaded.explain(images.numpy())
        print(f"checked in {runs_on} against the torch backend on 2 random images: "
              f"max |maps diff| {float(np.abs(got.maps - reference.maps.cpu().numpy()).max()):.2e}, "
              f"targets equal: {bool((got.targets == reference.targets.cpu().numpy()).all())}")
    return 0
