"""Datasets with ground-truth evidence masks, made on the fly from a seed (no downloads), and a
folder of the user's own images.

- ``digits``: a real handwritten digit (scikit-learn's bundled 8x8 digits, upsampled to 31-56 %
  of the canvas side, 20-36 px on 64x64) on a textured canvas among 2-4 fragments of other digits
  (at most 5x5 of the 8x8 cells and at most 60 % of a digit's ink, so never a whole digit).
  Label = the digit, mask = its pixels. Train and test digits come from disjoint halves of the
  1797 images, so test digits are written by hands the CNN never saw.
- ``shapes``: a large striped shape (circle, square, triangle, cross; rotated) among 3-5 small
  solid shapes on a smooth pastel canvas. Label = the striped shape, mask = its pixels.

Sample ``i`` depends only on (task, seed, split, i): any subset can be regenerated, and the first
``m`` samples of ``n`` are the ``m`` samples of a smaller set. Images are float32 in [0, 1]; any
normalisation a CNN wants belongs inside the CNN (see ``fastinterp.datasets.zoo``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fastinterp._core.io import IMAGE_SUFFIXES, image_files, read_rgb, rgb_pixels

__all__ = [
    "DATASETS",
    "DIGIT_CLASSES",
    "SHAPE_CLASSES",
    "SPLITS",
    "DatasetImages",
    "IMAGE_SUFFIXES",
    "ImageFiles",
    "ImageFolderImages",
    "Subset",
    "UNLABELLED",
    "SyntheticImages",
    "Task",
    "cluttered_digits",
    "collate",
    "digit_split_indices",
    "image_folder",
    "held_out_split",
    "read_image",
    "spread_indices",
    "num_classes",
    "synthetic_dataset",
    "textured_shapes",
]

SPLITS = ("train", "test")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
MIN_SIZE = 32  # below this the digits' strokes and the stripes no longer resolve

# Fixed, independent of any user seed: which of sklearn's 1797 digits belong to which split.
_DIGIT_SPLIT_SEED = 20230119
_FRAGMENT_MAX_CELLS = 5  # of 8: a fragment is at most 5x5 cells of a digit
_FRAGMENT_MAX_INK = 0.6  # and holds at most 60 % of that digit's ink


# ----------------------------------------------------------------------------- argument checks

def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_split(split: object) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return split  # type: ignore[return-value]


# ----------------------------------------------------------------------------- drawing helpers

@lru_cache(maxsize=256)
def _interp_matrix(out: int, inp: int) -> np.ndarray:
    """(out, inp) float32 matrix of bilinear resampling (align_corners=False, edges clamped)."""
    src = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, inp - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, inp - 1)
    w = (src - lo).astype(np.float32)
    m = np.zeros((out, inp), np.float32)
    m[np.arange(out), lo] += 1 - w
    m[np.arange(out), hi] += w
    return m


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes of ``image`` to (height, width)."""
    return _interp_matrix(height, image.shape[-2]) @ image @ _interp_matrix(width, image.shape[-1]).T


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (ys, xs), each (size, size) float32."""
    axis = np.arange(size, dtype=np.float32)
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    return ys, xs


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """(3, size, size) smooth colour field in [0, 1]: (3, cells, cells) noise, upsampled."""
    return _resize(rng.uniform(0, 1, (3, cells, cells)).astype(np.float32), size, size)


def _blend(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: canvas (3, S, S) <- canvas * (1 - alpha) + colour * alpha, alpha (S, S)."""
    canvas *= 1 - alpha
    canvas += colour[:, None, None] * alpha


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Boxes (y0, x0, height, width) share a pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# ----------------------------------------------------------------------------- digits

@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (no download): images (1797, 8, 8) float32 in [0, 1], labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def digit_split_indices() -> dict[str, np.ndarray]:
    """split -> indices into scikit-learn's 1797 digits: a fixed permutation cut in two halves."""
    count = len(_sklearn_digits()[1])
    order = np.random.default_rng(_DIGIT_SPLIT_SEED).permutation(count)
    return {"train": order[: count // 2], "test": order[count // 2:]}


@lru_cache(maxsize=1)
def _digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images (m, 8, 8) float32 in [0, 1], labels (m,) int64): disjoint halves."""
    images, labels = _sklearn_digits()
    return {split: (images[idx], labels[idx]) for split, idx in digit_split_indices().items()}


def _ink_alpha(intensity: np.ndarray) -> np.ndarray:
    """Upsampled digit intensity in [0, 1] -> opacity in [0, 1] with crisper strokes."""
    return np.clip((intensity - 0.15) / 0.5, 0.0, 1.0)


def _digit_fragment(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray | None:
    """A crop of at most 5x5 of the 8x8 cells holding 10-60 % of ``digit``'s ink, or None."""
    total = float(digit.sum())
    for _ in range(10):
        h, w = (int(v) for v in rng.integers(3, _FRAGMENT_MAX_CELLS + 1, 2))
        y, x = (int(v) for v in rng.integers(0, [9 - h, 9 - w]))
        crop = digit[y:y + h, x:x + w]
        if 0.1 * total <= float(crop.sum()) <= _FRAGMENT_MAX_INK * total:
            return crop
    return None


def _render_digit(rng: np.random.Generator, size: int, split: str) -> tuple[np.ndarray, int, np.ndarray]:
    pool, pool_labels = _digit_pools()[split]
    ys, xs = _grid(size)
    # textured canvas: dark smooth colour field + stripes of random orientation + grain
    theta, freq, phase = rng.uniform(0, math.pi), rng.uniform(0.2, 0.6), rng.uniform(0, 2 * math.pi)
    stripes = np.sin(freq * (xs * math.cos(theta) + ys * math.sin(theta)) + phase).astype(np.float32)
    canvas = 0.08 + 0.32 * _smooth_field(rng, size) + 0.06 * stripes
    canvas += rng.uniform(-0.04, 0.04, (size, size)).astype(np.float32)

    index = int(rng.integers(len(pool)))
    side = int(rng.integers(round(0.31 * size), round(0.56 * size) + 1))  # 20..36 px at 64
    y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    box = (y0, x0, side, side)
    for _ in range(int(rng.integers(2, 5))):  # distractors first, so the digit is drawn on top
        fragment = _digit_fragment(rng, pool[int(rng.integers(len(pool)))])
        colour = rng.uniform(0.6, 1.0, 3).astype(np.float32)
        if fragment is None:
            continue
        fh, fw = max(1, round(fragment.shape[0] * side / 8)), max(1, round(fragment.shape[1] * side / 8))
        for _ in range(10):  # keep fragments off the digit's box: its mask stays its own pixels
            fy, fx = int(rng.integers(0, size - fh + 1)), int(rng.integers(0, size - fw + 1))
            if not _boxes_overlap(box, (fy, fx, fh, fw)):
                alpha = np.zeros((size, size), np.float32)
                alpha[fy:fy + fh, fx:fx + fw] = _ink_alpha(_resize(fragment, fh, fw))
                _blend(canvas, alpha, colour)
                break
    alpha = np.zeros((size, size), np.float32)
    alpha[y0:y0 + side, x0:x0 + side] = _ink_alpha(_resize(pool[index], side, side))
    _blend(canvas, alpha, rng.uniform(0.6, 1.0, 3).astype(np.float32))
    return np.clip(canvas, 0.0, 1.0), int(pool_labels[index]), alpha >= 0.5


# ----------------------------------------------------------------------------- shapes

def _shape_mask(kind: int, cy: float, cx: float, r: float, angle: float, size: int) -> np.ndarray:
    """(size, size) bool: shape ``kind`` (index into SHAPE_CLASSES) of radius ``r``, rotated."""
    ys, xs = _grid(size)
    dy, dx = ys - cy, xs - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if kind == 0:
        return u * u + v * v <= r * r
    if kind == 1:
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == 2:  # equilateral triangle: three half-planes at distance r / 2 from the centre
        inside = np.ones((size, size), bool)
        for j in range(3):
            a = angle + math.pi / 2 + 2 * math.pi * j / 3
            inside &= dx * math.cos(a) + dy * math.sin(a) <= 0.5 * r
        return inside
    arm = 0.33 * r
    return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))


def _render_shape(rng: np.random.Generator, size: int, split: str) -> tuple[np.ndarray, int, np.ndarray]:
    ys, xs = _grid(size)
    canvas = 0.45 + 0.35 * _smooth_field(rng, size, cells=3)
    canvas += rng.uniform(-0.03, 0.03, (size, size)).astype(np.float32)
    label = int(rng.integers(len(SHAPE_CLASSES)))
    r = float(rng.uniform(0.16, 0.26) * size)
    cy, cx = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
    box = (int(cy - r) - 1, int(cx - r) - 1, int(2 * r) + 3, int(2 * r) + 3)
    for _ in range(int(rng.integers(3, 6))):  # small solid shapes of any class, off the object
        kind, angle = int(rng.integers(len(SHAPE_CLASSES))), float(rng.uniform(0, 2 * math.pi))
        rd = float(rng.uniform(0.05, 0.09) * size)
        colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        for _ in range(10):
            dy, dx = (float(v) for v in rng.uniform(rd + 1, size - rd - 1, 2))
            if not _boxes_overlap(box, (int(dy - rd) - 1, int(dx - rd) - 1, int(2 * rd) + 3, int(2 * rd) + 3)):
                _blend(canvas, _shape_mask(kind, dy, dx, rd, angle, size).astype(np.float32), colour)
                break
    angle, theta = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, math.pi))
    period = float(rng.uniform(3.0, 6.0))  # px
    stripes = np.sin(2 * math.pi / period * (xs * math.cos(theta) + ys * math.sin(theta))) > 0
    dark, light = rng.uniform(0.0, 0.35, 3).astype(np.float32), rng.uniform(0.65, 1.0, 3).astype(np.float32)
    mask = _shape_mask(label, cy, cx, r, angle, size)
    texture = np.where(stripes[None], light[:, None, None], dark[:, None, None])
    canvas = np.where(mask[None], texture, canvas)
    return np.clip(canvas, 0.0, 1.0).astype(np.float32), label, mask


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Task:
    """A synthetic task: its class names and a renderer ``(rng, size, split) -> (image, label, mask)``."""

    name: str
    code: int  # part of every sample's seed, so tasks never share random streams
    classes: tuple[str, ...]
    render: Callable[[np.random.Generator, int, str], tuple[np.ndarray, int, np.ndarray]]


DATASETS: dict[str, Task] = {
    "digits": Task("digits", 1, DIGIT_CLASSES, _render_digit),
    "shapes": Task("shapes", 2, SHAPE_CLASSES, _render_shape),
}


def num_classes(dataset: object) -> int:
    """Number of classes of a registered dataset name or of a dataset object with ``.classes``."""
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {sorted(DATASETS)} or a dataset object, got {dataset!r}")
        return len(DATASETS[dataset].classes)
    classes = getattr(dataset, "classes", None)
    if not isinstance(classes, Sequence) or len(classes) == 0:
        raise TypeError(f"dataset: expected a name in {sorted(DATASETS)} or a dataset with .classes, "
                        f"got {type(dataset).__name__}")
    return len(classes)


# ----------------------------------------------------------------------------- datasets

class SyntheticImages(Dataset):
    """``n`` samples of a registered synthetic task; item ``i`` -> (image (3, S, S) float32 in
    [0, 1], label int, mask (S, S) bool), a function of (task, seed, split, i) only."""

    def __init__(self, name: str, n: int, size: int = 64, seed: int = 0, split: str = "train"):
        if name not in DATASETS:
            raise ValueError(f"name: expected one of {sorted(DATASETS)}, got {name!r}")
        self.task = DATASETS[name]
        self.n = _check_int("n", n, 0)
        self.size = _check_int("size", size, MIN_SIZE)
        self.seed = _check_int("seed", seed, 0)
        self.split = _check_split(split)
        self.classes = self.task.classes

    @property
    def config(self) -> dict:
        """JSON-able description from which this dataset can be rebuilt."""
        return {"kind": "synthetic", "name": self.task.name, "size": self.size, "seed": self.seed,
                "split": self.split}

    def __len__(self) -> int:
        return self.n

    def render(self, i: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Sample ``i`` as numpy arrays (no range check against ``n``)."""
        sequence = np.random.SeedSequence([self.task.code, self.seed, SPLITS.index(self.split), int(i)])
        image, label, mask = self.task.render(np.random.default_rng(sequence), self.size, self.split)
        return image.astype(np.float32, copy=False), label, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        if not 0 <= i < self.n:
            raise IndexError(f"index: expected 0 <= index < {self.n}, got {i}")
        image, label, mask = self.render(int(i))
        return torch.from_numpy(image), label, torch.from_numpy(mask)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples ``indices`` stacked: images (B, 3, S, S), labels (B,) int64, masks (B, S, S)."""
        return collate([self[i] for i in indices])  # type: ignore[return-value]


class ImageFolderImages(Dataset):
    """The user's images in ``root/<class>/<image>`` (the Food-11 / Animals-10 layout), resized
    (shorter side) and centre-cropped to ``size``; item -> (image (3, S, S) in [0, 1], label, None)."""

    def __init__(self, root: str | Path, size: int):
        from torchvision import datasets, transforms

        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"path: expected a folder of class sub-folders, {root} is not a folder")
        self.size = _check_int("size", size, 1)
        self.root = root
        transform = transforms.Compose([transforms.Resize(self.size), transforms.CenterCrop(self.size),
                                        transforms.ToTensor()])
        try:
            self.folder = datasets.ImageFolder(str(root), transform=transform)
        except FileNotFoundError as error:
            raise ValueError(f"path: {root} holds no class folders with images ({error})") from error
        self.classes = tuple(self.folder.classes)

    @property
    def config(self) -> dict:
        return {"kind": "image_folder", "root": str(self.root.resolve()), "size": self.size,
                "classes": list(self.classes), "count": len(self.folder)}

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, None]:
        image, label = self.folder[i]
        return image, int(label), None

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, None]:
        return collate([self[i] for i in indices])  # type: ignore[return-value]


UNLABELLED = -1  # the label of an image from a flat folder or an unlabelled dataset


def read_image(path: str | Path, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """One image file as (3, H, W) float32 in [0, 1], read as ``explain()`` reads it
    (``fastinterp._core.io.read_rgb``: EXIF orientation applied, made RGB, 16-bit grey scaled);
    resized to ``size`` with ``fastinterp.maps.resize.resize_images`` (the resize of explain time)
    when given."""
    from fastinterp.maps.resize import resize_images

    tensor = _float_chw(read_rgb(path))
    return tensor if size is None else resize_images(tensor[None], size)[0]


def pil_image_tensor(image) -> torch.Tensor:
    """A PIL image as (3, H, W) float32 in [0, 1], by ``explain()``'s rule (``_core.io.rgb_pixels``)."""
    return _float_chw(rgb_pixels(image))


def _float_chw(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(255)


class ImageFiles(Dataset):
    """The user's image files as a dataset: ``root/<class>/<image>`` (an ImageFolder layout: labels
    are the sorted class folders' indices) or ``root/<image>`` (a flat folder: labels unknown,
    ``UNLABELLED``), read by :func:`read_image` and resized to ``size`` (int or (H, W)).
    item -> (image (3, H, W) in [0, 1], label, None).

    ``files``: [(path, label)] to use instead of scanning ``root`` (a split of it); ``classes``:
    the class names of a flat folder (default: none known)."""

    def __init__(self, root: str | Path, size: int | tuple[int, int], *, files: Sequence[tuple[Path, int]] | None = None,
                 classes: Sequence[str] | None = None, argument: str = "images"):
        from fastinterp._core.validation import check_size

        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"{argument}: expected a folder of images (flat, or <class>/<image>), {root} is not a folder")
        self.root, self.size = root, check_size(size, "input_size")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        direct = image_files(root)
        labelled = [f for f in folders if image_files(f)]
        if labelled and direct:
            raise ValueError(f"{argument}: {root} holds both images and class folders with images; use one layout: "
                             "<class>/<image> (labels known) or a flat folder of images")
        self.layout = "classes" if labelled else "flat"
        if self.layout == "classes":
            self.classes = tuple(f.name for f in labelled)
            scanned = [(p, label) for label, f in enumerate(labelled) for p in image_files(f)]
        else:
            self.classes = tuple(classes) if classes is not None else ()
            scanned = [(p, UNLABELLED) for p in direct]
        self.files = list(scanned if files is None else files)
        if not self.files:
            raise ValueError(f"{argument}: {root} holds no image files ({', '.join(IMAGE_SUFFIXES)}), neither directly "
                             "nor in class folders")

    @property
    def labelled(self) -> bool:
        return self.layout == "classes"

    @property
    def config(self) -> dict:
        """What identifies these images for a resumed build: the folder, layout, size, and the
        relative name and byte size of every file."""
        import hashlib

        listing = "\n".join(f"{p.relative_to(self.root).as_posix()}\t{p.stat().st_size}\t{label}"
                             for p, label in self.files)
        return {"kind": "image_files", "root": str(self.root.resolve()), "layout": self.layout,
                "size": list(self.size), "classes": list(self.classes), "count": len(self.files),
                "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}

    def split(self, fraction: float, seed: int) -> tuple[ImageFiles, ImageFiles]:
        """(kept, held out): :func:`held_out_split` of the files."""
        kept, held = held_out_split(len(self.files), fraction, seed)
        return (ImageFiles(self.root, self.size, files=[self.files[i] for i in kept], classes=self.classes),
                ImageFiles(self.root, self.size, files=[self.files[i] for i in held], classes=self.classes))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, None]:
        path, label = self.files[i]
        return read_image(path, self.size), label, None

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, None]:
        return collate([self[i] for i in indices])  # type: ignore[return-value]


class DatasetImages(Dataset):
    """Any map-style ``torch.utils.data.Dataset`` whose items are an image (a tensor (3, H, W) float
    in [0, 1], or a PIL image: torchvision's ``ImageFolder`` without a transform) or a tuple
    ``(image, label, ...)``, or a ``DataLoader`` of tensors (read once, into memory), as
    the dataset a training set is built from; images resized to ``size`` with ``resize_images``.
    Labels outside ``[0, len(classes))`` count as unknown."""

    def __init__(self, data: object, size: int | tuple[int, int], classes: Sequence[str] | None = None,
                 argument: str = "images"):
        from torch.utils.data import DataLoader

        from fastinterp._core.validation import check_size

        self.size, self.argument = check_size(size, "input_size"), argument
        if isinstance(data, DataLoader):
            images, labels = [], []
            for item in data:
                image, label = self._split(item, batched=True)
                images.append(image)
                labels.append(label)
            if not images:
                raise ValueError(f"{argument}: the DataLoader yields no batches")
            self.items = (torch.cat(images), torch.cat(labels))
            self.data = None
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.items, self.data = None, data
        else:
            raise TypeError(f"{argument}: expected a folder, a map-style torch Dataset or a DataLoader, got "
                            f"{type(data).__name__}")
        if len(self) == 0:
            raise ValueError(f"{argument}: the dataset is empty")
        self.classes = tuple(classes if classes is not None else getattr(data, "classes", None) or ())
        self.labelled = bool(self.classes) and bool((self.batch(range(min(len(self), 8)))[1] >= 0).all())

    def _split(self, item: object, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, (tuple, list)) and len(item) == 1:  # TensorDataset(images)
            item = item[0]
        image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) >= 2 else (item, None)
        if not batched and type(image).__module__.startswith("PIL."):  # e.g. torchvision's ImageFolder, no transform
            image = pil_image_tensor(image)
        dims = 4 if batched else 3
        if not isinstance(image, torch.Tensor) or image.dim() != dims or not image.is_floating_point() \
                or image.shape[-3] != 3:
            got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{self.argument}: expected items that are a float image tensor (3, H, W) in [0, 1] or "
                             f"(image, label) (batches of them from a DataLoader), got {got}; add "
                             "transforms.ToTensor() to the dataset's transform")
        if label is None:  # no labels: each image explained for its predicted class
            label = torch.full((len(image),) if batched else (), UNLABELLED, dtype=torch.int64)
        label = torch.as_tensor(label, dtype=torch.int64).reshape(-1 if batched else ())
        return resize_images_of(image if batched else image[None], self.size), label

    @property
    def config(self) -> dict:
        """What identifies these images for a resumed build: type, size, classes, count and a
        sha256 of the images (every image of a DataLoader; 16 evenly spaced ones of a Dataset,
        which is read lazily)."""
        import hashlib

        digest = hashlib.sha256()
        rows = range(len(self)) if self.items is not None else sorted({round(i * (len(self) - 1) / 15) for i in range(16)})
        images, labels, _ = self.batch(list(rows))
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
        return {"kind": "dataset", "type": type(self.data).__name__ if self.data is not None else "DataLoader",
                "size": list(self.size), "classes": list(self.classes), "count": len(self),
                "sha256": digest.hexdigest()}

    def __len__(self) -> int:
        return len(self.items[0]) if self.items is not None else len(self.data)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, None]:
        if self.items is not None:
            rows = torch.as_tensor(list(indices), dtype=torch.int64)
            return self.items[0][rows], self.items[1][rows], None
        parts = [self._split(self.data[int(i)], batched=False) for i in indices]
        return torch.cat([p[0] for p in parts]), torch.stack([p[1] for p in parts]), None


def resize_images_of(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    from fastinterp.maps.resize import resize_images

    return resize_images(images.float(), size)


class Subset(Dataset):
    """Rows ``indices`` of a dataset with ``.batch``/``.classes``/``.config`` (a held-out split)."""

    def __init__(self, data: object, indices: Sequence[int], name: str):
        self.data, self.indices, self.name = data, [int(i) for i in indices], name
        self.classes = data.classes
        self.labelled = getattr(data, "labelled", False)

    @property
    def config(self) -> dict:
        import hashlib

        digest = hashlib.sha256(",".join(map(str, self.indices)).encode()).hexdigest()
        return {**self.data.config, "part": self.name, "part_count": len(self.indices), "part_sha256": digest}

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, indices: Sequence[int]):
        return self.data.batch([self.indices[i] for i in indices])


def held_out_split(length: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held out) sorted indices of ``range(length)``: a seeded ``fraction`` (at least one)
    held out for a report. Raises when nothing would be left to train on."""
    held = max(1, round(length * fraction))
    if held >= length:
        raise ValueError(f"images: {length} image(s) are too few to hold out {fraction:.0%} for the report; add "
                         "images or pass --val-images")
    order = np.random.default_rng([seed, 11]).permutation(length)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` evenly spaced indices of ``range(length)`` (all when count >= length): a sample of
    a folder that is sorted by class reaches every class."""
    if count >= length:
        return list(range(length))
    return [int(i * length / count) for i in range(count)]


def collate(items: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """[(image, label, mask or None), ...] -> images (B, 3, S, S), labels (B,) int64, masks or None."""
    if len(items) == 0:
        raise ValueError("items: expected at least one sample")
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    masks = [item[2] for item in items]
    if all(m is None for m in masks):
        return images, labels, None
    if any(m is None for m in masks):
        raise ValueError("items: some samples have a mask and some do not")
    return images, labels, torch.stack(masks)


def synthetic_dataset(name: str, n: int, size: int = 64, seed: int = 0, split: str = "train") -> SyntheticImages:
    """The registered task ``name`` ("digits" or "shapes") as a torch ``Dataset`` of ``n`` items."""
    return SyntheticImages(name, n, size=size, seed=seed, split=split)


def cluttered_digits(n: int, size: int = 64, seed: int = 0,
                     split: str = "train") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` cluttered-digit images: images (n, 3, S, S) float32 in [0, 1], labels (n,) int64 in
    0..9, masks (n, S, S) bool (the digit's pixels). ``split`` picks the half of the digits."""
    return _all(SyntheticImages("digits", n, size, seed, split))


def textured_shapes(n: int, size: int = 64, seed: int = 0,
                    split: str = "train") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` textured-shape images: images (n, 3, S, S) float32 in [0, 1], labels (n,) int64 in
    0..3 (``SHAPE_CLASSES``), masks (n, S, S) bool (the striped shape's pixels)."""
    return _all(SyntheticImages("shapes", n, size, seed, split))


def _all(dataset: SyntheticImages) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if len(dataset) == 0:
        s = dataset.size
        return torch.zeros(0, 3, s, s), torch.zeros(0, dtype=torch.int64), torch.zeros(0, s, s, dtype=torch.bool)
    return dataset.batch(range(len(dataset)))


def image_folder(path: str | Path, size: int) -> ImageFolderImages:
    """The user's own images (``path/<class>/<image>``) as a ``Dataset``; masks are None."""
    return ImageFolderImages(path, size)
