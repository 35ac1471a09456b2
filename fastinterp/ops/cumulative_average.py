"""Cumulative average of per-layer maps: normalise, upsample, running mean, keep K.

Given L maps ``maps[l]`` of shape (B, h_l, w_l) (any h_l, w_l), an output size (H, W) and K
strictly increasing positions, the op returns ``out`` of shape (B, K, H, W), float32, in [0, 1]:

    N_l  = (maps[l] - min) / (max - min)   per sample, at the map's own resolution
           (a constant map, max == min, becomes zeros; computed in float64)
    U_l  = bilinear upsampling of N_l to (H, W), align_corners=False (as F.interpolate)
    M_j  = (U_0 + ... + U_j) / (j + 1)    (float32 running sum, then one division)
    out[:, k] = M_{positions[k]}

Outputs are not differentiable (every backend runs under ``torch.no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fastinterp.validation import check_positions, check_size

__all__ = ["BACKENDS", "cumulative_average", "cumulative_average_reference", "minmax_normalise", "check_maps"]


def check_maps(maps: object) -> list[torch.Tensor]:
    """``maps``: a non-empty sequence of finite floating tensors (B, h_l, w_l), same B and device."""
    if isinstance(maps, torch.Tensor) or not isinstance(maps, Sequence):
        raise TypeError(f"maps: expected a list of tensors of shape (B, h, w), got {type(maps).__name__}")
    if len(maps) == 0:
        raise ValueError("maps: expected at least one map")
    out = list(maps)
    for i, m in enumerate(out):
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"maps[{i}]: expected a torch.Tensor, got {type(m).__name__}")
        if not m.is_floating_point():
            raise TypeError(f"maps[{i}]: expected a floating-point tensor, got dtype {m.dtype}")
        if m.dim() != 3 or 0 in m.shape:
            raise ValueError(f"maps[{i}]: expected a non-empty (B, h, w) tensor, got shape {tuple(m.shape)}")
        if m.shape[0] != out[0].shape[0]:
            raise ValueError(f"maps[{i}]: batch size {m.shape[0]} differs from maps[0]'s {out[0].shape[0]}")
        if m.device != out[0].device:
            raise ValueError(f"maps[{i}]: on {m.device} but maps[0] is on {out[0].device}")
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"maps[{i}]: contains NaN or infinite values")
    return out


def minmax_normalise(m: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B, h, w) float32 in [0, 1], per sample; a constant map becomes zeros.

    Computed in float64 so that huge or tiny magnitudes neither overflow nor lose the range.
    """
    m64 = m.detach().to(torch.float64)
    lo = m64.amin(dim=(1, 2), keepdim=True)
    hi = m64.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (m64 - lo) / safe, torch.zeros_like(m64)).to(torch.float32)


@torch.no_grad()
def cumulative_average_reference(
    maps: Sequence[torch.Tensor], size: tuple[int, int], positions: Sequence[int]
) -> torch.Tensor:
    """Plain PyTorch: the test oracle and the fallback. Arguments are assumed checked."""
    height, width = size
    batch = maps[0].shape[0]
    out = torch.empty(batch, len(positions), height, width, dtype=torch.float32, device=maps[0].device)
    running = torch.zeros(batch, 1, height, width, dtype=torch.float32, device=maps[0].device)
    k = 0
    for j, m in enumerate(maps[: positions[-1] + 1]):
        normalised = minmax_normalise(m).unsqueeze(1)
        running += F.interpolate(normalised, size=(height, width), mode="bilinear", align_corners=False)
        if j == positions[k]:
            out[:, k] = running[:, 0] / (j + 1)
            k += 1
    return out


def _torch_backend(maps, size, positions):
    return cumulative_average_reference(maps, size, positions)


# name -> (callable, "is this backend usable for these maps?")
BACKENDS: dict[str, Callable] = {"torch": _torch_backend}


def _pick_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return backend


def cumulative_average(
    maps: Sequence[torch.Tensor],
    size: int | tuple[int, int],
    positions: Sequence[int],
    backend: str = "auto",
) -> torch.Tensor:
    """Cumulative maps of ``maps`` at ``positions``: (B, K, H, W) float32 in [0, 1].

    Args:
        maps: L tensors (B, h_l, w_l), float16/bfloat16/float32/float64, finite, one device.
        size: output (H, W) in pixels, or an int for a square.
        positions: K strictly increasing indices in [0, L): which running means to return.
        backend: "auto" (fastest available for the maps' device) or a name in ``BACKENDS``.
    """
    maps = check_maps(maps)
    size = check_size(size)
    positions = check_positions(positions, len(maps))
    name = _pick_backend(backend, maps[0].device)
    return BACKENDS[name](maps, size, positions)
