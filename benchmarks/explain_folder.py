"""What ``fastinterp explain`` costs beyond explaining: reading, resizing, drawing and writing
(PNG + NPY) per image, as a share of the explain time itself (issue 22's target: at most 25% at
the demo size, 500 images).

Writes ``--count`` test digits at the demo size (64x64 PNGs, the shipped CNN + generator) to a
temporary folder, then in ``--rounds`` interleaved rounds times:

    explain only   Explainer.explain over the same images, already decoded and resized in memory,
                   in batches of --batch-size (the floor: what the command cannot avoid)
    command, I/O threads   runtime.files.explain_files (what `fastinterp explain` runs): one reader
                   thread ahead, one writer thread behind
    command, no threads    the same on the calling thread only (io_threads=0)
    command, jpg           no threads, overlays written as JPEG (--overlay-format jpg)

and prints the medians and overhead = command / explain only - 1 (per round, then the median: the
two run side by side), and, for the run without threads, its own split: the time outside explain()
(reading, resizing, drawing, writing) over the time inside it, in the same run (immune to the
machine's drift between runs). ``--photo-size HxW`` adds the
same measurement with photos of that size (JPEG), whose decode, resize and full-resolution
overlay cost more than the demo's. Run: ``python benchmarks/explain_folder.py`` (about 2 min here).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fastinterp
from fastinterp.datasets.images import cluttered_digits
from fastinterp.runtime.compiler import DomainWarning
from fastinterp.runtime.files import explain_files, find_images, read_resized


def write_images(folder: Path, count: int, size: tuple[int, int] | None) -> None:
    """``count`` test digits as PNG (demo size) or, with ``size``, upscaled to photos (JPEG)."""
    images, _, _ = cluttered_digits(count, 64, seed=7, split="test")
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    folder.mkdir(parents=True)
    for i, p in enumerate(pixels):
        if size is None:
            Image.fromarray(p).save(folder / f"{i:04d}.png")
        else:
            Image.fromarray(p).resize((size[1], size[0]), Image.Resampling.BICUBIC).save(folder / f"{i:04d}.jpg",
                                                                                          quality=90)


def explain_only(explainer, folder: Path, batch_size: int) -> float:
    """Seconds of explain() over the folder's images, decoded and resized beforehand (not timed)."""
    pixels = np.stack([read_resized(image.path, explainer.input_size)[1] for image in find_images([folder])])
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        explainer.explain(pixels[i:i + batch_size])
    return time.perf_counter() - start


def command(explainer, folder: Path, out: Path, batch_size: int, io_threads: int,
            overlay_format: str = "png") -> tuple[float, float]:
    """(seconds of explain_files, of which inside explain)."""
    report = explain_files(explainer, [folder], out, size=explainer.input_size, batch_size=batch_size,
                           io_threads=io_threads, overlay_format=overlay_format, progress=False)
    assert not report.failed, report.failed
    return report.seconds, report.explain_seconds


def measure(explainer, folder: Path, work: Path, batch_size: int, rounds: int) -> dict:
    times: dict[str, list[float]] = {"explain only": [], "command, I/O threads": [], "command, no threads": [],
                                     "command, jpg": [], "inside explain (threads)": [],
                                     "inside explain (no threads)": []}
    command(explainer, folder, work / "warm", batch_size, 2)  # warm-up: allocators, page cache, imports
    for r in range(rounds):
        times["explain only"].append(explain_only(explainer, folder, batch_size))
        total, inside = command(explainer, folder, work / f"threads-{r}", batch_size, 2)
        times["command, I/O threads"].append(total)
        times["inside explain (threads)"].append(inside)
        total, inside = command(explainer, folder, work / f"sync-{r}", batch_size, 0)
        times["command, no threads"].append(total)
        times["inside explain (no threads)"].append(inside)
        times["command, jpg"].append(command(explainer, folder, work / f"jpg-{r}", batch_size, 0, "jpg")[0])
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in ("command, I/O threads", "command, no threads", "command, jpg"):  # paired per round
        medians[f"overhead {name}"] = statistics.median(c / e - 1 for c, e in zip(times[name], times["explain only"]))
    medians["file work / explain, same run"] = statistics.median(
        t / i - 1 for t, i in zip(times["command, no threads"], times["inside explain (no threads)"]))
    return medians | {"rounds": times}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--photo-size", default=None, metavar="HxW", help="also photos of this size (e.g. 480x640)")
    p.add_argument("--photo-count", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)  # a cost measurement
        explainer = fastinterp.compile(fastinterp.load_cnn("demo"), "demo")
    results = {"machine": f"{platform.machine()} {platform.processor()}".strip(), "torch_threads":
               torch.get_num_threads(), "batch_size": args.batch_size, "runs": []}
    configs = [("demo size, 64x64 PNG", args.count, None)]
    if args.photo_size:
        height, width = (int(v) for v in args.photo_size.lower().split("x"))
        configs.append((f"photos {height}x{width} JPEG", args.photo_count, (height, width)))
    with tempfile.TemporaryDirectory(prefix="fastinterp-explain-folder-") as tmp:
        for label, count, size in configs:
            folder = Path(tmp) / label.split(",")[0].replace(" ", "-")
            write_images(folder, count, size)
            medians = measure(explainer, folder, Path(tmp) / f"out-{folder.name}", args.batch_size, args.rounds)
            results["runs"].append({"images": label, "count": count, **medians})
    print(f"fastinterp explain on a folder: demo CNN + generator at 64x64, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {args.rounds} interleaved rounds (medians), {time.strftime('%Y-%m-%d')}")
    print()
    columns = ("command, I/O threads", "command, no threads", "command, jpg")
    print("| images | count | explain only s | " + " | ".join(f"{c} s | overhead" for c in columns)
          + " | file work / explain (no threads, same run) |")
    print("|---|---:|---:|" + "---:|---:|" * len(columns) + "---:|")
    for run in results["runs"]:
        cells = " | ".join(f"{run[c]:.2f} | {100 * run['overhead ' + c]:+.0f}%" for c in columns)
        print(f"| {run['images']} | {run['count']} | {run['explain only']:.2f} | {cells} | "
              f"{100 * run['file work / explain, same run']:.0f}% |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
