"""fastinterp: fast explanations of CNN image classifiers (arXiv 2301.08067, made fast).

Dataflow, one module per step:
    layers (which convs run) -> eval_view + capture (1 forward + 1 backward, model untouched)
    -> cams (per-layer formula) -> representation (maps, cumulative maps, teacher)
    -> ops (cumulative_average kernels); resize (images to the generator's resolution)
    forward_only (the activation representation: no backward)
    runtime (compile(cnn, generator) -> Explainer.explain: serving)
"""

from fastinterp import ops
from fastinterp._version import __version__
from fastinterp.checkpoint import load_generator
from fastinterp.layers import conv_layers
from fastinterp.representation import (
    DEFAULT_REPRESENTATION,
    PAPER_PRESET,
    LayerMaps,
    Representation,
    cnn_representation,
    gradcam,
    layer_maps,
    layer_maps_reference,
    paper_positions,
    representation_options,
)
from fastinterp.resize import image_resize_of, resize_images
from fastinterp.runtime import Explainer, Explanation, compile  # noqa: A004

__all__ = [
    "DEFAULT_REPRESENTATION",
    "Explainer",
    "Explanation",
    "PAPER_PRESET",
    "LayerMaps",
    "Representation",
    "__version__",
    "cnn_representation",
    "compile",
    "conv_layers",
    "gradcam",
    "layer_maps",
    "layer_maps_reference",
    "load_generator",
    "ops",
    "paper_positions",
    "image_resize_of",
    "representation_options",
    "resize_images",
]
