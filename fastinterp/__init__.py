"""fastinterp: fast explanations of CNN image classifiers (arXiv 2301.08067, made fast).

Dataflow, one module per step:
    layers (which convs run) -> capture (1 forward + 1 backward) -> cams (per-layer formula)
    -> representation (maps, cumulative maps, teacher) -> ops (cumulative_average kernels)
"""

from fastinterp import ops
from fastinterp._version import __version__
from fastinterp.checkpoint import load_generator
from fastinterp.layers import conv_layers
from fastinterp.representation import (
    LayerMaps,
    Representation,
    cnn_representation,
    gradcam,
    layer_maps,
    layer_maps_reference,
    paper_positions,
)

__all__ = [
    "LayerMaps",
    "Representation",
    "__version__",
    "cnn_representation",
    "conv_layers",
    "gradcam",
    "layer_maps",
    "layer_maps_reference",
    "load_generator",
    "ops",
    "paper_positions",
]
