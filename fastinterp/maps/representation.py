"""The paper's representation of a CNN: a CAM at every conv layer, cumulatively averaged.

    images -> capture (1 forward + 1 backward) -> per-layer maps (B, h_l, w_l)
           -> ops.cumulative_average -> K cumulative maps (CGMs) (B, K, S, S) + teacher (B, S, S)

The options (kind, k, size, method, order, teacher, skip_1x1), their presets and their one
validator are in ``maps.options``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from fastinterp._core.validation import check_call, check_size
from fastinterp.maps.capture import Capture, capture
from fastinterp.maps.forward_only import activation_layer_maps, pooled_layer
from fastinterp.maps.formulas import CHANNEL_WEIGHTS, METHODS, weighted_sum
from fastinterp.maps.options import DEFAULT_REPRESENTATION, check_method, check_representation
from fastinterp.ops import cumulative_average, normalised_map

__all__ = ["LayerMaps", "Representation", "TooFewLayersError", "cam_maps", "cam_reducer", "cnn_representation", "drop_1x1_maps",
           "gradcam", "layer_maps", "layer_maps_reference", "paper_positions"]


class TooFewLayersError(ValueError):
    """``paper_positions`` cannot place k distinct positions among ``num_layers`` maps."""

    def __init__(self, num_layers: int, k: int, positions: list[int]):
        super().__init__(f"k: the paper's rule picks repeated positions {positions} for num_layers={num_layers}, "
                         f"k={k}; use a smaller k or a CNN with more conv layers")
        self.num_layers, self.k = num_layers, k

    def for_generator(self, cnn: nn.Module) -> ValueError:
        """The same, said to someone explaining ``cnn`` with a generator that takes k CGMs."""
        return ValueError(f"representation: the generator takes k={self.k} cumulative maps, but {type(cnn).__name__} "
                          f"gives {self.num_layers} layer maps at this input size, too few for {self.k} distinct "
                          f"positions ({self})")


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


def cam_maps(cap: Capture, method: str) -> list[torch.Tensor]:
    """The ``method`` CAM of every captured layer: (B, h_l, w_l) each, float32 (float64 for float64
    models), also when the caller runs the model under autocast (the formulas run with it off).
    A capture made with ``reduce=cam_reducer(...)`` already holds them (``cap.maps``)."""
    if cap.maps is not None:
        return cap.maps
    if not cap.activations:
        return []
    reduce = cam_reducer(method)
    return [reduce(a, g) for a, g in zip(cap.activations, cap.gradients)]


def cam_reducer(method: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(A, G) -> (B, h, w)``: the ``method`` CAM of one layer, in float32 (float64 for float64
    models) with autocast off (what ``capture(reduce=...)`` runs in the backward). For a method of
    ``CHANNEL_WEIGHTS`` it also has ``through_1x1(Y, weight, bias, G)``: the same map of the output
    ``A = conv1x1(Y)`` (stride 1, or ``Y`` already subsampled), from ``Y``."""
    formula, weigh = METHODS[method], CHANNEL_WEIGHTS.get(method)

    def reduce(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        with _formula_precision(a.device.type):
            a, g = _cam_dtypes(a, g)
            return formula(a, g)

    def through_1x1(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        with _formula_precision(y.device.type):
            y, g = _cam_dtypes(y, g)
            w = weigh(g)  # (B, C_out)
            m = weighted_sum(w @ weight.reshape(weight.shape[0], -1).to(w.dtype), y)  # (B, C_in) weights
            if bias is not None:
                m = m + (w @ bias.to(w.dtype))[:, None, None]
            return torch.relu(m)

    reduce.through_1x1 = through_1x1 if weigh is not None else None
    return reduce


# The memory-lean capture (``capture(reduce=...)``) from this many pixels (batch x height x width)
# on: below it the plain capture runs, whose few milliseconds less of Python per call matter more
# than memory (the demo's 64x64 batch 1: 20 ms plain, 26 ms lean; resnet50 224x224 batch 8: lean is
# 9% faster and 0.5 GB lighter). A rule on the input's shape only, so that a call's maps never
# depend on the calls before it (benchmarks/NOTES.md, issue 24).
LEAN_FROM_PIXELS = 4 * 224 * 224


def _lean(method: str, images: torch.Tensor):
    """``cam_reducer(method)`` where the lean capture pays (``LEAN_FROM_PIXELS``), else None."""
    if isinstance(images, torch.Tensor) and images.dim() == 4 and \
            images.shape[0] * images.shape[2] * images.shape[3] >= LEAN_FROM_PIXELS:
        return cam_reducer(method)
    return None


def _formula_precision(device: str):
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext()


def _cam_dtypes(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dtype not in _CAM_DTYPES:  # float16 / bfloat16 under autocast: the formula in float32
        return a.float(), g.float()
    return a, g if g.dtype == a.dtype else g.to(a.dtype)


_CAM_DTYPES = (torch.float32, torch.float64)


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
    check_method(method)
    cap = capture(model, images, layers=layers, targets=targets, reduce=_lean(method, images))
    return LayerMaps(maps=cam_maps(cap, method), layer_names=cap.layer_names, logits=cap.logits,
                     targets=cap.targets)


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
        raise TooFewLayersError(num_layers, k, positions)
    return positions


def _gradient_maps(model, images, targets, layers, method, teacher, skip_1x1, on_stage=None):
    """One capture: (maps, names, teacher name, teacher map, capture) in execution order, after the
    skip, with a named teacher watched in the same pass (accumulated only if it is one of the layers).
    Arguments checked by the caller (``targets``: None or a (B,) int64 tensor)."""
    if teacher == "pooled":  # the feature map the head pools, else (no such pooling) the last conv
        teacher = pooled_layer(model, images) or "last"
    named = teacher not in ("last", "first")
    if named:
        modules = dict(model.named_modules())
        if teacher not in modules:
            raise ValueError(f"teacher: {teacher!r} is not a module of the model; expected 'pooled', 'last', "
                             "'first' or a module name")
        accumulated = isinstance(modules[teacher], nn.Conv2d) if layers is None else teacher in layers
        if layers is not None and teacher not in layers:
            layers = [*layers, teacher]
    cap = capture(model, images, layers=layers, targets=targets, also=(teacher,) if named and layers is None else (),
                  on_stage=on_stage, validate=False, reduce=_lean(method, images))
    maps, names = cam_maps(cap, method), list(cap.layer_names)
    if named:
        if teacher not in names:
            raise ValueError(f"teacher: {teacher!r} did not run in the model's forward pass, so it has no map")
        index = names.index(teacher)
        teacher_map = maps[index]
        if not accumulated:
            del maps[index], names[index]
    if skip_1x1:
        maps, names = drop_1x1_maps(maps, names)
    if not named:
        index = len(names) - 1 if teacher == "last" else 0
        teacher, teacher_map = names[index], maps[index]
    return maps, names, teacher, teacher_map, cap


def drop_1x1_maps(maps: Sequence[torch.Tensor], names: Sequence[str]) -> tuple[list[torch.Tensor], list[str]]:
    """``skip_1x1``: the maps (B, h, w) and their names without those with a 1x1 output (h = w = 1:
    squeeze-excitation convs, or late layers on small images). Raises if none is left."""
    kept = [i for i, m in enumerate(maps) if m.shape[1] * m.shape[2] > 1]
    if not kept:
        raise ValueError("skip_1x1: every explained layer has a 1x1 output at this input size; pass "
                         "skip_1x1=False or larger images")
    return [maps[i] for i in kept], [names[i] for i in kept]


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
    *,
    on_stage: Callable[[str], None] | None = None,
    validate: bool = True,
) -> Representation:
    """K cumulative maps (CGMs) and a teacher map from one forward and one backward pass.

    The defaults are ``DEFAULT_REPRESENTATION`` (the shipped gradient generators were trained on
    it with ``teacher="last"``, which their metadata records); the released code's setting is
    ``cnn_representation(model, images, **PAPER_PRESET)``.

    Args:
        k: number of cumulative maps, positions by :func:`paper_positions` (too few layers for k
            distinct positions: :class:`TooFewLayersError`, a ValueError).
        size: output resolution S (int) or (H, W).
        layers: layers to accumulate (default: every conv layer that runs; the gradient kind only).
        method: CAM formula for every layer (``fastinterp.maps.formulas.METHODS``) and for the teacher.
        order: "first_to_last" or "last_to_first" (the paper's accumulation order); None: the
            kind's default (``maps.options.default_order``).
        teacher: "pooled" (the default): the feature map the classifier head's global pooling reads
            (``maps.forward_only.pooled_layer``: resnet's ``layer4``, inception_v3's ``Mixed_7c``,
            what pytorch-grad-cam users target; the last conv when no pooling ends the trunk);
            "last": the last of the accumulated layers to run (for a multi-branch head, as
            inception_v3's, that is one branch's conv); "first": the first; or the name of any module whose output is
            (B, C, h, w), captured in the same pass (like pytorch-grad-cam's ``target_layers``).
            Its normalised ``method`` map at ``size``. None: no teacher (``.teacher`` is None; the
            activation kind then runs no backward at all).
        skip_1x1: leave out layers whose output is 1x1 (the squeeze-excitation convs of
            MobileNetV3/EfficientNet, or late layers of a CNN run on small images): their maps
            carry no spatial information and normalise to zeros, so counting them dilutes every
            CGM. Off by default: measured, the generator was less faithful without them
            (experiments/NOTES.md). Layers are counted, and "last"/"first" found, after the skip.
        kind: "gradient" (every layer's ``method`` map: one forward + one backward) or
            "activation" (``fastinterp.maps.forward_only``: every conv's ``mean_c |A|`` and the head's
            CAM from one forward; the teacher, if any, needs a gradient pass of its own).
        backend: ``fastinterp.ops.cumulative_average`` backend.
        on_stage: called with "forward", "backward" (gradient kind) and "maps" as each stage ends
            (the runtime's per-stage profile).
        validate: check the arguments (default). False: the caller has (``fastinterp.compile``'s
            explainer validates its inputs once, at its boundary): ``targets`` must then be None or
            a (B,) int64 tensor on the images' device, and every option valid.
    """
    if validate:
        options = check_representation({"kind": kind, "k": k, "size": size, "method": method, "order": order,
                                        "teacher": teacher, "skip_1x1": skip_1x1}, teacher_optional=True)
        order = options["order"]
        targets = check_call(model, images, targets)
    size = check_size(size)
    teacher_map = None
    if kind == "gradient":
        maps, names, teacher_name, teacher_map, cap = _gradient_maps(
            model, images, targets, layers, method, "last" if teacher is None else teacher, skip_1x1, on_stage)
        logits, targets_out = cap.logits, cap.targets
        if teacher is None:
            teacher_name, teacher_map = None, None
    else:
        if layers is not None:
            raise ValueError("layers: the activation kind accumulates every conv layer that runs; pass layers=None")
        act = activation_layer_maps(model, images, targets, validate=False)
        if on_stage is not None:
            on_stage("forward")
        maps, names = act.maps, act.layer_names
        if skip_1x1:
            maps, names = drop_1x1_maps(maps, names)
        logits, targets_out, teacher_name = act.logits, act.targets, None
        if teacher is not None:  # the teacher is a gradient map: its own pass, explaining the same classes
            _, _, teacher_name, teacher_map, _ = _gradient_maps(model, images, act.targets, None, method, teacher,
                                                                skip_1x1)
    positions = paper_positions(len(maps), k)
    if order == "last_to_first":
        maps, names = maps[::-1], names[::-1]
    cgm = cumulative_average(maps, size, positions, backend=backend, validate=False)
    teacher_norm = None if teacher_map is None else normalised_map(teacher_map, size, backend=backend)
    if on_stage is not None:
        on_stage("maps")
    return Representation(cgm=cgm, teacher=teacher_norm, logits=logits, targets=targets_out,
                          layer_names=names, positions=positions, teacher_layer=teacher_name)


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
    check_method(method)
    if size is not None:
        size = check_size(size)
    if layer is None:
        cap = capture(model, images, layers=None, targets=targets, select=lambda names: names[-1:],
                      reduce=_lean(method, images))
    else:
        if not isinstance(layer, str):
            raise TypeError(f"layer: expected a module name (str) or None, got {type(layer).__name__}")
        cap = capture(model, images, layers=[layer], targets=targets, reduce=_lean(method, images))
    (raw,) = cam_maps(cap, method)
    return normalised_map(raw, tuple(images.shape[-2:]) if size is None else size)  # images checked by capture
