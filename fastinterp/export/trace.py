"""The CNN and its per-layer maps as one traced graph: forward, activation-only backward, CAMs.

    (images (B, C, H, W), targets (B,) int64, -1 = predicted class)
      -> make_fx(symbolic shapes, DECOMPOSITIONS): one aten graph of
         gradient kind:    CNN forward, d y_t / d A_l of every conv output (no backward op left),
                           the CAM formula of every layer
         activation kind:  CNN forward, mean_c |A_l| of every conv output, the head's CAM (a
                           backward through the head alone, or the class's weight row)
      -> (logits (B, classes), targets (B,), maps: one (B, h_l, w_l) float32 per conv in execution
         order, then the head's CAM for the activation kind)

The same maps as the eager path (``capture`` / ``activation_layer_maps``) computes, from a graph
built once: no hooks, eval views or Python run per call. Differences from the eager path, on
purpose: every conv output is cloned before the rest of the network sees it (an in-place ReLU
would otherwise overwrite it; in the graph the clone is free), and the predicted class is chosen
inside the graph (``targets < 0``). Data-dependent control flow in the CNN cannot be traced: the
error says so, and that the eager backend still works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

from fastinterp.maps.formulas import METHODS, gradcam_formula, weighted_sum
from fastinterp.maps.eval_view import add_forward_hook, eval_view
from fastinterp.export.decompositions import (DECOMPOSITIONS, UnsupportedOpError, check_no_backward,
                                              nchwc_layout_enabled)
from fastinterp.maps.forward_only import head_cam, head_plan, tapped_forward

__all__ = ["trace_layer_maps"]


def _chosen_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.where(targets < 0, logits.argmax(dim=1), targets)


def _layer_map(formula, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``formula(activations, gradients)``; under ``nchwc_layout``, Grad-CAM's with the spatial
    mean of the gradient as an average pool, which ONNX Runtime runs on the gradient in its
    blocked NCHWc layout (a ReduceMean needs the plain layout: a reorder of every gradient)."""
    if (nchwc_layout_enabled() and formula is gradcam_formula
            and all(isinstance(n, int) for n in gradients.shape[2:])):
        weights = F.avg_pool2d(gradients, gradients.shape[2:]).flatten(1)
        return torch.relu(weighted_sum(weights, activations))
    return formula(activations, gradients)


def _gradient_maps(cnn: nn.Module, method: str):
    formula = METHODS[method]

    def layer_maps(images: torch.Tensor, targets: torch.Tensor):
        view = eval_view(cnn)
        outputs: list[torch.Tensor] = []

        def keep(module, inputs, output):
            outputs.append(output)
            return output.clone()  # the rest of the network gets a copy: in-place ops cannot touch A

        handles = [add_forward_hook(m, keep) for m in view.modules() if isinstance(m, nn.Conv2d)]
        try:
            logits = view(images.detach().requires_grad_(True) * 1)
        finally:
            for handle in handles:
                handle.remove()
        chosen = _chosen_targets(logits, targets)
        score = logits.gather(1, chosen[:, None]).sum()
        grads = torch.autograd.grad(score, outputs, allow_unused=True)
        maps = []
        for a, g in zip(outputs, grads):
            g = torch.zeros_like(a) if g is None else g
            maps.append(_layer_map(formula, a.detach().float(), g.float()))
        return (logits.detach(), chosen, *maps)

    return layer_maps


def _activation_maps(cnn: nn.Module, plan):
    def layer_maps(images: torch.Tensor, targets: torch.Tensor):
        view = eval_view(cnn)
        maps: list[torch.Tensor] = []

        def mean_abs(module, inputs, output):
            maps.append(output.detach().abs().mean(dim=1, dtype=torch.float32))

        for module in view.modules():
            if isinstance(module, nn.Conv2d):
                add_forward_hook(module, mean_abs)
        logits, tap, _ = tapped_forward(plan, view, images)
        chosen = _chosen_targets(logits, targets)
        return (logits.detach(), chosen, *maps, head_cam(plan, tap, logits, chosen, torch.float32))

    return layer_maps


def trace_layer_maps(cnn: nn.Module, kind: str, method: str, example: torch.Tensor,
                     dynamic_size: bool = False) -> torch.fx.GraphModule:
    """Trace ``cnn``'s per-layer maps of representation ``kind`` ("gradient" with CAM ``method``,
    or "activation") into a GraphModule ``(images, targets) -> (logits, targets, *maps)``.

    ``example``: a finite (B, C, H, W) float32 batch the CNN takes, on its device (B >= 2). The batch size
    is traced symbolically, and H and W too if ``dynamic_size``. The CNN's tensors
    become constants of the graph. Raises :class:`UnsupportedOpError` (an op whose backward does
    not decompose) or a RuntimeError for data-dependent control flow.
    """
    if kind == "gradient":
        layer_maps = _gradient_maps(cnn, method)
    else:
        layer_maps = _activation_maps(cnn, head_plan(cnn, example))
    targets = torch.full((example.shape[0],), -1, dtype=torch.int64, device=example.device)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            if dynamic_size:  # every dimension symbolic
                graph = make_fx(layer_maps, tracing_mode="symbolic", decomposition_table=DECOMPOSITIONS,
                                _allow_non_fake_inputs=True)(example, targets)
            else:  # only the batch symbolic: a smaller graph (no size arithmetic), traced 2x faster
                fake_mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
                dims = [DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (example.dim() - 1)
                images = fake_mode.from_tensor(example, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dims))
                chosen = fake_mode.from_tensor(targets, symbolic_context=StatelessSymbolicContext(
                    dynamic_sizes=[DimDynamic.DYNAMIC]))
                with fake_mode:
                    graph = make_fx(layer_maps, tracing_mode="real", decomposition_table=DECOMPOSITIONS,
                                    _allow_non_fake_inputs=True)(images, chosen)
    except UnsupportedOpError as error:
        raise UnsupportedOpError(f"export: {type(cnn).__name__}: {error}; the eager torch backend still explains "
                                 "this CNN") from error
    except Exception as error:
        text = str(error)
        if any(key in text for key in ("data-dependent", "data dependent", "GuardOnDataDependent", "symbolic")):
            raise RuntimeError(
                f"export: {type(cnn).__name__} has data-dependent control flow (its forward branches on tensor "
                f"values), which one traced graph cannot hold ({type(error).__name__}: {text.splitlines()[0]}); "
                "the eager torch backend (fastinterp.compile(...).explain) still explains it") from error
        raise
    check_no_backward(graph.graph, cnn, example)
    return graph
