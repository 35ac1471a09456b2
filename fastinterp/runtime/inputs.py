"""Images as people have them -> the (B, C, H, W) batches the pipeline takes, and the batches'
results back in the caller's order. Needs numpy and Pillow, not torch (the ONNX Runtime explainer
uses it too); torch tensors are handled when torch is what came in.

What ``explain(images)`` takes, and how each becomes pixels:

    PIL.Image.Image                  EXIF orientation applied, made RGB (grey / palette / RGBA:
                                     alpha dropped; 16-bit grey scaled, not clipped), uint8 (H, W, 3)
    str or pathlib.Path              read with Pillow, then as a PIL image
    numpy array or torch tensor      (B, C, H, W), (C, H, W), (B, H, W, C) or (H, W, C)
    a list or tuple of the above     one image each (3-D arrays, PIL images, paths); sizes may differ

The layout rule: C is the CNN's channel count (3). An array whose third-from-last axis is C and
last is not is channels-first; one whose last axis is C and third-from-last is not is
channels-last; when both are C (e.g. (3, 32, 3)) it is ambiguous and refused unless ``layout``
("CHW" or "HWC") says which. uint8 pixels are scaled to [0, 1] (x / 255, in the pipeline's float
dtype); float pixels are taken as they are (the CNN's own value range, as before); other dtypes
are refused. A list's images are grouped by size: each group runs as one batch, and its results
come back in the list's order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastinterp._core.io import read_rgb

__all__ = ["LAYOUTS", "ImageBatch", "Images", "as_image_batches", "in_order", "is_pil_image", "read_rgb"]  # read_rgb: _core.io's

LAYOUTS = ("CHW", "HWC")


@dataclass
class ImageBatch:
    """One group of equal-size images: ``indices`` (their positions in the caller's order) and
    ``pixels`` (B, C, H, W), a numpy array or torch tensor, float (uint8 already scaled)."""

    indices: list[int]
    pixels: Any


@dataclass
class Images:
    """``batches`` (one per image size), ``count`` images in all; ``listed``: a list was passed
    (its maps come back as a list when the sizes differ); ``tensors``: torch tensors came in (the
    results are tensors), else numpy."""

    batches: list[ImageBatch]
    count: int
    listed: bool
    tensors: bool


def _torch():
    return sys.modules.get("torch")


def _is_tensor(x: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def is_pil_image(x: object) -> bool:
    image = sys.modules.get("PIL.Image")
    return image is not None and isinstance(x, image.Image)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _channels_last(x: Any, channels: int, layout: str | None, argument: str) -> bool:
    """Whether array/tensor ``x`` (3-D or 4-D) holds its channels last (the module doc's rule)."""
    shape = _shape(x)
    if layout is not None:
        axis = -1 if layout == "HWC" else -3
        if shape[axis] != channels:
            raise ValueError(f"{argument}: layout={layout!r} puts {shape[axis]} channels on axis {axis} of shape "
                             f"{shape}, but the CNN takes {channels}")
        return layout == "HWC"
    first, last = shape[-3] == channels, shape[-1] == channels
    if first and last:
        batch = "(B, " if len(shape) == 4 else "("
        raise ValueError(f"{argument}: shape {shape} is ambiguous: both {batch}C, H, W) and {batch}H, W, C) with "
                         f"C={channels} fit; pass layout='CHW' or layout='HWC' to explain()")
    if not first and not last:
        four = len(shape) == 4
        raise ValueError(f"{argument}: the CNN takes {channels}-channel images, expected channels first "
                         f"{'(B, ' if four else '('}{channels}, H, W) or last {'(B, ' if four else '('}H, W, "
                         f"{channels}), got shape {shape}")
    return last


def _to_chw(x: Any, channels_last: bool) -> Any:
    """(…, H, W, C) -> (…, C, H, W), contiguous; channels-first arrays returned as they are."""
    if not channels_last:
        return x
    if _is_tensor(x):
        return x.movedim(-1, -3).contiguous()
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def _dtype_name(x: Any) -> str:
    return str(x.dtype).removeprefix("torch.")


def _floating(x: Any) -> bool:
    return x.is_floating_point() if _is_tensor(x) else np.issubdtype(x.dtype, np.floating)


def _prepare(x: Any, channels: int, layout: str | None, scale_uint8: Callable[[Any], Any], argument: str,
             known_hwc: bool = False) -> Any:
    """One array/tensor (3-D or 4-D) -> channels-first float pixels."""
    if _dtype_name(x) == "uint8":
        chw = _to_chw(x, True) if known_hwc else _to_chw(x, _channels_last(x, channels, layout, argument))
        return scale_uint8(chw)
    if not _floating(x):
        raise TypeError(f"{argument}: expected uint8 pixels (0-255, scaled to [0, 1]) or floating-point pixels, got "
                        f"dtype {_dtype_name(x)}")
    return _to_chw(x, _channels_last(x, channels, layout, argument))


def _one_image(item: Any, channels: int, layout: str | None, scale_uint8, argument: str) -> Any:
    """One list element -> (C, H, W) float pixels."""
    if is_pil_image(item) or isinstance(item, (str, Path)):
        return _prepare(read_rgb(item, argument), channels, layout, scale_uint8, argument, known_hwc=True)
    if isinstance(item, np.ndarray) or _is_tensor(item):
        if item.ndim == 4 and _shape(item)[0] == 1:
            item = item[0]
        if item.ndim != 3:
            raise ValueError(f"{argument}: each image of a list is one image, (C, H, W) or (H, W, C), got shape "
                             f"{_shape(item)}; pass a batch as one (B, C, H, W) array instead of a list")
        return _prepare(item, channels, layout, scale_uint8, argument)
    raise TypeError(f"{argument}: a list's images must be PIL images, file paths, numpy arrays or torch tensors, got "
                    f"{type(item).__name__}")


def _join(parts: list[Any], how: str) -> Any:
    """``parts`` (all numpy or all torch) stacked on a new first axis (``how="stack"``) or
    concatenated along the first (``"cat"``)."""
    if _is_tensor(parts[0]):
        return getattr(_torch(), how)(parts)
    return (np.stack if how == "stack" else np.concatenate)(parts)


def as_image_batches(images: object, channels: int, *, layout: str | None = None,
                     scale_uint8: Callable[[Any], Any], argument: str = "images") -> Images:
    """``images`` in any form of the module doc -> :class:`Images`: float (B, C, H, W) batches, one
    per image size. ``channels``: what the CNN's first conv takes; ``scale_uint8``: the backend's
    uint8 (…, C, H, W) -> float pixels in [0, 1] (x / 255, its dtype and device). Float arrays and
    tensors keep their dtype and device (the backend checks them)."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout: expected None (inferred), 'CHW' or 'HWC', got {layout!r}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{argument}: an empty list; expected at least one image")
        kinds = {_is_tensor(item) for item in images}
        if len(kinds) > 1:
            raise TypeError(f"{argument}: the list mixes torch tensors with other kinds (numpy, PIL, paths); pass one "
                            "kind")
        pixels = [_one_image(item, channels, layout, scale_uint8, f"{argument}[{i}]") for i, item in enumerate(images)]
        if len({_is_tensor(p) for p in pixels}) > 1:
            raise TypeError(f"{argument}: the list's images became both numpy arrays and tensors; pass torch tensors, "
                            "or numpy arrays / PIL images / paths, not both")
        dtypes = {_dtype_name(p) for p in pixels}
        if len(dtypes) > 1:
            raise TypeError(f"{argument}: the list's images have different dtypes {sorted(dtypes)}; pass one dtype")
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(_shape(p), []).append(i)
        batches = [ImageBatch(indices, _join([pixels[i] for i in indices], "stack")) for indices in groups.values()]
        return Images(batches, len(pixels), listed=True, tensors=kinds == {True})
    if is_pil_image(images) or isinstance(images, (str, Path)):
        pixels = _one_image(images, channels, layout, scale_uint8, argument)
        return Images([ImageBatch([0], pixels[None])], 1, listed=False, tensors=False)
    if isinstance(images, np.ndarray) or _is_tensor(images):
        if images.ndim not in (3, 4):
            raise ValueError(f"{argument}: expected (B, C, H, W), (B, H, W, C), one image (C, H, W) or (H, W, C), or "
                             f"a list of images, got shape {_shape(images)}")
        pixels = _prepare(images, channels, layout, scale_uint8, argument)
        pixels = pixels[None] if images.ndim == 3 else pixels
        return Images([ImageBatch(list(range(pixels.shape[0])), pixels)], pixels.shape[0], listed=False,
                      tensors=_is_tensor(images))
    raise TypeError(f"{argument}: expected a torch tensor or numpy array ((B, C, H, W), (C, H, W) or channels last), a "
                    f"PIL image, an image file path, or a list of these, got {type(images).__name__}")


def in_order(images: Images, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-batch results (``parts[i]`` for ``images.batches[i]``: "logits", "targets", "maps",
    "cgm" (or None), "images") -> one result in the caller's order. With one batch it is that
    batch's result; with several, logits / targets / cgm are concatenated and put back in order,
    and "maps" and "images" become lists (one (H_i, W_i) map and (C, H_i, W_i) image each)."""
    if len(parts) == 1:
        return parts[0]
    positions = [i for batch in images.batches for i in batch.indices]
    where = [0] * len(positions)
    for row, i in enumerate(positions):
        where[i] = row  # original position i sits at row where[i] of the concatenation
    out: dict[str, Any] = {}
    for key in ("logits", "targets", "cgm"):
        out[key] = None if parts[0][key] is None else _join([p[key] for p in parts], "cat")[where]
    for key in ("maps", "images"):
        rows = [row for p in parts for row in p[key]]
        out[key] = [rows[where[i]] for i in range(len(positions))]
    return out
