"""Should layers with a 1x1 output (squeeze-excitation convs) count in the cumulative maps?

mobilenet_v3_small has 52 conv layers at 64x64, 18 of them the 1x1 convs of its SE blocks, which
run on globally pooled 1x1 maps: their maps carry no spatial information and normalise to zeros,
yet count in every running mean. This trains the same fast generator, same budget and seeds, on
the same digits explained twice by the shipped demo CNN (mobilenet_v3_small): once with every conv
(``--no-skip-1x1``), once without the 1x1 ones (``--skip-1x1``), and compares their fidelity to the
teacher (Grad-CAM of the last conv, the same map in both) on the same held-out digits, paired.

    python experiments/skip_1x1.py            # ~15 min on the 2-core dev machine, 1 thread
    python experiments/skip_1x1.py --seeds 0 --steps 100 --train-n 512 --test-n 256   # a quick look

Every stage is a ``fastinterp`` command (echoed) and resumes; the table goes to stdout and
``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import torch

VARIANTS = {"keep": "--no-skip-1x1", "skip": "--skip-1x1"}


def run(command: list[str]) -> None:
    print("$ python -m fastinterp " + " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", "fastinterp", *command], check=True)


def cgm_stats(folder: Path) -> dict:
    """Mean over examples of each CGM's maximum (a diluted running mean stays below 1)."""
    from fastinterp.datasets.reader import ExplanationDataset

    data = ExplanationDataset(folder)
    peaks = torch.stack([data[i]["cgm"].amax(dim=(1, 2)) for i in range(len(data))])
    return {"cgm_peak_mean": peaks.mean(0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/skip_1x1"))
    parser.add_argument("--train-n", type=int, default=4096)
    parser.add_argument("--test-n", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]
    cnn = resources.files("fastinterp") / "pretrained" / "demo" / "cnn.safetensors"
    summary: dict = {"machine": platform.machine(), "torch": torch.__version__, "threads": args.threads,
                     "args": {k: str(v) for k, v in vars(args).items()}, "variants": {}}
    for name, flag in VARIANTS.items():
        folder = args.out / name
        started = time.perf_counter()
        for split, n in (("train", args.train_n), ("test", args.test_n)):
            run(["build-dataset", "--cnn", str(cnn), "--dataset", "digits", "--split", split, "--n", str(n),
                 "--out", str(folder / split), flag, *threads, "--no-progress"])
        entry = {"build_s": time.perf_counter() - started, **cgm_stats(folder / "test"), "seeds": {}}
        manifest = json.loads((folder / "train" / "manifest.json").read_text())
        for seed in args.seeds:
            gen = folder / f"fast_seed{seed}"
            started = time.perf_counter()
            run(["train-generator", "--data", str(folder / "train"), "--kind", "fast", "--out", str(gen),
                 "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--strategy", "l1-warmup",
                 "--warmup-steps", "100", "--val-every", "100", "--checkpoint-every", "100", "--seed", str(seed),
                 "--resume", *threads])
            train_s = time.perf_counter() - started
            report = gen / "report.json"
            run(["eval-generator", "--generator", str(gen / "generator.safetensors"), "--data", str(folder / "test"),
                 "--json", str(report), *threads])
            rep = json.loads(report.read_text())["reports"][str(folder / "test")]
            entry["seeds"][seed] = {"train_s": train_s, "all": rep["all"], "per_example": rep["per_example"],
                                    "best_input": rep["best_input"], "inputs": rep["inputs"]}
        entry["skip_1x1"] = manifest["config"]["skip_1x1"]
        summary["variants"][name] = entry

    print(f"\n# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); fast generator, "
          f"{args.steps} steps x {args.batch_size}; {args.train_n} train / {args.test_n} held-out digits explained "
          "by mobilenet_v3_small; +- standard error over images")
    print("| layers | seed | MAE | Pearson r | best CGM: MAE | mean CGM peak (CGM 0..7) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, entry in summary["variants"].items():
        peaks = " ".join(f"{p:.2f}" for p in entry["cgm_peak_mean"])
        for seed, row in entry["seeds"].items():
            best = row["inputs"][row["best_input"]]
            print(f"| {name} | {seed} | {row['all']['mae']:.4f} +- {row['all']['mae_se']:.4f} | "
                  f"{row['all']['pearson']:.3f} +- {row['all']['pearson_se']:.3f} | {best['mae']:.4f} | {peaks} |")
    print("\npaired over the same held-out images, skip minus keep (< 0 MAE / > 0 r favours skipping):")
    for seed in args.seeds:
        keep, skip = summary["variants"]["keep"]["seeds"][seed], summary["variants"]["skip"]["seeds"][seed]
        cells = []
        for metric in ("mae", "pearson"):
            diff = torch.tensor(skip["per_example"][metric]) - torch.tensor(keep["per_example"][metric])
            se = diff.std().item() / len(diff) ** 0.5
            cells.append(f"{metric} {diff.mean().item():+.4f} +- {se:.4f}")
            summary.setdefault("paired", {})[f"seed{seed}_{metric}"] = [diff.mean().item(), se]
        print(f"  seed {seed}: " + "; ".join(cells))
    for entry in summary["variants"].values():
        for row in entry["seeds"].values():
            row.pop("per_example")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
