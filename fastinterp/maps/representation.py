"""The paper's representation of a CNN: a CAM at every conv layer, cumulatively averaged.

    images -> capture (1 forward + 1 backward) -> per-layer maps (B, h_l, w_l)
           -> ops.cumulative_average -> K cumulative maps (CGMs) (B, K, S, S) + teacher (B, S, S)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fastinterp.maps.formulas import METHODS
from fastinterp.maps.capture import capture
from fastinterp.maps.forward_only import activation_layer_maps
from fastinterp.ops import cumulative_average
from fastinterp._core.validation import check_size

__all__ = [
    "ACTIVATION_REPRESENTATION",
    "DEFAULT_REPRESENTATION",
    "KINDS",
    "PAPER_PRESET",
    "PRESETS",
    "LayerMaps",
    "Representation",
    "cnn_representation",
    "default_order",
    "gradcam",
    "layer_maps",
    "layer_maps_reference",
    "paper_positions",
    "representation_options",
]

ORDERS = ("last_to_first", "first_to_last")

# The default: what the shipped generator was trained on. Accumulating from the first conv
# towards the last keeps the teacher (the last conv's map) out of the inputs: it is 1/L of the
# last CGM, never a CGM of its own. Every conv layer counts, the 1x1 squeeze-excitation ones too:
# leaving them out made the fast generator less faithful on mobilenet_v3_small (MAE +0.005 and
# +0.010 on two seeds, paired; benchmarks/skip_1x1.py, benchmarks/NOTES.md).
DEFAULT_REPRESENTATION = {"kind": "gradient", "k": 8, "size": 64, "method": "gradcam", "order": "first_to_last",
                          "teacher": "last", "skip_1x1": False}
# The released code of arXiv 2301.08067 (see the README's table): its "guided" weights, last to
# first, teacher = Grad-CAM of the first conv, every conv layer.
PAPER_PRESET = {"kind": "gradient", "k": 8, "size": 64, "method": "paper-gradcam", "order": "last_to_first",
                "teacher": "first", "skip_1x1": False}
# The forward-only representation (``fastinterp.maps.forward_only``): no backward at explain time. The
# teacher a generator learns is still Grad-CAM of the last conv (computed at dataset build time).
ACTIVATION_REPRESENTATION = {"kind": "activation", "k": 8, "size": 64, "method": "gradcam", "order": "last_to_first",
                             "teacher": "last", "skip_1x1": False}
PRESETS = {"default": DEFAULT_REPRESENTATION, "paper": PAPER_PRESET, "activation": ACTIVATION_REPRESENTATION}
KINDS = ("gradient", "activation")
# Fields added to the representation after checkpoints had been written without them, and the
# value those checkpoints were made with.
_BEFORE_FIELD = {"skip_1x1": False, "kind": "gradient"}


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
    teacher: torch.Tensor | None  # (B, S, S) float32 in [0, 1]: normalised map of the teacher layer
    logits: torch.Tensor  # (B, num_classes)
    targets: torch.Tensor  # (B,) int64
    layer_names: list[str]  # accumulation order (``order``), length L
    positions: list[int]  # K indices into layer_names where the CGMs are taken
    teacher_layer: str | None

    @property
    def teacher_cgm(self) -> int | None:
        """The CGM that *is* the teacher map (a generator trained on it learns to copy an input),
        or None. Only CGM 0 can be: it is the first accumulated layer's map alone."""
        return 0 if self.positions[0] == 0 and self.layer_names[0] == self.teacher_layer else None


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    return method  # type: ignore[return-value]


def _maps_from_capture(cap, method: str) -> list[torch.Tensor]:
    """The CAM of every captured layer, in float32 (float64 for float64 models), also when the
    caller runs the model under autocast (the formulas run with autocast off)."""
    formula = METHODS[method]
    maps = []
    for a, g in zip(cap.activations, cap.gradients):
        dtype = torch.promote_types(a.dtype, torch.float32)
        with torch.autocast(a.device.type, enabled=False):
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
            semantics (BatchNorm running statistics, no dropout) through an eval view
            (``fastinterp.maps.eval_view``): the model itself is never modified, and concurrent calls
            on one model from several threads are safe. Maps are float32 (float64 for a float64
            model), also under ``torch.autocast``.
        images: (B, C, H, W) float tensor, finite, on the model's device and dtype.
        layers: module names (default: every ``nn.Conv2d`` that runs). Maps come back in
            execution order, whatever order the names are given in.
        targets: None (argmax of the logits), an int, a sequence of ints or a (B,) int tensor.
        method: "gradcam", "gradcam++", "layercam" or "paper-gradcam" (see ``fastinterp.maps.formulas``).
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


def _check_teacher(teacher: object) -> str:
    if not isinstance(teacher, str) or not teacher:
        raise TypeError(f"teacher: expected 'last', 'first' or a module name, got {teacher!r}")
    return teacher


def _gradient_maps(model, images, targets, layers, method, teacher, skip_1x1):
    """One capture: (maps, names, teacher name, teacher map, capture) in execution order, after the
    skip, with a named teacher watched in the same pass (accumulated only if it is one of the layers)."""
    named = teacher not in ("last", "first")
    if named:
        modules = dict(model.named_modules())
        if teacher not in modules:
            raise ValueError(f"teacher: {teacher!r} is not a module of the model; expected 'last', 'first' or a "
                             "module name")
        accumulated = isinstance(modules[teacher], nn.Conv2d) if layers is None else teacher in layers
        if layers is not None and teacher not in layers:
            layers = [*layers, teacher]
    cap = capture(model, images, layers=layers, targets=targets, also=(teacher,) if named and layers is None else ())
    maps, names = _maps_from_capture(cap, method), list(cap.layer_names)
    if named:
        if teacher not in names:
            raise ValueError(f"teacher: {teacher!r} did not run in the model's forward pass, so it has no map")
        index = names.index(teacher)
        teacher_map = maps[index]
        if not accumulated:
            del maps[index], names[index]
    maps, names = _skip_1x1(maps, names, skip_1x1)
    if not named:
        index = len(names) - 1 if teacher == "last" else 0
        teacher, teacher_map = names[index], maps[index]
    return maps, names, teacher, teacher_map, cap


def _skip_1x1(maps, names, skip_1x1):
    if not skip_1x1:
        return maps, names
    kept = [i for i, m in enumerate(maps) if m.shape[1] * m.shape[2] > 1]
    if not kept:
        raise ValueError("skip_1x1: every explained layer has a 1x1 output at this input size; pass "
                         "skip_1x1=False or larger images")
    return [maps[i] for i in kept], [names[i] for i in kept]


def default_order(kind: str) -> str:
    """The accumulation order a representation kind uses unless told: "first_to_last" for the
    gradient kind (the teacher stays out of the inputs), "last_to_first" for the activation kind
    (its only class-specific map, the head's CAM, comes last in execution: CGM 0)."""
    return "last_to_first" if kind == "activation" else "first_to_last"


def cnn_representation(
    model: nn.Module,
    images: torch.Tensor,
    targets: object = None,
    k: int = DEFAULT_REPRESENTATION["k"],
    size: int | tuple[int, int] = DEFAULT_REPRESENTATION["size"],
    layers: Sequence[str] | None = None,
    method: str = DEFAULT_REPRESENTATION["method"],
    order: str | None = None,
    teacher: str | None = DEFAULT_REPRESENTATION["teacher"],
    skip_1x1: bool = DEFAULT_REPRESENTATION["skip_1x1"],
    kind: str = DEFAULT_REPRESENTATION["kind"],
    backend: str = "auto",
) -> Representation:
    """K cumulative maps (CGMs) and a teacher map from one forward and one backward pass.

    The defaults are ``DEFAULT_REPRESENTATION`` (what the shipped generator was trained on); the
    released code's setting is ``cnn_representation(model, images, **PAPER_PRESET)``.

    Args:
        k: number of cumulative maps, positions by :func:`paper_positions`.
        size: output resolution S (int) or (H, W).
        layers: layers to accumulate (default: every conv layer that runs; the gradient kind only).
        method: CAM formula for every layer (``fastinterp.maps.formulas.METHODS``) and for the teacher.
        order: "first_to_last" or "last_to_first" (the paper's accumulation order); None: the
            kind's default (:func:`default_order`).
        teacher: "last": the last of the accumulated layers to run (for a multi-branch head, as
            inception_v3's, that is one branch's conv; name the block instead, e.g.
            ``teacher="Mixed_7c"``); "first": the first; or the name of any module whose output is
            (B, C, h, w), captured in the same pass (like pytorch-grad-cam's ``target_layers``).
            Its normalised ``method`` map at ``size``. None: no teacher (``.teacher`` is None; the
            activation kind then runs no backward at all).
        skip_1x1: leave out layers whose output is 1x1 (the squeeze-excitation convs of
            MobileNetV3/EfficientNet, or late layers of a CNN run on small images): their maps
            carry no spatial information and normalise to zeros, so counting them dilutes every
            CGM. Off by default: measured, the generator was less faithful without them
            (benchmarks/NOTES.md). Layers are counted, and "last"/"first" found, after the skip.
        kind: "gradient" (every layer's ``method`` map: one forward + one backward) or
            "activation" (``fastinterp.maps.forward_only``: every conv's ``mean_c |A|`` and the head's
            CAM from one forward; the teacher, if any, needs a gradient pass of its own).
        backend: ``fastinterp.ops.cumulative_average`` backend.
    """
    _check_method(method)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    order = default_order(kind) if order is None else order
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    if teacher is not None:
        teacher = _check_teacher(teacher)
    if not isinstance(skip_1x1, bool):
        raise TypeError(f"skip_1x1: expected True or False, got {skip_1x1!r}")
    size = check_size(size)
    teacher_map = None
    if kind == "gradient":
        maps, names, teacher_name, teacher_map, cap = _gradient_maps(
            model, images, targets, layers, method, "last" if teacher is None else teacher, skip_1x1)
        logits, targets_out = cap.logits, cap.targets
        if teacher is None:
            teacher_name, teacher_map = None, None
    else:
        if layers is not None:
            raise ValueError("layers: the activation kind accumulates every conv layer that runs; pass layers=None")
        act = activation_layer_maps(model, images, targets)
        maps, names = _skip_1x1(act.maps, act.layer_names, skip_1x1)
        logits, targets_out, teacher_name = act.logits, act.targets, None
        if teacher is not None:  # the teacher is a gradient map: its own pass, explaining the same classes
            _, _, teacher_name, teacher_map, _ = _gradient_maps(model, images, act.targets, None, method, teacher,
                                                                skip_1x1)
    positions = paper_positions(len(maps), k)
    if order == "last_to_first":
        maps, names = maps[::-1], names[::-1]
    cgm = cumulative_average(maps, size, positions, backend=backend)
    teacher_norm = None if teacher_map is None else cumulative_average([teacher_map], size, [0], backend=backend)[:, 0]
    return Representation(cgm=cgm, teacher=teacher_norm, logits=logits, targets=targets_out,
                          layer_names=names, positions=positions, teacher_layer=teacher_name)


def representation_options(metadata: dict) -> dict:
    """The ``cnn_representation`` arguments a generator was trained with, from its checkpoint
    metadata (``load_generator``'s second value); fields a checkpoint predates get the value it was
    made with."""
    rep = metadata.get("representation") or metadata.get("dataset_config")
    if not isinstance(rep, dict):
        raise ValueError("metadata: the generator checkpoint records no representation")
    missing = [key for key in ("k", "size", "method", "order", "teacher") if key not in rep]
    if missing:
        raise ValueError(f"metadata: the generator's representation lacks {missing}")
    options = {key: rep[key] for key in ("k", "size", "method", "order", "teacher")}
    for key, before in _BEFORE_FIELD.items():
        options[key] = rep.get(key, before)
    return options


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
