"""The command line as a user meets it: one-line descriptions, a version that says how the kernel
was built, and bad arguments that end in one error line naming the command, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
