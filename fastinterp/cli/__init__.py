"""Command line: ``fastinterp --version`` and the subcommands in ``COMMANDS`` (each has --help).

Errors a command meets after parsing (a missing checkpoint, a folder without a manifest, a file
that is not safetensors, a refused representation...) print one line,
``fastinterp <command>: error: ...``, and exit with status 2, as argparse does for its own
errors; FASTINTERP_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from fastinterp._version import __version__

# name: (module, function, what it does: the one line of `fastinterp --help` and its --help)
COMMANDS = {
    "demo": ("fastinterp.cli", "main_demo",
             "explain freshly generated digits with the shipped CNN and generator; write a PNG grid"),
    "zoo": ("fastinterp.datasets.zoo", "main_zoo",
            "train CNN classifiers of several architectures on a synthetic dataset"),
    "build-dataset": ("fastinterp.datasets.build", "main_build",
                      "explain a dataset with CNNs into sharded (image, CGMs, teacher map) training examples"),
    "train-generator": ("fastinterp.cli", "main_train",
                        "train an explanation generator (pix2pix objective) on built examples"),
    "eval-generator": ("fastinterp.cli", "main_eval",
                       "fidelity of a trained generator to the teacher maps of built examples, per CNN"),
    "evaluate": ("fastinterp.evaluation.report", "main_evaluate",
                 "faithfulness, localisation and cost of every baseline and generator: reports/evaluation.md"),
    "export": ("fastinterp.cli", "main_export",
               "export a CNN + generator as one ONNX file (the whole explain pipeline) and the generator alone"),
}


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: prog ``fastinterp <name>``, its one-line description."""
    return argparse.ArgumentParser(prog=f"fastinterp {name}", description=COMMANDS[name][2])


# ---- argument types: bad paths fail at parsing, naming the flag and the command to run ------------

def checkpoint_file(text: str) -> Path:
    """A readable safetensors file (only its header is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.metadata()
    except (SafetensorError, OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{path} is not a safetensors file ({error})") from None
    return path


def dataset_folder(text: str) -> Path:
    """A folder written by ``fastinterp build-dataset`` (it holds manifest.json)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder; build one with `fastinterp build-dataset`")
    if not (path / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{path} holds no manifest.json; build it with `fastinterp build-dataset`")
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


# ---- subcommands ---------------------------------------------------------------------------------

def main_demo(argv: list[str] | None = None) -> int:
    parser = command_parser("demo")
    parser.add_argument("--out", type=Path, default=Path("out/demo_explanations.png"), help="PNG to write")
    parser.add_argument("--images", type=positive_int, default=6, help="how many images to explain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from fastinterp.demo import run_demo

    run_demo(args.out, num_images=args.images, seed=args.seed)
    return 0


def main_train(argv: list[str] | None = None) -> int:
    from fastinterp.generator.training import AUGMENTATIONS, STRATEGIES, TrainConfig

    parser = command_parser("train-generator")
    parser.add_argument("--data", type=dataset_folder, nargs="+", required=True,
                        help="training examples (fastinterp build-dataset); several folders (e.g. one per CNN) are "
                             "concatenated and must share the representation and the teacher")
    parser.add_argument("--val", type=dataset_folder, help="validation examples (optional)")
    parser.add_argument("--kind", default="fast", choices=("gsft", "lsft", "fast"))
    parser.add_argument("--opts", type=json.loads, default={}, help='generator options as JSON, e.g. \'{"blocks": 8}\'')
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, history)")
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--l1-weight", type=float, default=100.0)
    parser.add_argument("--strategy", default="joint", choices=STRATEGIES)
    parser.add_argument("--d-every", type=positive_int, default=100)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--val-every", type=positive_int, default=100)
    parser.add_argument("--checkpoint-every", type=positive_int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", nargs="+", default=[], choices=AUGMENTATIONS,
                        help="'flip': image, CGMs and teacher mirrored together; 'cgm-gain': each CGM times a "
                             "gain in [1/2, 2] (families' CGMs differ in contrast)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/train_state.safetensors")
    parser.add_argument("--allow-teacher-input", action="store_true",
                        help="train even if a CGM equals the teacher map (refused by default)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from fastinterp.datasets.build import ExplanationDataset
    from fastinterp.generator.networks import build_discriminator, build_generator
    from fastinterp.generator.training import train_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [ExplanationDataset(folder) for folder in args.data]
    # what the generator's inputs must be made with (fastinterp.representation_options reads it back)
    # and what it imitates (the representation's own teacher map or another method's): every
    # dataset must agree on both
    representation_keys = ("kind", "k", "size", "method", "order", "teacher", "skip_1x1", "image_resize")
    shared = (*representation_keys, "teacher_method", "teacher_options")
    first = parts[0].config
    for folder, part in zip(args.data[1:], parts[1:]):
        differ = [key for key in shared if part.config.get(key) != first.get(key)]
        if differ:
            parser.error(f"--data: {folder} was built with another representation or teacher than {args.data[0]} "
                         f"(differs in {differ})")
    train = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
    val = ExplanationDataset(args.val) if args.val else None
    sample = train[0]
    k, size = sample["cgm"].shape[0], sample["cgm"].shape[-1]
    torch.manual_seed(args.seed)
    generator = build_generator(args.kind, k=k, size=size, **args.opts)
    discriminator = build_discriminator(size=size)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, l1_weight=args.l1_weight,
                         strategy=args.strategy, d_every=args.d_every, warmup_steps=args.warmup_steps,
                         val_every=args.val_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                         augment=tuple(args.augment))
    representation = {key: first[key] for key in representation_keys if key in first}
    teacher_method = first.get("teacher_method") or first.get("method")
    cnns = [cnn for part in parts for cnn in part.config.get("cnns", [])]
    metadata = {"dataset": str(args.data[0]) if len(parts) == 1 else [str(folder) for folder in args.data],
                "dataset_config": first if len(parts) == 1 else [part.config for part in parts],
                "representation": representation, "cnns": cnns, "teacher_method": teacher_method,
                "teacher_options": first.get("teacher_options", {})}
    history = train_generator(generator, discriminator, train, config, args.out, val_data=val, resume=args.resume,
                              allow_teacher_input=args.allow_teacher_input, metadata=metadata)
    if history:
        print(json.dumps(history[-1]))
    print(f"wrote {args.out / 'generator.safetensors'}")
    return 0


def main_eval(argv: list[str] | None = None) -> int:
    parser = command_parser("eval-generator")
    parser.add_argument("--generator", type=checkpoint_file, required=True,
                        help="generator checkpoint (fastinterp train-generator)")
    parser.add_argument("--data", type=dataset_folder, nargs="+", required=True,
                        help="dataset folders (fastinterp build-dataset)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--json", type=Path, help="also write the reports here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from fastinterp.generator.checkpoint import load_generator
    from fastinterp.datasets.build import ExplanationDataset
    from fastinterp.generator.training import fidelity_report

    if args.threads:
        torch.set_num_threads(args.threads)
    generator, meta = load_generator(args.generator)
    reports = {}
    for folder in args.data:
        data = ExplanationDataset(folder)
        if data.config["k"] != generator.config["k"] or data.config["size"] != generator.config["size"]:
            parser.error(f"--data: {folder} has K={data.config['k']}, size={data.config['size']}; the "
                         f"generator expects K={generator.config['k']}, size={generator.config['size']}")
        report = fidelity_report(generator, data, batch_size=args.batch_size)
        reports[str(folder)] = report
        best = report["inputs"][report["best_input"]]
        print(f"{folder}: generator MAE {report['all']['mae']:.4f} (+-{report['all']['mae_se']:.4f}) "
              f"r {report['all']['pearson']:.4f} (+-{report['all']['pearson_se']:.4f}) "
              f"(n={report['all']['n']}); best input {report['best_input']}: MAE {best['mae']:.4f} "
              f"r {best['pearson']:.4f}")
        for cnn, row in report["by_cnn"].items():
            print(f"    {cnn:32s} MAE {row['mae']:.4f}  r {row['pearson']:.4f}  (n={row['n']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"generator": str(args.generator), "config": generator.config,
                                         "reports": reports}, indent=1))
    return 0


def _export_cnn(spec: str, num_classes: int):
    """--cnn: a zoo checkpoint (.safetensors) -> (model, metadata), or a torchvision model name
    (random weights, for a try-out) -> (model, {})."""
    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file():
        from fastinterp.datasets.zoo import load_cnn

        if not path.is_file():
            raise FileNotFoundError(f"--cnn: no checkpoint file at {path}")
        return load_cnn(path)
    import torchvision

    builders = torchvision.models.list_models(module=torchvision.models)
    if spec not in builders:
        raise ValueError(f"--cnn: {spec!r} is neither a zoo checkpoint (.safetensors) nor a torchvision classification "
                         f"model (e.g. resnet50, mobilenet_v3_small, efficientnet_b0)")
    return torchvision.models.get_model(spec, weights=None, num_classes=num_classes).eval(), {}


def main_export(argv: list[str] | None = None) -> int:
    parser = command_parser("export")
    parser.add_argument("--cnn", required=True,
                        help="a zoo CNN checkpoint (.safetensors) or a torchvision model name (random weights)")
    parser.add_argument("--generator", default="demo",
                        help="a generator checkpoint (.safetensors), or 'demo' for the shipped one (default)")
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

    import time

    import fastinterp
    from fastinterp.demo import demo_checkpoints

    cnn, meta = _export_cnn(args.cnn, args.num_classes)
    if args.input_size is not None and len(args.input_size) > 2:
        parser.error("--input-size: expected H or H W")
    size = None if args.input_size is None else (args.input_size * 2)[:2]
    with demo_checkpoints() as (_, demo_generator):
        generator = demo_generator if args.generator == "demo" else Path(args.generator)
        explainer = fastinterp.compile(cnn, generator, input_size=size, representation=args.representation)
    args.out.mkdir(parents=True, exist_ok=True)
    classes = meta.get("classes")
    value_range = "RGB in [0, 1] (the zoo CNN normalises inside)" if meta else None
    start = time.perf_counter()
    path = explainer.export_onnx(args.out / "explainer.onnx", dynamic_batch=not args.static_batch,
                                 dynamic_size=args.dynamic_size, opset=args.opset, fp16=args.fp16,
                                 class_names=classes, value_range=value_range)
    seconds = time.perf_counter() - start
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, exported in {seconds:.1f} s): {explainer!r}")
    generator_path = fastinterp.export_onnx(explainer._generator, args.out / "generator.onnx", opset=args.opset,
                                            fp16=args.fp16)
    print(f"wrote {generator_path} ({generator_path.stat().st_size / 1e6:.2f} MB)")
    if not args.no_check:
        import numpy as np
        import torch

        h, w = explainer.input_size
        images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        if meta.get("input_size") is None:  # a torchvision model: ImageNet-like normalised input
            images = (images - 0.45) / 0.225
        reference = explainer.explain(images)
        loaded = fastinterp.load_onnx(path, providers=["CPUExecutionProvider"])
        got = loaded.explain(images.numpy())
        print(f"checked in ONNX Runtime ({', '.join(loaded.providers)}) against the torch backend on 2 random images: "
              f"max |maps diff| {float(np.abs(got.maps - reference.maps.numpy()).max()):.2e}, "
              f"targets equal: {bool((got.targets == reference.targets.numpy()).all())}")
    return 0


# ---- entry point ---------------------------------------------------------------------------------

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
    module, function, _ = COMMANDS[name]
    try:
        return getattr(importlib.import_module(module), function)(argv)
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
    for name, (_, _, description) in COMMANDS.items():
        sub.add_parser(name, help=description, add_help=False)
    parser.parse_args(argv)  # --help, --version, or an unknown command (exit 2)
    parser.print_help()
    return 0
