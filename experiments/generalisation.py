"""Leave-one-family-out: does one generator serve CNN families it never saw?

    python experiments/generalisation.py            # the report section (~60 min on 2 cores)
    python experiments/generalisation.py --train-n 64 --test-n 32 --steps 10 --all-steps 10 --out out/lofo_try \\
        --report out/lofo_try/reports      # a quick look

Stages (each a ``fastinterp`` command, printed and timed; each resumes):
 1. the digits zoo (``fastinterp zoo``) for every family in ``--archs``, trained if missing;
 2. per CNN, ``build-dataset``: ``--train-n`` train-split digits and ``--test-n`` held-out
    test-split digits, the demo's representation (gradient, K = 8 CGMs at 64 px, Grad-CAM of every
    conv, first to last; teacher Grad-CAM of the last conv layer);
 3. per family, a fast generator trained on every *other* family's data (``train-generator`` with
    several ``--data``), and one trained on all families (``--all-steps``: the shipped demo
    generator with ``--ship``);
 4. ``eval-generator`` of each on every family's held-out digits, and on held-out textured shapes
    explained by the shipped shapes CNN (the second axis: a dataset no generator saw); the shipped
    generator before this run beside them;
 5. ``reports/sections/generalisation.md``: one row per left-out family, the worst one as the
    headline; ``reports/evaluation.md`` is re-rendered with it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_generators import REPRESENTATION as REP  # the demo's representation
from sections import run_timed as run, timings_table, write_section

REPO = Path(__file__).resolve().parent.parent
ARCHS = ["mobilenet_v3_small", "resnet18", "vgg13_bn", "densenet121", "shufflenet_v2_x0_5", "regnet_x_400mf"]
SHAPES_CNN = REPO / "fastinterp" / "pretrained" / "shapes" / "cnn.safetensors"
DEMO = REPO / "fastinterp" / "pretrained" / "demo" / "generator.safetensors"
TARGET = {"pearson": 0.9, "mae": 0.08}  # on the worst left-out family


def _complete(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    return manifest.exists() and json.loads(manifest.read_text())["complete"]


def main() -> None:
    from fastinterp.datasets.zoo import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=ARCHS)
    parser.add_argument("--zoo", type=Path, default=Path("checkpoints/zoo"))
    parser.add_argument("--out", type=Path, default=Path("out/lofo"))
    parser.add_argument("--report", type=Path, default=Path("reports"))
    parser.add_argument("--train-n", type=int, default=1024, help="train-split digits per CNN")
    parser.add_argument("--test-n", type=int, default=256, help="held-out digits per CNN (and textured shapes)")
    parser.add_argument("--steps", type=int, default=400, help="steps of each leave-one-out generator")
    parser.add_argument("--all-steps", type=int, default=1500, help="steps of the all-family generator")
    parser.add_argument("--warmup-fraction", type=float, default=0.8, help="share of the steps on L1 alone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--opts", default="{}", help="generator options of every run, as JSON "
                        "(e.g. '{\"normalize_cgm\": true}')")
    parser.add_argument("--augment", nargs="+", default=[], help="train-generator --augment of every run "
                        "(flip, cgm-gain)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the datasets (default: <out>/data)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another run's folder (other --opts, same data): its left-out fidelity beside this one's")
    parser.add_argument("--experiments", action="store_true",
                        help="also: what makes a generator generalise (fewer families; a wider generator; more "
                             "steps), each judged on the families it left out")
    parser.add_argument("--ship", action="store_true",
                        help="copy the all-family generator to fastinterp/pretrained/demo/generator.safetensors")
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]
    args.out.mkdir(parents=True, exist_ok=True)
    timings_path = args.out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def save_timings():
        timings_path.write_text(json.dumps(timings, indent=1))

    # 1. the zoo
    checkpoint = {arch: args.zoo / f"{arch}_digits.safetensors" for arch in args.archs}
    missing = [arch for arch, path in checkpoint.items() if not path.exists()]
    if missing:
        run(["zoo", "--archs", *missing, "--dataset", "digits", "--out", str(args.zoo), "--no-progress", *threads],
            timings, "zoo " + " ".join(missing))
    # 2. the datasets
    data = {}
    for arch in args.archs:
        for split, n in (("train", args.train_n), ("test", args.test_n)):
            folder = (args.data_dir or args.out / "data") / arch / split
            if not _complete(folder):
                run(["build-dataset", "--cnn", str(checkpoint[arch]), "--dataset", "digits", "--split", split,
                     "--n", str(n), "--out", str(folder), *REP, "--no-progress", *threads], timings,
                    f"build {arch} {split}")
            data[arch, split] = folder
        save_timings()
    shapes = (args.data_dir or args.out / "data") / "shapes" / "test"
    if not _complete(shapes):
        run(["build-dataset", "--cnn", str(SHAPES_CNN), "--dataset", "shapes", "--split", "test", "--n",
             str(args.test_n), "--out", str(shapes), *REP, "--no-progress", *threads], timings, "build shapes test")
    # 3. the generators
    families = sorted({FAMILIES[arch] for arch in args.archs}, key=lambda f: [FAMILIES[a] for a in args.archs].index(f))
    runs = {f"without_{family}": [a for a in args.archs if FAMILIES[a] != family] for family in families}
    runs["all"] = list(args.archs)
    augment = ["--augment", *args.augment] if args.augment else []
    opts = (["--opts", args.opts] if json.loads(args.opts) else []) + augment
    settings = {name: (args.all_steps if name == "all" else args.steps, opts) for name in runs}
    worst_family = None
    if args.experiments:  # judged on what each left out; needs the leave-one-out results first
        first = [a for a in args.archs if FAMILIES[a] in ("mobilenet", "resnet", "vgg")]
        runs["three_families"] = first  # the families the shipped generator had
        settings["three_families"] = (args.steps, opts)
        worst_family = json.loads((args.out / "worst.json").read_text())["family"] \
            if (args.out / "worst.json").exists() else None
        if worst_family is not None:
            runs["wider"] = runs[f"without_{worst_family}"]
            wider = {**json.loads(args.opts), "channels": [32, 64, 128], "cond_channels": 32}
            settings["wider"] = (args.steps, ["--opts", json.dumps(wider), *augment])
            runs["longer"] = runs[f"without_{worst_family}"]
            settings["longer"] = (args.all_steps, opts)
    for name, archs in runs.items():
        steps, extra = settings[name]
        folder = args.out / name
        if not (folder / "generator.safetensors").exists():
            folder.mkdir(parents=True, exist_ok=True)
            run(["train-generator", "--data", *[str(data[a, "train"]) for a in archs], "--kind", "fast", "--out",
                 str(folder), "--steps", str(steps), "--batch-size", "32", "--lr", "2e-4", "--strategy", "l1-warmup",
                 "--warmup-steps", str(int(args.warmup_fraction * steps)), "--checkpoint-every", "100", "--resume",
                 *extra, *threads], timings, f"train {name}", log=folder / "train.log")
            save_timings()
    # 4. fidelity on every held-out set
    tests = [data[a, "test"] for a in args.archs] + [shapes]
    generators = {name: args.out / name / "generator.safetensors" for name in runs}
    generators["before"] = args.out / "before.safetensors"  # the demo generator this run replaces
    if not generators["before"].exists():
        shutil.copy(DEMO, generators["before"])
    reports = {}
    for name, path in generators.items():
        target = args.out / f"fidelity_{name}.json"
        if not target.exists():
            run(["eval-generator", "--generator", str(path), "--data", *map(str, tests), "--json", str(target),
                 *threads], timings, f"eval {name}", log=args.out / f"fidelity_{name}.log")
        reports[name] = json.loads(target.read_text())["reports"]
    save_timings()
    if args.ship:
        shutil.copy(generators["all"], DEMO)

    # 5. the section
    def cell(name: str, folder: Path) -> tuple[float, float, float, float]:
        row = reports[name][str(folder)]["all"]
        return row["mae"], row["mae_se"], row["pearson"], row["pearson_se"]

    compared = {}
    if args.compare is not None:
        for family in families:
            compared[family] = json.loads((args.compare / f"fidelity_without_{family}.json").read_text())["reports"]
    lines = ["| left-out family (CNN) | trained on | MAE ↓ (left out) | r ↑ (left out) | all-family generator: "
             "MAE / r (seen) | generator replaced: MAE / r |"
             + (f" {args.compare.name} (left out): MAE / r |" if compared else ""),
             "|---|---|---:|---:|---:|---:|" + ("---:|" if compared else "")]
    rows = []
    for family in families:
        for arch in [a for a in args.archs if FAMILIES[a] == family]:
            mae, mae_se, r, r_se = cell(f"without_{family}", data[arch, "test"])
            a_mae, _, a_r, _ = cell("all", data[arch, "test"])
            b_mae, _, b_r, _ = cell("before", data[arch, "test"])
            others = ", ".join(FAMILIES[a] for a in runs[f"without_{family}"])
            rows.append((r, mae, family, arch))
            extra = ""
            if compared:
                row = compared[family][str(data[arch, "test"])]["all"]
                extra = f" {row['mae']:.4f} / {row['pearson']:.4f} |"
            lines.append(f"| {family} ({arch}) | {others} | {mae:.4f} ± {mae_se:.4f} | {r:.4f} ± {r_se:.4f} | "
                         f"{a_mae:.4f} / {a_r:.4f} | {b_mae:.4f} / {b_r:.4f} |{extra}")
    worst = min(rows)  # the lowest Pearson r
    worst_mae = max(rows, key=lambda row: row[1])
    (args.out / "worst.json").write_text(json.dumps({"family": worst[2], "arch": worst[3]}))
    experiment_lines = []
    if args.experiments:
        experiment_lines = ["| generator | trained on | steps | judged on (left out) | MAE ↓ | r ↑ | the leave-one-out "
                            "generator there: MAE / r |", "|---|---|---:|---|---:|---:|---:|"]
        for name in [n for n in ("three_families", "wider", "longer") if n in runs]:
            seen = {FAMILIES[a] for a in runs[name]}
            for arch in [a for a in args.archs if FAMILIES[a] not in seen]:
                mae, mae_se, r, r_se = cell(name, data[arch, "test"])
                b_mae, _, b_r, _ = cell(f"without_{FAMILIES[arch]}", data[arch, "test"])
                options = " ".join(settings[name][1]) or "default options"
                experiment_lines.append(
                    f"| {name} ({options}) | {', '.join(sorted(seen))} | {settings[name][0]} | {FAMILIES[arch]} | "
                    f"{mae:.4f} ± {mae_se:.4f} | {r:.4f} ± {r_se:.4f} | {b_mae:.4f} / {b_r:.4f} |")
    met = worst[0] >= TARGET["pearson"] and worst_mae[1] <= TARGET["mae"]
    shape_lines = ["| generator | MAE ↓ | r ↑ |", "|---|---:|---:|"]
    for name in generators:
        mae, mae_se, r, r_se = cell(name, shapes)
        shape_lines.append(f"| {name} | {mae:.4f} ± {mae_se:.4f} | {r:.4f} ± {r_se:.4f} |")
    import torch

    section = f"""## Generalisation: leave one architecture family out

Made by `python experiments/generalisation.py {' '.join(sys.argv[1:])}` (torch {torch.__version__},
{platform.machine()}, {args.threads} threads per command). Each CNN of the digits zoo explains {args.train_n}
train-split digits (the generators' data) and {args.test_n} held-out test-split digits, in the demo's
representation (gradient, K = 8, teacher Grad-CAM of the last conv layer). For each family, a fast generator is
trained on the other families' data ({args.steps} steps of batch 32, L1 alone for the first
{int(args.warmup_fraction * args.steps)}, then pix2pix; generator options {args.opts}; augmentation: {' '.join(args.augment) or 'none'}) and judged on the left-out
family's held-out digits:
fidelity to the teacher, MAE and Pearson r per map, mean ± SE over images. The all-family generator
({args.all_steps} steps) saw every family{' and is the shipped demo generator' if args.ship else ''}; "before" is
the demo generator this run replaces.

{chr(10).join(lines)}

**Headline: the worst left-out family is {worst[2]} ({worst[3]}), Pearson r {worst[0]:.4f}; the largest MAE is
{worst_mae[1]:.4f} ({worst_mae[2]}). Target r >= {TARGET['pearson']} and MAE <= {TARGET['mae']}:
{'**met**' if met else '**missed**'}.**

{"What makes a generator generalise (`--experiments`): fewer families, a wider generator, more steps, each "
 "judged on the families it did not see:" + chr(10) + chr(10) + chr(10).join(experiment_lines) + chr(10)
 if experiment_lines else ""}
Second axis, a dataset no generator saw: {args.test_n} held-out textured shapes explained by the shipped shapes
CNN (mobilenet_v3_small):

{chr(10).join(shape_lines)}

Wall time of each step (minutes):

{timings_table(timings)}
"""
    write_section(args.report, "generalisation", section)


if __name__ == "__main__":
    main()
