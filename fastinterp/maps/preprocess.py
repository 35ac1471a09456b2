"""What a CNN expects of its input beyond [0, 1] images: a per-channel normalisation, recorded in
a generator's metadata (``preprocess``) so that the maps are made, at training and at explain
time, of the CNN on the input it was trained on.

    preprocess = None                                   the CNN takes [0, 1] images (zoo CNNs:
                                                         their normalisation is inside them)
    preprocess = {"normalize": {"mean": [m1, m2, m3],   the CNN takes (x - mean) / std per channel
                                "std":  [s1, s2, s3]}}   (torchvision's ImageNet-trained models)

The generator always sees the [0, 1] image; only the CNN sees the normalised one
(:class:`Preprocessed` wraps it without copying or changing it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["IMAGENET", "Normalize", "Preprocessed", "check_preprocess", "parse_normalize", "preprocess_of",
           "with_preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = {"normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}


class Normalize(nn.Module):
    """(B, C, H, W) images in [0, 1] -> (x - mean) / std per channel (default: ImageNet's)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:  # the numbers, so that a repr (the ONNX cache key) tells two apart
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Preprocessed(nn.Module):
    """``model`` behind its preprocessing: forward(x in [0, 1]) = model(normalize(x)). Holds the
    user's module itself (not a copy); the normalisation's buffers are not persistent, so its
    state dict is the model's under ``model.``. ``input_size`` is passed through."""

    def __init__(self, model: nn.Module, preprocess: dict[str, Any]):
        super().__init__()
        normalize = check_preprocess(preprocess)["normalize"]
        self.normalize = Normalize(normalize["mean"], normalize["std"])
        for name in ("mean", "std"):  # not part of the model's weights (hashes, state dicts)
            self.normalize._non_persistent_buffers_set.add(name)
        weight = next(iter(model.parameters()), None)
        if weight is not None:  # the model's device and dtype (a CUDA or half-precision CNN)
            self.normalize.to(device=weight.device, dtype=weight.dtype if weight.is_floating_point() else None)
        self.model = model
        self.preprocess = preprocess
        if hasattr(model, "input_size"):
            self.input_size = model.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def check_preprocess(preprocess: object, argument: str = "preprocess") -> dict[str, Any] | None:
    """None, or ``{"normalize": {"mean": [3 floats], "std": [3 positive floats]}}`` (lists of
    finite numbers, one per image channel); returns it with float lists. Anything else raises,
    naming ``argument``."""
    if preprocess is None:
        return None
    expected = "None or {'normalize': {'mean': [m1, m2, m3], 'std': [s1, s2, s3]}}"
    if not isinstance(preprocess, dict) or set(preprocess) != {"normalize"}:
        raise ValueError(f"{argument}: expected {expected}, got {preprocess!r}")
    normalize = preprocess["normalize"]
    if not isinstance(normalize, dict) or set(normalize) != {"mean", "std"}:
        raise ValueError(f"{argument}: expected {expected}, got {preprocess!r}")
    out = {}
    for key in ("mean", "std"):
        values = normalize[key]
        if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in values)):
            raise ValueError(f"{argument}: {key}: expected 3 finite numbers (one per RGB channel), got {values!r}")
        out[key] = [float(v) for v in values]
    if min(out["std"]) <= 0:
        raise ValueError(f"{argument}: std: expected 3 numbers > 0, got {out['std']}")
    return {"normalize": out}


def parse_normalize(text: str, argument: str = "--normalize") -> dict[str, Any] | None:
    """The command line's ``--normalize``: "imagenet", "none", or "M1,M2,M3/S1,S2,S3"."""
    if text == "none":
        return None
    if text == "imagenet":
        return {"normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    mean, sep, std = text.partition("/")
    try:
        values = [[float(v) for v in part.split(",")] for part in (mean, std)]
    except ValueError:
        values = None
    if not sep or values is None:
        raise ValueError(f"{argument}: expected 'imagenet', 'none' or 'M1,M2,M3/S1,S2,S3' (three means and three "
                         f"standard deviations of [0, 1] pixels), got {text!r}")
    return check_preprocess({"normalize": {"mean": values[0], "std": values[1]}}, argument)


def preprocess_of(metadata: dict | None) -> dict[str, Any] | None:
    """The preprocessing recorded in a generator's metadata (None when it records none: the
    generators trained before the field explained CNNs that take [0, 1] images)."""
    return check_preprocess((metadata or {}).get("preprocess"), "metadata: preprocess")


def with_preprocess(model: nn.Module, preprocess: dict[str, Any] | None) -> nn.Module:
    """``model`` itself when ``preprocess`` is None, else :class:`Preprocessed` around it."""
    return model if preprocess is None else Preprocessed(model, preprocess)
