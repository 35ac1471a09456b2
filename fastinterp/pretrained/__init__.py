"""The checkpoints shipped inside the package (package data), and their one registry.

Each folder's README gives the commands that made its files. ``path(name)`` finds a file wherever
the package is installed (through ``importlib.resources``: a wheel, an editable install, a zip).

    >>> from fastinterp import pretrained
    >>> pretrained.path("fast")                         # the demo's generator
    >>> {name: entry.description for name, entry in pretrained.SHIPPED.items()}
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEMO", "SHIPPED", "Shipped", "generator_path", "names", "path"]


@dataclass(frozen=True)
class Shipped:
    file: str  # relative to this folder
    kind: str  # "cnn" (a zoo checkpoint: fastinterp.datasets.zoo.load_cnn) or "generator" (load_generator)
    description: str  # one line


SHIPPED: dict[str, Shipped] = {
    "digits-mobilenet_v3_small": Shipped(
        "demo/cnn.safetensors", "cnn",
        "mobilenet_v3_small on 64x64 cluttered digits (98.6% test accuracy): the demo's CNN"),
    "shapes-mobilenet_v3_small": Shipped(
        "shapes/cnn.safetensors", "cnn",
        "mobilenet_v3_small on 64x64 textured shapes (100% test accuracy); no generator saw it"),
    "fast": Shipped(
        "demo/generator.safetensors", "generator",
        "fast generator, gradient representation, taught Grad-CAM on six zoo families: the demo's generator"),
    "fast-fo": Shipped(
        "forward_only/generator.safetensors", "generator",
        "fast generator, activation (forward-only) representation, taught Grad-CAM"),
    "gsft": Shipped(
        "paper/gsft.safetensors", "generator", "the paper's GSFT generator, gradient representation, taught Grad-CAM"),
    "sc-fast": Shipped(
        "distilled/sc-fast.safetensors", "generator", "fast generator taught Score-CAM, gradient representation"),
    "sc-fast-fo": Shipped(
        "distilled/sc-fast-fo.safetensors", "generator", "fast generator taught Score-CAM, activation representation"),
    "rise-fast": Shipped(
        "distilled/rise-fast.safetensors", "generator", "fast generator taught RISE, gradient representation"),
    "rise-fast-fo": Shipped(
        "distilled/rise-fast-fo.safetensors", "generator", "fast generator taught RISE, activation representation"),
}
DEMO = ("digits-mobilenet_v3_small", "fast")  # (CNN, generator) of `fastinterp demo`

_OPEN = contextlib.ExitStack()  # files extracted from a zip stay until the process exits
atexit.register(_OPEN.close)
_PATHS: dict[str, Path] = {}
_LOCK = threading.Lock()


def names(kind: str | None = None) -> list[str]:
    """The registry's names, of one ``kind`` ("cnn" or "generator") or all."""
    return [name for name, entry in SHIPPED.items() if kind is None or entry.kind == kind]


def path(name: str) -> Path:
    """The file of shipped checkpoint ``name`` (one of ``SHIPPED``) as a filesystem path."""
    entry = SHIPPED.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"name: {name!r} is not a shipped checkpoint; expected one of {sorted(SHIPPED)}")
    with _LOCK:
        if name not in _PATHS:
            _PATHS[name] = Path(_OPEN.enter_context(resources.as_file(resources.files(__name__) / entry.file)))
    return _PATHS[name]


def generator_path(generator: str | Path) -> Path:
    """Where a generator is taken: "demo" (the demo's generator) or a shipped generator's name ->
    its file; anything else is a checkpoint path, returned as a ``Path`` (not checked here)."""
    if isinstance(generator, str) and (generator == "demo" or generator in names("generator")):
        return path(DEMO[1] if generator == "demo" else generator)
    return Path(generator)
