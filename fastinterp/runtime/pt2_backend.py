"""The AOTInductor backend: ``load_pt2(path)`` -> an explainer with ``Explainer``'s API over one
``.pt2`` package written by ``Explainer.export_pt2`` / ``fastinterp export --format pt2``.

Needs torch (and the package's device: CPU, or CUDA for a CUDA package); no model code and no
compile: the package holds the compiled kernels and the weights. Loading reads its metadata
(``fastinterp.export.metadata``: the same entries an ONNX file keeps) and checks it. Inputs are
checked as the other backends check them (``runtime.exported``). One call runs at a time (a
lock): AOTInductor's runner is not documented as thread-safe.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import numpy as np
import torch

from fastinterp.export.format import EXPLAINER_OUTPUTS
from fastinterp.runtime.exported import ExportedExplainer, check_metadata

__all__ = ["Pt2Explainer", "load_pt2"]


class Pt2Explainer(ExportedExplainer):
    """``explain`` / ``profile`` / ``close()`` as :class:`fastinterp.Explainer`, over a ``.pt2``
    package. Attributes as :class:`fastinterp.OnnxExplainer`'s (``representation``, ``input_size``,
    ``num_classes``, ``class_names``, ``value_range``, ``metadata``, ``path``), and ``device``."""

    backend = "pt2"
    loader = "load_pt2"

    def __init__(self, model, metadata: dict[str, str], path: Path, device: torch.device):
        super().__init__(metadata, path)
        self._model, self.device = model, device
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        o = self.representation
        return (f"Pt2Explainer({self.path.name}, {o['kind']} representation k={o['k']} size={o['size']}, "
                f"input_size={self.input_size}, device={self.device})")

    def _release(self) -> None:
        self._model = None

    def _run_graph(self, names: list[str], images: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(images).to(self.device)
        t = torch.from_numpy(targets).to(self.device)
        with self._lock, torch.inference_mode():
            try:
                outputs = self._model(x, t)
            except RuntimeError as error:
                raise RuntimeError(f"images: the .pt2 package {self.path.name} could not run on images of shape "
                                   f"{tuple(images.shape)} ({error})") from error
        by_name = dict(zip(EXPLAINER_OUTPUTS, outputs))
        return [by_name[name].cpu().numpy() for name in names]


def load_pt2(path: str | Path, *, device: str | torch.device | None = None) -> Pt2Explainer:
    """Load an explainer packaged by ``Explainer.export_pt2`` / ``fastinterp export --format pt2``.

    Args:
        path: the ``.pt2`` package.
        device: for a CUDA package, which CUDA device (default: the current one); a CPU package
            runs on the CPU.
    """
    from torch._inductor import aoti_load_package  # Inductor: imported only when loading

    importlib.import_module("fastinterp.ops.library")  # the custom op a CPU package calls, registered first

    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no .pt2 package at {path}")
    index = -1
    if device is not None:
        device = torch.device(device)
        index = device.index if device.type == "cuda" and device.index is not None else -1
    try:
        model = aoti_load_package(str(path), device_index=index)
    except Exception as error:  # the loader raises RuntimeError for a foreign zip, a missing model, a bad file
        raise ValueError(f"path: {path} is not a loadable AOTInductor package ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error
    metadata = check_metadata({k: v for k, v in model.get_metadata().items() if k.startswith("fastinterp.")},
                              path, "load_pt2", "a .pt2 package")
    kind = metadata.get("fastinterp.device", "cpu")
    if device is not None and device.type != kind:
        raise ValueError(f"device: {path} was compiled for {kind}, not {device.type}; export it again on that device")
    target = torch.device("cuda", torch.cuda.current_device() if index < 0 else index) if kind == "cuda" else \
        torch.device("cpu")
    return Pt2Explainer(model, metadata, path, target)
