"""The C++ kernel built as a plain program for other targets and configurations, run on fresh
random problems and compared with the PyTorch reference:

- host, OpenMP on and off (the serial fallback of a compiler without OpenMP);
- aarch64 (Graviton, Apple silicon: no AVX2, no target_clones), OpenMP on and off, run under
  qemu-user. Needs ``g++-aarch64-linux-gnu`` and ``qemu-user`` (Debian packages, installed by
  ``.ci/run``); without them these two skip, unless FASTINTERP_REQUIRE_CROSS=1 (set by CI) makes
  the absence a failure.

The driver is ``tests/cpp/cumulative_average_main.cpp``; the Python extension is not involved.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fastinterp.ops import constant_rtol, cumulative_average_reference
from fastinterp.ops.packing import pack_maps

pytestmark = pytest.mark.slow  # every test compiles the kernel

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests/cpp/cumulative_average_main.cpp", ROOT / "csrc/cumulative_average.cpp"]
FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", f"-I{ROOT / 'csrc'}"]
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"

TARGETS = {  # name: (compiler, extra flags, runner prefix)
    "host-openmp": ("c++", ["-fopenmp"], []),
    "host-serial": ("c++", ["-Wall", "-Werror", "-Wno-unknown-pragmas"], []),
    "aarch64-openmp": ("aarch64-linux-gnu-g++", ["-fopenmp"], ["qemu-aarch64", "-L", AARCH64_SYSROOT]),
    "aarch64-serial": ("aarch64-linux-gnu-g++", ["-Wall", "-Werror", "-Wno-unknown-pragmas"],
                       ["qemu-aarch64", "-L", AARCH64_SYSROOT]),
}


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    return {}, tmp_path_factory.mktemp("drivers")


def driver(name: str, cache) -> list[str]:
    built, folder = cache
    if name not in built:
        compiler, extra, runner = TARGETS[name]
        missing = [tool for tool in [compiler, *runner[:1]] if shutil.which(tool) is None]
        if missing:
            if os.environ.get("FASTINTERP_REQUIRE_CROSS") == "1":
                pytest.fail(f"{name}: {missing} not installed (FASTINTERP_REQUIRE_CROSS=1)")
            pytest.skip(f"{name}: needs {missing} (apt-get install g++-aarch64-linux-gnu qemu-user; .ci/run does)")
        binary = folder / name
        subprocess.run([compiler, *FLAGS, *extra, *map(str, SOURCES), "-o", str(binary)], check=True,
                       capture_output=True, text=True)
        built[name] = [*runner, str(binary)]
    return built[name]


def solve(command: list[str], maps, size, positions) -> torch.Tensor:
    """Run the driver on one problem; returns its (B, K, H, W) output."""
    dtype = torch.float64 if any(m.dtype == torch.float64 for m in maps) else torch.float32
    packed = pack_maps(maps, positions[-1] + 1, dtype)
    batch, (height, width), k = packed.batch, size, len(positions)
    values = packed.data.numpy()
    header = struct.pack("<7q", len(packed.table), batch, k, height, width, int(dtype == torch.float64), values.size)
    payload = (header + np.asarray(packed.table, "<i8").tobytes() + np.asarray(positions, "<i8").tobytes()
               + struct.pack("<d", constant_rtol(dtype)) + values.tobytes())
    done = subprocess.run(command, input=payload, capture_output=True)
    if done.returncode == 3:
        raise ValueError(done.stderr.decode().strip())
    assert done.returncode == 0, done.stderr.decode()
    out = np.frombuffer(done.stdout, dtype="<f4")
    assert out.size == batch * k * height * width
    return torch.from_numpy(out.copy()).view(batch, k, height, width)


def random_problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers, batch = int(rng.integers(1, 40)), int(rng.integers(1, 4))
    maps, side = [], None
    for _ in range(layers):
        if side is None or rng.random() < 0.5:
            side = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        kind = rng.choice(["randn", "randn", "constant", "offset"])
        m = torch.randn(batch, *side, generator=g) * 10.0 ** int(rng.integers(-20, 20))
        if kind == "constant":
            m = torch.full((batch, *side), float(rng.normal()))
        elif kind == "offset":
            m = 1000.0 + m / m.abs().max() * 0.01
        maps.append(m.double() if seed % 3 == 0 else m)
    size = (int(rng.integers(1, 80)), int(rng.integers(1, 80)))
    positions = sorted(rng.choice(layers, size=int(rng.integers(1, layers + 1)), replace=False).tolist())
    return maps, size, positions


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernel_built_for_target_matches_reference(target, drivers):
    command = driver(target, drivers)
    for seed in range(12):
        maps, size, positions = random_problem(seed)
        out = solve(command, maps, size, positions)
        ref = cumulative_average_reference(maps, size, positions)
        assert torch.isfinite(out).all()
        assert (out - ref).abs().max().item() <= 1e-5, (target, seed)


@pytest.mark.parametrize("target", ["host-serial", "aarch64-serial"])
def test_kernel_built_for_target_reports_non_finite_maps(target, drivers):
    command = driver(target, drivers)
    maps = [torch.randn(2, 3, 3), torch.randn(2, 4, 4)]
    maps[1][1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"maps\[1\]: contains NaN"):
        solve(command, maps, (5, 5), [0, 1])
