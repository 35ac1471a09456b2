"""fastinterp.conv_layers: execution order, every listed architecture, errors, no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastinterp
from conftest import assert_same_state, build, images_for, model_state

ARCHITECTURES = [
    "resnet18", "resnet50", *(pytest.param(name, marks=pytest.mark.slow) for name in ("vgg11", "vgg16", "vgg11_bn",
                                                                                      "vgg16_bn")),
    "inception_v3", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
    "regnet_y_400mf", "squeezenet1_1",
]


def executed_convs(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Independent oracle: a global forward hook records every Conv2d call in order."""
    names = {id(m): n for n, m in model.named_modules()}
    calls = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d) and names[id(module)] not in calls:
            calls.append(names[id(module)])

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_conv_layers_matches_executed_order(arch):
    model = build(arch)
    x = images_for(arch, batch=1)
    names = fastinterp.conv_layers(model, x)
    assert names == executed_convs(model, x)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], nn.Conv2d) for n in names)
    assert len(set(names)) == len(names)


def test_known_first_and_last_layers():
    assert fastinterp.conv_layers(build("resnet18"), images_for("resnet18", 1))[0] == "conv1"
    assert fastinterp.conv_layers(build("resnet18"), images_for("resnet18", 1))[-1] == "layer4.1.conv2"
    names = fastinterp.conv_layers(build("inception_v3"), images_for("inception_v3", 1))
    assert names[0] == "Conv2d_1a_3x3.conv"
    assert not any(n.startswith("AuxLogits") for n in names)  # the aux head does not run in eval


class Reordered(nn.Module):
    """Registration order (early, late, reused) differs from execution order (early, reused, late)."""

    def __init__(self):
        super().__init__()
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.reused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.reused(self.late(self.reused(self.early(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_execution_order_not_registration_order_and_reused_conv_listed_once():
    assert fastinterp.conv_layers(Reordered(), torch.randn(1, 3, 8, 8)) == ["early", "reused", "late"]


def test_default_example_input_on_plain_sequential(small_cnn):
    assert fastinterp.conv_layers(small_cnn) == ["0", "2", "5"]


def test_default_input_failure_names_example_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3))
    with pytest.raises(ValueError, match="example_input"):
        fastinterp.conv_layers(model)
    assert fastinterp.conv_layers(model, torch.zeros(1, 1, 32, 32)) == ["0"]


def test_no_conv_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        fastinterp.conv_layers(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


def test_scripted_model_is_rejected(small_cnn):
    with pytest.raises(TypeError, match="TorchScript"):
        fastinterp.conv_layers(torch.jit.script(small_cnn))


def test_state_is_left_untouched(small_cnn):
    small_cnn.train()
    before = model_state(small_cnn)
    fastinterp.conv_layers(small_cnn, torch.randn(4, 3, 16, 16))
    assert_same_state(before, model_state(small_cnn))
