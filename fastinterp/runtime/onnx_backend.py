"""The ONNX Runtime backend: ``load_onnx(path)`` -> an explainer with ``Explainer``'s API over one
``.onnx`` file written by ``Explainer.export_onnx`` / ``fastinterp export``.

Needs onnxruntime and numpy (Pillow for PIL images and files; torch is not imported: tensors are accepted and returned
when torch is there). One ``InferenceSession`` per explainer, every graph optimisation on,
intra-op threads settable; execution providers by what is installed: TensorRT > CUDA > CPU
(``pip install "fastinterp[gpu]"`` brings onnxruntime-gpu; TensorRT needs its own libraries, see
the README), with a TensorRT engine cache directory so engines are built once. ``run`` on an
``InferenceSession`` is thread-safe, so threads may share one explainer.

Inputs are checked before the session sees them (``runtime.exported``, shared with the ``.pt2``
backend), with the torch backend's errors; the file's ``metadata_props`` say what it takes
(``fastinterp.export.metadata``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastinterp._core.extras import require
from fastinterp.export.format import EXPLAINER_INPUTS, EXPLAINER_OUTPUTS, FORMAT_VERSION
from fastinterp.runtime.exported import ExportedExplainer, check_metadata

__all__ = ["FORMAT_VERSION", "OnnxExplainer", "default_providers", "load_onnx"]

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/fastinterp/<name> (default ~/.cache/fastinterp/<name>), read when called."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "fastinterp" / name


def _onnxruntime():
    return require("onnxruntime", "onnx", "load_onnx runs ONNX files", ' (or onnxruntime-gpu: "fastinterp[gpu]")')


def default_providers(trt_cache: str | Path | None = None) -> list:
    """The installed execution providers in the order TensorRT > CUDA > CPU; TensorRT with its
    engine cache in ``trt_cache`` (default ``~/.cache/fastinterp/tensorrt``) and fp16 allowed."""
    available = set(_onnxruntime().get_available_providers())
    providers: list = []
    for name in PROVIDER_ORDER:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = Path(trt_cache) if trt_cache is not None else cache_dir("tensorrt")
            providers.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                     "trt_fp16_enable": True}))
        else:
            providers.append(name)
    return providers


class OnnxExplainer(ExportedExplainer):
    """``explain(images, targets=None, return_cgm=False)`` (also ``explainer(images)``),
    ``profile``, ``close()`` / context manager, as :class:`fastinterp.Explainer`. Attributes:
    ``representation`` (read-only), ``input_size`` ((H, W), or None when any size is taken),
    ``num_classes``, ``class_names`` (or None), ``value_range``, ``metadata`` (every
    ``fastinterp.*`` entry), ``providers`` (what the session runs on), ``path``."""

    backend = "onnxruntime"
    loader = "load_onnx"

    def __init__(self, session, metadata: dict[str, str], path: Path):
        super().__init__(metadata, path)
        self._session = session
        self.providers = tuple(session.get_providers())

    def __repr__(self) -> str:
        o = self.representation
        return (f"OnnxExplainer({self.path.name}, {o['kind']} representation k={o['k']} size={o['size']}, "
                f"input_size={self.input_size}, providers={list(self.providers)})")

    def _release(self) -> None:
        self._session = None

    def _run_graph(self, names: list[str], images: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        try:
            return self._session.run(names, {"images": images, "targets": targets})
        except Exception as error:  # onnxruntime's own types (Fail, InvalidArgument...) derive from Exception
            raise RuntimeError(f"images: ONNX Runtime could not run {self.path.name} on images of shape "
                               f"{tuple(images.shape)} ({type(error).__name__}: {error})") from error


def _read_metadata(session, path: Path) -> dict[str, str]:
    metadata = check_metadata(dict(session.get_modelmeta().custom_metadata_map), path, "load_onnx", "an ONNX file")
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if not set(EXPLAINER_INPUTS) <= inputs or not set(EXPLAINER_OUTPUTS) <= outputs:
        raise ValueError(f"path: {path}'s graph does not have the explainer's inputs and outputs (has inputs "
                         f"{sorted(inputs)}, outputs {sorted(outputs)})")
    return metadata


def load_onnx(path: str | Path, providers: Sequence[Any] | None = None, *, threads: int | None = None,
              trt_cache: str | Path | None = None, config: dict[str, str] | None = None) -> OnnxExplainer:
    """Load an explainer exported by ``Explainer.export_onnx`` / ``fastinterp export`` into ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers (names or (name, options) pairs, as onnxruntime takes them);
            default :func:`default_providers` (TensorRT > CUDA > CPU, whichever are installed).
        threads: intra-op threads of the session (default: onnxruntime's, one per physical core).
        trt_cache: TensorRT engine cache directory (default ``~/.cache/fastinterp/tensorrt``).
        config: ONNX Runtime session config entries, e.g. ``{"session.intra_op.allow_spinning":
            "0"}`` (its threads then sleep between runs instead of spinning: slower alone, but
            they no longer take the cores from other work in the process, e.g. torch).
    """
    ort = _onnxruntime()
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no ONNX file at {path}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
    if providers is None:
        providers = default_providers(trt_cache)
    else:
        if isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence) or not providers:
            raise TypeError(f"providers: expected a list of execution provider names, got {providers!r}")
        available = set(ort.get_available_providers())
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(f"providers: {missing} not available in this onnxruntime (it has "
                             f"{sorted(available)}); pip install onnxruntime-gpu for CUDA / TensorRT")
        providers = list(providers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: not the optimiser's notices
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"config: expected str keys and values, got {key!r}: {value!r}")
        options.add_session_config_entry(key, value)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"path: {path} is not a readable ONNX model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error
    return OnnxExplainer(session, _read_metadata(session, path), path)
