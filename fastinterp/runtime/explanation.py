"""What ``explain`` returns (:class:`Explanation`), and the pictures made from it: overlays on the
explained images or on the original photos, and a titled grid. Needs numpy, Pillow and matplotlib
(its colormaps and figures), not torch: the ONNX Runtime explainer returns it too."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fastinterp._core.extras import require
from fastinterp.runtime.inputs import is_pil_image, read_rgb

__all__ = ["Explanation", "Prediction", "draw_overlay", "get_colormap", "resize_map"]


def _torch():
    return sys.modules.get("torch")  # not imported here: the ONNX Runtime backend runs without torch


def _numpy(x: Any) -> np.ndarray:
    """A tensor (any device; bfloat16 made float32: numpy has none) or array-like -> numpy, dtype kept."""
    torch = _torch()
    if torch is None or not isinstance(x, torch.Tensor):
        return np.asarray(x)
    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def _rows(x: Any) -> list[Any]:
    """A batch (array / tensor) or a list -> its items."""
    return list(x) if isinstance(x, list) else [x[i] for i in range(len(x))]


class Prediction(NamedTuple):
    """One class of :meth:`Explanation.top_k`: its index, name (None when unknown) and probability."""

    index: int
    name: str | None
    probability: float


def get_colormap(colormap: str):
    """The matplotlib colormap called ``colormap`` (a ValueError naming the argument otherwise)."""
    matplotlib = require("matplotlib", "demo", "Explanation.overlay and .save draw")
    if not isinstance(colormap, str) or colormap not in matplotlib.colormaps:
        raise ValueError(f"colormap: {colormap!r} is not a matplotlib colormap (e.g. 'jet', 'viridis', 'inferno')")
    return matplotlib.colormaps[colormap]


def _picture(image: Any, argument: str) -> np.ndarray:
    """One picture to draw on -> float32 (H, W, 3) in [0, 1]. A PIL image or a file path is read
    (made RGB); an array / tensor is (C, H, W) or (H, W, C) with C 1 or 3, or (H, W) grey: uint8 is
    scaled by 1/255, float already in [0, 1] is kept, any other float range (normalised inputs) is
    min-max scaled."""
    if is_pil_image(image) or isinstance(image, (str, Path)):
        return read_rgb(image, argument).astype(np.float32) / np.float32(255)
    array = _numpy(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"{argument}: expected one picture (C, H, W), (H, W, C) or (H, W), got shape {array.shape}")
    first, last = array.shape[0] in (1, 3), array.shape[-1] in (1, 3)
    if first == last:
        raise ValueError(f"{argument}: cannot tell the channel axis of shape {array.shape}: expected 1 or 3 channels "
                         "first or last")
    if first:
        array = np.moveaxis(array, 0, -1)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / np.float32(255)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if array.size and (array.min() < 0 or array.max() > 1):
            low, span = array.min(), array.max() - array.min()
            array = (array - low) / (span if span > 0 else 1)
    else:
        raise TypeError(f"{argument}: expected uint8 or float pixels, got dtype {array.dtype}")
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def resize_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) float32 map in [0, 1] -> (H, W) by bilinear interpolation (Pillow, float32); the
    same array when already at ``size``."""
    if heat.shape == size:
        return heat
    from PIL import Image

    out = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32)).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def draw_overlay(picture: np.ndarray, heat: np.ndarray, alpha: float, colormap) -> np.ndarray:
    """(H, W, 3) float picture in [0, 1] and an (H, W) map in [0, 1] -> (H, W, 3) uint8:
    ``alpha`` x colormap(map) + (1 - alpha) x picture. ``colormap``: a matplotlib colormap object."""
    colour = colormap(heat)[..., :3].astype(np.float32)
    return np.clip(np.rint(255 * (alpha * colour + (1 - alpha) * picture)), 0, 255).astype(np.uint8)


@dataclass(eq=False, repr=False)
class Explanation:
    """One batch explained; tensors on the explainer's device when tensors were passed in, else
    numpy arrays.

    logits: (B, num_classes), the CNN's output (its prediction, as the user's own call returns it).
    targets: (B,) int64, the class each map explains.
    maps: (B, H, W) float32 in [0, 1] at the images' resolution; a list of (H_i, W_i) maps when a
        list of images of different sizes was explained.
    cgm: (B, K, S, S) float32 in [0, 1], the generator's input (``return_cgm=True``), else None.
    images: the explained images as the CNN took them ((B, C, H, W) float, or a list of
        (C, H_i, W_i)), for :meth:`overlay`; None when not kept.
    class_names: the CNN's class names when known (the generator's metadata, or
        ``compile(class_names=...)``), else None.

    ``len(e)``, ``e[i]`` / ``e[i:j]`` (an Explanation of those images), ``for one in e``,
    :attr:`probabilities`, :meth:`top_k`, :meth:`overlay`, :meth:`save`.
    """

    logits: Any
    targets: Any
    maps: Any
    cgm: Any = None
    images: Any = None
    class_names: Sequence[str] | None = None

    # ------------------------------------------------------------------ a sequence of explained images
    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int | slice) -> Explanation:
        count = len(self)
        if isinstance(index, slice):
            chosen = list(range(count))[index]
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -count <= index < count:
                raise IndexError(f"index: {index} is out of range for {count} explained images")
            chosen = [int(index) % count]
        else:
            raise TypeError(f"index: expected an int or a slice, got {type(index).__name__}")

        def take(x: Any) -> Any:
            if x is None:
                return None
            if isinstance(x, list):
                return [x[i] for i in chosen]
            torch = _torch()
            if torch is not None and isinstance(x, torch.Tensor):
                return x[torch.tensor(chosen, dtype=torch.long, device=x.device)]
            return x[np.asarray(chosen, dtype=np.int64)]

        return Explanation(take(self.logits), take(self.targets), take(self.maps), take(self.cgm), take(self.images),
                           self.class_names)

    def __iter__(self) -> Iterator[Explanation]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        maps = self.maps
        if isinstance(maps, list):
            sizes = sorted({tuple(m.shape) for m in maps})
            shape = f"list of {len(maps)} map{'s' if len(maps) != 1 else ''}, sizes {', '.join(f'{h}x{w}' for h, w in sizes[:4])}"
            shape += ", ..." if len(sizes) > 4 else ""
        else:
            kind = "tensor" if _torch() is not None and isinstance(maps, _torch().Tensor) else "numpy"
            shape = f"maps {kind} {tuple(maps.shape)}"
        targets = [int(t) for t in _numpy(self.targets)]
        shown = targets[:8]
        names = ""
        if self.class_names is not None:
            names = " (" + ", ".join(repr(self.class_name(t)) for t in shown) + (", ..." if len(targets) > 8 else "") + ")"
        more = ", ..." if len(targets) > 8 else ""
        cgm = "" if self.cgm is None else f", cgm {tuple(self.cgm.shape)}"
        return (f"Explanation({len(self)} image{'s' if len(self) != 1 else ''}, {shape}, targets "
                f"{str(shown)[:-1]}{more}]{names}, logits {tuple(self.logits.shape)}{cgm})")

    # ------------------------------------------------------------------ the predictions
    def class_name(self, index: int) -> str | None:
        """The name of class ``index`` when known, else None."""
        names = self.class_names
        return str(names[index]) if names is not None and 0 <= index < len(names) else None

    @property
    def probabilities(self) -> np.ndarray:
        """(B, num_classes) float32 numpy: the softmax of the logits."""
        logits = _numpy(self.logits).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)

    def top_k(self, k: int = 5) -> list[list[Prediction]]:
        """Per image, its ``k`` most probable classes, most probable first: :class:`Prediction`
        (index, name or None, probability). ``k`` is capped at the number of classes."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: expected an int >= 1, got {k!r}")
        probabilities = self.probabilities
        k = min(int(k), probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [[Prediction(int(c), self.class_name(int(c)), float(p[c])) for c in row] for p, row in zip(probabilities, order)]

    def titles(self) -> list[str]:
        """Per image: the explained class's name (or "class N") and its probability."""
        probabilities = self.probabilities
        out = []
        for i, target in enumerate(int(t) for t in _numpy(self.targets)):
            out.append(f"{self.class_name(target) or f'class {target}'} (p={probabilities[i, target]:.2f})")
        return out

    # ------------------------------------------------------------------ pictures
    def overlay(self, original: Any = None, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray | list[np.ndarray]:
        """Each map in colour over a picture: ``alpha`` x colour + (1 - alpha) x picture, uint8 RGB
        (pytorch-grad-cam's ``show_cam_on_image``).

        ``original``: None (over the explained images, ``self.images``), or the pictures to draw
        on, one per map, at their own resolution (the map is resized to each, bilinear): a PIL
        image, a file path, a uint8 or float array / tensor ((H, W, 3), (3, H, W); a batch
        (B, ...) or a list). Float pictures already in [0, 1] are drawn as they are, any other
        range (normalised inputs) min-max scaled.

        Returns (B, H, W, 3) uint8, or a list of (H_i, W_i, 3) when the pictures' sizes differ.
        The map is stretched to the picture: pass the photo before any crop it was explained after.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        cmap = get_colormap(colormap)
        argument = "original"
        if original is None:
            if self.images is None:
                raise ValueError("original: this Explanation keeps no explained images; pass the pictures to draw on")
            original, argument = self.images, "images"
        if isinstance(original, (list, tuple)):
            pictures = list(original)
        elif getattr(original, "ndim", None) == 4:  # a batch of pictures
            pictures = _rows(original)
        else:  # one picture: a PIL image, a path, (C, H, W), (H, W, C) or (H, W)
            pictures = [original]
        maps = _rows(self.maps)
        if len(pictures) != len(maps):
            raise ValueError(f"{argument}: expected {len(maps)} pictures (one per explained image), got {len(pictures)}")
        out = []
        for i, (picture, heat) in enumerate(zip(pictures, maps)):
            rgb = _picture(picture, f"{argument}[{i}]" if len(pictures) > 1 else argument)
            out.append(draw_overlay(rgb, resize_map(_numpy(heat).astype(np.float32), rgb.shape[:2]), alpha, cmap))
        if len({o.shape for o in out}) == 1:
            return np.stack(out)
        return out

    def save(self, path: str | Path, original: Any = None, alpha: float = 0.5, colormap: str = "jet", *,
             images: Any = None, columns: int = 8) -> Path:
        """A PNG grid, one panel per image titled with the explained class (its name when known)
        and its probability: the overlay on ``original`` (see :meth:`overlay`; default the
        explained images), or the coloured map alone when no picture is known. ``images`` is the
        old name of ``original``. Returns the path."""
        require("matplotlib", "demo", "Explanation.overlay and .save draw")
        import matplotlib.figure

        if images is not None:
            if original is not None:
                raise ValueError("original: pass the pictures once (original=, or its old name images=)")
            original = images
        if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
            raise ValueError(f"columns: expected an int >= 1, got {columns!r}")
        cmap = get_colormap(colormap)
        if original is not None or self.images is not None:
            tiles = self.overlay(original, alpha, colormap)
        else:
            tiles = [(255 * cmap(_numpy(m))[..., :3]).round().astype(np.uint8) for m in _rows(self.maps)]
        tiles = _rows(tiles)
        titles = self.titles()
        cols = min(len(tiles), columns)
        rows = -(-len(tiles) // cols)
        figure = matplotlib.figure.Figure(figsize=(2.2 * cols, 2.4 * rows), layout="constrained")
        axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
        for ax in axes:
            ax.set_axis_off()
        for ax, tile, title in zip(axes, tiles, titles):
            ax.imshow(tile)
            ax.set_title(title, fontsize=9)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
        return path
