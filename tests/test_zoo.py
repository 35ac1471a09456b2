"""CNN zoo: every architecture builds for small inputs with >= 9 convs and explains; a tiny
training run is deterministic and survives a save/load round trip; bad files raise clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import fastinterp
from fastinterp.cli.zoo import main as main_zoo
from fastinterp.datasets.zoo import (
    ARCHS,
    DEFAULT_ZOO,
    Normalize,
    build_cnn,
    load_cnn,
    save_cnn,
    train_cnn,
)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_build_runs_and_explains_at_64(arch):
    torch.manual_seed(0)
    model = build_cnn(arch, 10, 64).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert isinstance(model.normalize, Normalize)  # explainers pass [0, 1] images
    names = fastinterp.conv_layers(model, images)
    assert len(names) >= 9
    if arch in DEFAULT_ZOO:
        rep = fastinterp.cnn_representation(model, images, k=8, size=64)
        assert rep.cgm.shape == (2, 8, 64, 64) and rep.teacher.shape == (2, 64, 64)
        assert rep.cgm.min() >= 0 and rep.cgm.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["shufflenet_v2_x0_5", "regnet_x_400mf", "mnasnet0_5"])
def test_new_families_train_a_step_and_match_the_naive_layer_loop(arch):
    """The families added for leave-one-family-out: channel shuffle + concatenation, grouped
    bottlenecks, 5x5 inverted residuals; one training step moves the weights, and the single-pass
    layer maps equal a naive per-layer loop on the trained model."""
    from conftest import max_rel_error, naive_layer_maps

    torch.manual_seed(0)
    fresh = build_cnn(arch, 10, 32).state_dict()
    model, meta = train_cnn(arch, "digits", input_size=32, epochs=1, train_size=8, batch_size=8, test_size=4,
                            seed=0, progress=False, dtype="float32")
    # the step reached both ends: the stem conv and the classifier moved (inside regnet's residual
    # branches only the zero-initialised last BN scale gets a gradient on the first step)
    kernels = [k for k, v in fresh.items() if k.endswith("weight") and v.dim() == 4]
    head = [k for k, v in fresh.items() if k.endswith("weight") and v.dim() == 2]
    for key in (kernels[0], head[-1]):
        assert not torch.equal(model.state_dict()[key], fresh[key]), key
    assert torch.equal(model.state_dict()["normalize.mean"], fresh["normalize.mean"])
    assert fastinterp.datasets.zoo.FAMILIES[arch] in arch
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    result = fastinterp.layer_maps(model, images)
    assert len(result.layer_names) == meta["conv_layers"]  # every conv runs on a 32 px image
    slow = naive_layer_maps(model, images, result.layer_names, result.targets)
    for i, (a, b) in enumerate(zip(result.maps, slow)):
        assert a.shape == b.shape and max_rel_error(a, b) <= 1e-4, (i, result.layer_names[i])
    assert not model.training


def test_build_is_deterministic_and_checks_arguments():
    torch.manual_seed(3)
    a = build_cnn("resnet18", 4, 48).state_dict()
    torch.manual_seed(3)
    b = build_cnn("resnet18", 4, 48).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="arch"):
        build_cnn("vgg11_bn", 10, 64)  # 8 convs: too few for K = 8
    with pytest.raises(ValueError, match="input_size"):
        build_cnn("resnet18", 10, 16)
    with pytest.raises(ValueError, match="num_classes"):
        build_cnn("resnet18", 1, 64)
    with pytest.raises(TypeError, match="num_classes"):
        build_cnn("resnet18", 10.0, 64)


def _tiny(out):
    return train_cnn("mobilenet_v3_small", "digits", input_size=32, epochs=1, train_size=16, batch_size=8,
                     test_size=8, seed=1, out=out, progress=False)


@pytest.mark.slow
def test_tiny_training_is_deterministic_and_round_trips(tmp_path):
    model, meta = _tiny(tmp_path)
    again, _ = _tiny(tmp_path / "again")
    state, state_again = model.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)

    path = tmp_path / "mobilenet_v3_small_digits.safetensors"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    for key in ("arch", "dataset", "input_size", "num_classes", "test_accuracy", "train_config", "fastinterp_version"):
        assert key in sidecar
    assert sidecar["arch"] == "mobilenet_v3_small" and sidecar["dataset"] == "digits"
    assert sidecar["input_size"] == 32 and sidecar["stored_dtype"] == "float16"
    assert 0 <= sidecar["test_accuracy"] <= 1 and sidecar["test_accuracy"] == meta["test_accuracy"]

    loaded, loaded_meta = load_cnn(path)
    assert loaded_meta == sidecar and not loaded.training
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))  # accuracy was measured on these weights


def test_float32_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_cnn("resnet18", 3, 32).eval()
    path = save_cnn(tmp_path / "r.safetensors", model, {"dataset": "shapes"}, dtype="float32")
    loaded, meta = load_cnn(path)
    assert meta["dataset"] == "shapes" and meta["stored_dtype"] == "float32"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_bad_checkpoints_raise_clearly(tmp_path):
    torch.manual_seed(0)
    model = build_cnn("mobilenet_v3_small", 3, 32)
    path = save_cnn(tmp_path / "m.safetensors", model, {}, dtype="float32")
    data = bytearray(path.read_bytes())

    with pytest.raises(ValueError, match="does not exist"):
        load_cnn(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_cnn(truncated)
    flipped = tmp_path / "flipped.safetensors"
    corrupt = bytearray(data)
    corrupt[-100] ^= 0xFF  # inside the last tensor's bytes
    flipped.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupted"):
        load_cnn(flipped)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_cnn(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="no fastinterp metadata"):
        load_cnn(foreign)

    # metadata naming another architecture than the weights hold
    from fastinterp._core.hashing import weights_sha256

    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "fastinterp-cnn/1", "arch": "resnet18", "num_classes": 3, "input_size": 32,
            "weights_sha256": weights_sha256(tensors)}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(tensors, str(mismatched), metadata={"fastinterp": json.dumps(meta)})
    with pytest.raises(ValueError, match="does not fit a resnet18"):
        load_cnn(mismatched)
    with pytest.raises(ValueError, match="path"):
        save_cnn(tmp_path / "m.pt", model, {})
    with pytest.raises(ValueError, match="dtype"):
        save_cnn(tmp_path / "m2.safetensors", model, {}, dtype="bfloat16")


def test_train_checks_arguments():
    with pytest.raises(ValueError, match="dataset"):
        train_cnn("resnet18", "mnist")
    with pytest.raises(ValueError, match="epochs"):
        train_cnn("resnet18", "digits", epochs=0)
    with pytest.raises(ValueError, match="lr"):
        train_cnn("resnet18", "digits", lr=float("nan"))


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_zoo(["--help"])
    assert exit_info.value.code == 0 and "--archs" in capsys.readouterr().out
    assert main_zoo(["--archs", "mobilenet_v3_small", "--dataset", "shapes", "--input-size", "32",
                     "--train-size", "8", "--batch-size", "8", "--test-size", "8", "--out", str(tmp_path),
                     "--no-progress"]) == 0
    model, meta = load_cnn(tmp_path / "mobilenet_v3_small_shapes.safetensors")
    assert meta["dataset"] == "shapes" and meta["num_classes"] == 4
    assert "test accuracy" in capsys.readouterr().out
