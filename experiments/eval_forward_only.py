"""Fidelity of a fast generator fed the forward-only (activation) representation, beside one fed the
gradient representation, both taught Grad-CAM of the last conv and trained with the shipped demo
generator's budget (1,500 steps x 32, L1 warm-up 300, then pix2pix).

    python experiments/eval_forward_only.py                  # the README's table (~45 min, 2 cores)
    python experiments/eval_forward_only.py --steps 100      # a quick look

Stages (each a ``fastinterp`` command, printed before it runs; each resumes):
 1. zoo CNNs if missing (``fastinterp zoo``: mobilenet_v3_small, resnet18, vgg13_bn seen;
    densenet121 left out);
 2. per representation, the same images explained (``build-dataset --representation KIND``):
    6,144 train-split digits (seen CNNs, round robin), 1,536 held-out (512 per seen CNN), 512
    held-out by densenet121. Same seeds and CNNs, so both representations see the same images and
    the same teacher maps: the comparison is paired;
 3. one fast generator per representation (``train-generator``), the two in parallel processes
    (one thread each) unless ``--serial``;
 4. ``eval-generator`` on both test sets; a markdown table on stdout (MAE, Pearson r; copying the
    best single CGM as the baseline; the paired difference activation minus gradient).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_generators import _train_seconds, build_datasets, file_sha256, run, zoo_checkpoints


KINDS = ("gradient", "activation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, default=Path("checkpoints/zoo"))
    parser.add_argument("--out", type=Path, default=Path("out/forward_only"))
    parser.add_argument("--seen", nargs="+", default=["mobilenet_v3_small", "resnet18", "vgg13_bn"])
    parser.add_argument("--left-out", default="densenet121")
    parser.add_argument("--train-n", type=int, default=6144)
    parser.add_argument("--test-n", type=int, default=512, help="held-out images per CNN")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command")
    parser.add_argument("--serial", action="store_true", help="train the two generators one after the other")
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]

    checkpoint = zoo_checkpoints(args.zoo, [*args.seen, args.left_out], threads)
    data = {kind: build_datasets([checkpoint[arch] for arch in args.seen], checkpoint[args.left_out], args.out / kind,
                                 ["--representation", kind, "--k", "8", "--size", "64", "--teacher", "last",
                                  "--no-skip-1x1"], args.train_n, args.test_n, threads) for kind in KINDS}

    commands = {kind: ["train-generator", "--data", str(data[kind]["train"]), "--val", str(data[kind]["seen"]),
                       "--kind", "fast", "--out", str(args.out / kind / "generator"), "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--lr", "2e-4", "--strategy", "l1-warmup",
                       "--warmup-steps", str(args.warmup_steps), "--val-every", "100", "--checkpoint-every", "100",
                       "--resume", *threads] for kind in KINDS}
    if args.serial:
        for kind in KINDS:
            run(commands[kind])
    else:
        with contextlib.ExitStack() as logs:
            processes = []
            for kind in KINDS:
                print("$ python -m fastinterp " + " ".join(commands[kind]) + "  &", flush=True)
                log = logs.enter_context(open(args.out / kind / "train.log", "w"))
                processes.append(subprocess.Popen([sys.executable, "-m", "fastinterp", *commands[kind]], stdout=log,
                                                  stderr=subprocess.STDOUT))
            if any(code != 0 for code in [process.wait() for process in processes]):
                raise SystemExit(f"train-generator failed: see {args.out}/*/train.log")

    reports = {}
    for kind in KINDS:
        generator = args.out / kind / "generator" / "generator.safetensors"
        path = args.out / f"report_{kind}.json"
        sha = file_sha256(generator)
        state = json.loads(path.read_text()) if path.exists() else {}
        if state.get("generator_sha256") != sha:
            run(["eval-generator", "--generator", str(generator), "--data", str(data[kind]["seen"]),
                 str(data[kind]["left_out"]), "--json", str(path), *threads])
            state = json.loads(path.read_text())
            state["generator_sha256"] = sha
            path.write_text(json.dumps(state))
        reports[kind] = (state["reports"][str(data[kind]["seen"])], state["reports"][str(data[kind]["left_out"])],
                         _train_seconds(args.out / kind / "generator"))

    print(f"\n# {platform.machine()}, torch threads {args.threads} per command; fast generator, {args.steps} steps x "
          f"batch {args.batch_size}, l1-warmup {args.warmup_steps}; train {args.train_n} digits from "
          f"{', '.join(args.seen)}; test {args.test_n} held-out digits per CNN; teacher Grad-CAM of the last conv; "
          "+- = standard error over images")
    print(f"| representation | seen: MAE | seen: r | left out ({args.left_out}): MAE | left out: r | "
          "copy best CGM, seen: MAE / r | copy best CGM, left out: MAE / r | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, (seen_report, left_report, train_s) in reports.items():
        cells = [f"{r['all']['mae']:.4f} +- {r['all']['mae_se']:.4f} | {r['all']['pearson']:.3f} +- "
                 f"{r['all']['pearson_se']:.3f}" for r in (seen_report, left_report)]
        copies = []
        for r in (seen_report, left_report):
            best = r["best_input"]
            copies.append(f"{best}: {r['inputs'][best]['mae']:.4f} / {r['inputs'][best]['pearson']:.3f}")
        print(f"| {kind} | {cells[0]} | {cells[1]} | {copies[0]} | {copies[1]} | {train_s:.0f} |")
    print("\nper CNN (MAE / r):")
    for kind, (seen_report, left_report, _) in reports.items():
        cells = [f"{cnn} {row['mae']:.4f} / {row['pearson']:.3f}"
                 for cnn, row in [*seen_report["by_cnn"].items(), *left_report["by_cnn"].items()]]
        print(f"  {kind}: " + "; ".join(cells))
    cells = []
    for index, name in ((0, "seen"), (1, "left out")):
        for metric in ("mae", "pearson"):
            diff = (torch.tensor(reports["activation"][index]["per_example"][metric])
                    - torch.tensor(reports["gradient"][index]["per_example"][metric]))
            cells.append(f"{name} {metric} {diff.mean().item():+.4f} +- {diff.std().item() / len(diff) ** 0.5:.4f}")
    print("\npaired, activation minus gradient (same images, same teacher maps): " + "; ".join(cells))


if __name__ == "__main__":
    main()
