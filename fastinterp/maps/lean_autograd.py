"""What the gradient pass lets autograd keep: only what ``d score / d A`` needs.

The gradient representation asks autograd for gradients with respect to layer outputs, never to
parameters, yet autograd saves for every op what *any* of its gradients would need:

- ``conv2d`` saves its input (only its weight gradient reads it) besides its weight;
- ``relu`` saves its float32 output, where the gradient needs only where it is positive.

Between them they keep every post-ReLU activation of the CNN alive until the backward reaches it
(resnet50 at batch 32: ~1.1 GB). Inside :class:`ActivationGradientsOnly` (a ``TorchFunctionMode``
around the capture's forward) ``F.conv2d`` saves its weight alone and computes ``dX`` only
(``torch.nn.grad.conv2d_input``: the same aten kernel autograd's own backward calls), and
``F.relu`` saves a 1-byte mask (``y > 0``) and returns ``G * mask``: both gradients are the
exact values autograd computes (``tests/test_lean_autograd.py``), and the post-ReLU activations
are freed once the next layer has read them. What is left saved is each conv's output (BatchNorm's
input, which the CAM needs anyway), the masks, pooling indices and the odd activation (SiLU,
hardswish) whose gradient needs its input.

Falls back to the plain op (autograd saves what it always does) for anything else: string
padding (``"same"``), autocast, mixed dtypes, or inputs that do not require grad.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["LEAN_OPS", "ActivationGradientsOnly", "pack_bits", "unpack_bits"]


class _Conv2dInputGradient(torch.autograd.Function):
    """``F.conv2d`` whose backward computes the input's gradient only (weight saved, input not)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.geometry = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.geometry
        dx = torch.nn.grad.conv2d_input(shape, weight, grad.contiguous(), stride, padding, dilation, groups)
        return dx, None, None, None, None, None, None


class _ReluMask(torch.autograd.Function):
    """``F.relu`` saving where its output is positive, 1 bit per element (``pack_bits``), instead
    of the float output."""

    @staticmethod
    def forward(ctx, x, inplace):
        y = torch.relu_(x) if inplace else torch.relu(x)
        if inplace:
            ctx.mark_dirty(x)
        ctx.packed = pack_bits(y > 0)
        ctx.shape = y.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        return torch.where(unpack_bits(ctx.packed, ctx.shape), grad, 0), None


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


class _MaxPool2dIndices(torch.autograd.Function):
    """``F.max_pool2d`` saving its argmax indices (int32) and not its input: the backward scatters
    the gradient to the indices (the aten kernel reads the input's shape only)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        wide = x.shape[-2] * x.shape[-1] >= 2**31
        ctx.save_for_backward(indices if wide else indices.to(torch.int32))
        ctx.geometry = (x.shape, kernel_size, stride, padding, dilation, ceil_mode)
        return y

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        shape, kernel_size, stride, padding, dilation, ceil_mode = ctx.geometry
        shaped_like_input = grad.new_empty(1).expand(shape)  # no memory: only its shape is read
        dx = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), shaped_like_input, kernel_size, stride,
                                                             padding, dilation, ceil_mode, indices.long())
        return dx, None, None, None, None, None


_BIT_WEIGHTS: dict[torch.device, torch.Tensor] = {}


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as 1 bit per element: (ceil(n / 8),) uint8 (``unpack_bits`` undoes it).
    NumPy's packbits on the CPU (7x faster there than the torch expression used elsewhere)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.packbits(mask.reshape(-1).numpy()))
    flat = mask.reshape(-1).view(torch.uint8)
    flat = F.pad(flat, (0, -flat.numel() % 8))
    return (flat.view(-1, 8) * _bit_weights(mask.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The bool tensor of ``shape`` that ``pack_bits`` packed."""
    numel = shape.numel()
    if packed.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(packed.numpy(), count=numel)).view(torch.bool).view(shape)
    bits = torch.bitwise_and(packed[:, None], _bit_weights(packed.device)).ne(0)
    return bits.view(-1)[:numel].view(shape)


def _bit_weights(device: torch.device) -> torch.Tensor:
    """(8,) uint8: 128, 64, ..., 1 (NumPy's bit order: the first element is the high bit)."""
    if device not in _BIT_WEIGHTS:
        _BIT_WEIGHTS[device] = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=device)
    return _BIT_WEIGHTS[device]


def _lean_conv(args, kwargs) -> bool:
    x, weight = args[0], args[1]
    padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
    return (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and x.requires_grad
            and x.dtype == weight.dtype and not isinstance(padding, str)
            and not torch.is_autocast_enabled(x.device.type))


def _lean_pool(args, kwargs) -> bool:
    x = args[0]
    return_indices = kwargs.get("return_indices", args[6] if len(args) > 6 else False)
    # contiguous only: the gradient then has the input's layout (the kernel takes it from the input)
    return isinstance(x, torch.Tensor) and x.requires_grad and x.dim() == 4 and x.is_contiguous() \
        and not return_indices and x.dtype in (torch.float32, torch.float64)


def _pair(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _conv2d(args, kwargs):
    if not _lean_conv(args, kwargs):
        return None
    names, defaults = ("bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1)
    rest = [kwargs.get(n, args[i + 2] if len(args) > i + 2 else d) for i, (n, d) in enumerate(zip(names, defaults))]
    return _Conv2dInputGradient.apply(args[0], args[1], *rest)


def _relu(args, kwargs):
    if not (isinstance(args[0], torch.Tensor) and args[0].requires_grad):
        return None
    return _ReluMask.apply(args[0], kwargs.get("inplace", args[1] if len(args) > 1 else False))


def _max_pool2d(args, kwargs):
    if not _lean_pool(args, kwargs):
        return None
    names, defaults = ("kernel_size", "stride", "padding", "dilation", "ceil_mode"), (None, None, 0, 1, False)
    kernel, stride, padding, dilation, ceil_mode = (kwargs.get(n, args[i + 1] if len(args) > i + 1 else d)
                                                    for i, (n, d) in enumerate(zip(names, defaults)))
    return _MaxPool2dIndices.apply(args[0], _pair(kernel), _pair(kernel if stride is None else stride),
                                   _pair(padding), _pair(dilation), ceil_mode)


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


# function -> its lean version (None: the plain op runs); benchmarks/gradient_memory.py drops
# entries to measure what each one buys
LEAN_OPS = {F.conv2d: _conv2d, F.relu: _relu, F.max_pool2d: _max_pool2d, F.batch_norm: _batch_norm}


class ActivationGradientsOnly(TorchFunctionMode):
    """Within it, ``F.conv2d``, ``F.relu``, ``F.max_pool2d`` and eval ``F.batch_norm`` save only
    what activation gradients need (module doc). For a forward whose backward asks for no parameter gradient: a
    parameter's gradient through a lean conv is not computed."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        lean = LEAN_OPS.get(func)
        if lean is not None:
            out = lean(args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
