"""Layer discovery: which conv layers a model runs, in the order it runs them."""

from __future__ import annotations

import torch
from torch import nn

from fastinterp.maps.eval_view import add_forward_hook, eval_view
from fastinterp._core.validation import check_images, check_model, first_conv, stem_weight

__all__ = ["conv_layers", "module_names"]

DEFAULT_INPUT_SIZE = 224


def module_names(model: nn.Module) -> dict[int, str]:
    """id(module) -> its first qualified name in ``model.named_modules()``."""
    return {id(module): name for name, module in model.named_modules()}


def conv_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Qualified names of every ``nn.Conv2d`` that runs in ``model``'s forward, in execution order.

    The order is found by running the model once (under ``no_grad``, on an eval view of it: the
    model itself is not touched, see ``fastinterp.maps.eval_view``), not from registration order,
    which differs in e.g. inception_v3 and densenet. A conv module called several times is
    listed once, at its first call.

    Args:
        model: an eager ``nn.Module`` with at least one ``nn.Conv2d``.
        example_input: (B, C, H, W) input to run; default zeros of shape (1, C, 224, 224) on the
            model's device and dtype, C being the first conv's ``in_channels``.
    """
    check_model(model)
    stem, weight = first_conv(model), stem_weight(model)
    if example_input is None:
        example_input = torch.zeros(
            1, stem.in_channels, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, dtype=weight.dtype, device=weight.device,
        )
        given = False
    else:
        check_images(example_input, model, name="example_input")
        given = True

    order: list[str] = []

    def record(name: str):
        def hook(module, inputs, output):
            if name not in order:
                order.append(name)
        return hook

    view = eval_view(model)  # hooks go on the view's modules, never on the model's
    for name, module in view.named_modules():
        if isinstance(module, nn.Conv2d):
            add_forward_hook(module, record(name))
    with torch.no_grad():
        try:
            view(example_input)
        except Exception as error:
            if given:
                raise
            shape = tuple(example_input.shape)
            raise ValueError(
                f"example_input: the model failed on the default input of shape {shape} "
                f"({type(error).__name__}: {error}); pass an example_input of the size it expects"
            ) from error
    if not order:
        raise ValueError(f"model: none of the nn.Conv2d layers of {type(model).__name__} ran in its forward pass")
    return order
