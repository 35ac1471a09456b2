"""The whole explain pipeline as one ``nn.Module`` of plain torch ops: what ``export_onnx`` exports.

    (images (B, C, H, W) float32, targets (B,) int64, -1 = predicted)
      -> layer maps (``trace_layer_maps``: CNN forward [+ activation-only backward] + CAMs)
      -> min-max normalise per map (float32) -> bilinear resize to (S, S) -> running mean -> K CGMs
      -> images resized to (S, S) (antialiased bilinear) -> generator -> (B, 1, S, S)
      -> antialiased bilinear resize to (H, W), clamped to [0, 1]
      -> (logits (B, classes), targets (B,), maps (B, H, W), cgm (B, K, S, S))

It is ``Explainer.explain`` without the eager machinery, op for op the reference arithmetic of
``ops.cumulative_average_reference``, except that maps are normalised in float32, not float64
(ONNX Runtime's CPU kernels are float32): the same constant-map rule (span <= 16 float32 ulps of
the map's magnitude -> zeros), and a float32 map whose max - min overflows (|values| ~ 1e38) is not
handled. Resizes are ``F.interpolate`` calls, which export as ONNX ``Resize`` (antialias needs
opset 18).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastinterp.ops import constant_rtol

__all__ = ["ExplainGraph"]


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
    """

    def __init__(self, layer_maps: nn.Module, generator: nn.Module, keep: list[int], positions: list[int],
                 reverse: bool, size: tuple[int, int], resize_images: bool):
        super().__init__()
        self.layer_maps, self.generator = layer_maps, generator
        self.keep, self.positions, self.reverse = list(keep), list(positions), reverse
        self.size, self.resize_images = tuple(size), resize_images
        self.rtol = constant_rtol(torch.float32)

    def cumulative_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, h_l, w_l) maps -> (B, K, S, S) cumulative averages at ``positions``."""
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
