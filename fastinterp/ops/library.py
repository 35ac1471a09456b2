"""``torch.ops.fastinterp.cumulative_average``: the fused cumulative average as a torch custom op,
so that ``torch.compile`` and AOTInductor call the fused kernel instead of tracing through it.

    maps       L tensors (B, h_l, w_l), float16/bfloat16/float32/float64, finite, one device
    size       [H, W], output pixels
    positions  K strictly increasing indices in [0, L)
    -> (B, K, H, W) float32 in [0, 1], not differentiable (``ops.cumulative_average``'s arithmetic)

Kernels: CPU -> the C++/OpenMP kernel (backend "cpp"); CUDA -> the Triton backend (the PyTorch
reference where triton is not installed); fake (meta) -> an empty (B, K, H, W) float32 after the
argument checks, so bad arguments fail at trace time with the names the eager API uses.

CUDA is registered with ``custom_op`` too, not ``torch.library.triton_op`` + ``wrap_triton``: a
triton_op is one op for every device whose body Inductor traces (on the CPU it would trace into the
C++ call, which is not traceable), and our Triton backend ends with a host sync (``bool(bad.any())``,
the NaN/inf check naming the map) that cannot be traced either; its launcher would also have to call
the kernels through ``wrap_triton``, a path TRITON_INTERPRET=1 passes straight through, so it could
only be tested on a GPU. That host sync also makes the op ``cudagraph_unsafe`` (tagged).

Importing this module registers the op once per process (importing it again, or reloading it, reuses
the registration).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastinterp._core.validation import check_positions, check_size
from fastinterp.ops.cumulative_average import check_maps, cumulative_average, pick_backend

__all__ = ["OP_NAME", "cumulative_average_op"]

OP_NAME = "fastinterp::cumulative_average"
_SCHEMA = "(Tensor[] maps, int[] size, int[] positions) -> Tensor"


def cumulative_average_op(maps: Sequence[torch.Tensor], size: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
    """``torch.ops.fastinterp.cumulative_average(maps, size, positions)``: (B, K, H, W) float32.

    ``size`` is (H, W) (an int is taken as a square); see the module doc for the arguments."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    return torch.ops.fastinterp.cumulative_average(list(maps), list(size), list(positions))


def _checked_output_shape(maps, size, positions) -> tuple[int, int, int, int]:
    """(B, K, H, W) of valid arguments; raises TypeError / ValueError naming the bad one."""
    maps = check_maps(maps, finite=False)  # finiteness needs the values: the kernels check it
    height, width = check_size(tuple(size))
    positions = check_positions(positions, len(maps))
    return maps[0].shape[0], len(positions), height, width


def _cpu_kernel(maps, size, positions):
    return cumulative_average(maps, tuple(size), positions, backend="cpp")


def _cuda_kernel(maps, size, positions):
    return cumulative_average(maps, tuple(size), positions, backend=pick_backend("auto", maps[0].device))


def _fake_kernel(maps, size, positions):
    return maps[0].new_empty(_checked_output_shape(maps, size, positions), dtype=torch.float32)


def _mark_non_differentiable(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(output)  # as the eager API: the result never requires grad


def _no_gradient(ctx, grad):  # never called: the output is non-differentiable
    raise RuntimeError(f"{OP_NAME}: the cumulative maps are not differentiable")


def _register() -> None:
    op = torch.library.custom_op(OP_NAME, _cpu_kernel, mutates_args=(), device_types="cpu", schema=_SCHEMA,
                                 tags=(torch.Tag.cudagraph_unsafe,))
    op.register_kernel("cuda", _cuda_kernel)
    op.register_fake(_fake_kernel)
    op.register_autograd(_no_gradient, setup_context=_mark_non_differentiable)


if not hasattr(torch.ops.fastinterp, "cumulative_average"):
    _register()
