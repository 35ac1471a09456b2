"""What an install exposes: ``fastinterp`` (with ``fastinterp.kernels`` and the demo checkpoints as
package data), and nothing else of the checkout -- in particular no top-level ``kernels``, a name a
real package uses. The built wheel in a fresh environment is checked by .ci/wheel_check.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastinterp

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path, safe_path: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd``, which is on sys.path unless ``safe_path``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    flags = ["-P"] if safe_path else []
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_only_fastinterp_is_importable_from_an_install(tmp_path):
    done = python("import importlib.util as u, fastinterp.kernels.cumulative_average as k; "
                  "print(u.find_spec('kernels'), u.find_spec('tests'), u.find_spec('benchmarks'), k.__name__)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "None", "fastinterp.kernels.cumulative_average"], (
        "the checkout root is on sys.path: install with `make install`, which drops the path entries that "
        "scikit-build-core's editable install adds")


@pytest.mark.slow
def test_the_kernels_folder_refuses_to_be_a_top_level_package():
    """Python started in the checkout root has it on sys.path; ``import kernels`` must not give
    this folder (it would stand in for a real package of that name)."""
    done = python("import kernels", ROOT, safe_path=False)
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'kernels': this checkout's kernels/ folder is importable only " \
           "as fastinterp.kernels" in done.stderr


def test_demo_checkpoints_are_package_data():
    package = Path(fastinterp.__file__).resolve().parent
    files = sorted(p.name for p in (package / "pretrained" / "demo").iterdir())
    assert {"cnn.safetensors", "generator.safetensors", "README.md"} <= set(files)
