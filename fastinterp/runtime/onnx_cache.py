"""``compile(..., backend="onnxruntime")``: the eager explainer's pipeline exported once to one ONNX
file, cached by content under $XDG_CACHE_HOME/fastinterp/onnx, and run by ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fastinterp._core.hashing import weights_sha256
from fastinterp._version import __version__
from fastinterp.runtime.explainer import Explainer
from fastinterp.runtime.onnx_backend import OnnxExplainer, cache_dir, load_onnx

__all__ = ["onnx_cache_dir", "onnxruntime_explainer"]


def onnx_cache_dir() -> Path:
    """Where ``compile(..., backend="onnxruntime")`` keeps its exports: $XDG_CACHE_HOME/fastinterp/onnx
    (default ~/.cache/fastinterp/onnx)."""
    return cache_dir("onnx")


def onnxruntime_explainer(explainer: Explainer, batch_sizes: Sequence[int] | None) -> OnnxExplainer:
    """Export ``explainer`` once (cached by content) and load it into ONNX Runtime."""
    if explainer.dtype is not None or explainer.device.type != "cpu":
        raise ValueError("backend: 'onnxruntime' runs the CPU float32 export (dtype=None, device='cpu'); load a GPU or "
                         "fp16 export with fastinterp.load_onnx(path, providers=...)")
    cnn, generator = explainer._models()
    # what the graph depends on: weights, and the modules' settings (strides, dilations, eps...), in repr
    key = json.dumps([__version__, torch.__version__, dict(explainer.representation), explainer.image_resize,
                      explainer.input_size, explainer.class_names, weights_sha256(cnn), weights_sha256(generator), repr(cnn), repr(generator)])
    path = onnx_cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial.onnx")
        os.close(handle)
        try:
            explainer.export_onnx(partial)
            os.replace(partial, path)  # atomic: a concurrent compile never reads a half-written file
        finally:
            Path(partial).unlink(missing_ok=True)
    loaded = load_onnx(path, providers=["CPUExecutionProvider"])
    for b in batch_sizes or ():
        loaded.explain(np.zeros((b, loaded.channels, *explainer.input_size), dtype=np.float32))
    return loaded


