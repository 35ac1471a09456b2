"""Argument checks shared by the public API.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong
value) with a message that names the argument and says what was expected. Nothing is coerced:
a check either passes the object through unchanged or raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "check_call",
    "check_images",
    "check_model",
    "check_positions",
    "check_size",
    "declared_outputs",
    "check_targets",
    "first_conv",
    "stem_weight",
]


def check_model(model: object) -> nn.Module:
    """``model`` must be an eager ``nn.Module`` (hooks do not run in scripted modules)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "model: a TorchScript module runs no Python hooks, so its layers cannot be explained; "
            "pass the eager nn.Module it was scripted from"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def declared_outputs(model: nn.Module) -> int | None:
    """The number of classes ``model`` says it has without running it: its ``num_classes``
    attribute (zoo CNNs), else its last ``nn.Linear``'s ``out_features``; None if neither."""
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first registered ``nn.Conv2d`` of ``model`` (its stem: gives channels, device, dtype)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(
        f"model: {type(model).__name__} has no nn.Conv2d layer; fastinterp explains convolutional "
        "networks through their conv layers"
    )


def stem_weight(model: nn.Module) -> torch.Tensor:
    """The stem's weight, for its dtype and device, read without running a parametrization: a
    parametrized weight (``torch.nn.utils.parametrizations.spectral_norm``...) is computed on every
    read, and in train mode that read runs a power iteration that changes the model."""
    stem = first_conv(model)
    parametrizations = getattr(stem, "parametrizations", None)
    if isinstance(parametrizations, nn.ModuleDict) and "weight" in parametrizations:
        originals = parametrizations["weight"]  # "original", or "original0".. for several tensors
        return originals.original if hasattr(originals, "original") else originals.original0
    return stem.weight


def check_images(images: object, model: nn.Module, name: str = "images") -> torch.Tensor:
    """``images`` must be a finite float tensor (B >= 1, C, H, W) matching the model's stem.

    C must equal the first conv's ``in_channels``; device and dtype must equal its weight's.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if batch == 0:
        raise ValueError(f"{name}: batch size is 0; expected at least one image")
    if height == 0 or width == 0:
        raise ValueError(f"{name}: empty spatial size {tuple(images.shape)}")
    stem = first_conv(model)
    if channels != stem.in_channels:
        raise ValueError(
            f"{name}: the model's first conv expects {stem.in_channels} channels, got {channels} "
            f"(shape {tuple(images.shape)})"
        )
    weight = stem_weight(model)
    if images.device != weight.device:
        raise ValueError(f"{name}: on {images.device} but the model is on {weight.device}; move one of them")
    if images.dtype != weight.dtype:
        raise TypeError(f"{name}: dtype {images.dtype} but the model's weights are {weight.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return images


def check_call(model: object, images: object, targets: object) -> torch.Tensor | None:
    """The arguments of one explaining call: ``model`` (:func:`check_model`), its ``images``
    (:func:`check_images`) and ``targets`` (:func:`check_targets`); returns the targets as a (B,)
    int64 tensor on the images' device, or None."""
    check_model(model)
    check_images(images, model)
    return check_targets(targets, images.shape[0], images.device)


def check_targets(targets: object, batch: int, device: torch.device) -> torch.Tensor | None:
    """``targets``: None, an int, a sequence of ints or a 1-D integer tensor of length ``batch``.

    Returns a (B,) int64 tensor on ``device`` (or None). Range is checked against the logits later
    by :func:`check_target_range`.
    """
    if targets is None:
        return None
    if isinstance(targets, bool):
        raise TypeError("targets: expected class indices (int), got a bool")
    if isinstance(targets, int):
        return torch.full((batch,), targets, dtype=torch.int64, device=device)
    if isinstance(targets, torch.Tensor):
        if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
            raise TypeError(f"targets: expected an integer tensor of class indices, got dtype {targets.dtype}")
        if targets.dim() != 1 or targets.shape[0] != batch:
            raise ValueError(f"targets: expected shape ({batch},) (one class per image), got {tuple(targets.shape)}")
        return targets.to(device=device, dtype=torch.int64)
    if isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        if any(isinstance(t, bool) or not isinstance(t, int) for t in targets):
            raise TypeError("targets: expected a sequence of ints (class indices)")
        if len(targets) != batch:
            raise ValueError(f"targets: expected {batch} class indices (one per image), got {len(targets)}")
        return torch.tensor(list(targets), dtype=torch.int64, device=device)
    raise TypeError(f"targets: expected None, an int, a sequence of ints or an integer tensor, got {type(targets).__name__}")


def check_target_range(targets: torch.Tensor, num_classes: int) -> None:
    """Every target must index a logit: 0 <= t < num_classes."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets: class indices must be in [0, {num_classes}) for a model with {num_classes} "
            f"outputs, got {targets.tolist()}"
        )


def check_logits_and_targets(logits: object, batch: int, targets: torch.Tensor | None) -> torch.Tensor:
    """``logits`` must be a (batch, num_classes) tensor; returns the targets: those given
    (range-checked) or the argmax of the logits."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model: expected it to return logits of shape (B, num_classes) = ({batch}, C), got {got}")
    if targets is None:
        targets = logits.detach().argmax(dim=1)
    check_target_range(targets, logits.shape[1])
    return targets


def check_size(size: object, name: str = "size") -> tuple[int, int]:
    """``size``: an int >= 1 (square) or a pair (H, W) of ints >= 1."""
    if isinstance(size, bool):
        raise TypeError(f"{name}: expected an int or (H, W), got a bool")
    if isinstance(size, int):
        pair = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints (H, W), got {size!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name}: must be >= 1, got {size!r}")
    return pair


def check_positions(positions: object, num_maps: int) -> list[int]:
    """``positions``: a non-empty, strictly increasing sequence of ints in [0, num_maps)."""
    if isinstance(positions, torch.Tensor) or not isinstance(positions, Sequence) or isinstance(positions, (str, bytes)):
        raise TypeError(f"positions: expected a sequence of ints, got {type(positions).__name__}")
    if len(positions) == 0:
        raise ValueError("positions: expected at least one position")
    if any(isinstance(p, bool) or not isinstance(p, int) for p in positions):
        raise TypeError(f"positions: expected ints, got {list(positions)!r}")
    out = [int(p) for p in positions]
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"positions: must be strictly increasing, got {out}")
    if out[0] < 0 or out[-1] >= num_maps:
        raise ValueError(f"positions: each must be in [0, {num_maps}) for {num_maps} maps, got {out}")
    return out
