"""Fidelity of gsft, lsft and fast to the teacher on held-out images, for CNNs seen in training and
for an architecture left out of it -- every generator trained with the same budget.

    python experiments/eval_generators.py                       # the README's table (~2.5 h, see below)
    python experiments/eval_generators.py --kinds fast --steps 100   # a quick look

Every stage is a ``fastinterp`` command (printed before it runs) and every stage resumes, so an
interrupted run continues and a finished one only prints the table again (a report is reused while
the generator file it evaluated is byte-identical; ``--kinds`` runs in separate processes can share
the work):
 1. zoo CNNs (``fastinterp zoo``): trained if missing from ``--zoo``;
 2. datasets (``fastinterp build-dataset``): train split explained by the seen CNNs (round robin),
    test split by the same CNNs (held-out images) and by the left-out CNN;
 3. one generator per kind (``fastinterp train-generator``), identical training config;
 4. ``fastinterp eval-generator`` on both test sets -> ``<out>/report_<kind>.json`` and a markdown
    table on stdout (MAE and Pearson r vs the teacher; the best single CGM as the baseline).

Representation: Grad-CAM, K = 8, 64x64, order first_to_last, teacher = the last conv layer (the
map pytorch-grad-cam users call Grad-CAM). With the paper's order (last_to_first) that teacher is
CGM 0 itself, and the paper's teacher (the first conv layer) is a sparse edge map that the fast
generator fitted with a near-constant map at this budget (Pearson r 0.055; see experiments/NOTES.md).

Time on the 2-core dev machine, one thread per command: zoo 31 min (4 CNNs), datasets 2.5 min,
fast 3 min, gsft ~40 min, lsft ~60 min, and ~5 min to evaluate each of gsft and lsft. Running
``--kinds gsft`` and ``--kinds lsft`` in two processes after the datasets exist uses both cores;
a final run without ``--kinds`` then only evaluates what changed and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch


# every conv layer, the setting the README's numbers were made with (before skip_1x1 existed)
REPRESENTATION = ["--k", "8", "--size", "64", "--method", "gradcam", "--order", "first_to_last", "--teacher", "last",
                  "--no-skip-1x1"]


def file_sha256(path: Path) -> str:
    """sha256 of a file (a generator checkpoint: a report is reused while its generator is unchanged)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(command: list[str]) -> None:
    """Run ``python -m fastinterp <command>``, echoing it."""
    print("$ python -m fastinterp " + " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", "fastinterp", *command], check=True)


def zoo_checkpoints(zoo: Path, archs: list[str], threads: list[str]) -> dict[str, Path]:
    """{arch: checkpoint} of the digits zoo in ``zoo``; trains the missing ones (``fastinterp zoo``)."""
    checkpoint = {arch: zoo / f"{arch}_digits.safetensors" for arch in archs}
    missing = [arch for arch, path in checkpoint.items() if not path.exists()]
    if missing:
        run(["zoo", "--archs", *missing, "--dataset", "digits", "--input-size", "64", "--out", str(zoo), *threads])
    return checkpoint


def build_datasets(seen: list[Path], left_out: Path, out: Path, representation: list[str], train_n: int,
                   test_n: int, threads: list[str]) -> dict[str, Path]:
    """The three datasets of a fidelity run (``fastinterp build-dataset``, resumable): ``train_n``
    train-split digits explained by the ``seen`` CNNs round robin, ``test_n`` held-out digits per
    seen CNN, ``test_n`` held-out digits explained by the ``left_out`` CNN."""
    data = {"train": out / "train", "seen": out / "val_seen", "left_out": out / "val_left_out"}
    cnns = [str(path) for path in seen]
    common = [*representation, *threads, "--no-progress"]
    run(["build-dataset", "--cnn", *cnns, "--dataset", "digits", "--split", "train", "--n", str(train_n),
         "--out", str(data["train"]), *common])
    run(["build-dataset", "--cnn", *cnns, "--dataset", "digits", "--split", "test", "--n", str(test_n * len(cnns)),
         "--out", str(data["seen"]), *common])
    run(["build-dataset", "--cnn", str(left_out), "--dataset", "digits", "--split", "test", "--n", str(test_n),
         "--out", str(data["left_out"]), *common])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, default=Path("checkpoints/zoo"))
    parser.add_argument("--out", type=Path, default=Path("out/fid"))
    parser.add_argument("--seen", nargs="+", default=["mobilenet_v3_small", "resnet18", "vgg13_bn"])
    parser.add_argument("--left-out", default="densenet121")
    parser.add_argument("--kinds", nargs="+", default=["gsft", "lsft", "fast"])
    parser.add_argument("--train-n", type=int, default=6144)
    parser.add_argument("--test-n", type=int, default=512, help="held-out images per CNN")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command")
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]

    checkpoint = zoo_checkpoints(args.zoo, [*args.seen, args.left_out], threads)
    data = build_datasets([checkpoint[arch] for arch in args.seen], checkpoint[args.left_out], args.out,
                          REPRESENTATION, args.train_n, args.test_n, threads)

    rows = []
    for kind in args.kinds:
        folder = args.out / kind
        run(["train-generator", "--data", str(data["train"]), "--val", str(data["seen"]), "--kind", kind,
             "--out", str(folder), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
             "--lr", str(args.lr), "--strategy", "l1-warmup", "--warmup-steps", str(args.warmup_steps),
             "--val-every", "100", "--checkpoint-every", "50", "--resume", *threads])
        report_path = args.out / f"report_{kind}.json"
        generator_sha = file_sha256(folder / "generator.safetensors")
        state = json.loads(report_path.read_text()) if report_path.exists() else {}
        if state.get("generator_sha256") == generator_sha:  # same generator bytes: the report stands
            print(f"{report_path}: already evaluates this generator (sha256 {generator_sha[:12]}), reused")
        else:
            run(["eval-generator", "--generator", str(folder / "generator.safetensors"), "--data",
                 str(data["seen"]), str(data["left_out"]), "--json", str(report_path), *threads])
            state = json.loads(report_path.read_text())
            state["generator_sha256"] = generator_sha
            report_path.write_text(json.dumps(state))
        rows.append((kind, state["reports"][str(data["seen"])], state["reports"][str(data["left_out"])],
                     _train_seconds(folder)))

    print(f"\n# {platform.machine()}, torch threads {args.threads}; {args.steps} steps x batch {args.batch_size}, "
          f"lr {args.lr}, l1-warmup {args.warmup_steps}; train {args.train_n} examples from {', '.join(args.seen)}; "
          f"test {args.test_n} held-out images per CNN; +- = standard error over images")
    print(f"| generator | params | GFLOP | seen: MAE | seen: r | left out ({args.left_out}): MAE | left out: r | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, seen_report, left_report, train_s in rows:
        params, gflop = _size(kind)
        cells = [f"{r['all']['mae']:.4f} +- {r['all']['mae_se']:.4f} | {r['all']['pearson']:.3f} +- "
                 f"{r['all']['pearson_se']:.3f}" for r in (seen_report, left_report)]
        print(f"| {kind} | {params:,} | {gflop:.2f} | {cells[0]} | {cells[1]} | {train_s:.0f} |")
    if rows:
        baseline = []
        for report in (rows[0][1], rows[0][2]):
            best = report["best_input"]
            baseline.append(f"{report['inputs'][best]['mae']:.4f} | {report['inputs'][best]['pearson']:.3f}")
        print(f"| copy the best CGM ({rows[0][1]['best_input']}) | | | {baseline[0]} | {baseline[1]} | |")
        print("\nper CNN (MAE / r):")
        for kind, seen_report, left_report, _ in rows:
            cells = [f"{cnn} {row['mae']:.4f} / {row['pearson']:.3f}"
                     for cnn, row in [*seen_report["by_cnn"].items(), *left_report["by_cnn"].items()]]
            print(f"  {kind}: " + "; ".join(cells))
    reference = {kind: (seen, left) for kind, seen, left, _ in rows}
    if "fast" in reference:
        print("\npaired differences, fast minus other (same images; < 0 MAE / > 0 r favours fast):")
        for kind, (seen, left) in reference.items():
            if kind == "fast":
                continue
            cells = []
            for name, mine, theirs in (("seen", reference["fast"][0], seen), ("left out", reference["fast"][1], left)):
                for metric in ("mae", "pearson"):
                    diff = torch.tensor(mine["per_example"][metric]) - torch.tensor(theirs["per_example"][metric])
                    cells.append(f"{name} {metric} {diff.mean().item():+.4f} +- {diff.std().item() / len(diff) ** 0.5:.4f}")
            print(f"  fast - {kind}: " + "; ".join(cells))


def _size(kind: str) -> tuple[int, float]:
    """Parameters and GFLOP per 64x64 sample (K = 8) of a default generator of ``kind``."""
    from fastinterp.generator.networks import build_generator, count_flops, count_parameters

    generator = build_generator(kind, k=8, size=64)
    return count_parameters(generator), count_flops(generator, torch.rand(1, 3, 64, 64), torch.rand(1, 8, 64, 64)) / 1e9


def _train_seconds(folder: Path) -> float:
    """Training wall time recorded in the train state (seconds since the run's first step)."""
    from safetensors import safe_open

    with safe_open(str(folder / "train_state.safetensors"), framework="pt") as handle:
        meta = json.loads(handle.metadata()["fastinterp"])
    return float(meta.get("elapsed_s", float("nan")))


if __name__ == "__main__":
    main()
