"""Layer discovery: which conv layers a model runs, in the order it runs them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fastinterp.validation import check_images, check_model, first_conv

__all__ = ["conv_layers", "eval_semantics", "module_names"]

DEFAULT_INPUT_SIZE = 224


@contextmanager
def eval_semantics(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then put every module's ``training`` flag back as it was.

    Eval mode means BatchNorm uses (and never updates) its running statistics and dropout is off,
    so explaining a model changes none of its state and each sample is explained independently.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def module_names(model: nn.Module) -> dict[int, str]:
    """id(module) -> its first qualified name in ``model.named_modules()``."""
    return {id(module): name for name, module in model.named_modules()}


def conv_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Qualified names of every ``nn.Conv2d`` that runs in ``model``'s forward, in execution order.

    The order is found by running the model once (under ``no_grad``, in eval semantics, state
    restored), not from registration order, which differs in e.g. inception_v3 and densenet.
    A conv module called several times is listed once, at its first call.

    Args:
        model: an eager ``nn.Module`` with at least one ``nn.Conv2d``.
        example_input: (B, C, H, W) input to run; default zeros of shape (1, C, 224, 224) on the
            model's device and dtype, C being the first conv's ``in_channels``.
    """
    check_model(model)
    stem = first_conv(model)
    if example_input is None:
        example_input = torch.zeros(
            1, stem.in_channels, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE,
            dtype=stem.weight.dtype, device=stem.weight.device,
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

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with eval_semantics(model), torch.no_grad():
            try:
                model(example_input)
            except Exception as error:
                if given:
                    raise
                shape = tuple(example_input.shape)
                raise ValueError(
                    f"example_input: the model failed on the default input of shape {shape} "
                    f"({type(error).__name__}: {error}); pass an example_input of the size it expects"
                ) from error
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ValueError(f"model: none of the nn.Conv2d layers of {type(model).__name__} ran in its forward pass")
    return order
