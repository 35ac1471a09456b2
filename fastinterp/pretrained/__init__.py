"""The checkpoints shipped inside the package (package data), and their one registry.

Each folder's README gives the commands that made its files. ``path(name)`` finds a file wherever
the package is installed (through ``importlib.resources``: a wheel, an editable install, a zip).

    >>> from fastinterp import pretrained
    >>> pretrained.names()                              # name -> what it is and what trained it
    >>> pretrained.path("fast")                         # the demo's generator
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEMO", "KINDS", "SHIPPED", "Shipped", "cnn_path", "generator_path", "names", "path"]


@dataclass(frozen=True)
class Shipped:
    file: str  # relative to this folder
    kind: str  # "cnn" (a zoo checkpoint: fastinterp.datasets.zoo.load_cnn) or "generator" (load_generator)
    description: str  # one line


SHIPPED: dict[str, Shipped] = {
    "digits-mobilenet_v3_small": Shipped(
        "demo/cnn.safetensors", "cnn",
        "CNN: mobilenet_v3_small trained on 64-px cluttered digits (10 classes, 98.6% test accuracy); the demo's CNN"),
    "shapes-mobilenet_v3_small": Shipped(
        "shapes/cnn.safetensors", "cnn",
        "CNN: mobilenet_v3_small trained on 64-px textured shapes (4 classes, 100% test accuracy); no generator saw it"),
    "fast": Shipped(
        "demo/generator.safetensors", "generator",
        "generator (fast, 0.18 M parameters), gradient representation, taught Grad-CAM of 6 CNNs (densenet121, "
        "mobilenet_v3_small, regnet_x_400mf, resnet18, shufflenet_v2_x0_5, vgg13_bn) on 64-px digits; the demo's"),
    "fast-fo": Shipped(
        "forward_only/generator.safetensors", "generator",
        "generator (fast, 0.18 M), activation (forward-only) representation, taught Grad-CAM of 3 CNNs "
        "(mobilenet_v3_small, resnet18, vgg13_bn) on 64-px digits"),
    "gsft": Shipped(
        "paper/gsft.safetensors", "generator",
        "generator (the paper's GSFT, 1.5 M), gradient representation, taught Grad-CAM of 3 CNNs "
        "(mobilenet_v3_small, resnet18, vgg13_bn) on 64-px digits"),
    "sc-fast": Shipped(
        "distilled/sc-fast.safetensors", "generator",
        "generator (fast, 0.18 M), gradient representation, taught Score-CAM of mobilenet_v3_small on 64-px digits"),
    "sc-fast-fo": Shipped(
        "distilled/sc-fast-fo.safetensors", "generator",
        "generator (fast, 0.18 M), activation representation, taught Score-CAM of mobilenet_v3_small on 64-px digits"),
    "rise-fast": Shipped(
        "distilled/rise-fast.safetensors", "generator",
        "generator (fast, 0.18 M), gradient representation, taught RISE of mobilenet_v3_small on 64-px digits"),
    "rise-fast-fo": Shipped(
        "distilled/rise-fast-fo.safetensors", "generator",
        "generator (fast, 0.18 M), activation representation, taught RISE of mobilenet_v3_small on 64-px digits"),
}
DEMO = ("digits-mobilenet_v3_small", "fast")  # (CNN, generator) of `fastinterp demo`

_OPEN = contextlib.ExitStack()  # files extracted from a zip stay until the process exits
atexit.register(_OPEN.close)
_PATHS: dict[str, Path] = {}
_LOCK = threading.Lock()


KINDS = ("cnn", "generator")


def names(kind: str | None = None) -> dict[str, str]:
    """The shipped checkpoints, of one ``kind`` ("cnn" or "generator") or all: name -> one line
    saying what it is and what trained it (CNNs, data, image size, teacher). "demo" is also taken
    wherever a name is: the demo's CNN or generator (``DEMO``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: expected None or one of {KINDS}, got {kind!r}")
    return {name: entry.description for name, entry in SHIPPED.items() if kind is None or entry.kind == kind}


def path(name: str) -> Path:
    """The file of shipped checkpoint ``name`` (one of ``SHIPPED``) as a filesystem path."""
    entry = SHIPPED.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"name: {name!r} is not a shipped checkpoint; expected one of {sorted(SHIPPED)} "
                         "(fastinterp.pretrained.names() says what each is)")
    with _LOCK:
        if name not in _PATHS:
            _PATHS[name] = Path(_OPEN.enter_context(resources.as_file(resources.files(__name__) / entry.file)))
    return _PATHS[name]


def cnn_path(cnn: str) -> Path | None:
    """The file of a shipped CNN named ``cnn`` ("demo": the demo's), else None."""
    if cnn == "demo" or cnn in names("cnn"):
        return path(DEMO[0] if cnn == "demo" else cnn)
    return None


def generator_path(generator: str | Path) -> Path:
    """Where a generator is taken: "demo" (the demo's generator) or a shipped generator's name ->
    its file; anything else is a checkpoint path, returned as a ``Path`` (not checked here)."""
    if isinstance(generator, str) and (generator == "demo" or generator in names("generator")):
        return path(DEMO[1] if generator == "demo" else generator)
    return Path(generator)
