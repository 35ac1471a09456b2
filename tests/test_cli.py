"""The command line as a user meets it: one-line descriptions, a version that says how the kernel
was built, and bad arguments that end in one error line naming the command, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fastinterp._version import __version__
from fastinterp.cli import COMMANDS, main
from fastinterp.demo import demo_checkpoints


def test_help_lists_every_command_with_a_one_line_description(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name, (_, description) in COMMANDS.items():
        assert name in text and description.split()[0] in text
    assert "``" not in text and "see fastinterp" not in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_is_plain_text(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: fastinterp {name}") and COMMANDS[name][1] in " ".join(text.split())
    assert "``" not in text


def test_version_says_how_the_cpu_kernel_was_built(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"fastinterp {__version__} (C++ kernel: ")
    assert "OpenMP" in line or "serial (built without OpenMP)" in line


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize("argv,command,says", [
    (["eval-generator", "--generator", "{tmp}/missing.safetensors", "--data", "{tmp}"], "eval-generator",
     "argument --generator: {tmp}/missing.safetensors does not exist"),
    (["eval-generator", "--generator", "{tmp}/not.safetensors", "--data", "{tmp}"], "eval-generator",
     "argument --generator: {tmp}/not.safetensors is not a safetensors file"),
    (["train-generator", "--data", "{tmp}", "--out", "{tmp}/run"], "train-generator",
     "argument --data: {tmp} holds no manifest.json; build it with `fastinterp build-dataset`"),
    (["build-dataset", "--cnn", "{tmp}/not.safetensors", "--dataset", "digits", "--n", "2", "--out", "{tmp}/d"],
     "build-dataset", "argument --cnn: {tmp}/not.safetensors is not a safetensors file"),
])
def test_bad_paths_are_one_error_line_and_status_2(tmp_path, capsys, argv, command, says):
    (tmp_path / "not.safetensors").write_text("not a checkpoint")
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert error_lines(capsys)[-1].startswith(f"fastinterp {command}: error: " + says.format(tmp=tmp_path))


def test_an_error_after_parsing_is_one_line_naming_the_command(tmp_path, capsys):
    """A refused representation (a CGM that is the teacher) with a real checkpoint."""
    with demo_checkpoints() as (cnn, _):
        status = main(["build-dataset", "--cnn", str(cnn), "--dataset", "digits", "--n", "2", "--out",
                       str(tmp_path / "d"), "--order", "last_to_first", "--teacher", "last", "--no-progress"])
    assert status == 2
    (line,) = error_lines(capsys)
    assert line.startswith("fastinterp build-dataset: error: teacher: for 'cnn', CGM 0 is the teacher map itself")
    assert "--allow-teacher-input" in line


@pytest.mark.slow
def test_the_installed_entry_point_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastinterp", "train-generator", "--data", str(tmp_path),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "fastinterp train-generator: error: argument --data:" in done.stderr


def test_evaluate_takes_shipped_names_by_their_registry_name(tmp_path, capsys):
    from fastinterp import pretrained
    from fastinterp.cli.args import named_paths

    own = tmp_path / "mine.safetensors"
    own.write_bytes(b"")  # named_paths checks the file is there; evaluate reads it
    cnns = named_paths(["digits-mobilenet_v3_small", f"own={own}", str(own)], None, "--cnn", "cnn")
    assert cnns == {"digits-mobilenet_v3_small": pretrained.path("digits-mobilenet_v3_small"), "own": own, "mine": own}
    assert named_paths(["demo"], None, "--cnn", "cnn") == {pretrained.DEMO[0]: pretrained.path(pretrained.DEMO[0])}
    generators = named_paths(["fast", "fo=fast-fo", "demo"], {}, "--generator", "generator")
    assert generators == {"fast": pretrained.path("fast"), "fo": pretrained.path("fast-fo")}
    with pytest.raises(ValueError, match=r"--generator: nope is not a file, nor a shipped generator \(demo, fast, "):
        named_paths(["nope"], {}, "--generator", "generator")
    assert main(["evaluate", "--cnn", "nope", "--out", str(tmp_path)]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("fastinterp evaluate: error: --cnn: nope is not a file, nor a shipped cnn (demo, "
                           "digits-mobilenet_v3_small, shapes-mobilenet_v3_small)")


def test_export_takes_shipped_names_and_torchvision_names(tmp_path, capsys):
    from fastinterp.cli.export import _export_cnn

    cnn, meta = _export_cnn("digits-mobilenet_v3_small", None, None)  # a zoo checkpoint: its class names come along
    assert meta["classes"] and len(meta["classes"]) == cnn.num_classes == 10
    assert _export_cnn("demo", None, None)[1] == meta
    model, meta = _export_cnn("resnet18", None, 7)  # a bare torchvision name: torchvision:resnet18
    assert model.fc.out_features == 7 and meta == {}
    (tmp_path / "model.py").write_text("from torch import nn\n\ndef factory():\n    return nn.Sequential("
                                       "nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n")
    assert isinstance(_export_cnn(f"{tmp_path}/model.py:factory", None, None)[0][0], torch.nn.Conv2d)
    assert main(["export", "--cnn", "nope", "--out", str(tmp_path)]) == 2
    (line,) = error_lines(capsys)
    assert "--cnn: 'nope' is neither a file, a shipped CNN (demo, digits-mobilenet_v3_small" in line
    assert main(["export", "--cnn", "demo", "--generator", "nope", "--out", str(tmp_path)]) == 2
    (line,) = error_lines(capsys)
    assert "--generator: no checkpoint file at nope, nor a shipped generator (demo, fast, fast-fo" in line
