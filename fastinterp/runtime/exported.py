"""What the explainers of exported files share (``.onnx``: ``onnx_backend``; ``.pt2``:
``pt2_backend``): their metadata read and checked (``export.format``), images and targets checked
with the torch backend's rules and errors (``runtime.inputs``), and the ``Explainer`` API over a
graph that takes ``images`` (B, C, H, W) float32 and ``targets`` (B,) int64 and returns
``logits``, ``chosen_targets``, ``maps`` and ``cgm``.

numpy in, numpy out (CPU torch tensors when tensors came in); torch is not imported here.
"""

from __future__ import annotations

import json
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastinterp.export.format import FORMAT_VERSION, READABLE_VERSIONS
from fastinterp.runtime.explanation import Explanation
from fastinterp.runtime.inputs import Images, as_image_batches, in_order

__all__ = ["ExportedExplainer", "check_metadata"]


def _torch_tensor_type():
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


class ExportedExplainer:
    """``explain(images, targets=None, return_cgm=False)`` (also ``explainer(images)``),
    ``profile``, ``close()`` / context manager, as :class:`fastinterp.Explainer`. Attributes:
    ``representation`` (read-only), ``input_size`` ((H, W), or None when any size is taken),
    ``num_classes``, ``class_names`` (or None), ``value_range``, ``metadata`` (every
    ``fastinterp.*`` entry), ``path``, ``backend``.

    A subclass runs the graph: ``_run_graph(names, images, targets)`` -> the named outputs as numpy
    arrays; ``_release()`` frees it; ``loader`` names the function that loads a new one."""

    backend = ""
    loader = ""

    def __init__(self, metadata: dict[str, str], path: Path):
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
        self._closed = False

    def close(self) -> None:
        """Release the graph; ``explain`` raises afterwards."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def _run_graph(self, names: list[str], images: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def __enter__(self) -> ExportedExplainer:
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
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"explainer: it was closed; load a new one with fastinterp.{self.loader}(path)")

    def explain(self, images: object, targets: object = None, *, return_cgm: bool = False,
                layout: str | None = None) -> Explanation:
        """Explain images; as :meth:`fastinterp.Explainer.explain` (float32 or uint8 arrays / tensors,
        channels first or last, PIL images, files, lists of any sizes). Returns numpy arrays, or CPU
        torch tensors when tensors were passed."""
        if not isinstance(return_cgm, bool):
            raise TypeError(f"return_cgm: expected True or False, got {return_cgm!r}")
        self._check_open()
        batches = self._batches(images, layout)
        chosen = self._targets(targets, batches.count)
        names = ["logits", "chosen_targets", "maps"] + (["cgm"] if return_cgm else [])
        parts = []
        for batch in batches.batches:
            array = self._array(batch.pixels)
            outputs = self._run_graph(names, array, chosen[batch.indices])
            parts.append({"logits": outputs[0], "targets": outputs[1], "maps": outputs[2],
                          "cgm": outputs[3] if return_cgm else None, "images": array})
        result = in_order(batches, parts)
        if batches.tensors:
            import torch

            result = {key: _as_torch(torch, value) for key, value in result.items()}
        return Explanation(**result, class_names=self.class_names)

    __call__ = explain

    def profile(self, images: object, targets: object = None, *, layout: str | None = None) -> dict[str, float]:
        """One ``explain`` timed: {"total": ms} (the graph runs as one)."""
        start = time.perf_counter()
        self.explain(images, targets, layout=layout)
        return {"total": 1e3 * (time.perf_counter() - start)}


def _as_torch(torch, value):
    if isinstance(value, list):
        return [_as_torch(torch, v) for v in value]
    return None if value is None else torch.from_numpy(value)


def _torch_float32():
    return sys.modules["torch"].float32


def check_metadata(metadata: dict[str, str], path: Path, loader: str, what: str) -> dict[str, str]:
    """``metadata`` of the file at ``path`` (``what``: "an ONNX file", "a .pt2 package"), checked to be a
    readable fastinterp explainer (``loader``: the function that was called)."""
    kind = metadata.get("fastinterp.format")
    if kind is None:
        raise ValueError(f"path: {path} is {what} but not a fastinterp export (its metadata has no "
                         "fastinterp.format); write one with Explainer.export_onnx / export_pt2 or `fastinterp export`")
    if kind != "explainer":
        raise ValueError(f"path: {path} holds a fastinterp {kind!r}, not an explainer; {loader} runs the whole "
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
    return metadata
