"""The shipped demo checkpoints (checkpoints/demo): they load, agree with each other, and the
generator explains fresh digits better than copying any one of its inputs."""

import json

import pytest

from fastinterp.checkpoint import load_generator
from fastinterp.demo import DEMO_DIR, run_demo
from fastinterp.zoo import load_cnn


def test_shipped_checkpoints_are_small_and_consistent():
    files = [DEMO_DIR / name for name in ("cnn.safetensors", "generator.safetensors")]
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20
    cnn, cnn_meta = load_cnn(files[0])
    generator, meta = load_generator(files[1])
    rep = meta["representation"]
    assert generator.config["kind"] == "fast" and generator.config["k"] == rep["k"]
    assert generator.config["size"] == cnn_meta["input_size"] == rep["size"]
    assert not cnn.training and not generator.training
    # the demo CNN is one of the CNNs the generator was trained on
    assert cnn_meta["arch"] in json.dumps(meta["cnns"])


def test_demo_generator_beats_copying_its_best_input(tmp_path):
    result = run_demo(tmp_path / "grid.png", num_images=16, seed=3)
    assert result["png"].stat().st_size > 10_000
    generator, (_, best) = result["generator"], result["best_cgm"]
    assert generator["mae"] < 0.6 * best["mae"], (generator, best)
    assert generator["pearson"] > 0.8 and generator["pearson"] > best["pearson"]
    assert set(result["ms"]) == {"cnn", "representation", "generator"}
    assert all(v > 0 for v in result["ms"].values())


def test_demo_rejects_a_missing_checkpoint_folder(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError)):
        run_demo(tmp_path / "grid.png", checkpoints=tmp_path / "nowhere")
