"""Triton kernels of ``fastinterp.ops.cumulative_average`` (imported as ``fastinterp.kernels``).

Two launches for the whole batch and all layers; nothing full-resolution is written per layer:

1. ``_stats_kernel``, grid (L_used * B,): per (layer, sample) min, max and a NaN/inf probe of the
   low-resolution map, turned into three float64 parameters: ``c`` (a power of two, 2^-e with
   2^e <= hi - lo < 2^(e+1)), ``nlc = -lo * c`` (exact) and ``inv = 1 / ((hi - lo) * c)``;
   all zero for a constant map (max - min <= rtol * max(|min|, |max|), the reference's rule).
   A float64 map whose span overflows gets e = 1022 and ``hi * c - lo * c`` as its scaled span:
   finite, so it is normalised like any other (the reference halves it: the same values).
2. ``_cumavg_kernel``, grid (B * tiles of BLOCK_H x BLOCK_W output pixels,): for each layer
   l <= positions[-1] it reads taps x straight from the packed maps (cached: the maps are
   small) and maps them to ``d = x * c + nlc`` (exact scaling by a power of two, then one
   rounding: d in [0, 2) whatever the magnitude of the map, so tiny and huge maps lose no
   precision in float32). Upsampling layers (the tile needs <= BLOCK_H + 2 source rows) go
   separable: each needed source row is x-interpolated once for the tile's columns
   (``w0 * d[x0] + w1 * d[x1]``, 2 gathers per column), then added to the tile with its row
   weights ``h0``/``h1`` (a rank-1 update: ~rows + 1 FMAs per pixel). Other layers
   (downsampling) gather the 4 taps per pixel. Both interpolate with PyTorch's float32 weights
   (align_corners=False); ``u * inv`` (the normalised, upsampled map) is added to a float32
   accumulator held in registers. At each position k the kernel stores ``acc / (l + 1)``
   (correctly rounded division): every output element is written once.

The layer loop runs over l in [previous position + 1, positions[k]] for k in 0..K-1, so maps
after the last position are never read. Inputs: float16/bfloat16/float32 (computed in float32)
or float64 (taps normalised in float64, then float32). Output float32.

``triton`` is optional: without it this module imports, ``AVAILABLE`` is False and
``cumulative_average`` raises. TRITON_INTERPRET=1 must be set before this module is imported to
run the kernels on CPU tensors (the tests do that; it is not a performance path).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None
    tl = None

AVAILABLE = triton is not None

__all__ = ["AVAILABLE", "cumulative_average", "launch_grid"]

# Tile of output pixels per program. 16 x 32 = 512 pixels, 4 warps -> 4 accumulators per thread;
# 224 = 7 * 32 so the resnet50/vgg16 224x224 case wastes no lanes along x. Not tuned on a GPU yet
# (none lent to this task): benchmarks/gpu_check.sh sweeps (16, 32), (8, 64), (32, 32), (16, 64).
BLOCK_H = 16
BLOCK_W = 32
NUM_WARPS = 4
STATS_BLOCK = 1024

if AVAILABLE:

    @triton.jit
    def _stats_kernel(maps_ptr, table_ptr, params_ptr, bad_ptr, B, rtol,
                      BLOCK: tl.constexpr, IS_FP64: tl.constexpr):
        pid = tl.program_id(0)
        layer = pid // B
        b = pid % B
        offset = tl.load(table_ptr + 3 * layer)
        h = tl.load(table_ptr + 3 * layer + 1)
        w = tl.load(table_ptr + 3 * layer + 2)
        n = h * w
        base = maps_ptr + offset + b * n
        idx = tl.arange(0, BLOCK)
        if IS_FP64:
            lo = tl.full([BLOCK], float("inf"), tl.float64)
            hi = tl.full([BLOCK], float("-inf"), tl.float64)
            probe = tl.zeros([BLOCK], tl.float64)
        else:
            lo = tl.full([BLOCK], float("inf"), tl.float32)
            hi = tl.full([BLOCK], float("-inf"), tl.float32)
            probe = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n, BLOCK):
            inside = start + idx < n
            x = tl.load(base + start + idx, mask=inside, other=0.0).to(lo.dtype)
            lo = tl.minimum(lo, tl.where(inside, x, float("inf")))
            hi = tl.maximum(hi, tl.where(inside, x, float("-inf")))
            probe += x * 0.0  # NaN iff some x is NaN or infinite
        lo_s = tl.min(lo, axis=0).to(tl.float64)
        hi_s = tl.max(hi, axis=0).to(tl.float64)
        span = hi_s - lo_s  # +inf for a float64 map whose span overflows
        # e = floor(log2(span)) from the exponent bits (1024 for +inf), clamped so that c = 2^-e
        # is a normal number of the compute dtype (float32: 2^-126..2^126).
        e = ((span.to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1023
        if IS_FP64:
            e = tl.minimum(tl.maximum(e, -1022), 1022)
        else:
            e = tl.minimum(tl.maximum(e, -126), 126)
        c = ((1023 - e) << 52).to(tl.float64, bitcast=True)
        # constant: within rtol of the map's magnitude (the reference's rule; inf > x for overflow)
        varies = span > rtol * tl.maximum(tl.abs(lo_s), tl.abs(hi_s))
        c = tl.where(varies, c, 0.0)
        scaled = tl.where(varies, hi_s * c - lo_s * c, 1.0)  # = span * c, finite even when span is not
        inv = tl.where(varies, 1.0 / scaled, 0.0)
        tl.store(params_ptr + 3 * pid, c)
        tl.store(params_ptr + 3 * pid + 1, -(lo_s * c))
        tl.store(params_ptr + 3 * pid + 2, inv)
        tl.store(bad_ptr + pid, (tl.sum(probe, axis=0) != 0).to(tl.int32))

    @triton.jit
    def _axis(n_in, n_out_f, coords):
        """Source indices (i0, i1) and weights (w0, w1) of output ``coords`` along one axis, as
        PyTorch's area_pixel_compute_source_index (align_corners=False), in float32."""
        scale = tl.math.div_rn(n_in.to(tl.float32), n_out_f)
        src = tl.maximum(scale * (coords.to(tl.float32) + 0.5) - 0.5, 0.0)
        i0 = tl.minimum(src.to(tl.int32), n_in - 1)  # src >= 0: truncation is floor
        lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
        i1 = i0 + (i0 < n_in - 1).to(tl.int32)
        return i0, i1, 1.0 - lam, lam

    @triton.jit
    def _norm(x, c, nlc, IS_FP64: tl.constexpr):
        """d = x * c + nlc = (x - lo) * c in float32 (in [0, 2)), computed in float64 for float64 x."""
        if IS_FP64:
            d = (x * c + nlc).to(tl.float32)
        else:
            d = x.to(tl.float32) * c.to(tl.float32) + nlc.to(tl.float32)
        return d

    @triton.jit
    def _cumavg_kernel(maps_ptr, table_ptr, params_ptr, pos_ptr, out_ptr, B, K, H, W, tiles_w, tiles,
                       BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, SEP_ROWS: tl.constexpr,
                       IS_FP64: tl.constexpr):
        # one program per (sample, tile), folded into grid axis 0 (2^31 - 1 programs on CUDA;
        # axis 1 would cap the batch at 65,535)
        pid = tl.program_id(0)
        b = pid // tiles
        tile = pid % tiles
        ys = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
        xs = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
        h_out = H.to(tl.float32)
        w_out = W.to(tl.float32)
        acc = tl.zeros([BLOCK_H, BLOCK_W], tl.float32)
        plane = ys[:, None] * W + xs[None, :]  # int32: H * W < 2^31 is checked by the launcher
        inside = (ys[:, None] < H) & (xs[None, :] < W)
        start = b * 0  # an int32 scalar: the first layer of the next segment
        for k in range(0, K):
            last = tl.load(pos_ptr + k).to(tl.int32)
            for layer in range(start, last + 1):
                offset = tl.load(table_ptr + 3 * layer)
                h = tl.load(table_ptr + 3 * layer + 1).to(tl.int32)
                w = tl.load(table_ptr + 3 * layer + 2).to(tl.int32)
                p = params_ptr + 3 * (tl.cast(layer, tl.int64) * B + b)
                c = tl.load(p)
                nlc = tl.load(p + 1)
                inv = tl.load(p + 2).to(tl.float32)
                y0, y1, hy0, hy1 = _axis(h, h_out, ys)
                x0, x1, wx0, wx1 = _axis(w, w_out, xs)
                base = maps_ptr + offset + tl.cast(b, tl.int64) * (h * w)
                # source rows [i_lo, i_hi] feed this tile's (in-image) output rows
                i_lo = tl.min(tl.where(ys < H, y0, h), axis=0)
                i_hi = tl.max(tl.where(ys < H, y1, 0), axis=0)
                if i_hi - i_lo < SEP_ROWS:
                    # separable: x-interpolate each source row once for the tile (2 gathers per
                    # column), then a rank-1 update per row: ~(rows + 1) FMAs per pixel instead
                    # of 4 gathers + ~23 other instructions (upsampling: rows ~ BLOCK_H*h/H + 2)
                    u = tl.zeros([BLOCK_H, BLOCK_W], tl.float32)
                    for i in range(i_lo, i_hi + 1):
                        row = base + i * w
                        t = (wx0 * _norm(tl.load(row + x0), c, nlc, IS_FP64)
                             + wx1 * _norm(tl.load(row + x1), c, nlc, IS_FP64))
                        wy = tl.where(y0 == i, hy0, 0.0) + tl.where(y1 == i, hy1, 0.0)
                        u += wy[:, None] * t[None, :]
                else:
                    # direct (downsampling by > ~1.1x): 4 gathers per pixel; indices are clamped
                    # into the map, so no mask is needed even outside the image
                    r0 = (y0 * w)[:, None]
                    r1 = (y1 * w)[:, None]
                    c0 = x0[None, :]
                    c1 = x1[None, :]
                    d00 = _norm(tl.load(base + r0 + c0), c, nlc, IS_FP64)
                    d01 = _norm(tl.load(base + r0 + c1), c, nlc, IS_FP64)
                    d10 = _norm(tl.load(base + r1 + c0), c, nlc, IS_FP64)
                    d11 = _norm(tl.load(base + r1 + c1), c, nlc, IS_FP64)
                    t0 = wx0[None, :] * d00 + wx1[None, :] * d01
                    t1 = wx0[None, :] * d10 + wx1[None, :] * d11
                    u = hy0[:, None] * t0 + hy1[:, None] * t1
                acc += u * inv
            denom = tl.full([BLOCK_H, BLOCK_W], 1.0, tl.float32) * tl.cast(last + 1, tl.float32)
            dst = out_ptr + tl.cast(b * K + k, tl.int64) * H * W + plane
            tl.store(dst, tl.math.div_rn(acc, denom), mask=inside)
            start = last + 1


def launch_grid(batch: int, height: int, width: int, block_h: int = BLOCK_H,
                block_w: int = BLOCK_W) -> tuple[tuple[int], int, int]:
    """(grid, tiles_w, tiles) of ``_cumavg_kernel``: one program per (sample, tile of output
    pixels), all on grid axis 0, whose CUDA limit (2^31 - 1) bounds B * tiles."""
    tiles_w = -(-width // block_w)
    tiles = -(-height // block_h) * tiles_w
    if batch * tiles >= 2**31:
        raise ValueError(f"out: {batch} samples x {tiles} tiles of {block_h}x{block_w} pixels exceed the "
                         "2^31 - 1 programs of one launch; split the batch")
    return (batch * tiles,), tiles_w, tiles


def cumulative_average(data: torch.Tensor, table: list[tuple[int, int, int]], batch: int,
                       positions: list[int], out: torch.Tensor, *, rtol: float, block_h: int = BLOCK_H,
                       block_w: int = BLOCK_W, num_warps: int = NUM_WARPS) -> torch.Tensor:
    """Launch both kernels; returns a (L_used, B) int32 tensor, nonzero where a map is not finite.

    Args:
        data: packed maps (see ``fastinterp.ops.packing``), 1-D contiguous float16/bfloat16/
            float32/float64, on a CUDA device (or CPU under TRITON_INTERPRET=1).
        table: rows (offset_l, h_l, w_l), at least positions[-1] + 1 of them, each block inside
            ``data``.
        batch: B.
        positions: K >= 1 strictly increasing layer indices.
        out: (B, K, H, W) float32 contiguous on data's device; fully written.
        rtol: a map with max - min <= rtol * max(|min|, |max|) normalises to zeros
            (``fastinterp.ops.cumulative_average.constant_rtol``).
    """
    if not AVAILABLE:
        raise RuntimeError("backend 'triton': the triton package is not installed")
    if data.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"data: expected float16/bfloat16/float32/float64, got {data.dtype}")
    if data.dim() != 1 or not data.is_contiguous():
        raise ValueError(f"data: expected a contiguous 1-D tensor (the packed maps), got shape {tuple(data.shape)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    if len(positions) == 0 or any(b <= a for a, b in zip(positions, positions[1:])) or positions[0] < 0:
        raise ValueError(f"positions: expected strictly increasing indices >= 0, got {list(positions)}")
    used = positions[-1] + 1
    if len(table) < used:
        raise ValueError(f"table: positions reach layer {positions[-1]} but the table has {len(table)} rows")
    for l, (offset, h, w) in enumerate(table[:used]):
        if h < 1 or w < 1 or offset < 0 or offset + batch * h * w > data.numel():
            raise ValueError(f"table: row {l} {{offset {offset}, h {h}, w {w}}} with batch {batch} does not "
                             f"fit in data of {data.numel()} values")
    expected = f"(B={batch}, K={len(positions)}, H, W)"
    if (out.dtype != torch.float32 or out.dim() != 4 or not out.is_contiguous() or out.device != data.device
            or out.shape[0] != batch or out.shape[1] != len(positions) or 0 in out.shape):
        raise ValueError(f"out: expected a contiguous float32 tensor of shape {expected} on {data.device}, "
                         f"got {'contiguous' if out.is_contiguous() else 'non-contiguous'} {out.dtype} "
                         f"{tuple(out.shape)} on {out.device}")
    if not 0.0 <= rtol < 1.0:
        raise ValueError(f"rtol: expected a relative tolerance in [0, 1), got {rtol!r}")
    _, k, height, width = out.shape
    if height * width >= 2**31:
        raise ValueError(f"out: H * W must be < 2^31, got {height} x {width}")
    device = data.device
    meta = torch.tensor([v for row in table[:used] for v in row] + list(positions), dtype=torch.int64)
    meta = meta.to(device, non_blocking=True)
    table_t, pos_t = meta[: 3 * used], meta[3 * used:]
    params = torch.empty(used * batch * 3, dtype=torch.float64, device=device)
    bad = torch.empty(used * batch, dtype=torch.int32, device=device)
    is_fp64 = data.dtype == torch.float64
    grid, tiles_w, tiles = launch_grid(batch, height, width, block_h, block_w)
    if used * batch >= 2**31:
        raise ValueError(f"data: {used} layers x {batch} samples exceed the 2^31 - 1 programs of one launch")
    _stats_kernel[(used * batch,)](data, table_t, params, bad, batch, float(rtol), BLOCK=STATS_BLOCK,
                                   IS_FP64=is_fp64)
    _cumavg_kernel[grid](data, table_t, params, pos_t, out, batch, k, height, width, tiles_w, tiles,
                         BLOCK_H=block_h, BLOCK_W=block_w, SEP_ROWS=block_h + 2, IS_FP64=is_fp64,
                         num_warps=num_warps)
    return bad.view(used, batch)
