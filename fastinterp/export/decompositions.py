"""The decomposition table that turns the activation-only backward into forward ops.

``torch.onnx`` has no backward ops (``convolution_backward``, ``threshold_backward``...). Tracing
``torch.autograd.grad`` with ``make_fx(..., decomposition_table=DECOMPOSITIONS)`` replaces each
by forward ops that ONNX has: the stock ``torch._decomp`` decompositions (ReLU, batch norm in
eval (as our own, leaner), max pooling, hardswish/hardsigmoid, SiLU/sigmoid, GELU, softmax...) and three of our own:

    convolution_backward (d input only)  stride 1: a convolution with the flipped, transposed
                                         kernel (padding d (k - 1) - p); otherwise a transposed
                                         convolution with the same weight, output_padding =
                                         stride - 1, sliced to the input's size (a symbolic
                                         output_padding does not export when H and W are
                                         dynamic); grouped and depthwise as they are
    _adaptive_avg_pool2d_backward        window matrices: d input = P_h^T (d output) P_w, with
                                         P (out, in) = 1/len over each pooling window (global
                                         pooling: one row of 1/(h w))
    avg_pool2d_backward                  a depthwise transposed convolution with a constant
                                         1/(kh kw) kernel (count_include_pad=True, or no padding;
                                         no ceil_mode, no divisor_override)

Only input gradients are ever asked for (the traced backward differentiates activations, never
parameters); a decomposition asked for a weight or bias gradient raises. Whatever op the table
does not cover stays in the traced graph: :func:`check_no_backward` refuses such a graph, naming
the op and the layer that ran its forward.
"""

from __future__ import annotations

import torch
import torch._decomp
from torch import nn

__all__ = ["DECOMPOSITIONS", "UnsupportedOpError", "check_no_backward"]

aten = torch.ops.aten


class UnsupportedOpError(RuntimeError):
    """A CNN uses an op whose backward cannot be exported (no decomposition)."""


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    if transposed:
        raise UnsupportedOpError("convolution_backward: the gradient of a transposed convolution has no export "
                                 "decomposition")
    if weight.dim() != 4:
        raise UnsupportedOpError(f"convolution_backward: only 2-D convolutions export, got a {weight.dim() - 2}-D one")
    if output_mask[1] or output_mask[2]:
        raise UnsupportedOpError("convolution_backward: the export traces input gradients only, but a weight or bias "
                                 "gradient was asked for")
    grad_input = None
    if output_mask[0]:
        kernel = weight.shape[2:]
        full = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding)]
        if all(s == 1 for s in stride) and all(f >= 0 for f in full):
            # stride 1: a plain convolution with the flipped, transposed kernel: the whole resnet50
            # pipeline 4-5% faster in ONNX Runtime (CPU) than with ConvTranspose, same maps
            # (experiments/onnx_conv_backward.py)
            out_channels, in_per_group = weight.shape[0], weight.shape[1]
            flipped = (weight.reshape(groups, out_channels // groups, in_per_group, *kernel).transpose(1, 2)
                       .reshape(groups * in_per_group, out_channels // groups, *kernel).flip(2, 3))
            grad_input = aten.convolution(grad_output, flipped, None, [1, 1], full, dilation, False, [0, 0], groups)
        else:
            padding_out = [s - 1 for s in stride]
            grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, padding_out,
                                          groups)
            grad_input = grad_input[:, :, : input.shape[2], : input.shape[3]]
    return grad_input, None, None


def _native_batch_norm_backward(grad_output, input, weight, running_mean, running_var, save_mean, save_invstd,
                                train, eps, output_mask):
    """Eval batch norm is y = (x - mean) * invstd * weight + bias: d x = d y * invstd * weight.
    (The stock decomposition computes the training-mode terms too: ~15 ops per layer, not 2.)"""
    if train:
        raise UnsupportedOpError("native_batch_norm_backward: batch norm in training mode (the export explains in eval "
                                 "mode)")
    if output_mask[1] or output_mask[2]:
        raise UnsupportedOpError("native_batch_norm_backward: the export traces input gradients only, but a weight or "
                                 "bias gradient was asked for")
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shape = [1, -1] + [1] * (input.dim() - 2)
    return grad_output * scale.reshape(shape).to(grad_output.dtype), None, None


def _window_matrix(size_in, size_out, like: torch.Tensor) -> torch.Tensor:
    """(out, in): row i averages input [floor(i in / out), ceil((i + 1) in / out)), as
    adaptive_avg_pool2d's windows."""
    rows = torch.arange(size_out, device=like.device)
    start = (rows * size_in) // size_out
    end = ((rows + 1) * size_in + size_out - 1) // size_out
    cols = torch.arange(size_in, device=like.device)
    inside = (cols[None] >= start[:, None]) & (cols[None] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def _adaptive_avg_pool2d_backward(grad_output, input):
    rows = _window_matrix(input.shape[-2], grad_output.shape[-2], grad_output)
    cols = _window_matrix(input.shape[-1], grad_output.shape[-1], grad_output)
    return torch.einsum("bcij,ih,jw->bchw", grad_output, rows, cols)


def _avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override):
    kernel = list(kernel_size) * (2 // len(kernel_size))
    stride = list(stride or kernel) * (2 // len(stride or kernel))
    padding = list(padding) * (2 // len(padding))
    if ceil_mode or divisor_override is not None or (any(padding) and not count_include_pad):
        raise UnsupportedOpError("avg_pool2d_backward: only ceil_mode=False, no divisor_override and "
                                 "count_include_pad=True (or no padding) export")
    channels = input.shape[1]
    weight = torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=grad_output.dtype,
                        device=grad_output.device)
    grad_input = aten.convolution(grad_output, weight, None, stride, padding, [1, 1], True,
                                  [s - 1 for s in stride], channels)
    return grad_input[:, :, : input.shape[2], : input.shape[3]]


DECOMPOSITIONS = torch._decomp.get_decompositions([
    aten.threshold_backward,
    aten.max_pool2d_with_indices_backward,
    aten.hardswish_backward,
    aten.hardsigmoid_backward,
    aten.silu_backward,
    aten.sigmoid_backward,
    aten.tanh_backward,
    aten.gelu_backward,
    aten.leaky_relu_backward,
    aten.elu_backward,
    aten.hardtanh_backward,
    aten._softmax_backward_data,
])
DECOMPOSITIONS[aten.convolution_backward.default] = _convolution_backward
DECOMPOSITIONS[aten.native_batch_norm_backward.default] = _native_batch_norm_backward
DECOMPOSITIONS[aten._adaptive_avg_pool2d_backward.default] = _adaptive_avg_pool2d_backward
DECOMPOSITIONS[aten.avg_pool2d_backward.default] = _avg_pool2d_backward


def _forward_op_modules(cnn: nn.Module, images: torch.Tensor) -> dict[str, str]:
    """{aten op name: the first module (name and type) whose forward ran it}, from one eager run."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastinterp.maps.eval_view import add_forward_hook, add_forward_pre_hook, eval_view

    view = eval_view(cnn)
    stack: list[str] = []
    seen: dict[str, str] = {}

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if stack and name not in seen:
                seen[name] = stack[-1]
            return func(*args, **(kwargs or {}))

    def leave(module, args, output) -> None:  # returns None: the output stays as it is
        stack.pop()

    for name, module in view.named_modules():
        if name:
            label = f"{name!r} ({type(module).__name__})"
            add_forward_pre_hook(module, lambda m, a, label=label: stack.append(label) or None)
            add_forward_hook(module, leave)
    with torch.no_grad(), Log():
        view(images)
    return seen


def check_no_backward(graph: torch.fx.Graph, cnn: nn.Module, images: torch.Tensor) -> None:
    """Raise :class:`UnsupportedOpError` if a backward op survived the decompositions (it would not
    export, or export wrong), naming the op and the layer whose forward it differentiates."""
    left = sorted({str(node.target) for node in graph.nodes
                   if node.op == "call_function" and "backward" in str(node.target)})
    if not left:
        return
    where = _forward_op_modules(cnn, images)
    parts = []
    for op in left:
        forward = op.split(".")[1].removesuffix("_backward").removesuffix("_backward_data")
        forward = forward.lstrip("_") if forward not in where else forward
        module = where.get(forward) or where.get("_" + forward) or next(
            (m for f, m in where.items() if f.lstrip("_").startswith(forward)), None)
        parts.append(f"{op} (the backward of layer {module})" if module else op)
    raise UnsupportedOpError(
        f"export: {type(cnn).__name__} uses an op whose backward has no export decomposition: {'; '.join(parts)}. "
        "The eager torch backend (fastinterp.compile(...).explain) still explains this CNN; the forward-only "
        "representation (representation='activation') exports without a backward through the trunk")
