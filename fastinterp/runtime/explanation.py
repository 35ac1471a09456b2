"""What ``Explainer.explain`` returns, and the pictures made from it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastinterp._core.extras import require

__all__ = ["Explanation"]


def _numpy(x: Any) -> np.ndarray:
    torch = sys.modules.get("torch")  # not imported here: the ONNX Runtime backend runs without torch
    return x.detach().float().cpu().numpy() if torch is not None and isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass
class Explanation:
    """One batch explained. Tensors on the images' device when tensors were passed in, numpy
    arrays when numpy was.

    logits: (B, num_classes), the CNN's output (its prediction, as the user's own call returns it).
    targets: (B,) int64, the class each map explains.
    maps: (B, H, W) float32 in [0, 1] at the images' resolution, the generator's explanation.
    cgm: (B, K, S, S) float32 in [0, 1], the generator's input (``return_cgm=True``), else None.
    """

    logits: Any
    targets: Any
    maps: Any
    cgm: Any = None

    def overlay(self, images: Any, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
        """Heat maps over the images: (B, H, W, 3) uint8 RGB, ``alpha`` x colour + (1 - alpha) x image
        (pytorch-grad-cam's ``show_cam_on_image``). ``images`` (B, C, H, W) or (C, H, W), the ones
        explained: values already in [0, 1] are shown as they are, any other range (normalised
        inputs) is min-max scaled per image; one channel is shown grey."""
        matplotlib = require("matplotlib", "demo", "Explanation.overlay and .save draw")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        if colormap not in matplotlib.colormaps:
            raise ValueError(f"colormap: {colormap!r} is not a matplotlib colormap (e.g. 'jet', 'viridis', 'inferno')")
        maps = _numpy(self.maps)
        pictures = _numpy(images)
        if pictures.ndim == 3:
            pictures = pictures[None]
        if pictures.ndim != 4 or pictures.shape[0] != maps.shape[0] or pictures.shape[2:] != maps.shape[1:]:
            raise ValueError(f"images: expected the {maps.shape[0]} explained images (B, C, {maps.shape[1]}, "
                             f"{maps.shape[2]}), got shape {pictures.shape}")
        if pictures.shape[1] not in (1, 3):
            raise ValueError(f"images: expected 1 or 3 channels to draw, got {pictures.shape[1]}")
        pictures = pictures.astype(np.float32).transpose(0, 2, 3, 1)
        if pictures.shape[-1] == 1:
            pictures = np.repeat(pictures, 3, axis=-1)
        if pictures.min() < 0 or pictures.max() > 1:
            low = pictures.min(axis=(1, 2, 3), keepdims=True)
            span = pictures.max(axis=(1, 2, 3), keepdims=True) - low
            pictures = (pictures - low) / np.where(span > 0, span, 1)
        heat = matplotlib.colormaps[colormap](maps)[..., :3].astype(np.float32)
        return np.clip(np.rint(255 * (alpha * heat + (1 - alpha) * pictures)), 0, 255).astype(np.uint8)

    def save(self, path: str | Path, images: Any = None, alpha: float = 0.5, colormap: str = "jet") -> Path:
        """A PNG grid, one tile per image: the overlay on ``images`` if given, else the coloured
        map. Returns the path."""
        matplotlib = require("matplotlib", "demo", "Explanation.overlay and .save draw")
        if colormap not in matplotlib.colormaps:
            raise ValueError(f"colormap: {colormap!r} is not a matplotlib colormap (e.g. 'jet', 'viridis', 'inferno')")
        tiles = (self.overlay(images, alpha, colormap) if images is not None
                 else (255 * matplotlib.colormaps[colormap](_numpy(self.maps))[..., :3]).round().astype(np.uint8))
        count, height, width = tiles.shape[:3]
        cols = min(count, 8)
        rows = -(-count // cols)
        grid = np.full((rows * (height + 2) - 2, cols * (width + 2) - 2, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            r, c = divmod(i, cols)
            grid[r * (height + 2): r * (height + 2) + height, c * (width + 2): c * (width + 2) + width] = tile
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        import matplotlib.image

        matplotlib.image.imsave(path, grid, format="png")
        return path
