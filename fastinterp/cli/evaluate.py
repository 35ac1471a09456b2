"""``fastinterp evaluate``: ``evaluation.report.run_evaluation`` (or ``render_report`` with
``--render-only``)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

import torch

from fastinterp.baselines import BASELINES
from fastinterp.cli.args import command_parser, named_paths, shipped_names
from fastinterp.evaluation.report import quick_config, render_report, run_evaluation
from fastinterp.evaluation.run import EvaluationConfig

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("evaluate")
    parser.add_argument("--cnn", nargs="+", metavar="[NAME=]CHECKPOINT",
                        help="zoo CNN checkpoints: files or shipped CNNs (" + shipped_names("cnn") + "); default: the "
                             "shipped digits and shapes CNNs; each is evaluated on the held-out test split of the "
                             "dataset it was trained on")
    parser.add_argument("--generator", nargs="*", metavar="[NAME=]CHECKPOINT",
                        help="generator checkpoints: files or shipped generators (" + shipped_names("generator")
                             + "); default: the shipped fast, forward-only fast and gsft generators; --generator "
                               "with no value: baselines only")
    parser.add_argument("--baselines", nargs="*", default=None, choices=BASELINES, metavar="BASELINE",
                        help=f"some of {', '.join(BASELINES)} (default: all)")
    parser.add_argument("--n", type=int, default=None, help="images per CNN (default 128; --quick 8)")
    parser.add_argument("--ablation-n", type=int, default=None,
                        help="images of the CGM ablation, run on the first CNN only (default 48; 0: skip)")
    parser.add_argument("--rise-masks", type=int, default=None, help="RISE masks (default 500)")
    parser.add_argument("--steps", type=int, default=None, help="deletion / insertion steps (default 16)")
    parser.add_argument("--overhead-n", type=int, default=None,
                        help="images of the batching-overhead measurement (default 1000; 0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder of evaluation.md and figures/")
    parser.add_argument("--reading", type=Path, default=None, help="markdown appended as the report's reading")
    parser.add_argument("--section", type=Path, action="append", default=[], metavar="FILE",
                        help="a markdown section written elsewhere, appended at the end (repeatable, in order)")
    parser.add_argument("--quick", action="store_true", help="a few images, cheap settings (seconds; for CI)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite <out>/evaluation.md from <out>/evaluation.json (e.g. with a new --reading or "
                             "--section); computes nothing")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.section if not path.is_file()]
    if missing:
        parser.error(f"--section: {missing} are not files")
    reading = args.reading.read_text() if args.reading is not None else None
    if args.render_only:
        path = render_report(args.out, reading, args.section)
        print(f"wrote {path} from {args.out / 'evaluation.json'}")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = quick_config(args.seed) if args.quick else EvaluationConfig(seed=args.seed)
    config = replace(config, n=args.n or config.n, steps=args.steps or config.steps,
                     rise_masks=args.rise_masks or config.rise_masks)
    baselines = tuple(args.baselines) if args.baselines is not None else BASELINES
    # None: run_evaluation's defaults (the shipped CNNs and generators); --generator with no value: none
    cnns = named_paths(args.cnn, None, "--cnn", "cnn")
    generators = None if args.generator is None else named_paths(args.generator, {}, "--generator", "generator")
    clash = sorted(set(generators or ()) & set(BASELINES))
    if clash:
        parser.error(f"--generator: the names {clash} are baselines' names; name the generators otherwise (NAME=PATH)")
    run_evaluation(args.out, config, cnns=cnns, generators=generators, baselines=baselines,
                   ablation_n=args.ablation_n if args.ablation_n is not None else (4 if args.quick else 48),
                   overhead_n=args.overhead_n if args.overhead_n is not None else (0 if args.quick else 1000),
                   reading=reading, sections=args.section,
                   command="fastinterp evaluate " + shlex.join(sys.argv[1:] if argv is None else argv),
                   progress=not args.no_progress)
    return 0
