"""``fastinterp eval-generator``: ``generator.training.fidelity_report`` of a generator on built
datasets, per CNN."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastinterp.cli.args import checkpoint_file, command_parser, dataset_folder, positive_int
from fastinterp.datasets.reader import ExplanationDataset
from fastinterp.generator.checkpoint import load_generator
from fastinterp.generator.training import fidelity_report

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("eval-generator")
    parser.add_argument("--generator", type=checkpoint_file, required=True,
                        help="generator checkpoint (fastinterp train-generator)")
    parser.add_argument("--data", type=dataset_folder, nargs="+", required=True,
                        help="dataset folders (fastinterp build-dataset)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--json", type=Path, help="also write the reports here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

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
