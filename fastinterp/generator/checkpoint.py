"""Checkpoints in safetensors: tensors in the file, JSON metadata in its header. Loading never
executes code (no pickle), and a corrupted or mismatched file raises a clear ``ValueError``.

Two kinds of file:
- a *generator* checkpoint: the generator's weights + metadata (its kind and options, K, size,
  representation and teacher config, training config, dataset/CNN ids, package version);
  :func:`load_generator` rebuilds the module from it.
- a *training state*: generator, discriminator, both optimisers and the step, enough to resume
  training bit-identically on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastinterp._core.io import check_state_fits, load_tensors, save_tensors
from fastinterp._version import __version__
from fastinterp.generator.networks import build_generator

__all__ = ["GENERATOR_FORMAT", "TRAIN_STATE_FORMAT", "flatten_optimizer", "load_generator", "save_generator",
           "unflatten_optimizer"]

GENERATOR_FORMAT = "fastinterp-generator/1"
TRAIN_STATE_FORMAT = "fastinterp-train-state/1"

def save_generator(path: str | Path, generator: nn.Module, **metadata: Any) -> Path:
    """Save ``generator`` (built by ``fastinterp.generator.networks.build_generator``, so it has ``.config``)."""
    config = getattr(generator, "config", None)
    if not isinstance(config, dict):
        raise TypeError("generator: expected a module from fastinterp.generator.networks.build_generator (with .config)")
    meta = {"format": GENERATOR_FORMAT, "generator": config, "fastinterp_version": __version__, **metadata}
    return save_tensors(path, generator.state_dict(), meta)


def load_generator(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the generator saved at ``path``; returns (module in eval mode, metadata). The module
    also carries the metadata as ``.fastinterp_metadata`` (what ``fastinterp.compile`` reads)."""
    tensors, metadata = load_tensors(path, GENERATOR_FORMAT)
    config = metadata.get("generator")
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"checkpoint: {path} metadata lacks the generator config")
    try:
        generator = build_generator(**config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"checkpoint: {path} holds a generator config this version cannot build ({error})") from error
    mismatch = check_state_fits(generator.state_dict(), tensors)
    if mismatch:
        raise ValueError(f"checkpoint: {path} does not match a {config['kind']!r} generator: {mismatch}")
    generator.load_state_dict(tensors)
    generator.fastinterp_metadata = metadata
    return generator.to(map_location).eval(), metadata


def flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors keyed ``prefix.<param>.<name>``, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in rest["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}
