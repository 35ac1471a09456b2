"""Where a map is exported: the explain pipeline as one graph and as ONNX files.

    format          the file contract (inputs, outputs, metadata keys, version): no torch needed
    decompositions  backward ops -> forward ops (what makes the activation-only backward exportable)
    trace           CNN forward [+ backward] + CAMs traced once (make_fx) -> a GraphModule
    graph           ExplainGraph: the traced maps + cumulative maps + generator, plain torch ops
    onnx            export_explainer / export_generator: self-describing .onnx files
The ONNX Runtime backend that runs them is ``fastinterp.runtime.onnx_backend`` (no torch needed).

Names are imported on first use: ``export.format`` is read by the torch-free ONNX Runtime backend.
"""

import importlib

_NAMES = {"DECOMPOSITIONS": "fastinterp.export.decompositions", "UnsupportedOpError": "fastinterp.export.decompositions",
          "export_explainer": "fastinterp.export.onnx", "export_generator": "fastinterp.export.onnx",
          "trace_layer_maps": "fastinterp.export.trace", "ExplainGraph": "fastinterp.export.graph"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'fastinterp.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
