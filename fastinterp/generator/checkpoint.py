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

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fastinterp._version import __version__

__all__ = [
    "GENERATOR_FORMAT",
    "TRAIN_STATE_FORMAT",
    "check_state_fits",
    "load_generator",
    "load_tensors",
    "save_generator",
    "save_tensors",
]

GENERATOR_FORMAT = "fastinterp-generator/1"
TRAIN_STATE_FORMAT = "fastinterp-train-state/1"
_META_KEY = "fastinterp"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` atomically (temporary file, then rename), with the
    usual file permissions (safetensors creates 0600 files)."""
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
    from fastinterp.generator.networks import build_generator

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
