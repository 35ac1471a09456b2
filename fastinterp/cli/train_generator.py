"""``fastinterp train-generator``: ``generator.training.train_generator`` on one or several built
datasets (``datasets.reader.training_set``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastinterp.cli.args import command_parser, dataset_folder, positive_int
from fastinterp.datasets.reader import ExplanationDataset, training_set
from fastinterp.generator.networks import build_discriminator, build_generator
from fastinterp.generator.training import AUGMENTATIONS, STRATEGIES, TrainConfig, train_generator

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar; one line when training ends")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train, provenance = training_set(args.data, argument="--data")
    except ValueError as error:
        parser.error(str(error))
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
    history = train_generator(generator, discriminator, train, config, args.out, val_data=val, resume=args.resume,
                              allow_teacher_input=args.allow_teacher_input, metadata=provenance,
                              progress=not args.no_progress)
    if history:
        print(json.dumps(history[-1]))
    print(f"wrote {args.out / 'generator.safetensors'}")
    return 0
