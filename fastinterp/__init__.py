"""fastinterp: fast explanations of CNN image classifiers (arXiv 2301.08067, made fast).

The folders follow the dataflow: where a map is made, learned, served, exported and judged.
    maps        CNN -> per-layer CAMs (one forward + one backward, or forward only) -> CGMs + teacher
    ops         the map arithmetic's fused kernels (C++ on the CPU, Triton on CUDA) + references
    baselines   whole-model methods to compare with: Grad-CAM family, Score-CAM, RISE
    datasets    images with masks, the CNN zoo, sharded (image, CGMs, teacher) training sets
    generator   the explanation generators, their checkpoints, pix2pix training
    runtime     compile(cnn, generator) -> Explainer.explain (eager or TorchInductor); load_onnx (ONNX
                Runtime, no torch); load_pt2 (AOTInductor packages)
    export      the pipeline traced into one graph -> one self-describing .onnx file or .pt2 package
    metrics     how good a map is: fidelity, faithfulness, localisation
    evaluation  every method x every metric -> one report
    cli         the command line (``fastinterp``, ``fastinterp-bench``)
    pretrained  the shipped checkpoints and their registry

Names are imported on first use: ``fastinterp.load_onnx`` needs only onnxruntime and numpy, so
``import fastinterp`` does not import torch.
"""

import importlib
import warnings

from fastinterp._version import __version__

_PACKAGES = ("baselines", "datasets", "evaluation", "export", "fitting", "generator", "maps", "metrics", "ops",
             "pretrained", "runtime")
_NAMES = {
    **dict.fromkeys(_PACKAGES),
    "load_generator": "fastinterp.generator.checkpoint",
    "fit": "fastinterp.fitting.pipeline",
    "load_cnn": "fastinterp.fitting.cnn",
    "build_dataset": "fastinterp.datasets.build",
    "train_generator": "fastinterp.generator.training",
    "conv_layers": "fastinterp.maps.layers",
    **dict.fromkeys(["ACTIVATION_REPRESENTATION", "DEFAULT_REPRESENTATION", "PAPER_PRESET", "representation_options"],
                    "fastinterp.maps.options"),
    **dict.fromkeys(["LayerMaps", "Representation", "cnn_representation", "gradcam", "layer_maps",
                     "layer_maps_reference", "paper_positions"], "fastinterp.maps.representation"),
    "image_resize_of": "fastinterp.maps.resize",
    "resize_images": "fastinterp.maps.resize",
    "Explainer": "fastinterp.runtime.explainer",
    "compile": "fastinterp.runtime.compiler",
    "Explanation": "fastinterp.runtime.explanation",
    "OnnxExplainer": "fastinterp.runtime.onnx_backend",
    "load_onnx": "fastinterp.runtime.onnx_backend",
    "Pt2Explainer": "fastinterp.runtime.pt2_backend",
    "load_pt2": "fastinterp.runtime.pt2_backend",
    "export_generator": "fastinterp.export.onnx",
}
# old name -> new name: still answered, with a DeprecationWarning
_DEPRECATED = {"export_onnx": "export_generator"}

__all__ = ["__version__", *_NAMES]


def __getattr__(name: str):
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"fastinterp.{name} is fastinterp.{new} (the generator alone; Explainer.export_onnx writes the "
                      f"whole pipeline); {name} will go", DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    if name not in _NAMES:
        raise AttributeError(f"module 'fastinterp' has no attribute {name!r}")
    if _NAMES[name] is None:
        return importlib.import_module(f"fastinterp.{name}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
