"""The decomposition table that turns the activation-only backward into forward ops.

``torch.onnx`` has no backward ops (``convolution_backward``, ``threshold_backward``...). Tracing
``torch.autograd.grad`` with ``make_fx(..., decomposition_table=DECOMPOSITIONS)`` replaces each
by forward ops that ONNX has: the stock ``torch._decomp`` decompositions (max pooling,
hardswish/hardsigmoid, SiLU/sigmoid, GELU, softmax...) and our own:

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
    threshold_backward (ReLU)            d y * (y > 0): Greater, Cast, Mul (the stock Where runs
                                         ~6x slower in ONNX Runtime)
    native_batch_norm_backward (eval)    d y * invstd * weight (2 ops; the stock one computes the
                                         training-mode terms too)

:func:`nchwc_layout` switches the trace to forms for ONNX Runtime's CPU execution provider, whose
NCHWc transformer then keeps the gradient chain in its blocked layout (see there; float32 files
for the CPU EP only: its ReLU mask scales by 2^126, which float16 cannot hold).

Only input gradients are ever asked for (the traced backward differentiates activations, never
parameters); a decomposition asked for a weight or bias gradient raises. Whatever op the table
does not cover stays in the traced graph: :func:`check_no_backward` refuses such a graph, naming
the op and the layer that ran its forward.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch._decomp
from torch import nn

__all__ = ["DECOMPOSITIONS", "UnsupportedOpError", "check_no_backward", "nchwc_layout", "nchwc_layout_enabled"]

aten = torch.ops.aten

_NCHWC = contextvars.ContextVar("fastinterp_export_nchwc_layout", default=False)


@contextlib.contextmanager
def nchwc_layout(enabled: bool = True) -> Iterator[None]:
    """Trace the backward for ONNX Runtime's CPU execution provider: while on, the ReLU and
    batch-norm backwards, the strided conv backwards and Grad-CAM's spatial mean are written as
    ops that ONNX Runtime's NCHWc transformer keeps in its blocked layout (depthwise 1x1
    convolutions, a clamp, an average pool), so the gradient chain stays blocked from conv to
    conv instead of being reordered around every elementwise op (resnet50 224 px, batch 8: 9%
    less time than without on an idle machine; benchmarks/onnx_gradient.py, benchmarks/NOTES.md).
    Off (the default) the same maps come from plain elementwise ops, which compilers such as
    TorchInductor fuse.

    For float32 files run by the CPU execution provider only: the ReLU mask is
    ``clamp(2^126 y, 0, 1)`` (:func:`_step`), whose scale a float16 conversion (``fp16=True``, or
    TensorRT's fp16 mode) cannot hold."""
    token = _NCHWC.set(enabled)
    try:
        yield
    finally:
        _NCHWC.reset(token)


def nchwc_layout_enabled() -> bool:
    """Whether :func:`nchwc_layout` is on (in this context)."""
    return _NCHWC.get()


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
            if _NCHWC.get():  # ONNX Runtime runs ConvTranspose in the plain layout: an identity depthwise conv
                # brings the gradient back to NCHWc, where the residual Add that follows joins the other branch
                # (else that Add, and the skip connections below it, run in the plain layout, between reorders)
                channels = grad_input.shape[1]
                grad_input = aten.convolution(grad_input, grad_input.new_ones((channels, 1, 1, 1)), None, [1, 1],
                                              [0, 0], [1, 1], False, [0, 0], channels)
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
    if _NCHWC.get() and input.dim() == 4:  # a depthwise 1x1 convolution, which ONNX Runtime keeps in its NCHWc
        # layout (a Mul by a constant it does not)
        channels = scale.shape[0]
        return aten.convolution(grad_output, scale.reshape(channels, 1, 1, 1).to(grad_output.dtype), None, [1, 1],
                                [0, 0], [1, 1], False, [0, 0], channels), None, None
    shape = [1, -1] + [1] * (input.dim() - 2)
    return grad_output * scale.reshape(shape).to(grad_output.dtype), None, None


# 2^126: times any normal float32 > 0 (>= 2^-126) it is >= 1; times 0 it is 0
_STEP_SCALE = 2.0 ** 126


def _step(x: torch.Tensor) -> torch.Tensor:
    """(x > 0) as float, for a (B, C, h, w) map: ``clamp(2^126 x, 0, 1)`` with the scale as a
    depthwise 1x1 convolution, which ONNX Runtime fuses with the clamp and runs in its blocked
    NCHWc layout, so the ReLU backward's multiply stays there too (the comparison would need the
    plain layout: a reorder of the activation, and of the gradient before and after). Equal to
    ``x > 0`` for 0, negatives, every normal float32 and +-inf; a subnormal x in (0, 2^-126) gets
    a mask 2^126 x in (0, 1)."""
    channels = x.shape[1]
    scale = torch.full((channels, 1, 1, 1), _STEP_SCALE, dtype=x.dtype, device=x.device)
    return aten.convolution(x, scale, None, [1, 1], [0, 0], [1, 1], False, [0, 0], channels).clamp(0, 1)


def _threshold_backward(grad_output, self, threshold):
    """ReLU's backward, d x = d y where y > threshold, else 0, as a multiply by a float mask.
    The stock ``where(y <= threshold, 0, d y)`` exports as ONNX ``Where``, which ONNX Runtime's
    CPU kernel runs ~6x slower than ``Greater`` + ``Cast`` + ``Mul`` (benchmarks/onnx_gradient.py);
    under :func:`nchwc_layout`, for conv feature maps and threshold 0, the mask is :func:`_step`.
    Equal for finite gradients (a non-finite gradient where the mask is 0 gives NaN, not 0)."""
    if _NCHWC.get() and threshold == 0 and self.dim() == 4 and self.is_floating_point():
        return grad_output * _step(self)
    return grad_output * (self > threshold).to(grad_output.dtype)


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
DECOMPOSITIONS[aten.threshold_backward.default] = _threshold_backward
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
