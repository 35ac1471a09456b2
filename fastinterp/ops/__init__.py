"""Map operations: the representation's arithmetic, with a PyTorch reference for each op.

``cumulative_average`` turns per-layer maps into the paper's cumulative maps (CGMs).
"""

from fastinterp.ops.cumulative_average import (
    BACKENDS,
    CONSTANT_ULPS,
    constant_rtol,
    cumulative_average,
    cumulative_average_reference,
    minmax_normalise,
    normalised_map,
    pick_backend,
)

__all__ = [
    "BACKENDS", "CONSTANT_ULPS", "constant_rtol", "cumulative_average", "cumulative_average_reference",
    "minmax_normalise", "normalised_map", "pick_backend",
]
