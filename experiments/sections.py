"""Helpers of the experiments that write a section of reports/evaluation.md (distill.py,
generalisation.py): timed ``fastinterp`` commands and the section itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

READING = Path(__file__).resolve().parent.parent / "benchmarks" / "evaluation_reading.md"


def run_timed(command: list[str], timings: dict, key: str, log: Path | None = None) -> None:
    """Run ``python -m fastinterp <command>`` (echoed; its output to ``log`` if given) and record its
    wall time in seconds under ``timings[key]``."""
    print("$ python -m fastinterp " + " ".join(command), flush=True)
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        subprocess.run([sys.executable, "-m", "fastinterp", *command], check=True,
                       stdout=sink if log else None, stderr=subprocess.STDOUT if log else None)
    timings[key] = round(time.perf_counter() - start, 1)
    print(f"  {key}: {timings[key]:.0f} s", flush=True)


def timings_table(timings: dict) -> str:
    """The recorded wall times as a markdown table in minutes."""
    rows = "\n".join(f"| {key} | {seconds / 60:.1f} |" for key, seconds in timings.items())
    return f"| step | min |\n|---|---:|\n{rows}"


def write_section(report: Path, name: str, text: str) -> None:
    """Write ``<report>/sections/<name>.md`` and, when the main report's JSON is there (made by
    benchmarks/evaluate.py), re-render ``<report>/evaluation.md`` with every section of that folder,
    in name order (passed explicitly: ``fastinterp evaluate`` reads only what it is given); print
    the section."""
    (report / "sections").mkdir(parents=True, exist_ok=True)
    (report / "sections" / f"{name}.md").write_text(text)
    if (report / "evaluation.json").exists():
        sections = [arg for path in sorted((report / "sections").glob("*.md")) for arg in ("--section", str(path))]
        subprocess.run([sys.executable, "-m", "fastinterp", "evaluate", "--render-only", "--out", str(report),
                        "--reading", str(READING), *sections], check=True)
    print(text)
