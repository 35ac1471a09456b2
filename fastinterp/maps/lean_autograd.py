"""What the gradient pass lets autograd keep: only what ``d score / d A`` needs.

The gradient representation asks autograd for gradients with respect to layer outputs, never to
parameters, yet autograd saves for every op what *any* of its gradients would need. Eval
BatchNorm saves its input (only the weight's gradient reads it; the input's is ``G * scale``), and
that input is the conv output before it. Inside :class:`ActivationGradientsOnly` (a
``TorchFunctionMode`` around the capture's forward) eval ``F.batch_norm`` saves its (C,) scale
instead, so that a conv output the capture does not keep is freed as soon as the next op has read
it: what lets ``fastinterp.maps.capture`` keep a widening 1x1 conv's (smaller) input instead of
its output. The input gradient is the value the aten kernel computes
(``tests/test_lean_autograd.py``).

Measured and left out (benchmarks/NOTES.md, issue 24; the variants are in
``benchmarks/gradient_memory.py`` at commit e604813): a conv saving no input plus a ReLU saving a
bool or bit mask, and a max-pool saving only its indices, bought 0.2-0.3 GB at resnet50 batch 32
and nothing at batch 8, for 6-10% more time (a masked multiply is 2.4x slower than the threshold
backward it replaces).

Falls back to the plain op (autograd saves what it always does) in training mode, under
autocast, or for inputs that do not require grad.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["LEAN_OPS", "ActivationGradientsOnly"]


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


def _batch_norm(args, kwargs):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    defaults = (None, None, None, None, None, False, 0.1, 1e-5)
    x, mean, var, weight, bias, training, _, eps = (kwargs.get(n, args[i] if len(args) > i else d)
                                                    for i, (n, d) in enumerate(zip(names, defaults)))
    if training or not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor) \
            or not (isinstance(x, torch.Tensor) and x.requires_grad) or torch.is_autocast_enabled(x.device.type) \
            or any(isinstance(t, torch.Tensor) and t.requires_grad for t in (mean, var)):
        return None
    detached = [None if t is None else t.detach() for t in (weight, bias)]  # no parameter gradient
    return _BatchNormEval.apply(x, mean, var, *detached, eps)


# function -> its lean version (returning None: the plain op runs)
LEAN_OPS = {F.batch_norm: _batch_norm}


class ActivationGradientsOnly(TorchFunctionMode):
    """Within it, eval ``F.batch_norm`` saves only what the input's gradient needs (module doc).
    For a forward whose backward asks for no parameter gradient: a BatchNorm's weight and bias
    get none."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        lean = LEAN_OPS.get(func)
        if lean is not None:
            out = lean(args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
