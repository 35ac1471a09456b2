"""Where a map is made: the per-layer class activation maps of a CNN and the paper's
representation of it (cumulative maps + teacher), from the images to the generator's inputs.

    layers          which conv layers run, in execution order
    eval_view       running a user's model without touching it
    capture         one forward + one backward: every layer's output and gradient
    formulas        per-layer CAM formulas (Grad-CAM, Grad-CAM++, LayerCAM, the released code's)
    forward_only    the activation representation: every layer's map from one forward
    representation  layer maps -> cumulative maps (CGMs) + teacher; presets
    resize          images to the generator's resolution, maps back
"""

from fastinterp.maps.capture import Capture, capture
from fastinterp.maps.eval_view import add_forward_hook, add_forward_pre_hook, eval_view
from fastinterp.maps.formulas import METHODS, weighted_sum
from fastinterp.maps.forward_only import HEAD_MAP, activation_layer_maps, head_plan
from fastinterp.maps.layers import conv_layers
from fastinterp.maps.options import (ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION, FIELDS, KINDS, ORDERS,
                                     PAPER_PRESET, PRESETS, check_method, check_representation, default_order,
                                     representation_options)
from fastinterp.maps.representation import (LayerMaps, Representation, TooFewLayersError, cam_maps, cnn_representation,
                                            drop_1x1_maps, gradcam, layer_maps, layer_maps_reference, paper_positions)
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE, image_resize_of, resize_images, resize_maps

__all__ = ["ACTIVATION_REPRESENTATION", "DEFAULT_IMAGE_RESIZE", "DEFAULT_REPRESENTATION", "FIELDS", "HEAD_MAP", "KINDS",
           "METHODS", "ORDERS", "PAPER_PRESET", "PRESETS", "Capture", "LayerMaps", "Representation",
           "TooFewLayersError", "activation_layer_maps", "add_forward_hook", "add_forward_pre_hook", "cam_maps",
           "capture", "check_method", "check_representation", "cnn_representation", "conv_layers", "default_order",
           "drop_1x1_maps", "eval_view", "gradcam", "head_plan", "image_resize_of", "layer_maps",
           "layer_maps_reference", "paper_positions", "representation_options",
           "resize_images", "resize_maps", "weighted_sum"]
