"""Map operations: the representation's arithmetic, with a PyTorch reference for each op.

``cumulative_average`` turns per-layer maps into the paper's cumulative maps (CGMs);
``cumulative_average_op`` calls it as the torch custom op ``torch.ops.fastinterp.cumulative_average``
(``library``: registered on first use of the name, for torch.compile / AOTInductor graphs).
"""

from fastinterp._core.lazy import lazy_names
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

_LAZY = {"cumulative_average_op": "fastinterp.ops.library"}

__all__ = [
    "BACKENDS", "CONSTANT_ULPS", "constant_rtol", "cumulative_average", "cumulative_average_op",
    "cumulative_average_reference", "minmax_normalise", "normalised_map", "pick_backend",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
