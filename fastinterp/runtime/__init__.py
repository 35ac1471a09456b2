"""Where a map is served: ``compile(cnn, generator)`` -> ``Explainer.explain(images)`` ->
``Explanation`` (logits, targets, maps; overlays and PNG grids); ``load_onnx(path)`` -> the same
API on ONNX Runtime (``onnx_backend``: needs onnxruntime and numpy, not torch).

    compiler     compile(): the generator, its representation, device, dtype, a probe run
    explainer    Explainer: explain / profile / generate / export_onnx
    inputs       what explain takes (tensors, arrays, uint8, channels last, PIL, files, lists)
    explanation  Explanation: what explain returns, overlays and PNG grids
    files        explain_files: folders of photos -> overlay PNGs, .npy maps, predictions.json
    inductor     compile(..., backend="inductor"): the traced graph compiled by TorchInductor
    exported     what the explainers of exported files share (metadata, input checks, the API)
    onnx_backend load_onnx -> OnnxExplainer (onnxruntime + numpy only)
    onnx_cache   compile(..., backend="onnxruntime"): export once, cached by content
    pt2_backend  load_pt2 -> Pt2Explainer (an AOTInductor package: torch, no model code, no compile)
    bench        what explain costs beside the plain forward (``fastinterp-bench``)

Names are imported on first use, so that the ONNX Runtime backend imports without torch.
"""

from fastinterp._core.lazy import lazy_names

_NAMES = {"Explainer": "fastinterp.runtime.explainer", "compile": "fastinterp.runtime.compiler",
          "Explanation": "fastinterp.runtime.explanation", "OnnxExplainer": "fastinterp.runtime.onnx_backend",
          "load_onnx": "fastinterp.runtime.onnx_backend",
          "Pt2Explainer": "fastinterp.runtime.pt2_backend", "load_pt2": "fastinterp.runtime.pt2_backend",
          "InductorExplainer": "fastinterp.runtime.inductor", "explain_files": "fastinterp.runtime.files"}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = lazy_names(__name__, _NAMES)
