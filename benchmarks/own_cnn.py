"""A CNN the zoo does not have, as a user would hand it to ``fastinterp fit``: a factory returning
torchvision's mobilenet_v2 (4 classes, ImageNet normalisation expected *outside* the model), and
the training that made its state dict (``python benchmarks/fit_own_cnn.py train-cnn``)."""

from __future__ import annotations

import torchvision


def mobilenet_v2_shapes():
    """torchvision mobilenet_v2 with 4 outputs (the textured shapes' classes); it expects
    ImageNet-normalised input, as torchvision models do."""
    return torchvision.models.mobilenet_v2(num_classes=4)
