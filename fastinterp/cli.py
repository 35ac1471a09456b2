"""Command line: ``fastinterp --version`` and the subcommands below (each has ``--help``).

    fastinterp demo              explain freshly generated images with the shipped models
    fastinterp zoo               train classifiers of several architectures on a built-in dataset
    fastinterp build-dataset     run CNNs over a dataset, write (image, CGMs, teacher) shards
    fastinterp train-generator   train an explanation generator (pix2pix objective) on shards
    fastinterp eval-generator    fidelity of a trained generator to the teacher, per CNN
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastinterp._version import __version__


def main_train(argv: list[str] | None = None) -> int:
    """``fastinterp train-generator``: GAN training of a generator on a built dataset."""
    from fastinterp.training import STRATEGIES, TrainConfig

    parser = argparse.ArgumentParser(prog="fastinterp train-generator", description=main_train.__doc__)
    parser.add_argument("--data", type=Path, required=True, help="training shards (fastinterp build-dataset)")
    parser.add_argument("--val", type=Path, help="validation shards (optional)")
    parser.add_argument("--kind", default="fast", choices=("gsft", "lsft", "fast"))
    parser.add_argument("--opts", default="{}", help='generator options as JSON, e.g. \'{"blocks": 8}\'')
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, history)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--l1-weight", type=float, default=100.0)
    parser.add_argument("--strategy", default="joint", choices=STRATEGIES)
    parser.add_argument("--d-every", type=int, default=100)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from --out/train_state.safetensors")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from fastinterp.dataset_builder import ExplanationDataset
    from fastinterp.models import build_discriminator, build_generator
    from fastinterp.training import train_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    train = ExplanationDataset(args.data)
    val = ExplanationDataset(args.val) if args.val else None
    sample = train[0]
    k, size = sample["cgm"].shape[0], sample["cgm"].shape[-1]
    torch.manual_seed(args.seed)
    generator = build_generator(args.kind, k=k, size=size, **json.loads(args.opts))
    discriminator = build_discriminator(size=size)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, l1_weight=args.l1_weight,
                         strategy=args.strategy, d_every=args.d_every, warmup_steps=args.warmup_steps,
                         val_every=args.val_every, checkpoint_every=args.checkpoint_every, seed=args.seed)
    manifest = json.loads((args.data / "manifest.json").read_text())
    dataset_config = manifest.get("config", {})
    # what cnn_representation(model, images, **representation) must be given to feed this generator
    representation = {key: dataset_config[key] for key in ("k", "size", "method", "order", "teacher")
                      if key in dataset_config}
    history = train_generator(generator, discriminator, train, config, args.out, val_data=val, resume=args.resume,
                              metadata={"dataset": str(args.data), "dataset_config": dataset_config,
                                        "representation": representation, "cnns": dataset_config.get("cnns")})
    if history:
        print(json.dumps(history[-1]))
    print(f"wrote {args.out / 'generator.safetensors'}")
    return 0


def main_eval(argv: list[str] | None = None) -> int:
    """``fastinterp eval-generator``: fidelity (MAE, Pearson r) of a generator to the teacher maps
    of built datasets, overall and per CNN, beside the best single CGM taken as the explanation."""
    parser = argparse.ArgumentParser(prog="fastinterp eval-generator", description=main_eval.__doc__)
    parser.add_argument("--generator", type=Path, required=True, help="generator checkpoint (.safetensors)")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folders (build-dataset)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the reports here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from fastinterp.checkpoint import load_generator
    from fastinterp.dataset_builder import ExplanationDataset
    from fastinterp.training import fidelity_report

    if args.threads:
        torch.set_num_threads(args.threads)
    generator, meta = load_generator(args.generator)
    reports = {}
    for folder in args.data:
        data = ExplanationDataset(folder)
        if data.config["k"] != generator.config["k"] or data.config["size"] != generator.config["size"]:
            raise SystemExit(f"--data: {folder} has K={data.config['k']}, size={data.config['size']}; the "
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "zoo": ("fastinterp.zoo", "main_zoo"),
        "build-dataset": ("fastinterp.dataset_builder", "main_build"),
        "train-generator": ("fastinterp.cli", "main_train"),
        "eval-generator": ("fastinterp.cli", "main_eval"),
    }
    if argv and argv[0] in commands:
        import importlib

        module, name = commands[argv[0]]
        return getattr(importlib.import_module(module), name)(argv[1:])
    parser = argparse.ArgumentParser(prog="fastinterp", description=__doc__.split("\n")[0],
                                     epilog="subcommands: demo, " + ", ".join(commands) + " (each with --help)")
    parser.add_argument("--version", action="version", version=f"fastinterp {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="explain fresh cluttered digits with the shipped CNN + generator; write a PNG")
    demo.add_argument("--out", type=Path, default=Path("out/demo_explanations.png"), help="PNG to write")
    demo.add_argument("--images", type=int, default=6, help="how many images to explain")
    demo.add_argument("--seed", type=int, default=0)
    for name in commands:
        sub.add_parser(name, help=f"see fastinterp {name} --help", add_help=False)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fastinterp.demo import run_demo

        run_demo(args.out, num_images=args.images, seed=args.seed)
        return 0
    parser.print_help()
    return 0
