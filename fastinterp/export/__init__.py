"""Export: the explain pipeline as one graph and as ONNX files.

    decompositions  backward ops -> forward ops (what makes the activation-only backward exportable)
    trace           CNN forward [+ backward] + CAMs traced once (make_fx) -> a GraphModule
    graph           ExplainGraph: the traced maps + cumulative maps + generator, plain torch ops
    onnx            export_explainer / export_generator: self-describing .onnx files
The ONNX Runtime backend that runs them is ``fastinterp.runtime.onnx_backend`` (no torch needed).
"""

from fastinterp.export.decompositions import DECOMPOSITIONS, UnsupportedOpError
from fastinterp.export.onnx import export_explainer, export_generator
from fastinterp.export.trace import trace_layer_maps

__all__ = ["DECOMPOSITIONS", "UnsupportedOpError", "export_explainer", "export_generator", "trace_layer_maps"]
