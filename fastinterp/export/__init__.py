"""Where a map is exported: the explain pipeline as one graph and as ONNX files.

    format          the file contract (inputs, outputs, metadata keys, version): no torch needed
    decompositions  backward ops -> forward ops (what makes the activation-only backward exportable)
    trace           CNN forward [+ backward] + CAMs traced once (make_fx) -> a GraphModule
    graph           ExplainGraph: the traced maps + cumulative maps + generator, plain torch ops
    metadata        what an exported file says about itself (the fastinterp.* entries)
    onnx            export_explainer / export_generator: self-describing .onnx files
    pt2             export_pt2: the graph compiled ahead of time by AOTInductor into one .pt2 package
The backends that run them are ``fastinterp.runtime.onnx_backend`` (no torch needed) and
``fastinterp.runtime.pt2_backend``.

Names are imported on first use: ``export.format`` is read by the torch-free ONNX Runtime backend.
"""

from fastinterp._core.lazy import lazy_names

_NAMES = {"DECOMPOSITIONS": "fastinterp.export.decompositions", "UnsupportedOpError": "fastinterp.export.decompositions",
          "export_explainer": "fastinterp.export.onnx", "export_generator": "fastinterp.export.onnx",
          "trace_layer_maps": "fastinterp.export.trace", "ExplainGraph": "fastinterp.export.graph",
          "build_explain_graph": "fastinterp.export.graph", "export_pt2": "fastinterp.export.pt2"}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names(__name__, _NAMES)
