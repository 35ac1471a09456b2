"""``.pt2`` packages: the whole explain pipeline compiled ahead of time by AOTInductor.

    ExplainGraph (``export.graph.build_explain_graph``, the graph the ONNX file holds)
      -> torch.export.export (batch dimension symbolic unless ``dynamic_batch=False``)
      -> torch._inductor.aoti_compile_and_package: generated C++ (CPU) or Triton (CUDA) kernels,
         compiled into one shared library, with the weights, in one zip archive (PT2 archive format)
      -> ``fastinterp.load_pt2(path)`` runs it: torch is needed, no model code and no compile.

The package is made for one device type (the explainer's: CPU or CUDA) and float32; the images'
(H, W) is fixed. On the CPU it calls our custom op ``fastinterp::cumulative_average`` (the C++
kernel, ``ops.library``), which ``load_pt2`` registers before loading. Its AOTInductor metadata holds the same ``fastinterp.*`` entries an ONNX file
keeps (``export.metadata``), plus ``fastinterp.device``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastinterp._core.io import output_path
from fastinterp.export.graph import build_explain_graph, use_fused_op
from fastinterp.export.metadata import explainer_metadata
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE

__all__ = ["MAX_BATCH", "export_pt2"]

MAX_BATCH = 4096  # the symbolic batch dimension's upper bound (AOTInductor checks it at run time)


def export_pt2(cnn: nn.Module, generator: nn.Module, representation: Mapping[str, Any], path: str | Path, *,
               input_size: int | tuple[int, int], image_resize: str = DEFAULT_IMAGE_RESIZE,
               teacher: str | None = None, dynamic_batch: bool = True, device: str | torch.device = "cpu",
               class_names: Sequence[str] | None = None, value_range: str | None = None) -> Path:
    """The whole explain pipeline of ``cnn`` + ``generator`` compiled by AOTInductor into one ``.pt2``
    package (what ``Explainer.export_pt2`` writes). Neither module is modified (float32 copies on
    ``device`` are traced). Compiling takes about as long as ``compile(..., backend="inductor")``'s
    first call (a minute or more for resnet50 on a 2-core CPU).

    Args:
        representation: every field of ``maps.options.FIELDS``.
        input_size: (H, W) or int of the images (fixed).
        dynamic_batch: any batch size from 1 to ``MAX_BATCH`` (else only the traced batch, 2).
        device: "cpu" or a CUDA device: what the package runs on.
        the rest: as ``export_onnx``.
    """
    from torch._inductor import aoti_compile_and_package  # Inductor: imported only when packaging

    if not isinstance(dynamic_batch, bool):
        raise TypeError(f"dynamic_batch: expected True or False, got {dynamic_batch!r}")
    path = output_path(path, ".pt2")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: AOTInductor packages run on the CPU or CUDA, got {device}")
    with torch.inference_mode(False):
        built = build_explain_graph(cnn, generator, representation, input_size, device=device,
                                    fused_op=use_fused_op(device))
        metadata = explainer_metadata(built, image_resize=image_resize, teacher=teacher, dynamic_batch=dynamic_batch,
                                      dynamic_size=False, class_names=class_names, value_range=value_range,
                                      cnn_name=type(cnn).__name__)
        metadata["fastinterp.device"] = device.type
        dims = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)} if dynamic_batch else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export's and Inductor's notices
            program = torch.export.export(built.module, built.example_inputs(), dynamic_shapes=(dims, dims))
            handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial.pt2")
            os.close(handle)
            try:
                aoti_compile_and_package(
                    program, package_path=partial, inductor_configs={"aot_inductor.metadata": metadata})
                os.replace(partial, path)  # atomic: a reader never sees a half-written package
            finally:
                Path(partial).unlink(missing_ok=True)
    return path
