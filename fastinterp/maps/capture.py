"""One forward and one backward pass that capture every requested layer's output and gradient.

How it stays exact and leaves the model untouched:
- The pass runs on an eval view of the model (``fastinterp.maps.eval_view``): shallow copies of its
  modules sharing its tensors, in eval mode; our hooks go on the copies only. Nothing of the
  model changes (no flag is flipped, no hook is added), so concurrent calls on one model from
  several threads neither see each other's forwards nor each other's modes.
- Forward hooks keep each watched layer's output ``A``; one ``torch.autograd.grad`` call asks for
  ``d y_t / d A`` of all of them at once, so parameter gradients are neither computed nor
  accumulated and ``.grad`` stays as it was. The input is a fresh leaf that requires grad, so
  the outputs have a graph also when every parameter is frozen.
- An output that a later in-place op overwrites (``nn.ReLU(inplace=True)`` right after a conv,
  as in VGG or SqueezeNet) would lose its values and its gradient. The hook then hands the rest of
  the network a clone and keeps the original. Which outputs need it is learned on the first call
  (everything is cloned once, version counters tell which clones were written to) and remembered
  per model (under a lock); if a later call finds an unexpected in-place write, it reruns the
  forward with clones.
- The pass runs under ``torch.enable_grad()`` (works inside ``torch.no_grad()``) and under the
  caller's autocast, if any (the CAM formulas then run in float32, see ``representation``).

Memory (``capture(reduce=...)``, the path the representation takes from
``representation.LEAN_FROM_PIXELS`` on; issue 24, measured in benchmarks/NOTES.md: resnet50 at
batch 32, the gradient explain's peak went from 3.8x to 2.4x the forward's):
- Each layer's map is computed in the backward as soon as its gradient is complete (a pre-hook
  on the output's autograd node); the gradient and what was kept of the output are dropped right
  after, so gradients never pile up. The backward asks autograd for the gradients of the *roots*
  only (outputs with no other watched output below them: the first conv of a chain); the others
  arrive through the hooks on the way.
- A widening 1x1 conv (resnet's conv3 and downsample) keeps its input, at most half the size of
  its output, and its Grad-CAM is computed from it (``cam_reducer(...).through_1x1``); eval
  BatchNorm saves no input (``lean_autograd``), so such an output is freed once it has been read.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastinterp._core.validation import check_call, check_logits_and_targets
from fastinterp.maps.eval_view import eval_view, eval_view_with, runs_class_forward, set_forward_hook
from fastinterp.maps.lean_autograd import lean_batch_norms

__all__ = ["Capture", "capture"]


@dataclass
class Capture:
    """What one pass captured. Lists are aligned and in execution order."""

    layer_names: list[str]
    activations: list[torch.Tensor]  # (B, C_l, h_l, w_l), detached
    gradients: list[torch.Tensor]  # (B, C_l, h_l, w_l), d y_t / d A_l
    logits: torch.Tensor  # (B, num_classes), detached
    targets: torch.Tensor  # (B,) int64
    maps: list[torch.Tensor] | None = None  # capture(reduce=...): reduce(A_l, G_l) per layer


@dataclass(frozen=True)
class _InplaceKnowledge:
    checked: frozenset[str] = frozenset()  # layer names whose outputs we have watched at least once
    overwritten: frozenset[str] = frozenset()  # of those, the ones some later op writes in place


# What each model's in-place ops do, learned per model; calls read a snapshot and merge what
# they learned under the lock (concurrent calls on one model only ever add knowledge).
_KNOWLEDGE: "weakref.WeakKeyDictionary[nn.Module, _InplaceKnowledge]" = weakref.WeakKeyDictionary()
_KNOWLEDGE_LOCK = threading.Lock()


def _knowledge(model: nn.Module) -> _InplaceKnowledge:
    with _KNOWLEDGE_LOCK:
        return _KNOWLEDGE.get(model, _InplaceKnowledge())


def _learn(model: nn.Module, checked: set[str], overwritten: set[str]) -> None:
    with _KNOWLEDGE_LOCK:
        old = _KNOWLEDGE.get(model, _InplaceKnowledge())
        _KNOWLEDGE[model] = _InplaceKnowledge(old.checked | checked, old.overwritten | overwritten)


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None,
                    also: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    if layers is None:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not also:
            return convs
        extra = [(n, m) for n, m in _resolve_layers(model, list(also)) if all(m is not c for _, c in convs)]
        return convs + extra
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers: expected a list of module names, got {type(layers).__name__}")
    if len(layers) == 0:
        raise ValueError("layers: expected at least one layer name (or None for every conv layer)")
    modules = dict(model.named_modules())
    resolved = []
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layers: expected module names (str), got {name!r}")
        if name not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            hint = ", ".join(convs[:3] + (["..."] if len(convs) > 3 else []) + convs[-2:] if len(convs) > 5 else convs)
            raise ValueError(f"layers: {name!r} is not a module of the model (its conv layers: {hint})")
        resolved.append((name, modules[name]))
    if len({id(m) for _, m in resolved}) != len(resolved):
        raise ValueError(f"layers: names repeat or alias the same module: {list(layers)}")
    return resolved


def capture(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    targets: object = None,
    select: Callable[[list[str]], list[str]] | None = None,
    also: Sequence[str] = (),
    on_stage: Callable[[str], None] | None = None,
    *,
    validate: bool = True,
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Capture:
    """Run ``model`` once forward and once backward, capturing outputs and gradients.

    Args:
        model: eager nn.Module; run as an eval view (``fastinterp.maps.eval_view``), never modified.
        images: (B, C, H, W) float tensor on the model's device and dtype.
        layers: module names to watch (any module whose output is a (B, C, h, w) tensor);
            None watches every ``nn.Conv2d``.
        targets: class per image (see :func:`fastinterp._core.validation.check_targets`); default argmax.
        select: picks, from the watched layers that ran (execution order), the ones whose
            gradients to compute (default: all); e.g. ``lambda names: names[-1:]`` stops the
            backward at the last conv layer.
        also: more module names to watch when ``layers`` is None (e.g. a teacher block).
        on_stage: called with "forward" when the forward pass is done and "backward" when the
            gradients are (the runtime's per-stage profile).
        validate: check model, images and targets (default). False: the caller has (``targets``
            then None or a (B,) int64 tensor on the images' device).
        reduce: ``(A, G) -> map``, e.g. a CAM formula. Given, it runs in the backward as each
            layer's gradient completes and ``Capture.maps`` holds its results, with
            ``activations`` and ``gradients`` left empty: no layer's output or gradient outlives
            its own step of the backward (the memory-lean path the representation takes).
    """
    if validate:
        targets = check_call(model, images, targets)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("layer maps need autograd: call fastinterp outside torch.inference_mode()")
    if layers is None and not also:  # every conv, found in the walk that makes the view
        view, watched = eval_view_with(model, nn.Conv2d)
    else:
        view = eval_view(model)
        watched = _resolve_layers(view, layers, also)

    if reduce is not None:  # eval BatchNorm saves no input (its view copies only)
        lean_batch_norms(view)
    for attempt in range(2):
        known = _knowledge(model)
        kept: dict[str, _Kept] | None = {} if reduce is not None else None
        outputs, logits = _forward(view, images, watched, known, clone_all=attempt > 0, kept=kept,
                                   through_1x1=getattr(reduce, "through_1x1", None) is not None)
        # Was any un-cloned output written in place downstream? Then its values are gone: learn
        # it and run again with clones (happens at most once per layer and model).
        surprises = [n for n, (orig, handed, version, cloned) in outputs.items()
                     if not cloned and orig._version != version]
        overwritten = {name for name, (orig, handed, version, cloned) in outputs.items() if handed._version != version}
        if not (known.checked.issuperset(outputs) and known.overwritten.issuperset(overwritten)):
            _learn(model, set(outputs), overwritten)  # only when this call taught something new
        if not surprises:
            break
    else:  # pragma: no cover - a second in-place surprise with everything cloned cannot happen
        raise RuntimeError("could not isolate layer outputs from in-place operations")

    ran = list(outputs)
    missing = [n for n, _ in watched if n not in outputs] if layers is not None else []
    if missing:
        raise ValueError(f"layers: {missing} did not run in the model's forward pass, so they have no map")
    if not ran:
        raise ValueError(f"model: none of the nn.Conv2d layers of {type(model).__name__} ran in its forward pass")

    targets = check_logits_and_targets(logits, images.shape[0], targets)

    if on_stage is not None:
        on_stage("forward")
    chosen = ran if select is None else select(ran)
    with torch.enable_grad():  # the caller may be inside torch.no_grad()
        score = logits.gather(1, targets[:, None]).sum()
    if reduce is not None:
        layers_kept = [kept[n] for n in chosen]
        outputs.clear()  # the view's hooks hold these dicts: what they kept would live until the view does
        kept.clear()
        maps = _reduce_in_backward(score, layers_kept, reduce)
        if on_stage is not None:
            on_stage("backward")
        return Capture(layer_names=list(chosen), activations=[], gradients=[], logits=logits.detach(),
                       targets=targets, maps=maps)
    originals = [outputs[n][0] for n in chosen]
    with torch.enable_grad():
        if score.requires_grad:
            grads = torch.autograd.grad(score, originals, allow_unused=True)
        else:  # no watched layer influences the output
            grads = (None,) * len(originals)
    gradients = [torch.zeros_like(a) if g is None else g for a, g in zip(originals, grads)]
    if on_stage is not None:
        on_stage("backward")
    return Capture(
        layer_names=list(chosen),
        activations=[a.detach() for a in originals],
        gradients=gradients,
        logits=logits.detach(),
        targets=targets,
    )


def _widening_1x1_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """The input a 1x1 conv's output is made of, when it has at most half the output's channels:
    ``Y[:, :, ::s, ::s]`` of a plain ``nn.Conv2d`` (its class's forward, no hooks that could change
    the output) with a 1x1 kernel, no padding, one group, stride s, autocast off; else None.
    The 1x1 convs that widen a bottleneck (resnet's conv3 and downsample) qualify."""
    if type(module) is not nn.Conv2d or len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor) \
            or module.kernel_size != (1, 1) or module.groups != 1 or module.padding not in ((0, 0), "valid") \
            or torch.is_autocast_enabled(output.device.type) or not runs_class_forward(module):
        return None
    (sh, sw), y = module.stride, inputs[0]
    if 2 * y.shape[1] > output.shape[1]:  # kept: (B, C_in, h, w) against A's (B, C_out, h, w)
        return None
    return y if (sh, sw) == (1, 1) else y[:, :, ::sh, ::sw].contiguous()


@dataclass
class _Kept:
    """What the lean path keeps of one layer's output ``A`` until its gradient arrives: ``A``
    itself, or, for a widening 1x1 conv (``conv``), its (subsampled) input ``Y``, from which the
    map is computed directly (``cam_reducer(...).through_1x1``), or ``A`` made again if needed."""

    node: object  # A.grad_fn (None: a leaf)
    edge: object  # torch.autograd.graph.GradientEdge of A
    tensor: torch.Tensor | None  # A, or the conv's input Y
    conv: nn.Conv2d | None = None

    def activation(self) -> torch.Tensor:
        if self.conv is None:
            return self.tensor.detach()
        with torch.no_grad():
            return F.conv2d(self.tensor.detach(), self.conv.weight, self.conv.bias)

    def map(self, reduce, grad: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return reduce.through_1x1(self.tensor.detach(), self.conv.weight.detach(),
                                      None if self.conv.bias is None else self.conv.bias.detach(), grad)
        return reduce(self.activation(), grad)


def _reduce_in_backward(score: torch.Tensor, kept: list[_Kept],
                        reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """``reduce(A_l, dscore/dA_l)`` of every kept layer, each computed in the backward pass as soon
    as its gradient is complete (a pre-hook on ``A_l``'s autograd node), after which neither what
    was kept of ``A_l`` nor its gradient is held: at no time do all gradients exist at once, and
    each output is released as soon as the backward is past it."""
    maps: list[torch.Tensor | None] = [None] * len(kept)

    def finish(i: int, grad: torch.Tensor) -> None:
        maps[i] = kept[i].map(reduce, grad)
        kept[i].tensor = None  # released: autograd's saved copy (if any) was freed when its node ran

    def make_hook(i: int):
        def hook(grad_outputs):
            finish(i, grad_outputs[kept[i].edge.output_nr])
        return hook

    try:
        if score.requires_grad:
            roots = _roots(score, [k.node for k in kept])
            for i, k in enumerate(kept):
                if i not in roots:
                    k.node.register_prehook(make_hook(i))
            with torch.enable_grad():
                grads = torch.autograd.grad(score, [kept[i].edge for i in roots], allow_unused=True)
            for i, g in zip(roots, grads):
                if maps[i] is None and g is not None:
                    finish(i, g)
        for i, k in enumerate(kept):  # outputs the score does not depend on: a zero gradient
            if maps[i] is None:
                activation = k.activation()
                maps[i] = reduce(activation, torch.zeros_like(activation))
    finally:
        # The hooks on the nodes hold ``kept``, which holds the nodes: a cycle through autograd's
        # C++ nodes that Python's collector cannot see. Broken here, or every call's graph (with
        # what it saved) would stay alive.
        kept.clear()
    return maps


def _roots(score: torch.Tensor, nodes: list[object]) -> list[int]:
    """Indices of the outputs (their autograd ``nodes``; None for a leaf) that have no other
    output below them in ``score``'s autograd graph: a backward to these (and only these) passes
    through every other output's node, so the hooks on the others fire and only the roots'
    gradients come back (in a chain of convs, the first conv alone)."""
    by_node: dict[object, list[int]] = {}
    for i, node in enumerate(nodes):
        by_node.setdefault(node, []).append(i)
    # a leaf (an output the model detached) or outputs sharing one node (whose hooks would not run
    # when the backward stops at that node): roots themselves
    roots = [i for node, indices in by_node.items() if node is None or len(indices) > 1 for i in indices]
    node_of = {node: indices[0] for node, indices in by_node.items() if node is not None and len(indices) == 1}
    # reaches[node]: some output's node is this node or below it. Iterative post-order walk.
    reaches: dict[object, bool] = {}
    stack = [(score.grad_fn, False)]
    while stack:
        node, expanded = stack.pop()
        if node is None or (node in reaches and not expanded):
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        if not expanded:
            reaches[node] = False  # placeholder: an autograd graph has no cycles
            stack.append((node, True))
            stack.extend((child, False) for child in children if child not in reaches)
            continue
        below = any(reaches.get(child, False) for child in children)
        reaches[node] = node in node_of or below
        if node in node_of and not below:
            roots.append(node_of[node])
    roots += [i for node, i in node_of.items() if node not in reaches]  # not in the score's graph at all
    return sorted(set(roots))


def _forward(view, images, watched, knowledge: _InplaceKnowledge, clone_all: bool,
             kept: dict[str, _Kept] | None = None, through_1x1: bool = False):
    """One forward of the eval ``view`` with hooks on its ``watched`` modules; returns
    ({name: (original, handed_on, version, cloned)}, logits). With ``kept`` (the lean path), fills
    it with what to keep of each layer (``_Kept``); ``through_1x1``: the reducer can make a map
    from a widening 1x1 conv's input."""
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor, int, bool]] = {}

    def make_hook(name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise TypeError(f"layers: {name!r} must output a (B, C, h, w) tensor, got {got}")
            if name in outputs:
                raise ValueError(
                    f"layers: {name!r} ran more than once in one forward pass, so its map is ambiguous; "
                    "pass layers= without it"
                )
            detached = not output.requires_grad
            if detached:  # the model detached it (or it does not depend on the input): a new leaf
                output = output.detach().requires_grad_(True)
            known = name in knowledge.checked and name not in knowledge.overwritten
            if kept is not None:
                edge = torch.autograd.graph.get_gradient_edge(output)
                # not tied to what the first call learns (``known``): every call, the first one
                # included, takes the same path, so that a map does not depend on the calls before it
                y = None if clone_all or detached or name in knowledge.overwritten or not through_1x1 else \
                    _widening_1x1_input(module, inputs, output)
                if y is not None:
                    # keep the (smaller) input, not A; a later in-place write into the input is a
                    # surprise like any other (learned as overwritten: A is kept from then on)
                    outputs[name] = (inputs[0], inputs[0], inputs[0]._version, False)
                    kept[name] = _Kept(output.grad_fn, edge, y, module)
                    return None
            # a leaf that requires grad cannot be written in place, so it is never handed on
            clone = clone_all or detached or not known
            handed = output.clone() if clone else output
            outputs[name] = (output, handed, handed._version, clone)
            if kept is not None:
                kept[name] = _Kept(output.grad_fn, edge, output)
            return handed if clone else None
        return hook

    for name, module in watched:  # on the view's modules (never the model's); a rerun replaces them
        set_forward_hook(module, make_hook(name))
    # A fresh leaf (not the user's tensor) that requires grad: every layer output gets a graph even
    # when all parameters are frozen; ``* 1`` so that an in-place op on the model's input neither
    # fails (a leaf) nor writes into the caller's images.
    inputs = images.detach().requires_grad_(True) * 1
    with torch.enable_grad():
        logits = view(inputs)
    return outputs, logits
