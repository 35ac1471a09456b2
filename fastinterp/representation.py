"""The paper's representation of a CNN: a CAM at every conv layer, cumulatively averaged.

    images -> capture (1 forward + 1 backward) -> per-layer maps (B, h_l, w_l)
           -> ops.cumulative_average -> K cumulative maps (CGMs) (B, K, S, S) + teacher (B, S, S)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fastinterp.cams import METHODS
from fastinterp.capture import capture
from fastinterp.ops import cumulative_average
from fastinterp.validation import check_size

__all__ = [
    "LayerMaps",
    "Representation",
    "cnn_representation",
    "gradcam",
    "layer_maps",
    "layer_maps_reference",
    "paper_positions",
]

ORDERS = ("last_to_first", "first_to_last")


@dataclass
class LayerMaps:
    """Raw (unnormalised) class activation maps of several layers from one pass."""

    maps: list[torch.Tensor]  # one (B, h_l, w_l) per layer, float32 (float64 for float64 models)
    layer_names: list[str]  # execution order, aligned with maps
    logits: torch.Tensor  # (B, num_classes), pre-softmax
    targets: torch.Tensor  # (B,) int64: the explained class of each image


@dataclass
class Representation:
    """Input of the explanation generator, for B images."""

    cgm: torch.Tensor  # (B, K, S, S) float32 in [0, 1]: cumulative maps at ``positions``
    teacher: torch.Tensor  # (B, S, S) float32 in [0, 1]: normalised map of the teacher layer
    logits: torch.Tensor  # (B, num_classes)
    targets: torch.Tensor  # (B,) int64
    layer_names: list[str]  # accumulation order (``order``), length L
    positions: list[int]  # K indices into layer_names where the CGMs are taken
    teacher_layer: str


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    return method  # type: ignore[return-value]


def _maps_from_capture(cap, method: str) -> list[torch.Tensor]:
    formula = METHODS[method]
    maps = []
    for a, g in zip(cap.activations, cap.gradients):
        dtype = torch.promote_types(a.dtype, torch.float32)
        maps.append(formula(a.to(dtype), g.to(dtype)))
    return maps


def layer_maps(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    targets: object = None,
    method: str = "gradcam",
) -> LayerMaps:
    """CAMs of many layers for one forward and one backward pass, whatever their number.

    Args:
        model: eager ``nn.Module`` returning logits (B, num_classes). It is explained in eval
            semantics (BatchNorm running statistics, no dropout) and left exactly as it was.
        images: (B, C, H, W) float tensor, finite, on the model's device and dtype.
        layers: module names (default: every ``nn.Conv2d`` that runs). Maps come back in
            execution order, whatever order the names are given in.
        targets: None (argmax of the logits), an int, a sequence of ints or a (B,) int tensor.
        method: "gradcam", "gradcam++", "layercam" or "paper-gradcam" (see ``fastinterp.cams``).
    """
    _check_method(method)
    cap = capture(model, images, layers=layers, targets=targets)
    return LayerMaps(maps=_maps_from_capture(cap, method), layer_names=cap.layer_names,
                     logits=cap.logits, targets=cap.targets)


def layer_maps_reference(model: nn.Module, images: torch.Tensor, layer_names: Sequence[str],
                         targets: torch.Tensor, method: str = "gradcam") -> list[torch.Tensor]:
    """What the released code did: a separate forward and backward for every layer.

    The test oracle of :func:`layer_maps` and the baseline of its benchmark (no argument checks,
    no state handling: call it on a model in eval mode). The hook hands downstream a clone so that
    an in-place op after the layer cannot overwrite the activations; gradients flow because the
    input requires grad.
    """
    modules = dict(model.named_modules())
    maps = []
    for name in layer_names:
        store = {}

        def hook(module, inputs, output):
            store["a"] = output
            return output.clone()

        handle = modules[name].register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = model(images.clone().requires_grad_(True))
        finally:
            handle.remove()
        score = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, store["a"], allow_unused=True)
        grad = torch.zeros_like(store["a"]) if grad is None else grad
        maps.append(METHODS[method](store["a"].detach(), grad))
    return maps


def paper_positions(num_layers: int, k: int = 8) -> list[int]:
    """The released code's choice of K cumulative maps among L layers.

    p_i = ceil(i * 100 / (k - 1)) for i = 0..k-1, position_i = ceil(p_i * (L - 1) / 100),
    computed in exact integer arithmetic. Raises if the rule repeats a position (too few layers).
    """
    for name, value in (("num_layers", num_layers), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {value!r}")
    if k < 2:
        raise ValueError(f"k: the rule spaces k >= 2 maps (it divides by k - 1), got {k}")
    if num_layers < 1:
        raise ValueError(f"num_layers: expected >= 1, got {num_layers}")
    percentages = [-(-i * 100 // (k - 1)) for i in range(k)]
    positions = [-(-p * (num_layers - 1) // 100) for p in percentages]
    if any(b <= a for a, b in zip(positions, positions[1:])):
        raise ValueError(
            f"k: the paper's rule picks repeated positions {positions} for num_layers={num_layers}, k={k}; "
            "use a smaller k or a CNN with more conv layers"
        )
    return positions


def _teacher_index(teacher: object, names: list[str]) -> int:
    """Index into execution-ordered ``names`` of the teacher layer."""
    if teacher == "last":
        return len(names) - 1
    if teacher == "first":
        return 0
    if isinstance(teacher, str) and teacher in names:
        return names.index(teacher)
    raise ValueError(f"teacher: expected 'last', 'first' or one of the explained layers {names[:3]}..., got {teacher!r}")


def cnn_representation(
    model: nn.Module,
    images: torch.Tensor,
    targets: object = None,
    k: int = 8,
    size: int | tuple[int, int] = 64,
    layers: Sequence[str] | None = None,
    method: str = "gradcam",
    order: str = "last_to_first",
    teacher: str = "last",
    backend: str = "auto",
) -> Representation:
    """K cumulative maps (CGMs) and a teacher map from one forward and one backward pass.

    Args:
        k: number of cumulative maps, positions by :func:`paper_positions`.
        size: output resolution S (int) or (H, W).
        layers: layers to accumulate (default: every conv layer that runs).
        method: CAM formula for every layer (``fastinterp.cams.METHODS``).
        order: "last_to_first" (the paper's accumulation order) or "first_to_last".
        teacher: "last" conv, "first" conv, or a layer name: its normalised map at ``size``.
        backend: ``fastinterp.ops.cumulative_average`` backend.
    """
    _check_method(method)
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    if not (teacher in ("last", "first") or isinstance(teacher, str)):
        raise TypeError(f"teacher: expected 'last', 'first' or a layer name, got {teacher!r}")
    size = check_size(size)
    if teacher not in ("last", "first"):  # a layer name: fail before the pass if it cannot be one
        candidates = layers if layers is not None else [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if teacher not in candidates:
            raise ValueError(f"teacher: {teacher!r} is not among the explained layers; expected 'last', 'first' or one of them")
    result = layer_maps(model, images, layers=layers, targets=targets, method=method)
    t_index = _teacher_index(teacher, result.layer_names)
    positions = paper_positions(len(result.maps), k)

    maps, names = result.maps, result.layer_names
    if order == "last_to_first":
        maps, names = maps[::-1], names[::-1]
    cgm = cumulative_average(maps, size, positions, backend=backend)
    teacher_map = cumulative_average([result.maps[t_index]], size, [0], backend=backend)[:, 0]
    return Representation(cgm=cgm, teacher=teacher_map, logits=result.logits, targets=result.targets,
                          layer_names=list(names), positions=positions,
                          teacher_layer=result.layer_names[t_index])


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | None = None,
    targets: object = None,
    size: int | tuple[int, int] | None = None,
    method: str = "gradcam",
) -> torch.Tensor:
    """The everyday call: one layer's map, min-max normalised, upsampled: (B, H, W) in [0, 1].

    Args:
        layer: module name (default: the last conv layer that runs; the backward stops there).
        size: output (H, W) or int (default: the images' resolution).
    """
    _check_method(method)
    if size is not None:
        size = check_size(size)
    if layer is None:
        cap = capture(model, images, layers=None, targets=targets, select=lambda names: names[-1:])
    else:
        if not isinstance(layer, str):
            raise TypeError(f"layer: expected a module name (str) or None, got {type(layer).__name__}")
        cap = capture(model, images, layers=[layer], targets=targets)
    (raw,) = _maps_from_capture(cap, method)
    out_size = tuple(images.shape[-2:]) if size is None else size  # images were checked by capture
    return cumulative_average([raw], out_size, [0])[:, 0]
