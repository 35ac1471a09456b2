"""Every bad input of the public API raises a clear TypeError/ValueError naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastinterp
from conftest import assert_same_state, model_state

GOOD = torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize(
    "images,error,match",
    [
        ([[1.0]], TypeError, "images: expected a torch.Tensor"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.int64), TypeError, "images: expected a floating-point"),
        (torch.zeros(3, 16, 16), ValueError, r"images: expected shape \(B, C, H, W\)"),
        (torch.zeros(0, 3, 16, 16), ValueError, "images: batch size is 0"),
        (torch.zeros(2, 1, 16, 16), ValueError, "images: the model's first conv expects 3 channels"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.float64), TypeError, "images: dtype torch.float64"),
        (GOOD.clone().index_fill_(0, torch.tensor([1]), float("nan")), ValueError, "images: contains NaN"),
        (GOOD.clone().index_fill_(0, torch.tensor([0]), float("inf")), ValueError, "images: contains NaN or infinite"),
        (torch.zeros(2, 3, 16, 16, device="meta"), ValueError, "images: on meta"),
    ],
)
def test_bad_images(small_cnn, images, error, match):
    for call in (fastinterp.layer_maps, fastinterp.cnn_representation, fastinterp.gradcam):
        with pytest.raises(error, match=match):
            call(small_cnn, images)


@pytest.mark.parametrize(
    "targets,error,match",
    [
        ([1, 2, 3], ValueError, "targets: expected 2 class indices"),
        (torch.tensor([1]), ValueError, r"targets: expected shape \(2,\)"),
        (torch.tensor([[1, 2]]), ValueError, r"targets: expected shape \(2,\)"),
        (torch.tensor([1.0, 2.0]), TypeError, "targets: expected an integer tensor"),
        (torch.tensor([True, False]), TypeError, "targets: expected an integer tensor"),
        ([1.0, 2.0], TypeError, "targets: expected a sequence of ints"),
        (True, TypeError, "targets"),
        ("cat", TypeError, "targets"),
        ([0, 5], ValueError, r"targets: class indices must be in \[0, 5\)"),
        (-1, ValueError, r"targets: class indices must be in \[0, 5\)"),
    ],
)
def test_bad_targets(small_cnn, targets, error, match):
    before = model_state(small_cnn)
    with pytest.raises(error, match=match):
        fastinterp.layer_maps(small_cnn, GOOD, targets=targets)
    assert_same_state(before, model_state(small_cnn))


@pytest.mark.parametrize(
    "layers,error,match",
    [
        (["nope"], ValueError, "layers: 'nope' is not a module"),
        ("0", TypeError, "layers: expected a list"),
        ([], ValueError, "layers: expected at least one"),
        ([0], TypeError, "layers: expected module names"),
        (["0", "0"], ValueError, "layers: names repeat"),
        (["9"], TypeError, r"layers: '9' must output a \(B, C, h, w\) tensor"),
    ],
)
def test_bad_layers(small_cnn, layers, error, match):
    with pytest.raises(error, match=match):
        fastinterp.layer_maps(small_cnn, GOOD, layers=layers)


def test_bad_options(small_cnn):
    with pytest.raises(ValueError, match="method: expected one of"):
        fastinterp.layer_maps(small_cnn, GOOD, method="scorecam-ish")
    with pytest.raises(ValueError, match="order"):
        fastinterp.cnn_representation(small_cnn, GOOD, k=2, order="random")
    with pytest.raises(ValueError, match="teacher"):
        fastinterp.cnn_representation(small_cnn, GOOD, k=2, teacher="features.99")
    with pytest.raises(TypeError, match="teacher"):
        fastinterp.cnn_representation(small_cnn, GOOD, k=2, teacher=3)
    with pytest.raises(ValueError, match="size"):
        fastinterp.cnn_representation(small_cnn, GOOD, k=2, size=0)
    with pytest.raises(ValueError, match="k: the paper's rule"):
        fastinterp.cnn_representation(small_cnn, GOOD, k=8)  # 3 conv layers
    with pytest.raises(TypeError, match="layer"):
        fastinterp.gradcam(small_cnn, GOOD, layer=0)
    with pytest.raises(ValueError, match="size"):
        fastinterp.gradcam(small_cnn, GOOD, size=(0, 3))


def test_bad_models():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        fastinterp.layer_maps(lambda x: x, GOOD)
    with pytest.raises(ValueError, match="model: .* has no nn.Conv2d"):
        fastinterp.layer_maps(nn.Sequential(nn.Flatten(), nn.Linear(768, 2)), GOOD)

    class Features(nn.Module):  # returns a feature map instead of logits
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(TypeError, match=r"model: expected it to return logits"):
        fastinterp.layer_maps(Features(), GOOD)
