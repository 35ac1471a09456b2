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
