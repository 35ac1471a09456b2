"""Cumulative average of per-layer maps: normalise, upsample, running mean, keep K.

Given L maps ``maps[l]`` of shape (B, h_l, w_l) (any h_l, w_l), an output size (H, W) and K
strictly increasing positions, the op returns ``out`` of shape (B, K, H, W), float32, in [0, 1]:

    N_l  = (maps[l] - min) / (max - min)   per sample, at the map's own resolution, in float64
           (a *constant* map becomes zeros: max - min <= rtol * max(|min|, |max|), with
           rtol = CONSTANT_ULPS * eps of the maps' dtype, so rounding noise never becomes a
           full 0-to-1 map; a float64 map whose max - min overflows is normalised exactly
           from its halves, never NaN)
    U_l  = bilinear upsampling of N_l to (H, W), align_corners=False (as F.interpolate)
    M_j  = (U_0 + ... + U_j) / (j + 1)    (float32 running sum, then one division)
    out[:, k] = M_{positions[k]}

Only maps up to ``positions[-1]`` are read (all must still be finite).

Backends (``BACKENDS``; ``backend="auto"`` picks "triton" for CUDA tensors, "cpp" for CPU ones):
    "torch"   the reference below: one F.interpolate per layer, a full-resolution running sum.
    "cpp"     ``fastinterp._C`` (csrc/cumulative_average.cpp): fused, OpenMP over (sample, rows),
              AVX2 picked at run time; never writes a full-resolution plane per layer.
    "triton"  ``fastinterp.kernels.cumulative_average``: a min/max pre-pass + one fused kernel
              for the whole batch and all layers (CUDA; CPU tensors only under TRITON_INTERPRET=1).
The fused backends read the maps packed in one buffer (``fastinterp.ops.packing``) and agree
with the reference to <= 1e-5 (a few float32 roundings differ). Non-finite maps raise
ValueError("maps[l]: contains NaN or infinite values") in every backend.

Outputs are not differentiable: every backend runs under ``torch.no_grad`` (the fused kernels have
no backward), so the result never requires grad even if the maps do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import os

import numpy as np
import torch
import torch.nn.functional as F

from fastinterp.ops.packing import common_dtype, pack_maps, packed_dtype
from fastinterp._core.validation import check_positions, check_size

__all__ = [
    "BACKENDS", "CONSTANT_ULPS", "check_finite", "check_maps", "constant_rtol", "cumulative_average",
    "cumulative_average_reference", "minmax_normalise", "normalised_map", "pick_backend",
]


def check_maps(maps: object, finite: bool = True) -> list[torch.Tensor]:
    """``maps``: a non-empty sequence of floating tensors (B, h_l, w_l), same B and device, finite
    (checked here only if ``finite``; otherwise the caller checks, see :func:`check_finite`)."""
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
    if finite:
        check_finite(out)
    return out


# A map is constant when max - min <= CONSTANT_ULPS * eps(dtype) * max(|min|, |max|): variation
# within a few roundings of its own dtype (e.g. a spatially uniform map summed in another order
# at some pixels) is noise, not an explanation. The same rule in every backend.
CONSTANT_ULPS = 16


def constant_rtol(dtype: torch.dtype) -> float:
    """Relative span under which a map of ``dtype`` counts as constant (see ``CONSTANT_ULPS``)."""
    return CONSTANT_ULPS * torch.finfo(dtype).eps


def minmax_normalise(m: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """(B, h, w) -> (B, h, w) float32 in [0, 1], per sample; a constant map becomes zeros.

    Computed in float64 so that huge or tiny magnitudes neither overflow nor lose the range; a
    float64 map whose max - min overflows is normalised from its halves (exact scalings).

    Args:
        rtol: the map is constant when max - min <= rtol * max(|min|, |max|); default
            :func:`constant_rtol` of ``m``'s dtype.
    """
    rtol = constant_rtol(m.dtype) if rtol is None else rtol
    m64 = m.detach().to(torch.float64)
    lo = m64.amin(dim=(1, 2), keepdim=True)
    hi = m64.amax(dim=(1, 2), keepdim=True)
    scale = torch.where(torch.isfinite(hi - lo), 1.0, 0.5).to(torch.float64)
    lo, hi = lo * scale, hi * scale
    span = hi - lo
    varies = span > rtol * torch.maximum(lo.abs(), hi.abs())
    safe = torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, (m64 * scale - lo) / safe, torch.zeros_like(m64)).to(torch.float32)


@torch.no_grad()
def cumulative_average_reference(
    maps: Sequence[torch.Tensor], size: tuple[int, int], positions: Sequence[int]
) -> torch.Tensor:
    """Plain PyTorch: the test oracle and the fallback. Arguments are assumed checked."""
    height, width = size
    batch = maps[0].shape[0]
    rtol = constant_rtol(common_dtype(maps))
    out = torch.empty(batch, len(positions), height, width, dtype=torch.float32, device=maps[0].device)
    running = torch.zeros(batch, 1, height, width, dtype=torch.float32, device=maps[0].device)
    k = 0
    for j, m in enumerate(maps[: positions[-1] + 1]):
        normalised = minmax_normalise(m, rtol).unsqueeze(1)
        running += F.interpolate(normalised, size=(height, width), mode="bilinear", align_corners=False)
        if j == positions[k]:
            out[:, k] = running[:, 0] / (j + 1)
            k += 1
    return out


def check_finite(maps: Sequence[torch.Tensor], start: int = 0, stop: int | None = None) -> None:
    """Raise ValueError naming the first of ``maps[start:stop]`` holding a NaN or an infinity."""
    for i in range(start, len(maps) if stop is None else stop):
        if not bool(torch.isfinite(maps[i]).all()):
            raise ValueError(f"maps[{i}]: contains NaN or infinite values")


def _output(out: torch.Tensor | None, maps: list[torch.Tensor], size: tuple[int, int],
            positions: list[int]) -> torch.Tensor:
    """``out`` checked to be a contiguous float32 (B, K, H, W) tensor on the maps' device, or a new one."""
    shape = (maps[0].shape[0], len(positions), *size)
    device = maps[0].device
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a torch.Tensor or None, got {type(out).__name__}")
    if out.dtype != torch.float32 or tuple(out.shape) != shape or out.device != device or not out.is_contiguous():
        raise ValueError(
            f"out: expected a contiguous float32 tensor of shape {shape} on {device}, got "
            f"{'contiguous' if out.is_contiguous() else 'non-contiguous'} {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    return out


# Backends: f(maps, size, positions, out=None) -> out. Arguments are checked by
# ``cumulative_average`` except the finiteness of maps[:positions[-1] + 1], which every backend
# checks itself (the fast ones inside the kernel's min/max pass, for free), raising
# "maps[l]: contains NaN or infinite values". ``out``: None or a (B, K, H, W) float32 tensor
# that the backend fully overwrites. All run without autograd.


@torch.no_grad()
def _torch_backend(maps, size, positions, out=None):
    check_finite(maps, 0, positions[-1] + 1)
    out = _output(out, maps, size, positions)
    return out.copy_(cumulative_average_reference(maps, size, positions))


@torch.no_grad()
def _cpp_backend(maps, size, positions, out=None):
    """Fused C++/OpenMP kernel (``fastinterp._C``) on CPU tensors."""
    from fastinterp import _C  # built with the package; imported on first use so that the
    # pure-Python parts (and the Triton path) also run from an unbuilt source tree

    device = maps[0].device
    if device.type != "cpu":
        raise ValueError(f"backend 'cpp' runs on CPU tensors, but maps are on {device}; use 'auto' or 'triton'")
    out = _output(out, maps, size, positions)
    packed = pack_maps(maps, positions[-1] + 1, packed_dtype(maps, (torch.float32, torch.float64)))
    table = np.asarray(packed.table, dtype=np.int64).reshape(-1, 3)
    _C.cumulative_average(packed.data.numpy(), table, packed.batch, np.asarray(positions, dtype=np.int64),
                          out.detach().numpy(), constant_rtol(common_dtype(maps)))
    return out


def _triton_usable(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


@torch.no_grad()
def _triton_backend(maps, size, positions, out=None):
    """Fused Triton kernels (``fastinterp.kernels.cumulative_average``) on CUDA tensors, or on CPU
    tensors under TRITON_INTERPRET=1 (slow: for tests only)."""
    from fastinterp.kernels import cumulative_average as kernels  # imports triton, lazily

    device = maps[0].device
    if not kernels.AVAILABLE:
        raise RuntimeError("backend 'triton': the triton package is not installed")
    if not _triton_usable(device):
        raise ValueError(
            f"backend 'triton' runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), but maps are on {device}"
        )
    out = _output(out, maps, size, positions)
    supported = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    packed = pack_maps(maps, positions[-1] + 1, packed_dtype(maps, supported))
    bad = kernels.cumulative_average(packed.data, packed.table, packed.batch, positions, out,
                                     rtol=constant_rtol(common_dtype(maps)))
    if bool(bad.any()):  # the one host sync of this backend
        raise ValueError(f"maps[{int(bad.any(dim=1).nonzero()[0, 0])}]: contains NaN or infinite values")
    return out


BACKENDS: dict[str, Callable] = {"torch": _torch_backend, "cpp": _cpp_backend, "triton": _triton_backend}


def pick_backend(backend: object, device: torch.device) -> str:
    """"auto": triton for CUDA tensors (torch if triton is not installed), cpp for CPU tensors,
    torch for any other device; otherwise the named backend."""
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string ('auto' or one of {sorted(BACKENDS)}), got {type(backend).__name__}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpp"
        if device.type == "cuda":
            from fastinterp.kernels import cumulative_average as kernels

            return "triton" if kernels.AVAILABLE else "torch"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    return backend


def cumulative_average(
    maps: Sequence[torch.Tensor],
    size: int | tuple[int, int],
    positions: Sequence[int],
    backend: str = "auto",
    *,
    out: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Cumulative maps of ``maps`` at ``positions``: (B, K, H, W) float32 in [0, 1], not differentiable.

    Args:
        maps: L tensors (B, h_l, w_l), float16/bfloat16/float32/float64, finite, one device.
        size: output (H, W) in pixels, or an int for a square.
        positions: K strictly increasing indices in [0, L): which running means to return.
        backend: "auto" (triton for CUDA tensors, cpp for CPU tensors) or a name in ``BACKENDS``:
            "triton", "cpp", "torch" (the reference).
        out: optional contiguous float32 (B, K, H, W) tensor on the maps' device to write into.
        validate: check the arguments (default). False: the caller made them (a list of (B, h, w)
            float tensors on one device, ``size`` an (H, W) tuple, valid ``positions`` with the
            last one the last map); the maps' finiteness is checked either way, by the backend.
    """
    if validate:
        maps = check_maps(maps, finite=False)
        size = check_size(size)
        positions = check_positions(positions, len(maps))
        check_finite(maps, positions[-1] + 1)  # maps no backend reads must be finite too
    name = pick_backend(backend, maps[0].device)
    return BACKENDS[name](maps, size, positions, out=out)


def normalised_map(raw: torch.Tensor, size: int | tuple[int, int], backend: str = "auto") -> torch.Tensor:
    """One map per image, min-max normalised at its own resolution and resized bilinearly:
    (B, h, w) -> (B, H, W) float32 in [0, 1] (``cumulative_average`` of that single map). A constant
    map becomes zeros."""
    return cumulative_average([raw], size, [0], backend=backend)[:, 0]
