"""fastinterp: fast explanations of CNN image classifiers (arXiv 2301.08067, made fast).

Dataflow, one module per step:
    layers (which convs run) -> eval_view + capture (1 forward + 1 backward, model untouched)
    -> cams (per-layer formula) -> representation (maps, cumulative maps, teacher)
    -> ops (cumulative_average kernels); resize (images to the generator's resolution)
    forward_only (the activation representation: no backward)
    runtime (compile(cnn, generator) -> Explainer.explain: serving; load_onnx: ONNX Runtime)
    export (the pipeline traced into one graph -> one .onnx file)

Names are imported on first use: ``fastinterp.load_onnx`` needs only onnxruntime and numpy, so
``import fastinterp`` does not import torch.
"""

import importlib

from fastinterp._version import __version__

_NAMES = {
    "ops": None,
    "load_generator": "fastinterp.generator.checkpoint",
    "conv_layers": "fastinterp.maps.layers",
    **dict.fromkeys(["DEFAULT_REPRESENTATION", "PAPER_PRESET", "LayerMaps", "Representation", "cnn_representation",
                     "gradcam", "layer_maps", "layer_maps_reference", "paper_positions", "representation_options"],
                    "fastinterp.maps.representation"),
    "image_resize_of": "fastinterp.maps.resize",
    "resize_images": "fastinterp.maps.resize",
    "Explainer": "fastinterp.runtime.explainer",
    "compile": "fastinterp.runtime.explainer",
    "Explanation": "fastinterp.runtime.explanation",
    "OnnxExplainer": "fastinterp.runtime.onnx_backend",
    "load_onnx": "fastinterp.runtime.onnx_backend",
    "export_onnx": "fastinterp.export.onnx",
}
_RENAMED = {"export_onnx": "export_generator"}

__all__ = ["__version__", *_NAMES]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'fastinterp' has no attribute {name!r}")
    if _NAMES[name] is None:
        return importlib.import_module(f"fastinterp.{name}")
    value = getattr(importlib.import_module(_NAMES[name]), _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
