"""The one weight digest of the package, and file digests.

``weights_sha256`` names a CNN or a generator wherever one is recorded: a zoo checkpoint's header
and JSON, a dataset manifest's CNN list, an ONNX export's ``fastinterp.cnn_sha256`` /
``fastinterp.generator_sha256``, the ONNX Runtime cache key. Same tensors, same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["file_sha256", "weights_sha256"]


def weights_sha256(state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor of a module's ``state_dict()`` (or of a dict of tensors), in name
    order: for each, ``"{name}|{dtype}|{shape}|"`` then its bytes (C order, CPU). Hex string.

    A change of any value, dtype, shape or name changes it; where the tensors live does not.
    (A zoo checkpoint stored in float16 is loaded as float32: its file digest and the loaded
    model's differ because the bytes do.)"""
    tensors = state.state_dict() if isinstance(state, nn.Module) else state
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks. Hex string."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
