"""The ONNX Runtime backend: ``load_onnx(path)`` -> an explainer with ``Explainer``'s API over one
``.onnx`` file written by ``Explainer.export_onnx`` / ``fastinterp export``.

Needs onnxruntime and numpy (Pillow for PIL images and files; torch is not imported: tensors are accepted and returned
when torch is there). One ``InferenceSession`` per explainer, every graph optimisation on,
intra-op threads settable; execution providers by what is installed: TensorRT > CUDA > CPU
(``pip install "fastinterp[gpu]"`` brings onnxruntime-gpu; TensorRT needs its own libraries, see
the README), with a TensorRT engine cache directory so engines are built once. ``run`` on an
``InferenceSession`` is thread-safe, so threads may share one explainer.

Inputs are checked before the session sees them, with the torch backend's errors (argument
named, what was expected); the file's ``metadata_props`` say what it takes
(``fastinterp.export.onnx``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastinterp._core.extras import require
from fastinterp.export.format import EXPLAINER_INPUTS, EXPLAINER_OUTPUTS, FORMAT_VERSION, READABLE_VERSIONS
from fastinterp.runtime.explanation import Explanation
from fastinterp.runtime.inputs import Images, as_image_batches, in_order

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


def _torch_tensor_type():
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


class OnnxExplainer:
    """``explain(images, targets=None, return_cgm=False)`` (also ``explainer(images)``),
    ``profile``, ``close()`` / context manager, as :class:`fastinterp.Explainer`. Attributes:
    ``representation`` (read-only), ``input_size`` ((H, W), or None when any size is taken),
    ``num_classes``, ``class_names`` (or None), ``value_range``, ``metadata`` (every
    ``fastinterp.*`` entry), ``providers`` (what the session runs on), ``path``."""

    backend = "onnxruntime"

    def __init__(self, session, metadata: dict[str, str], path: Path):
        self._session = session
        self.path = path
        self.metadata = types.MappingProxyType(dict(metadata))
        self.representation = types.MappingProxyType(json.loads(metadata["fastinterp.representation"]))
        channels, height, width = json.loads(metadata["fastinterp.input_size"])
        self.channels = channels
        self.input_size = None if height is None else (height, width)
        self.dynamic_batch = json.loads(metadata.get("fastinterp.dynamic_batch", "true"))
        self.num_classes = int(metadata["fastinterp.num_classes"])
        names = metadata.get("fastinterp.class_names")
        self.class_names = None if names is None else tuple(json.loads(names))
        self.value_range = metadata.get("fastinterp.value_range")
        self.providers = tuple(session.get_providers())
        self._closed = False

    def __repr__(self) -> str:
        o = self.representation
        return (f"OnnxExplainer({self.path.name}, {o['kind']} representation k={o['k']} size={o['size']}, "
                f"input_size={self.input_size}, providers={list(self.providers)})")

    def close(self) -> None:
        """Release the session; ``explain`` raises afterwards."""
        self._closed = True
        self._session = None

    def __enter__(self) -> OnnxExplainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ inputs (the torch backend's rules and errors)
    def _batches(self, images: object, layout: str | None) -> Images:
        """``images`` in any accepted form (``runtime.inputs``) -> float32 batches of equal-size images."""

        def scale_uint8(pixels):
            if isinstance(pixels, np.ndarray):
                return pixels.astype(np.float32) / np.float32(255)
            return pixels.float() / 255  # a tensor stays a tensor (a list may mix it with float tensors)

        return as_image_batches(images, self.channels, layout=layout, scale_uint8=scale_uint8)

    def _array(self, pixels: object) -> np.ndarray:
        """One batch's float pixels (B, C, H, W) as a float32 numpy array, checked."""
        if not isinstance(pixels, np.ndarray):  # a float torch tensor
            if pixels.dtype != _torch_float32():
                raise TypeError(f"images: dtype {pixels.dtype} but the exported graph takes torch.float32 (or uint8 "
                                "pixels)")
            pixels = pixels.detach().cpu().numpy()
        elif pixels.dtype != np.float32:
            raise TypeError(f"images: expected a numpy array of dtype float32 (the exported graph's) or uint8 pixels, "
                            f"got {pixels.dtype}")
        batch, channels, height, width = pixels.shape
        if batch == 0:
            raise ValueError("images: batch size is 0; expected at least one image")
        if self.input_size is not None and (height, width) != self.input_size:
            raise ValueError(f"images: the exported graph takes {self.input_size[0]}x{self.input_size[1]} images, got "
                             f"{height}x{width}; resize them, or export with input_size=({height}, {width}) or "
                             "dynamic_size=True")
        if not self.dynamic_batch and batch != 2:
            raise ValueError(f"images: the graph was exported with a fixed batch of 2 (dynamic_batch=False), got "
                             f"{batch}")
        if not np.isfinite(pixels).all():
            raise ValueError("images: contains NaN or infinite values")
        return np.ascontiguousarray(pixels)

    def _targets(self, targets: object, batch: int) -> np.ndarray:
        tensor_type = _torch_tensor_type()
        if targets is None:
            return np.full((batch,), -1, dtype=np.int64)
        if isinstance(targets, (bool, np.bool_)):
            raise TypeError("targets: expected class indices (int), got a bool")
        if isinstance(targets, (int, np.integer)):
            out = np.full((batch,), int(targets), dtype=np.int64)
        elif tensor_type is not None and isinstance(targets, tensor_type):
            if targets.is_floating_point() or targets.is_complex() or str(targets.dtype) == "torch.bool":
                raise TypeError(f"targets: expected an integer tensor of class indices, got dtype {targets.dtype}")
            out = targets.detach().cpu().numpy().astype(np.int64)
        elif isinstance(targets, np.ndarray):
            if not np.issubdtype(targets.dtype, np.integer):
                raise TypeError(f"targets: expected class indices (an integer numpy array), got dtype {targets.dtype}")
            out = targets.astype(np.int64)
        elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
            if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in targets):
                raise TypeError("targets: expected a sequence of ints (class indices)")
            if len(targets) != batch:
                raise ValueError(f"targets: expected {batch} class indices (one per image), got {len(targets)}")
            out = np.asarray(list(targets), dtype=np.int64)
        else:
            raise TypeError(f"targets: expected None, an int, a sequence of ints or an integer tensor, got "
                            f"{type(targets).__name__}")
        if out.ndim != 1 or out.shape[0] != batch:
            raise ValueError(f"targets: expected shape ({batch},) (one class per image), got {tuple(out.shape)}")
        if out.size and (out.min() < 0 or out.max() >= self.num_classes):
            raise ValueError(f"targets: class indices must be in [0, {self.num_classes}) for a model with "
                             f"{self.num_classes} outputs, got {out.tolist()}")
        return out

    # ------------------------------------------------------------------ running
    def _session_or_raise(self):
        if self._closed or self._session is None:
            raise RuntimeError("explainer: it was closed; load a new one with fastinterp.load_onnx(path)")
        return self._session

    def explain(self, images: object, targets: object = None, *, return_cgm: bool = False,
                layout: str | None = None) -> Explanation:
        """Explain images; as :meth:`fastinterp.Explainer.explain` (float32 or uint8 arrays / tensors,
        channels first or last, PIL images, files, lists of any sizes). Returns numpy arrays, or CPU
        torch tensors when tensors were passed."""
        if not isinstance(return_cgm, bool):
            raise TypeError(f"return_cgm: expected True or False, got {return_cgm!r}")
        session = self._session_or_raise()
        batches = self._batches(images, layout)
        chosen = self._targets(targets, batches.count)
        names = ["logits", "chosen_targets", "maps"] + (["cgm"] if return_cgm else [])
        parts = []
        for batch in batches.batches:
            array = self._array(batch.pixels)
            try:
                outputs = session.run(names, {"images": array, "targets": chosen[batch.indices]})
            except Exception as error:  # onnxruntime's own types (Fail, InvalidArgument...) derive from Exception
                raise RuntimeError(f"images: ONNX Runtime could not run {self.path.name} on images of shape "
                                   f"{tuple(array.shape)} ({type(error).__name__}: {error})") from error
            parts.append({"logits": outputs[0], "targets": outputs[1], "maps": outputs[2],
                          "cgm": outputs[3] if return_cgm else None, "images": array})
        result = in_order(batches, parts)
        if batches.tensors:
            import torch

            result = {key: _as_torch(torch, value) for key, value in result.items()}
        return Explanation(**result, class_names=self.class_names)

    __call__ = explain

    def profile(self, images: object, targets: object = None, *, layout: str | None = None) -> dict[str, float]:
        """One ``explain`` timed: {"total": ms} (the graph runs as one; ONNX Runtime's own profiler
        gives per-node times: ``SessionOptions.enable_profiling``)."""
        start = time.perf_counter()
        self.explain(images, targets, layout=layout)
        return {"total": 1e3 * (time.perf_counter() - start)}


def _as_torch(torch, value):
    if isinstance(value, list):
        return [_as_torch(torch, v) for v in value]
    return None if value is None else torch.from_numpy(value)


def _torch_float32():
    return sys.modules["torch"].float32


def _read_metadata(session, path: Path) -> dict[str, str]:
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    kind = metadata.get("fastinterp.format")
    if kind is None:
        raise ValueError(f"path: {path} is an ONNX file but not a fastinterp export (its metadata has no "
                         "fastinterp.format); write one with Explainer.export_onnx or `fastinterp export`")
    if kind != "explainer":
        raise ValueError(f"path: {path} holds a fastinterp {kind!r}, not an explainer; load_onnx runs the whole "
                         "pipeline (Explainer.export_onnx); run a generator-only file with onnxruntime directly")
    version = metadata.get("fastinterp.format_version")
    if version not in {str(v) for v in READABLE_VERSIONS}:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise ValueError(f"path: {path} was written in export format version {version} (fastinterp "
                         f"{metadata.get('fastinterp.version', '?')}); this fastinterp reads versions {readable} "
                         f"(writes {FORMAT_VERSION}); export it again with this version")
    missing = [key for key in ("fastinterp.representation", "fastinterp.input_size", "fastinterp.num_classes")
               if key not in metadata]
    if missing:
        raise ValueError(f"path: {path}'s fastinterp metadata lacks {missing}; export it again")
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
