"""The public surface after the layout change: every top-level name resolves, the package imports
without torch (the ONNX Runtime path), the renamed generator export still answers under its old
name with a warning, and the shipped files have one registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fastinterp
from fastinterp import pretrained


@pytest.mark.parametrize("name", [n for n in fastinterp.__all__ if n != "__version__"])
def test_every_top_level_name_resolves(name):
    assert getattr(fastinterp, name) is not None


@pytest.mark.slow
def test_import_fastinterp_and_the_onnx_backend_do_not_import_torch():
    code = ("import sys, fastinterp, fastinterp.runtime.onnx_backend, fastinterp.export.format; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_export_onnx_is_the_generator_export_under_its_old_name():
    with pytest.warns(DeprecationWarning, match="fastinterp.export_onnx is fastinterp.export_generator"):
        old = fastinterp.export_onnx
    assert old is fastinterp.export_generator


def test_one_registry_of_shipped_files():
    for name, entry in pretrained.SHIPPED.items():
        path = pretrained.path(name)
        assert path.is_file() and path.suffix == ".safetensors", name
        assert entry.kind in ("cnn", "generator") and entry.description
    assert set(pretrained.names("cnn")) | set(pretrained.names("generator")) == set(pretrained.SHIPPED)
    assert set(pretrained.DEMO) <= set(pretrained.SHIPPED)
    with pytest.raises(ValueError, match="not a shipped checkpoint; expected one of"):
        pretrained.path("resnet50")


def test_the_shipped_files_load_as_their_kind():
    from fastinterp.datasets.zoo import load_cnn

    for name in pretrained.names("cnn"):
        assert load_cnn(pretrained.path(name))[1]["arch"] == "mobilenet_v3_small"
    for name in pretrained.names("generator"):
        generator, meta = fastinterp.load_generator(pretrained.path(name))
        assert fastinterp.representation_options(meta)["k"] == generator.config["k"]
