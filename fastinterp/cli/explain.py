"""``fastinterp explain``: ``runtime.files.explain_files`` from the command line: a CNN (as ``fit``
takes it) and a generator (a shipped name or a checkpoint), or one exported ``.onnx`` file, and
image files or folders. With ``--onnx`` nothing here imports torch: onnxruntime, numpy, Pillow
and matplotlib run it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastinterp.cli.args import command_parser, image_size, normalize, positive_int
from fastinterp.runtime.files import PREDICTED, explain_files

__all__ = ["main"]


def _target(text: str) -> str | int:
    if text == PREDICTED:
        return PREDICTED
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'predicted' or a class index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a class index >= 0, got {value}")
    return value


def _normalize_text(text: str) -> str:
    """--normalize checked at parsing (``cli.args.normalize``), kept as text: "none" must stay
    distinct from leaving it out (the generator's recorded preprocessing)."""
    normalize(text)
    return text


def parser() -> argparse.ArgumentParser:
    p = command_parser("explain")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGES_OR_FOLDERS",
                   help="image files (anything Pillow reads) and folders (their image files, subfolders included)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: <name>.png (overlay on the original photo), <name>.npy (the float32 map at "
                        "the photo's size), predictions.json")
    model = p.add_argument_group("the model (--cnn and --generator, or --onnx)")
    model.add_argument("--cnn", metavar="SPEC",
                       help="as `fastinterp fit` takes it: a zoo checkpoint (.safetensors), a shipped CNN name or "
                            "'demo', torchvision:NAME (with --num-classes), path/to/file.py:factory or "
                            "package.module:factory")
    model.add_argument("--weights", type=Path, help="the CNN's state dict: .safetensors, or .pt/.pth (weights_only)")
    model.add_argument("--num-classes", type=positive_int, help="outputs of a torchvision:NAME model")
    model.add_argument("--normalize", type=_normalize_text, metavar="imagenet|none|M1,M2,M3/S1,S2,S3",
                       help="what the CNN expects of [0, 1] images (default: what the generator records)")
    model.add_argument("--generator", metavar="NAME|PATH",
                       help="a generator checkpoint, 'demo' or a shipped generator's name "
                            "(fastinterp.pretrained.names())")
    model.add_argument("--onnx", type=Path, metavar="FILE",
                       help="an exported explainer (Explainer.export_onnx / `fastinterp export`), run by ONNX Runtime "
                            "alone: no torch needed, no --cnn / --generator")
    p.add_argument("--targets", nargs="+", type=_target, default=[PREDICTED], metavar="predicted|N",
                   help="the class(es) to explain: 'predicted' (default) and / or class indices; several: one output "
                        "per target, <name>_<target>.png")
    p.add_argument("--size", type=image_size, metavar="H[xW]",
                   help="the size images are resized to for the CNN (default: the explainer's input size: the "
                        "generator's recorded one, the CNN's input_size, else 224; an ONNX file's fixed size; "
                        "required for an ONNX file exported with dynamic_size)")
    p.add_argument("--class-names", type=Path, metavar="FILE",
                   help="a text file with one class name per line (default: what the generator or CNN records)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per explain() call (default 32)")
    p.add_argument("--backend", choices=("torch", "inductor", "onnxruntime"), default="torch",
                   help="torch (default); inductor: the pipeline compiled by TorchInductor for --batch-size (minutes "
                        "the first time, seconds from its cache: for many images); onnxruntime: the pipeline exported "
                        "once (cached) and run by ONNX Runtime")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the heat map in the overlay (default 0.5)")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap of the overlay (default jet)")
    p.add_argument("--overlay-format", choices=("png", "jpg"), default="png",
                   help="png (default, lossless) or jpg (quality 90: ~20x faster to write for photo-size overlays)")
    p.add_argument("--io-threads", type=int, default=None,
                   help="threads reading and writing files beside explain (default: 2 on machines with more than 2 "
                        "cores, else 0: they pay only where explain leaves a core idle)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _class_names(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"--class-names: {path} is not a file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"--class-names: {path} holds no names (one per line)")
    return names


def _torch_explainer(args: argparse.Namespace, class_names: list[str] | None):
    """(explainer, input size, what it is) from --cnn / --generator (imports torch)."""
    import warnings

    from fastinterp import pretrained
    from fastinterp.fitting.cnn import load_cnn
    from fastinterp.maps.preprocess import parse_normalize
    from fastinterp.runtime.compiler import compile as compile_explainer

    # compile's preprocess: None keeps what the generator records; "none" says none
    preprocess = None if args.normalize in (None, "none") else parse_normalize(args.normalize)
    preprocess = "none" if args.normalize == "none" else preprocess

    cnn = load_cnn(args.cnn, args.weights, args.num_classes)
    generator = pretrained.generator_path(args.generator)
    if not generator.is_file():
        raise ValueError(f"--generator: {args.generator} is neither a checkpoint file nor a shipped generator ('demo' "
                         f"or one of {sorted(pretrained.names('generator'))})")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"fastinterp explain: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        explainer = compile_explainer(cnn, generator, device=args.device, input_size=args.size, backend=args.backend,
                                      preprocess=preprocess, class_names=class_names)
    size = args.size or explainer.input_size
    return explainer, size, {"cnn": args.cnn, "weights": None if args.weights is None else str(args.weights),
                             "generator": args.generator, "backend": args.backend}


def _onnx_explainer(args: argparse.Namespace, class_names: list[str] | None):
    from fastinterp.runtime.onnx_backend import load_onnx

    explainer = load_onnx(args.onnx)
    if class_names is not None:
        if len(class_names) != explainer.num_classes:
            raise ValueError(f"--class-names: {len(class_names)} names, but the exported CNN has "
                             f"{explainer.num_classes} outputs")
        explainer.class_names = tuple(class_names)
    if args.size is not None and explainer.input_size is not None and tuple(args.size) != explainer.input_size:
        explainer.close()
        raise ValueError(f"--size: {args.onnx} takes {explainer.input_size[0]}x{explainer.input_size[1]} images "
                         "(exported without dynamic_size); leave out --size")
    if args.size is None and explainer.input_size is None:
        explainer.close()
        raise ValueError(f"--size: {args.onnx} takes images of any size (exported with dynamic_size); pass the size "
                         "the CNN should see, --size H[xW]")
    size = args.size or explainer.input_size
    return explainer, size, {"onnx": str(args.onnx), "backend": "onnxruntime", "providers": list(explainer.providers)}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.onnx is not None:
        clash = [flag for flag, value in (("--cnn", args.cnn), ("--weights", args.weights), ("--generator",
                 args.generator), ("--normalize", args.normalize), ("--num-classes", args.num_classes)) if value]
        if clash:
            p.error(f"--onnx runs an exported file, which holds the CNN, the generator and the preprocessing; leave "
                    f"out {', '.join(clash)}")
        if args.backend != "torch" or args.device != "cpu":
            p.error("--onnx picks ONNX Runtime's execution providers itself; leave out --backend and --device")
    elif args.cnn is None or args.generator is None:
        p.error("give --cnn and --generator (or --onnx FILE)")
    if args.io_threads is not None and args.io_threads < 0:
        p.error(f"--io-threads: expected an int >= 0, got {args.io_threads}")
    class_names = _class_names(args.class_names)
    explainer, size, about = (_onnx_explainer if args.onnx is not None else _torch_explainer)(args, class_names)

    def skipped(file: str, error: str) -> None:
        print(f"fastinterp explain: skipped {file}: {error}", file=sys.stderr, flush=True)

    with explainer:
        report = explain_files(explainer, args.images, args.out, size=tuple(size), targets=args.targets,
                               batch_size=args.batch_size, alpha=args.alpha, colormap=args.colormap,
                               overlay_format=args.overlay_format,
                               io_threads=args.io_threads, progress=not args.no_progress, on_error=skipped,
                               about=about)
    done = len(report.explained)
    print(f"explained {done} image{'s' if done != 1 else ''} into {args.out} ({report.seconds:.1f} s, "
          f"{report.explain_seconds:.1f} s in explain); predictions in {report.predictions}"
          + (f"; {len(report.failed)} failed (listed in predictions.json)" if report.failed else ""))
    return 1 if report.failed else 0
