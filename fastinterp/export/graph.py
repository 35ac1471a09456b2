"""The whole explain pipeline as one ``nn.Module`` of plain torch ops: what ``export_onnx`` exports.

    (images (B, C, H, W) float32, targets (B,) int64, -1 = predicted)
      -> layer maps (``trace_layer_maps``: CNN forward [+ activation-only backward] + CAMs)
      -> min-max normalise per map (float32) -> bilinear resize to (S, S) -> running mean -> K CGMs
      -> images resized to (S, S) (antialiased bilinear) -> generator -> (B, 1, S, S)
      -> antialiased bilinear resize to (H, W), clamped to [0, 1]
      -> (logits (B, classes), targets (B,), maps (B, H, W), cgm (B, K, S, S))

``build_explain_graph`` makes one from a CNN and a generator: what ``export_onnx`` exports, what
``compile(..., backend="inductor")`` compiles and what ``export_pt2`` packages (one graph, three
runtimes).

It is ``Explainer.explain`` without the eager machinery, op for op the reference arithmetic of
``ops.cumulative_average_reference``, except that maps are normalised in float32, not float64
(ONNX Runtime's CPU kernels are float32): the same constant-map rule (span <= 16 float32 ulps of
the map's magnitude -> zeros), and a float32 map whose max - min overflows (|values| ~ 1e38) is not
handled. Resizes are ``F.interpolate`` calls, which export as ONNX ``Resize`` (antialias needs
opset 18).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastinterp._core.hashing import weights_sha256
from fastinterp._core.validation import check_size, stem_weight
from fastinterp.export.trace import trace_layer_maps
from fastinterp.maps.options import check_representation
from fastinterp.maps.representation import TooFewLayersError, drop_1x1_maps, paper_positions
from fastinterp.ops import constant_rtol

__all__ = ["BuiltGraph", "ExplainGraph", "build_explain_graph", "use_fused_op"]


def use_fused_op(device: torch.device) -> bool:
    """``fused_op`` for the compiled backends (Inductor, AOTInductor; ONNX has no such op): the
    cumulative maps as our custom op (the C++ kernel) on the CPU: measured 3-4x faster than
    Inductor's kernel for the plain ops, and a minute less cold compile (benchmarks/NOTES.md). Not
    on CUDA: its Triton path syncs with the host (its NaN check), which CUDA graphs cannot hold;
    there Inductor's own Triton kernel for the plain ops runs inside the graph."""
    return device.type == "cpu"


class ExplainGraph(nn.Module):
    """``forward(images, targets) -> (logits, targets, maps, cgm)``; see the module doc.

    Args:
        layer_maps: the traced ``(images, targets) -> (logits, targets, *maps)`` graph.
        generator: the generator (eval mode, float32).
        keep: indices of the layer maps to accumulate (after ``skip_1x1``), execution order.
        positions: the K positions among the kept maps (``paper_positions``), accumulation order.
        reverse: accumulate last to first.
        size: the generator's (S, S).
        resize_images: resize the images to (S, S) (False when the exported input size is S).
        fused_op: the cumulative maps as one call of the custom op
            ``torch.ops.fastinterp.cumulative_average`` (``ops.library``: the C++ kernel, float64
            normalisation, as the eager backend) instead of plain torch ops. For TorchInductor and
            AOTInductor on the CPU: 3-4x faster than the kernel Inductor generates from the plain
            ops, and a minute less cold compile (benchmarks/NOTES.md); ONNX has no such op.
    """

    def __init__(self, layer_maps: nn.Module, generator: nn.Module, keep: list[int], positions: list[int],
                 reverse: bool, size: tuple[int, int], resize_images: bool, fused_op: bool = False):
        super().__init__()
        self.layer_maps, self.generator = layer_maps, generator
        self.keep, self.positions, self.reverse = list(keep), list(positions), reverse
        self.size, self.resize_images, self.fused_op = tuple(size), resize_images, fused_op
        self.rtol = constant_rtol(torch.float32)
        if fused_op:
            importlib.import_module("fastinterp.ops.library")  # registers torch.ops.fastinterp.cumulative_average

    def cumulative_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, h_l, w_l) maps -> (B, K, S, S) cumulative averages at ``positions``."""
        if self.fused_op:
            return torch.ops.fastinterp.cumulative_average(maps[: self.positions[-1] + 1], list(self.size),
                                                           self.positions)
        running, cgm = None, []
        for j, m in enumerate(maps[: self.positions[-1] + 1]):
            lo = m.amin(dim=(1, 2), keepdim=True)
            hi = m.amax(dim=(1, 2), keepdim=True)
            span = hi - lo
            varies = span > self.rtol * torch.maximum(lo.abs(), hi.abs())
            normalised = torch.where(varies, (m - lo) / torch.where(varies, span, torch.ones_like(span)), 0.0)
            up = F.interpolate(normalised[:, None], size=self.size, mode="bilinear", align_corners=False)
            running = up if running is None else running + up
            if j in self.positions:
                cgm.append(running / (j + 1))
        return torch.cat(cgm, dim=1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor):
        logits, chosen, *maps = self.layer_maps(images, targets)
        maps = [maps[i] for i in self.keep]
        if self.reverse:
            maps = maps[::-1]
        cgm = self.cumulative_maps(maps)
        small = images
        if self.resize_images:
            small = F.interpolate(images, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        out = self.generator(small, cgm)
        explanation = F.interpolate(out[:, :1].float(), size=images.shape[-2:], mode="bilinear", antialias=True,
                                    align_corners=False)
        return logits, chosen, explanation[:, 0].clamp(0, 1), cgm


@dataclass
class BuiltGraph:
    """What :func:`build_explain_graph` returns: the ``module`` (an :class:`ExplainGraph`, eval mode,
    on the device it was built on), an ``example`` batch (2, C, H, W) it was traced with, and what
    that run told: ``num_classes`` (the CNN's logits), ``channels``, ``input_size`` (H, W), the
    checked ``representation``, and ``cnn_sha256`` (the float32 CNN's weight hash)."""

    module: ExplainGraph
    example: torch.Tensor
    num_classes: int
    channels: int
    input_size: tuple[int, int]
    representation: dict
    cnn_sha256: str

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (batch, C, H, W), targets (batch,) = -1): arguments for the module."""
        images = self.example if batch == 2 else self.example[:1].expand(batch, *self.example.shape[1:]).contiguous()
        return images, torch.full((batch,), -1, dtype=torch.int64, device=images.device)


def build_explain_graph(cnn: nn.Module, generator: nn.Module, representation: Mapping[str, Any],
                        input_size: int | tuple[int, int], *, dynamic_size: bool = False,
                        device: torch.device | str = "cpu", fused_op: bool = False) -> BuiltGraph:
    """Trace ``cnn``'s layer maps (``trace_layer_maps``) and put them with ``generator`` into one
    :class:`ExplainGraph`. Neither module is modified: the graph holds float32 copies on ``device``.

    Args:
        representation: every field of ``maps.options.FIELDS`` (an explainer's ``representation``).
        input_size: (H, W) or int: the traced image size (fixed unless ``dynamic_size``).
        dynamic_size: trace H and W symbolically (any size; ``skip_1x1`` cannot be).
        device: where the copies and the graph's constants live (the compiled graph's device).
        fused_op: see :class:`ExplainGraph` (the compiled backends on the CPU; not for ONNX).
    Raises ``UnsupportedOpError`` / RuntimeError (``trace_layer_maps``) for CNNs one graph cannot
    hold, TooFewLayersError when the CNN has fewer maps than k.
    """
    o = check_representation(representation, argument="representation")
    size = check_size(input_size, "input_size")
    if o["skip_1x1"] and dynamic_size:
        raise ValueError("dynamic_size: the representation skips 1x1 maps (skip_1x1=True), which depends on the input "
                         "size; export with dynamic_size=False")
    device = torch.device(device)
    # float32 copies (the user's modules and the explainer's stay as they are)
    cnn = copy.deepcopy(cnn).to(device, torch.float32)
    generator = copy.deepcopy(generator).to(device, torch.float32).to(memory_format=torch.contiguous_format)
    channels = stem_weight(cnn).shape[1]
    example = torch.rand(2, channels, *size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode(False):
        graph = trace_layer_maps(cnn, o["kind"], o["method"], example, dynamic_size=dynamic_size)
        with torch.no_grad():
            logits, _, *maps = graph(example, torch.full((2,), -1, device=device))
    keep = list(range(len(maps)))
    if o["skip_1x1"]:
        _, kept = drop_1x1_maps(maps, [str(i) for i in keep])
        keep = [int(i) for i in kept]
    try:
        positions = paper_positions(len(keep), o["k"])
    except TooFewLayersError as error:
        raise error.for_generator(cnn) from None
    module = ExplainGraph(graph, generator, keep, positions, o["order"] == "last_to_first", (o["size"],) * 2,
                          resize_images=dynamic_size or size != (o["size"],) * 2, fused_op=fused_op).eval()
    return BuiltGraph(module, example, int(logits.shape[1]), int(channels), size, o, weights_sha256(cnn))
