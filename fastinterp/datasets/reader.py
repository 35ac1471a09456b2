"""Reading a training set written by ``datasets.build``: the manifest and the examples, through
memory maps; every shard's sha256 checked on opening.

Layout of a dataset folder::

    manifest.json                  config, CNN ids (+ weight hashes), shards with counts and sha256
    shard-00000.safetensors        image (m, 3, S, S), cgm (m, K, S, S), teacher (m, S, S) [dtype],
    shard-00001.safetensors ...    target, label, prediction, cnn, index (m,) int64, mask (m, S, S) bool
"""

from __future__ import annotations

import bisect
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import ConcatDataset, Dataset

from fastinterp._core.hashing import file_sha256

__all__ = ["DATASET_FORMAT", "FLOAT_KEYS", "MANIFEST", "REPRESENTATION_KEYS", "ExplanationDataset", "read_manifest",
           "training_set"]

MANIFEST = "manifest.json"
DATASET_FORMAT = "fastinterp-explanations/1"
FLOAT_KEYS = ("image", "cgm", "teacher")  # stored in the build's dtype, read as float32


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``out_dir``, or None if it has none; raises for an unreadable or foreign one."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"out_dir: {path} is not a readable manifest ({error}); delete it to rebuild") from error
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise ValueError(f"out_dir: {path} is not a {DATASET_FORMAT} manifest")
    return manifest


class ExplanationDataset(Dataset):
    """The examples written by :func:`build_dataset`, read through memory maps.

    Item -> dict: image (3, S, S), cgm (K, S, S), teacher (S, S) float32; target, label,
    prediction, cnn, index int64 scalars; mask (S, S) bool when the dataset has masks.

    Args:
        out_dir: the folder holding ``manifest.json``.
        verify: check every shard's sha256 against the manifest on opening.
        allow_incomplete: read a dataset whose build was interrupted (only its finished shards).
    """

    def __init__(self, out_dir: str | Path, verify: bool = True, allow_incomplete: bool = False):
        self.out_dir = Path(out_dir)
        manifest = read_manifest(self.out_dir)
        if manifest is None:
            raise ValueError(f"out_dir: {self.out_dir} holds no {MANIFEST}; build it with `fastinterp build-dataset`")
        if not manifest["complete"] and not allow_incomplete:
            raise ValueError(f"out_dir: {self.out_dir} is incomplete ({len(manifest['shards'])} of "
                             f"{manifest['num_shards']} shards); rerun `fastinterp build-dataset` (or "
                             "build_dataset) to finish it, or pass allow_incomplete=True")
        self.manifest = manifest
        self.config = manifest["config"]
        self.shards = manifest["shards"]
        for entry in self.shards:
            path = self.out_dir / entry["file"]
            if not path.is_file():
                raise ValueError(f"out_dir: shard {path} is missing")
            if verify and file_sha256(path) != entry["sha256"]:
                raise ValueError(f"out_dir: shard {path} is corrupted (sha256 differs from the manifest)")
        self._ends = []
        total = 0
        for entry in self.shards:
            total += entry["count"]
            self._ends.append(total)
        self._handles: dict[int, Any] = {}

    @property
    def cnn_ids(self) -> list[str]:
        return [c["id"] for c in self.config["cnns"]]

    @property
    def has_masks(self) -> bool:
        return self.config["dataset"]["kind"] == "synthetic"

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own handles
        return {**self.__dict__, "_handles": {}}

    def _handle(self, shard: int):
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.out_dir / self.shards[shard]["file"]), framework="pt")
        return self._handles[shard]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        i = operator.index(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {i}")
        shard = bisect.bisect_right(self._ends, i)
        row = i - (self._ends[shard] - self.shards[shard]["count"])
        handle = self._handle(shard)
        item = {}
        for key in handle.keys():
            value = handle.get_slice(key)[row:row + 1][0]
            item[key] = value.float() if key in FLOAT_KEYS else value
        return item


# what a generator's inputs are made with (``maps.options.representation_options`` reads it back
# from the generator's metadata) and what it imitates: every dataset it trains on must agree on both
REPRESENTATION_KEYS = ("kind", "k", "size", "method", "order", "teacher", "skip_1x1", "image_resize")
TEACHER_KEYS = ("teacher_method", "teacher_options")


def training_set(folders: Sequence[str | Path], argument: str = "folders") -> tuple[Dataset, dict[str, Any]]:
    """The examples of one or several dataset folders as one dataset, and what a generator trained
    on them records in its metadata: ``dataset`` (the folder, or the list), ``dataset_config``,
    ``representation``, ``cnns`` (every CNN, in order), ``teacher_method``, ``teacher_options``.

    The folders must share the representation and the teacher; otherwise a ValueError names
    ``argument``, the folder and the keys that differ."""
    if isinstance(folders, (str, Path)) or not isinstance(folders, Sequence) or not folders:
        raise TypeError(f"{argument}: expected a non-empty list of dataset folders, got {folders!r}")
    parts = [ExplanationDataset(folder) for folder in folders]
    first = parts[0].config
    for folder, part in zip(folders[1:], parts[1:]):
        differ = [key for key in (*REPRESENTATION_KEYS, *TEACHER_KEYS) if part.config.get(key) != first.get(key)]
        if differ:
            raise ValueError(f"{argument}: {folder} was built with another representation or teacher than "
                             f"{folders[0]} (differs in {differ})")
    data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return data, provenance(data)


def provenance(data: object) -> dict[str, Any] | None:
    """What a generator trained on ``data`` records in its metadata (see :func:`training_set`), for
    an ``ExplanationDataset`` or a ``ConcatDataset`` of them; None for any other dataset."""
    parts = list(data.datasets) if isinstance(data, ConcatDataset) else [data]
    if not parts or not all(isinstance(part, ExplanationDataset) for part in parts):
        return None
    first = parts[0].config
    out = {"dataset": str(parts[0].out_dir) if len(parts) == 1 else [str(part.out_dir) for part in parts],
           "dataset_config": first if len(parts) == 1 else [part.config for part in parts],
           "representation": {key: first[key] for key in REPRESENTATION_KEYS if key in first},
           "cnns": [cnn for part in parts for cnn in part.config.get("cnns", [])],
           "teacher_method": first.get("teacher_method") or first.get("method"),
           "teacher_options": first.get("teacher_options", {})}
    if first.get("preprocess") is not None:
        out["preprocess"] = first["preprocess"]
    return out
