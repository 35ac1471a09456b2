"""What the gradient pass lets autograd keep: only what ``d score / d A`` needs.

The gradient representation asks autograd for gradients with respect to layer outputs, never to
parameters, yet autograd saves for every op what *any* of its gradients would need. Eval
BatchNorm saves its input (only the weight's gradient reads it; the input's is ``G * scale``), and
that input is the conv output before it. :func:`lean_batch_norms` gives the eval view's BatchNorm
modules (``fastinterp.maps.eval_view``: our copies, never the model's) a forward that saves the
(C,) scale instead, so that a conv output the capture does not keep is freed as soon as the
BatchNorm has read it: what lets ``fastinterp.maps.capture`` keep a widening 1x1 conv's (smaller)
input instead of its output. The input gradient is the value the aten kernel computes
(``tests/test_lean_autograd.py``). A forward set on the module instance, rather than a
``TorchFunctionMode`` around the whole forward: the mode cost ~5 ms per call at the demo's size
(every op of the CNN routed through Python), +33% on a 20 ms explain.

Measured and left out (benchmarks/NOTES.md, issue 24; the variants are in
``benchmarks/gradient_memory.py`` at commit e604813): a conv saving no input plus a ReLU saving a
bool or bit mask, and a max-pool saving only its indices, bought 0.2-0.3 GB at resnet50 batch 32
and nothing at batch 8, for 6-10% more time (a masked multiply is 2.4x slower than the threshold
backward it replaces).

The plain forward runs (autograd saves what it always does) for an input that needs no gradient
or under autocast.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["lean_batch_norms"]


class _BatchNormEval(torch.autograd.Function):
    """``F.batch_norm`` with running statistics (eval): an affine map per channel, whose input
    gradient is ``G * weight / sqrt(var + eps)``; saves that (C,) scale, not the input."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps):
        scale = 1 / torch.sqrt(running_var + eps)  # what the aten kernel's eval backward computes
        ctx.scale = scale if weight is None else weight * scale
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad):
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        return grad * ctx.scale.view(shape), None, None, None, None, None


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def lean_batch_norms(view: nn.Module) -> None:
    """Give every eval BatchNorm of ``view`` (an eval view: its modules are per-call copies) with
    running statistics, of torch's own classes and no forward of its own, the lean forward."""
    for module in view.modules():
        if type(module) in _BATCH_NORMS and not module.training and module.running_var is not None \
                and "forward" not in module.__dict__:
            module.forward = functools.partial(_lean_forward, weakref.ref(module))


def _lean_forward(module_ref, x: torch.Tensor) -> torch.Tensor:
    module = module_ref()
    if not x.requires_grad or torch.is_autocast_enabled(x.device.type):
        return type(module).forward(module, x)
    module._check_input_dim(x)
    detached = [None if t is None else t.detach() for t in (module.weight, module.bias)]  # no parameter gradient
    return _BatchNormEval.apply(x, module.running_mean, module.running_var, *detached, module.eps)
