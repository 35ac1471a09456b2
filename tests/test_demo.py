"""The shipped demo checkpoints (package data in fastinterp/pretrained/demo): they resolve through
importlib.resources, load, agree with each other, and the generator explains fresh digits better
than copying any one of its inputs. The wheel install is checked by .ci/wheel_check.sh."""

import importlib.util
import json
from pathlib import Path

import pytest

import fastinterp

from fastinterp.generator.checkpoint import load_generator
from fastinterp.cli import main
from fastinterp.demo import demo_checkpoints, run_demo
from fastinterp.maps.options import representation_options
from fastinterp.datasets.zoo import load_cnn


def test_shipped_checkpoints_are_package_data_small_and_consistent():
    with demo_checkpoints() as (cnn_path, generator_path):
        package = Path(fastinterp.__file__).resolve().parent
        for path in (cnn_path, generator_path):
            assert path.resolve().parent == package / "pretrained" / "demo"
        assert cnn_path.stat().st_size + generator_path.stat().st_size <= 10 * 2**20
        cnn, cnn_meta = load_cnn(cnn_path)
        generator, meta = load_generator(generator_path)
    options = representation_options(meta)
    assert generator.config["kind"] == "fast" and generator.config["k"] == options["k"]
    assert generator.config["size"] == cnn_meta["input_size"] == options["size"]
    # trained before skip_1x1 existed, with every conv layer (squeeze-excitation 1x1 convs included)
    assert options["skip_1x1"] is False
    assert not cnn.training and not generator.training
    # the demo CNN is one of the CNNs the generator was trained on
    assert cnn_meta["arch"] in json.dumps(meta["cnns"])


@pytest.mark.slow
def test_demo_generator_beats_copying_its_best_input(tmp_path, capsys):
    # a fake clock: the first (warm-up) pass takes 1 s per stage, the timed second pass 10 and 30 ms
    ticks = iter([0.0, 1.0, 2.0, 100.0, 100.010, 100.040])
    result = run_demo(tmp_path / "grid.png", num_images=16, seed=3, clock=lambda: next(ticks))
    assert result["png"].stat().st_size > 10_000
    generator, (_, best) = result["generator"], result["best_cgm"]
    assert generator["mae"] < 0.6 * best["mae"], (generator, best)
    assert generator["pearson"] > 0.8 and generator["pearson"] > best["pearson"]
    assert result["ms"] == pytest.approx({"cnn": 10.0, "explain": 30.0})
    assert list(result["stages"]) == ["forward", "backward", "maps", "resize", "generator", "total"]
    printed = capsys.readouterr().out
    assert "CNN forward 10.0 ms, explain() 30.0 ms" in printed and "per stage" in printed


def test_demo_rejects_a_missing_checkpoint_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_demo(tmp_path / "grid.png", checkpoints=tmp_path / "nowhere")


def test_demo_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fastinterp\[demo\]"'):
        run_demo(tmp_path / "grid.png")
    assert main(["demo", "--out", str(tmp_path / "grid.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastinterp demo: error: the demo draws its picture with matplotlib")
    assert not (tmp_path / "grid.png").exists()
