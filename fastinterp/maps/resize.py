"""Resizing images to the generator's resolution: one function, used when a training set is built
and when a generator explains, named in the generator's metadata (``representation.image_resize``)
so that both sides resize the same way.

    "bilinear-antialias"  bilinear with antialiasing (a triangle filter as wide as the scale
                          factor) when shrinking, plain bilinear when enlarging;
                          align_corners=False. The weights are non-negative and sum to 1, so values
                          stay in the images' range (no clamping: images may be normalised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastinterp._core.validation import check_size

__all__ = ["DEFAULT_IMAGE_RESIZE", "IMAGE_RESIZE_METHODS", "image_resize_of", "resize_images", "resize_maps"]

IMAGE_RESIZE_METHODS = ("bilinear-antialias",)
DEFAULT_IMAGE_RESIZE = "bilinear-antialias"


def resize_images(images: torch.Tensor, size: int | tuple[int, int],
                  method: str = DEFAULT_IMAGE_RESIZE) -> torch.Tensor:
    """(B, C, H, W) float images -> (B, C, S_h, S_w); returned unchanged (the same tensor) when
    already at ``size``."""
    if method not in IMAGE_RESIZE_METHODS:
        raise ValueError(f"method: expected one of {IMAGE_RESIZE_METHODS}, got {method!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a float tensor (B, C, H, W), got {got}")
    size = check_size(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def image_resize_of(metadata: dict) -> str:
    """The image resize a generator's training images were made with, from its checkpoint metadata
    (``representation.image_resize``). Checkpoints that predate the field were built with
    antialiased bilinear resizing: "bilinear-antialias"."""
    rep = metadata.get("representation") or {}
    method = rep.get("image_resize", "bilinear-antialias")
    if method not in IMAGE_RESIZE_METHODS:
        raise ValueError(f"metadata: the generator was trained on images resized with {method!r}, which this "
                         f"version does not have (it has {IMAGE_RESIZE_METHODS})")
    return method


def resize_maps(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, h, w) maps in [0, 1] -> (B, S_h, S_w) in [0, 1]: the generator's output back at the
    images' resolution with the image resize's filter ("bilinear-antialias"; a convex combination,
    so the range is kept: the clamp only removes rounding). The same tensor when already at
    ``size``."""
    size = check_size(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    out = F.interpolate(maps[:, None], size=size, mode="bilinear", antialias=True, align_corners=False)[:, 0]
    return out.clamp_(0, 1)
