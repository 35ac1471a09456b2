"""Experiment: give every CNN family's CGMs a common scale before the generator sees them.

    python experiments/family_scale.py --left-out mobilenet_v3_small     # ~4 min on 2 cores
    python experiments/family_scale.py --left-out shufflenet_v2_x0_5

Each CNN's CGM k is divided by that CNN's mean per-image peak of CGM k (over up to 256 of its
examples), so every family's CGMs have the same mean peak at every depth, while each image keeps
its own contrast (unlike ``normalize_cgm``, which scales each image's CGM to [0, 1]). A new CNN is
calibrated the same way from its own CGMs: no teacher map is needed, so a deployment could do it
on a few unlabelled images. The generator is the leave-one-family-out fast generator of
``experiments/generalisation.py`` (same data, 400 steps, L1 alone for 320), trained through the
library API on the rescaled CGMs and judged on the left-out family's held-out digits (rescaled with
the constants of those digits' CGMs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fastinterp.datasets.reader import ExplanationDataset
from fastinterp.generator.networks import build_discriminator, build_generator
from fastinterp.generator.training import TrainConfig, fidelity_report, train_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalisation import ARCHS  # the zoo families of the leave-one-out runs


def cgm_peaks(data, limit: int = 256) -> torch.Tensor:
    """(K,) mean over up to ``limit`` examples of each CGM's per-image maximum."""
    peaks = torch.stack([data[i]["cgm"].float().amax(dim=(-2, -1)) for i in range(min(limit, len(data)))])
    return peaks.mean(dim=0)


class Rescaled(torch.utils.data.Dataset):
    """``data`` with CGM k divided by ``peaks[k]``."""

    def __init__(self, data, peaks: torch.Tensor):
        self.data, self.peaks, self.cnn_ids = data, peaks, data.cnn_ids

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.data[i])
        item["cgm"] = item["cgm"].float() / self.peaks.view(-1, 1, 1)
        return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--left-out", required=True, choices=ARCHS)
    parser.add_argument("--data-dir", type=Path, default=Path("out/lofo/data"))
    parser.add_argument("--out", type=Path, default=Path("out/family_scale"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts, peaks = [], {}
    for arch in ARCHS:
        if arch == args.left_out:
            continue
        data = ExplanationDataset(args.data_dir / arch / "train")
        peaks[arch] = cgm_peaks(data)
        parts.append(Rescaled(data, peaks[arch]))
    test = ExplanationDataset(args.data_dir / args.left_out / "test")
    peaks[args.left_out] = cgm_peaks(test)  # calibrated on its own CGMs, no teacher
    torch.manual_seed(0)
    generator = build_generator("fast", k=8, size=64)
    discriminator = build_discriminator(size=64)
    config = TrainConfig(steps=args.steps, batch_size=32, lr=2e-4, strategy="l1-warmup",
                         warmup_steps=int(0.8 * args.steps), checkpoint_every=100)
    out = args.out / f"without_{args.left_out}"
    train_generator(generator, discriminator, torch.utils.data.ConcatDataset(parts), config, out, resume=True,
                    metadata={"experiment": "family_scale", "peaks": {a: p.tolist() for a, p in peaks.items()}})
    report = fidelity_report(generator, Rescaled(test, peaks[args.left_out]))["all"]
    result = {"left_out": args.left_out, "mae": report["mae"], "mae_se": report["mae_se"],
              "pearson": report["pearson"], "pearson_se": report["pearson_se"],
              "peaks": {a: [round(v, 3) for v in p.tolist()] for a, p in peaks.items()}}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
