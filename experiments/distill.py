"""Distil Score-CAM and RISE into fast generators, then judge each against its teacher.

    python experiments/distill.py                 # the report section (~75 min on 2 cores)
    python experiments/distill.py --train-n 64 --steps 20 --n 16 --out out/distill_try   # a quick look

Stages (each a ``fastinterp`` command, printed and timed; each resumes):
 1. per teacher (score-cam at the last conv layer; rise, ``--rise-masks`` masks) and per
    representation (gradient: forward + backward at explain time; activation: forward only),
    ``build-dataset``: ``--train-n`` train-split digits explained by the shipped demo CNN
    (mobilenet_v3_small), the teacher's map stored as the target;
 2. ``train-generator``: one fast generator per dataset (L1 warm-up, then pix2pix);
 3. ``evaluate`` of the four generators and their teachers on 128 held-out digits
    (``reports/distillation/``); its distillation table (quality kept, cost share, targets) goes
    to ``reports/sections/distillation.md``, and ``reports/evaluation.md`` is re-rendered with it.

Copy the generators into the package with ``--ship`` (``fastinterp/pretrained/distilled/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import run_timed as run, timings_table, write_section

CNN = Path("fastinterp/pretrained/demo/cnn.safetensors")  # run from the repository root
TEACHERS = {"score-cam": "score_cam", "rise": "rise"}
NAMES = {"score-cam": "sc-fast", "rise": "rise-fast"}  # generator names in the report
KINDS = {"gradient": "", "activation": "-fo"}
REP = ["--k", "8", "--size", "64", "--teacher", "last", "--no-skip-1x1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/distill"))
    parser.add_argument("--report", type=Path, default=Path("reports"))
    parser.add_argument("--train-n", type=int, default=512, help="train-split digits per dataset")
    parser.add_argument("--rise-masks", type=int, default=500, help="RISE masks of the teacher and of the report")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup-steps", type=int, default=400)
    parser.add_argument("--n", type=int, default=128, help="held-out images of the report")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ship", action="store_true", help="copy the generators to fastinterp/pretrained/distilled/")
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]
    timings_path = args.out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    generators = {}
    for teacher, stem in TEACHERS.items():
        options = ["--teacher-option", f"n_masks={args.rise_masks}"] if teacher == "rise" else []
        for kind, suffix in KINDS.items():
            folder = args.out / stem / kind
            if not (folder / "train" / "manifest.json").exists() or \
                    not json.loads((folder / "train" / "manifest.json").read_text())["complete"]:
                run(["build-dataset", "--cnn", str(CNN), "--dataset", "digits", "--split", "train", "--n",
                     str(args.train_n), "--out", str(folder / "train"), "--representation", kind, *REP,
                     "--teacher-method", teacher, *options, "--no-progress", *threads], timings, f"build {stem} {kind}")
            if not (folder / "generator" / "generator.safetensors").exists():
                run(["train-generator", "--data", str(folder / "train"), "--kind", "fast", "--out",
                     str(folder / "generator"), "--steps", str(args.steps), "--batch-size", "32", "--lr", "2e-4",
                     "--strategy", "l1-warmup", "--warmup-steps", str(args.warmup_steps), "--checkpoint-every", "100",
                     "--resume", *threads], timings, f"train {stem} {kind}")
            generators[f"{NAMES[teacher]}{suffix}"] = folder / "generator" / "generator.safetensors"
            timings_path.parent.mkdir(parents=True, exist_ok=True)
            timings_path.write_text(json.dumps(timings, indent=1))
    if args.ship:
        target = Path("fastinterp/pretrained/distilled")
        target.mkdir(exist_ok=True)
        for name, path in generators.items():
            shutil.copy(path, target / f"{name}.safetensors")
            generators[name] = target / f"{name}.safetensors"
    out = args.report / "distillation"
    run(["evaluate", "--cnn", f"digits-mobilenet_v3_small={CNN}", "--generator",
         *[f"{name}={path}" for name, path in generators.items()], "--baselines", "gradcam", "score-cam", "rise",
         "--n", str(args.n), "--rise-masks", str(args.rise_masks), "--ablation-n", "0", "--overhead-n", "0",
         "--out", str(out), "--no-progress", *threads], timings, "evaluate")
    timings_path.write_text(json.dumps(timings, indent=1))

    from fastinterp.evaluation.report import distillation_table

    state = json.loads((out / "evaluation.json").read_text())
    result = state["results"][0]
    section = f"""## Distillation: Score-CAM and RISE in one pass

Made by `python experiments/distill.py{' --ship' if args.ship else ''}` ({state['machine']}, {args.threads} threads per
command). Four fast generators, each trained on {args.train_n} train-split digits explained by the shipped demo CNN
(mobilenet_v3_small) with its teacher's map as the target ({args.steps} steps of batch 32, L1 alone for the first
{args.warmup_steps}, then pix2pix): Score-CAM (last conv layer) or RISE ({args.rise_masks} masks), on the gradient
representation (forward + backward of the CNN at explain time) or the forward-only one (`-fo`). Judged on the
first {result['n']} correctly classified held-out digits, in one run of `{state['command']}` (full report:
[distillation/evaluation.md](distillation/evaluation.md)). Targets: insertion AUC >= 90% of the teacher's, deletion
AUC at most 10% above it, at most 5% of Score-CAM's cost and 1% of RISE's (ms per image, same run, batch
{state['config']['batch']}).

{chr(10).join(distillation_table(result))}

Wall time of each step (minutes; building a dataset is dominated by the teacher, one Score-CAM or RISE per image):

{timings_table(timings)}
"""
    write_section(args.report, "distillation", section)


if __name__ == "__main__":
    main()
