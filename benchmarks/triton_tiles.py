"""Tile-size sweep of the Triton cumulative_average kernel alone (pre-packed maps: no packing, no
host sync), at resnet50's layer shapes, B = 32, 224x224, K = 8, on CUDA; each time against the
floor (bytes read + written / the copy bandwidth measured in the same run).

    python benchmarks/triton_tiles.py [--json FILE]      # needs a CUDA device and triton
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402  (this folder's shapes and bandwidth probe)

import fastinterp  # noqa: E402
from fastinterp.kernels import cumulative_average as kernels  # noqa: E402
from fastinterp.ops.packing import pack_maps  # noqa: E402

TILES = [(16, 32, 4), (8, 32, 2), (8, 64, 4), (16, 64, 4), (32, 32, 4), (32, 32, 8), (16, 128, 8), (32, 64, 8)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    shapes = bench_ops.layer_shapes("resnet50")
    positions = fastinterp.paper_positions(len(shapes), 8)
    batch, side = 32, 224
    maps = [torch.randn(batch, h, w, device="cuda") for h, w in shapes]
    packed = pack_maps(maps, len(shapes), torch.float32)
    out = torch.empty(batch, 8, side, side, device="cuda")
    bandwidth = bench_ops.copy_bandwidth("cuda", bench_ops.timer("cuda"))
    floor = (packed.data.numel() * 4 + out.numel() * 4) / bandwidth
    rows = []
    for block_h, block_w, warps in TILES:
        def launch():
            kernels.cumulative_average(packed.data, packed.table, batch, positions, out, rtol=2.0**-19,
                                       block_h=block_h, block_w=block_w, num_warps=warps)
        seconds = triton.testing.do_bench(launch, warmup=50, rep=300, return_mode="median") * 1e-3
        rows.append({"block_h": block_h, "block_w": block_w, "num_warps": warps, "us": seconds * 1e6,
                     "x_floor": seconds / floor})
        print(f"BLOCK {block_h:>2}x{block_w:<3} warps {warps}: {seconds * 1e6:8.1f} us  {seconds / floor:5.2f}x floor "
              f"({floor * 1e6:.1f} us)", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "floor_us": floor * 1e6,
                                         "bandwidth": bandwidth, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
