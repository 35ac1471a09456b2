"""The forward-only representation: per-layer maps from activations alone, so that explaining
runs no backward pass through the CNN's trunk.

    images -> one forward of an eval view (no autograd graph in the trunk)
      conv layer l (every nn.Conv2d that runs):  m_l = mean_c |A_l,c|          (B, h_l, w_l)
      the classifier head:  CAM (Zhou et al., CVPR 2016) at the feature map F that the head pools,
                            m_head = ReLU(sum_c w_c F_c),  w = d logit_t / d pool(F)

- m_l is class-agnostic: where layer l responds strongly, whatever the class (the per-scale
  "where is there something" of Mundhenk et al., "Efficient Saliency Maps for Explainable AI",
  2019, who also compute saliency from forward activations alone). It is taken at the conv's own
  output, as the gradient representation's maps are, and min-max normalised by the accumulation.
- m_head is the class-specific map. For a global-average-pool + linear head (resnet, densenet,
  mobilenet_v2, efficientnet...) w is the class's weight row and no autograd runs at all; the map
  equals Grad-CAM at F up to a positive factor (1 / (h w)). Any other head after the pooling
  (mobilenet_v3's Linear-Hardswish-Linear, vgg's classifier after its 7x7 average pool,
  squeezenet's pooled conv) gets w from a backward through the head alone: the pooled features are
  a fresh leaf, nothing of the trunk is differentiated. The map is then exactly Grad-CAM at F.
- "The pooling" is the last average pooling that runs on a (B, C, h, w) tensor (module or
  functional: ``F.adaptive_avg_pool2d``, ``F.avg_pool2d``, ``x.mean((2, 3))``), found by a probe
  forward; no conv may run after it. A CNN without one raises a clear error.

The head map comes last in execution order, so the accumulation order of this representation is
"last_to_first" by default: CGM 0 is the head's CAM, and every later CGM adds the activation maps
of shallower layers. (First to last would put the only class-specific map into the last CGM at
weight 1 / (L + 1).)
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from fastinterp._core.validation import check_call, check_logits_and_targets
from fastinterp.maps.eval_view import add_forward_hook, add_forward_pre_hook, eval_view, eval_view_with, set_forward_hook
from fastinterp.maps.formulas import gradcam_formula, weighted_sum

__all__ = ["HEAD_MAP", "HeadPlan", "activation_layer_maps", "head_plan", "pooled_layer"]

HEAD_MAP = "head-cam"  # the head's map in ``layer_names``

_POOLS = (F.adaptive_avg_pool2d, F.avg_pool2d, torch.mean, torch.Tensor.mean)
# what may run between a global average pool and the final Linear for the head to be "GAP + linear"
_RESHAPES = (torch.flatten, torch.Tensor.flatten, torch.Tensor.view, torch.Tensor.reshape, torch.reshape,
             torch.Tensor.squeeze, torch.squeeze, torch.Tensor.size, torch.Tensor.dim, F.dropout,
             torch.Tensor.shape.__get__)


def _pool_input(func, args, kwargs) -> torch.Tensor | None:
    """The (B, C, h, w) input of an average pooling call, or None if ``func`` is not one."""
    if func not in _POOLS or not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
        return None
    if func in (torch.mean, torch.Tensor.mean):  # only a mean over both spatial dimensions pools
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = (dim,) if isinstance(dim, int) else tuple(dim) if isinstance(dim, (list, tuple)) else ()
        if sorted(d % 4 for d in dims) != [2, 3]:
            return None
    return args[0]


def _is_global(func, args, kwargs) -> bool:
    """Does this pooling call reduce h x w to 1 x 1 (adaptive to 1, or a spatial mean)?"""
    if func in (torch.mean, torch.Tensor.mean):
        return True
    if func is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    return False


_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


class _Probe(TorchFunctionMode):
    """Counts convs and average poolings; keeps what runs after the last pooling, and whether that
    pooling is a module's (``module_inputs``: id of each pooling module's input -> (its name, the
    input), the input kept alive so that a freed tensor's id cannot match a later one)."""

    def __init__(self, module_inputs: dict[int, tuple[str, torch.Tensor]], own: set[int],
                 module_outputs: list | None = None):
        super().__init__()
        self.module_inputs = module_inputs
        self.module_outputs = module_outputs  # (name, output) of modules as they finish, if watched
        self.pool_features: torch.Tensor | None = None  # the last pooling's input
        self.outputs_before_pool = 0  # how many module outputs were recorded before it
        self.own = own  # ids of the model's parameters and buffers
        self.produced: dict[int, torch.Tensor] = {}  # tensors made after the last pooling (kept alive)
        self.foreign = False  # did an op after the last pooling read a tensor made before it?
        self.convs = 0
        self.pools: list[int] = []  # conv count at each pooling call
        self.pool_module: str | None = None  # the last pooling's module, if it is one
        self.after: list = []  # functions called after the last pooling
        self.global_pool = False
        self.last_linear_out: torch.Tensor | None = None
        self.linear_weight: torch.Tensor | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d:
            self.convs += 1
        features = _pool_input(func, args, kwargs)
        if features is not None:
            self.pools.append(self.convs)
            self.pool_features = features
            self.outputs_before_pool = len(self.module_outputs or ())
            entry = self.module_inputs.get(id(features))
            self.pool_module = entry[0] if entry is not None and entry[1] is features else None
            self.after, self.global_pool = [], _is_global(func, args, kwargs)
            self.produced, self.foreign = {id(out): out}, False
        elif self.pools:
            self.after.append(func)
            # the head must be a function of the pooled features (and the model's weights) alone
            self.foreign |= any(isinstance(t, torch.Tensor) and id(t) not in self.produced and id(t) not in self.own
                                for t in tree_leaves((args, kwargs)))
            self.produced.update((id(t), t) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            if func is F.linear:
                self.last_linear_out = out
                self.linear_weight = args[1] if len(args) > 1 else kwargs.get("weight")
        return out


@dataclass(frozen=True)
class HeadPlan:
    """Where a CNN's head pools, learned once per model by :func:`head_plan`."""

    pool_index: int  # which average pooling call (0-based, execution order) is the head's
    linear: bool  # global average pool, then reshapes/dropout and one Linear giving the logits
    pool_module: str | None  # the module doing that pooling (tapped by a pre-hook), or None (functional:
    #                          tapped by a TorchFunctionMode, which costs Python time on every op)
    linear_module: str | None  # the head's nn.Linear (linear heads with a pooling module)


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()
_PLANS_PER_MODEL = 8


_MISSING = object()


def _cached(store: weakref.WeakKeyDictionary, model: nn.Module, key: tuple):
    """What ``store`` holds for (model, key), else ``_MISSING``."""
    with _PLANS_LOCK:
        return store.get(model, {}).get(key, _MISSING)


def _remember(store: weakref.WeakKeyDictionary, model: nn.Module, key: tuple, value):
    """Keep ``value`` for (model, key): the ``_PLANS_PER_MODEL`` input sizes served most recently
    per model (the oldest is dropped). Returns ``value``."""
    with _PLANS_LOCK:
        entries = store.setdefault(model, {})
        entries[key] = value
        while len(entries) > _PLANS_PER_MODEL:
            entries.pop(next(iter(entries)))
    return value


def _plan_key(model: nn.Module, images: torch.Tensor) -> tuple:
    """A plan holds for an input shape and a module tree (a replaced head gets a new plan)."""
    return tuple(images.shape[1:]), tuple(map(id, model.modules()))


def head_plan(model: nn.Module, images: torch.Tensor) -> HeadPlan:
    """Find the pooling of ``model``'s classifier head by a probe forward (eval view, no graph) at
    ``images``' shape; cached per model and input shape. Raises ValueError for a head that does not
    pool the last feature map."""
    key = _plan_key(model, images)
    plan = _cached(_PLANS, model, key)
    if plan is not _MISSING:
        return plan
    view = eval_view(model)
    module_inputs: dict[int, tuple[str, torch.Tensor]] = {}
    module_calls: dict[str, int] = {}

    def record(module_name: str, args: tuple) -> None:
        module_inputs[id(args[0])] = (module_name, args[0])
        module_calls[module_name] = module_calls.get(module_name, 0) + 1

    linears = {id(m.weight): n for n, m in view.named_modules() if isinstance(m, nn.Linear)}
    for module_name, module in view.named_modules():
        if isinstance(module, _POOL_MODULES):
            add_forward_pre_hook(module, lambda mod, args, n=module_name: record(n, args))
    own = {id(t) for t in (*view.parameters(), *view.buffers())}
    probe = _Probe(module_inputs, own)
    with torch.no_grad(), probe:
        logits = view(images[:1])
    name = type(model).__name__
    if not probe.pools:
        raise ValueError(
            f"model: the forward-only representation needs a classifier head that average-pools the last "
            f"feature map (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, x.mean((2, 3))); {name} runs no average "
            "pooling; use the gradient representation (representation='gradient')")
    if probe.pools[-1] != probe.convs:
        raise ValueError(
            f"model: the forward-only representation needs a classifier head that average-pools the last "
            f"feature map; in {name}, {probe.convs - probe.pools[-1]} conv layer(s) run after its last average "
            "pooling, so no pooling belongs to the head; use the gradient representation "
            "(representation='gradient')")
    if probe.foreign:
        raise ValueError(
            f"model: {name}'s classifier head reads a tensor computed before its last average pooling (a concat-pool "
            "head, or a second branch joining after the pooling), so a CAM at that pooling would ignore part of what "
            "decides the class; use the gradient representation (representation='gradient')")
    linear_count = sum(f is F.linear for f in probe.after)
    linear = (probe.global_pool and linear_count == 1 and all(f is F.linear or f in _RESHAPES for f in probe.after)
              and probe.last_linear_out is logits)
    linear_module = linears.get(id(probe.linear_weight)) if linear else None
    if probe.pool_module is not None and module_calls[probe.pool_module] != 1:  # one module pooling twice
        probe.pool_module = None
    plan = HeadPlan(pool_index=len(probe.pools) - 1, linear=linear,
                    pool_module=probe.pool_module if (not linear or linear_module is not None) else None,
                    linear_module=linear_module)
    return _remember(_PLANS, model, key, plan)


_POOLED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def pooled_layer(model: nn.Module, images: torch.Tensor) -> str | None:
    """The module whose output the classifier head's global pooling reads: the feature map
    pytorch-grad-cam users target (resnet's ``layer4``, inception_v3's ``Mixed_7c``, vgg's and
    mobilenet's ``features``), found by a probe forward at ``images``' shape (cached per model,
    module tree and shape). When a function runs between that module and the pooling (densenet's
    ``F.relu(features)``), the module that finished last before the pooling. None when no average
    pooling ends the trunk (a conv runs after it, or there is none): the caller falls back to the
    last conv."""
    key = _plan_key(model, images)
    name = _cached(_POOLED, model, key)
    if name is not _MISSING:
        return name
    view = eval_view(model)
    outputs: list[tuple[str, torch.Tensor]] = []
    for module_name, module in view.named_modules():
        if module_name:
            add_forward_hook(module, lambda mod, args, out, n=module_name: outputs.append((n, out))
                             if isinstance(out, torch.Tensor) and out.dim() == 4 else None)
    own = {id(t) for t in (*view.parameters(), *view.buffers())}
    probe = _Probe({}, own, outputs)
    with torch.no_grad(), probe:
        view(images[:1])
    name = None
    if probe.pools and probe.pools[-1] == probe.convs and probe.pool_features is not None:
        before = outputs[:probe.outputs_before_pool]
        exact = [n for n, out in before if out is probe.pool_features]
        name = exact[-1] if exact else (before[-1][0] if before else None)
    return _remember(_POOLED, model, key, name)


class _HeadTap(TorchFunctionMode):
    """Runs a forward, taking the input of the ``plan.pool_index``-th average pooling.

    For a linear head it keeps that input and the final Linear's weight (the caller is in
    no_grad mode). Otherwise the pooling runs on a fresh leaf and everything after it under
    ``torch.enable_grad()`` (the trunk before it ran without a graph), so a backward through the
    head alone gives the channel weights."""

    def __init__(self, plan: HeadPlan):
        super().__init__()
        self.plan = plan
        self.pools = 0
        self.features: torch.Tensor | None = None  # F, (B, C, h, w)
        self.weight: torch.Tensor | None = None  # the Linear's (classes, C), linear heads only

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.features is not None:  # in the head
            if self.plan.linear:
                if func is F.linear:
                    self.weight = args[1] if len(args) > 1 else kwargs["weight"]
                return func(*args, **kwargs)
            with torch.enable_grad():
                return func(*args, **kwargs)
        features = _pool_input(func, args, kwargs)
        if features is not None:
            self.pools += 1
            if self.pools - 1 == self.plan.pool_index:
                if self.plan.linear:
                    self.features = features
                    return func(*args, **kwargs)
                self.features = features.detach().requires_grad_(True)
                with torch.enable_grad():
                    return func(self.features, *args[1:], **kwargs)
        return func(*args, **kwargs)


class _ModuleTap:
    """The same as :class:`_HeadTap` with forward pre-hooks on the view's pooling module (and the
    head's Linear), for heads whose pooling is a module: no Python runs on the trunk's ops."""

    def __init__(self, plan: HeadPlan, view: nn.Module):
        self.plan = plan
        self.features: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.calls = 0
        add_forward_pre_hook(view.get_submodule(plan.pool_module), self._pool)
        if plan.linear:
            add_forward_pre_hook(view.get_submodule(plan.linear_module), self._linear)

    def _pool(self, module, args):
        self.calls += 1
        if self.plan.linear:
            self.features = args[0]
            return None
        self.features = args[0].detach().requires_grad_(True)
        torch._C._set_grad_enabled(True)  # the head only; the caller's no_grad() restores the mode after
        return (self.features, *args[1:])

    def _linear(self, module, args):
        self.weight = module.weight


def tapped_forward(plan: HeadPlan, view: nn.Module, images: torch.Tensor):
    """The eval ``view``'s forward under ``torch.no_grad()`` (not inference_mode: the outputs stay
    ordinary tensors) with the head's pooling tapped; returns (logits, tap, whether the tapped
    pooling module ran exactly once). Also what the ONNX export traces."""
    if plan.pool_module is not None:
        tap = _ModuleTap(plan, view)
        with torch.no_grad():
            logits = view(images)
        return logits, tap, tap.calls == 1
    tap = _HeadTap(plan)
    with torch.no_grad(), tap:
        logits = view(images)
    return logits, tap, True


def head_cam(plan: HeadPlan, tap, logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The CAM at the pooled feature map for ``targets`` (B,), in ``dtype``: the class's weight row
    for a linear head, else Grad-CAM from a backward through the head alone. (B, h, w)."""
    features = tap.features.detach().to(dtype)
    if plan.linear:
        weights = tap.weight.detach()[targets].to(dtype)  # (B, C)
        return torch.relu(weighted_sum(weights, features))
    with torch.enable_grad():
        score = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, tap.features, allow_unused=True)
    grad = torch.zeros_like(features) if grad is None else grad.to(dtype)
    return gradcam_formula(features, grad)


@dataclass
class ActivationMaps:
    """Raw maps of one forward pass: every conv layer's activation map, then the head's CAM."""

    maps: list[torch.Tensor]  # (B, h_l, w_l) float32 (float64 for float64 models), execution order
    layer_names: list[str]  # conv names, then HEAD_MAP
    logits: torch.Tensor  # (B, num_classes)
    targets: torch.Tensor  # (B,) int64


def activation_layer_maps(model: nn.Module, images: torch.Tensor, targets: object = None, *,
                          validate: bool = True) -> ActivationMaps:
    """Every conv layer's ``mean_c |A|`` and the head's CAM from one forward pass, no trunk backward.

    Args:
        model: eager ``nn.Module`` returning logits (B, num_classes), whose head average-pools its
            last feature map (see the module doc). Run as an eval view: never modified, safe to
            call from several threads.
        images: (B, C, H, W) float tensor, finite, on the model's device and dtype.
        targets: None (argmax), an int, a sequence of ints or a (B,) int tensor.
        validate: check model, images and targets (default). False: the caller has (``targets``
            then None or a (B,) int64 tensor on the images' device).
    """
    if validate:
        targets = check_call(model, images, targets)
    plan = head_plan(model, images)
    view, convs = eval_view_with(model, nn.Conv2d)
    dtype = torch.promote_types(images.dtype, torch.float32)
    stats: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name in stats:
                raise ValueError(f"model: conv layer {name!r} ran more than once in one forward pass, so its map "
                                 "is ambiguous")
            stats[name] = output.detach().abs().mean(dim=1, dtype=dtype)
        return hook

    for name, module in convs:
        set_forward_hook(module, make_hook(name))
    logits, tap, ran_once = tapped_forward(plan, view, images)
    changed = not ran_once
    if plan.linear and tap.weight is not None and tap.features is not None and isinstance(logits, torch.Tensor):
        changed |= tuple(tap.weight.shape) != (logits.shape[-1], tap.features.shape[1])
    if changed or tap.features is None or (plan.linear and tap.weight is None):
        raise RuntimeError(f"model: {type(model).__name__}'s head ran differently than when it was probed (its "
                           "forward depends on the data?); the forward-only representation needs a fixed head")
    targets = check_logits_and_targets(logits, images.shape[0], targets)
    with torch.autocast(images.device.type, enabled=False):
        cam = head_cam(plan, tap, logits, targets, dtype)
    if not stats:
        raise ValueError(f"model: none of the nn.Conv2d layers of {type(model).__name__} ran in its forward pass")
    names = list(stats)
    return ActivationMaps(maps=[stats[n] for n in names] + [cam], layer_names=names + [HEAD_MAP],
                          logits=logits.detach(), targets=targets)
