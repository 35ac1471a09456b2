"""Packing a ragged list of maps into one flat buffer + an int64 table (the fast backends' input).

Layout (layer-major): ``data[offset_l + b * h_l * w_l + i * w_l + j] = maps[l][b, i, j]``, and
``table[l] = (offset_l, h_l, w_l)``; offsets are in elements, int64. One ``torch.cat`` builds it
(a single copy of the small low-resolution maps, converting dtype on the way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PackedMaps", "common_dtype", "pack_maps", "packed_dtype"]


@dataclass(frozen=True)
class PackedMaps:
    data: torch.Tensor  # (sum_l B * h_l * w_l,) contiguous, one dtype, the maps' device
    table: list[tuple[int, int, int]]  # L rows (offset_l, h_l, w_l), elements
    batch: int  # B

    @property
    def num_layers(self) -> int:
        return len(self.table)


def common_dtype(maps: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype all of ``maps`` promote to."""
    dtype = maps[0].dtype
    for m in maps[1:]:
        dtype = torch.promote_types(dtype, m.dtype)
    return dtype


def packed_dtype(maps: Sequence[torch.Tensor], supported: Sequence[torch.dtype]) -> torch.dtype:
    """The dtype to pack ``maps`` in: their common (promoted) dtype if ``supported``, else the
    first supported dtype that holds it exactly (float16/bfloat16 -> float32, float64 -> float64).
    """
    dtype = common_dtype(maps)
    if dtype in supported:
        return dtype
    for wider in (torch.float32, torch.float64):
        if wider in supported and torch.promote_types(dtype, wider) == wider:
            return wider
    raise TypeError(f"maps: dtype {dtype} cannot be packed losslessly into any of {list(supported)}")


def pack_maps(maps: Sequence[torch.Tensor], num_layers: int, dtype: torch.dtype) -> PackedMaps:
    """Pack ``maps[:num_layers]`` (each (B, h_l, w_l)) into one contiguous ``dtype`` buffer."""
    used = [m.detach() if m.requires_grad else m for m in maps[:num_layers]]
    batch = used[0].shape[0]
    table, offset = [], 0
    for m in used:
        table.append((offset, m.shape[1], m.shape[2]))
        offset += m.numel()
    if len(used) == 1 and used[0].dtype == dtype and used[0].is_contiguous():
        data = used[0].reshape(-1)  # a view: nothing to copy
    else:
        data = torch.empty(offset, dtype=dtype, device=used[0].device)
        torch.cat([m.reshape(-1) for m in used], out=data)
    return PackedMaps(data=data, table=table, batch=batch)
