"""The one weight digest: the documented formula, sensitive to every value, dtype, shape and name,
and the same wherever one CNN is named (zoo checkpoint, dataset manifest; the ONNX metadata is
checked in tests/test_onnx_export.py)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from fastinterp._core.hashing import file_sha256, weights_sha256


def documented(tensors: dict[str, torch.Tensor]) -> str:
    """The README's formula written out: sha256 over "name|dtype|shape|" + bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_the_digest_is_the_documented_formula():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # float32 weights, an int64 buffer
    tensors = {"a": torch.arange(6, dtype=torch.float64).reshape(2, 3).t(),  # not contiguous
               "b": torch.tensor([True, False]), "c": torch.empty(0, 3), "d": torch.tensor(7, dtype=torch.int16)}
    assert weights_sha256(model) == documented(model.state_dict())
    assert weights_sha256(tensors) == documented(tensors)


@pytest.mark.parametrize("change", ["value", "dtype", "shape", "name"])
def test_every_kind_of_change_changes_the_digest(change):
    base = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    other = {key: value.clone() for key, value in base.items()}
    if change == "value":
        other["w"][1, 2] = torch.nextafter(other["w"][1, 2], torch.tensor(100.0))  # one ulp
    elif change == "dtype":
        other["w"] = other["w"].double()
    elif change == "shape":
        other["w"] = other["w"].reshape(3, 2)
    else:
        other["w2"] = other.pop("w")
    assert weights_sha256(other) != weights_sha256(base)
    assert weights_sha256({key: value.clone() for key, value in base.items()}) == weights_sha256(base)


def test_file_sha256_is_hashlib_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_one_cnn_has_one_digest_in_its_checkpoint_and_a_dataset_manifest(tmp_path):
    from fastinterp.datasets.build import build_dataset
    from fastinterp.datasets.reader import ExplanationDataset
    from fastinterp.datasets.zoo import build_cnn, load_cnn, save_cnn

    torch.manual_seed(0)
    cnn = build_cnn("resnet18", num_classes=10, input_size=32)
    path = save_cnn(tmp_path / "cnn.safetensors", cnn, {"dataset": "digits"}, dtype="float32")
    recorded = json.loads(path.with_suffix(".json").read_text())["weights_sha256"]
    loaded, meta = load_cnn(path)
    assert recorded == meta["weights_sha256"] == weights_sha256(loaded) == documented(cnn.state_dict())
    build_dataset([("cnn", loaded)], "digits", 2, tmp_path / "data", k=4, size=16, shard_size=2, progress=False)
    (entry,) = ExplanationDataset(tmp_path / "data").config["cnns"]
    assert entry["weights_sha256"] == recorded
