"""Files of tensors + JSON metadata in safetensors: what every checkpoint of the package is (zoo
CNNs, generators, training states, dataset shards). Writing is atomic; reading never executes code
(no pickle) and checks a format tag, so a foreign, truncated or corrupted file raises a
``ValueError`` that names the argument and the file. Also the JSON writer and which files are
read as images and how (one rule for ``fit``'s images and ``explain()``'s). Importing it imports
neither torch nor safetensors (``fastinterp explain --onnx``
runs without them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_SUFFIXES", "UnrangedImageError", "check_state_fits", "image_files", "load_tensors", "output_path",
           "read_rgb", "rgb_pixels", "save_tensors", "write_json"]

# the file suffixes read as images when a folder is scanned (a file named directly may be anything Pillow reads)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_files(root: Path, recursive: bool = False) -> list[Path]:
    """The image files (``IMAGE_SUFFIXES``, any case) in folder ``root``, sorted; with
    ``recursive``, in its subfolders too (hidden files and folders skipped)."""
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


class UnrangedImageError(ValueError):
    """An image whose pixels have no standard range (32-bit float or integer modes)."""


def rgb_pixels(image, argument: str = "images") -> np.ndarray:
    """An open PIL image -> uint8 (H, W, 3): EXIF orientation applied; 16-bit grey ("I;16*", and
    "I" within 0..65535) scaled by 255/65535 (``convert`` would clip it); 32-bit float ("F") or
    larger integers refused (no standard range); any other mode made RGB (alpha dropped)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UnrangedImageError(f"{argument}: a {image.mode} image with values outside 0..65535 has no "
                                     "standard range; convert it to 8-bit RGB first")
        grey = np.rint(grey * (255 / 65535)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        raise UnrangedImageError(f"{argument}: a 32-bit float image (mode F) has no standard range; convert it to "
                                 "8-bit RGB, or pass its pixels as a float array in the CNN's value range")
    return np.asarray(image.convert("RGB"))


def read_rgb(source: Any, argument: str = "images") -> np.ndarray:
    """A PIL image or an image file (str / Path) as uint8 (H, W, 3) RGB (:func:`rgb_pixels`' rules). A
    file Pillow cannot read raises ``ValueError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return rgb_pixels(source, argument)
    path = Path(source)
    if path.is_dir():
        raise ValueError(f"{argument}: {path} is a folder; pass its image files (`fastinterp explain` reads folders)")
    try:
        with Image.open(path) as opened:
            return rgb_pixels(opened, f"{argument}: {path}")
    except UnrangedImageError:
        raise
    except FileNotFoundError:
        raise ValueError(f"{argument}: no image file at {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{argument}: cannot read {path} as an image ({error})") from None


_META_KEY = "fastinterp"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` atomically (temporary file, then rename), with the
    usual file permissions (safetensors creates 0600 files)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(contiguous, str(tmp), metadata={_META_KEY: json.dumps(metadata, sort_keys=True)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp.replace(path)
    return path


def load_tensors(path: str | Path, expected_format: str,
                 argument: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors` and check its format tag; errors name
    ``argument`` and the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{argument}: {path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{argument}: {path} is not a readable safetensors file ({error})") from error
    try:
        metadata = json.loads(header[_META_KEY])
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{argument}: {path} has no fastinterp metadata; not a fastinterp checkpoint") from error
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != expected_format:
        raise ValueError(f"{argument}: {path} has format {found!r}, expected {expected_format!r}")
    return tensors, metadata


def check_state_fits(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> str | None:
    """None if ``tensors`` has exactly the keys and shapes of ``expected``, else what differs."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}"
    return None


def output_path(path: object, suffix: str) -> Path:
    """``path`` (str or Path) of a file to write, ending in ``suffix`` (e.g. ".onnx"); its folder is
    made. Raises TypeError / ValueError naming ``path``."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"path: expected a file name ending in {suffix}, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: str | Path, content: dict[str, Any]) -> None:
    """Write ``content`` as indented, key-sorted JSON atomically (temporary file, then rename): a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
