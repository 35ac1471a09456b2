"""ONNX files: the whole explain pipeline (``export_explainer``) or the generator alone
(``export_generator``), each one self-describing ``.onnx`` file.

The explainer file: inputs ``images`` (B, C, H, W) float32 and ``targets`` (B,) int64 (-1: the
predicted class); outputs ``logits`` (B, classes), ``chosen_targets`` (B,), ``maps`` (B, H, W) float32 in
[0, 1], ``cgm`` (B, K, S, S). Its ``metadata_props`` (all strings; ``METADATA_KEYS``) carry what
``fastinterp.load_onnx`` needs and what a reader wants to know, as Ultralytics' exports do:
format and format version, fastinterp version, the representation (kind, k, size, method, order,
teacher, skip_1x1, image_resize), the input size (null where dynamic), the number of classes and
their names when known, the value range the CNN expects, and the sha256 of the CNN's and the
generator's weights.

Exporting runs ``torch.onnx.export(dynamo=True)`` on :class:`fastinterp.export.graph.ExplainGraph`
(the traced layer maps + the rest of the pipeline) and checks the file with ``onnx.checker``
(full check). The file holds its weights inline; external data only beyond 2 GB (protobuf's
limit).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastinterp._core.extras import require
from fastinterp._core.io import output_path
from fastinterp._core.hashing import weights_sha256
from fastinterp._version import __version__
from fastinterp.export.format import EXPLAINER_INPUTS, EXPLAINER_OUTPUTS, FORMAT_VERSION, METADATA_KEYS
from fastinterp.export.graph import build_explain_graph
from fastinterp.export.metadata import explainer_metadata
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE

__all__ = ["DEFAULT_OPSET", "FORMAT_VERSION", "METADATA_KEYS", "export_explainer", "export_generator"]

DEFAULT_OPSET = 18  # the first with Resize(antialias=1)
_INLINE_LIMIT = 2_000_000_000  # bytes of weights beyond which the file uses external data


def _check_opset(opset: object) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset: expected an int >= {DEFAULT_OPSET} (antialiased Resize), got {opset!r}")
    return opset


def _require_exporter() -> None:
    """onnx and onnxscript (torch.onnx's dynamo exporter needs both), or an error naming the extra."""
    for module in ("onnx", "onnxscript"):
        require(module, "onnx", "exporting to ONNX runs torch.onnx.export")


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple, opset: int, metadata: dict[str, str], fp16: bool) -> Path:
    """torch.onnx.export (dynamo), metadata, save, fp16 conversion, full onnx.checker check."""
    import onnx

    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation and naming notices
        program = torch.onnx.export(module, args, None, dynamo=True, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=opset,
                                    verbose=False)
    program.model.metadata_props.update(metadata)
    external = size > _INLINE_LIMIT
    program.save(str(path), external_data=external)
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        import onnx_ir
        from onnx_ir.passes.common import TopologicalSortPass

        model = onnx.load(str(path))
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                         op_block_list=["Resize", "ReduceMin", "ReduceMax", "ArgMax", "ScatterElements"])
        del model.graph.value_info[:]  # the converter leaves stale float32 shape annotations
        ir_model = onnx_ir.from_proto(model)  # it also appends its input casts last: sort the nodes
        TopologicalSortPass()(ir_model)
        onnx.save(onnx_ir.to_proto(ir_model), str(path), save_as_external_data=external)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_generator(generator: nn.Module, path: str | Path, *, opset: int | None = None,
                     fp16: bool = False) -> Path:
    """The generator alone as ONNX: inputs ``image`` (B, 3, S, S), ``cgm`` (B, K, S, S) float32,
    output ``map`` (B, 1, S, S); the batch size is dynamic. Metadata as the explainer file's
    (format "generator")."""
    _require_exporter()
    config = getattr(generator, "config", None)
    if not isinstance(generator, nn.Module) or not isinstance(config, dict) or not {"k", "size"} <= set(config):
        raise TypeError("generator: expected a generator from fastinterp.load_generator / build_generator, got "
                        f"{type(generator).__name__}")
    path, opset = output_path(path, ".onnx"), _check_opset(opset)
    module = copy.deepcopy(generator).cpu().float().eval().requires_grad_(False)
    k, size = config["k"], config["size"]
    example = (torch.rand(2, 3, size, size), torch.rand(2, k, size, size))
    batch = torch.export.Dim("batch", min=1, max=65536)
    meta = getattr(generator, "fastinterp_metadata", None) or {}
    rep = dict(meta.get("representation") or {"k": k, "size": size})
    metadata = {
        "fastinterp.format": "generator", "fastinterp.format_version": str(FORMAT_VERSION),
        "fastinterp.version": __version__, "fastinterp.representation": json.dumps(rep, sort_keys=True),
        "fastinterp.generator": json.dumps(config, sort_keys=True),
        "fastinterp.generator_sha256": weights_sha256(module),
    }
    with torch.inference_mode(False):
        return _export(module, example, path, ["image", "cgm"], ["map"], ({0: batch}, {0: batch}), opset, metadata,
                       fp16)


def export_explainer(cnn: nn.Module, generator: nn.Module, representation: Mapping[str, Any], path: str | Path, *,
                     input_size: int | tuple[int, int], image_resize: str = DEFAULT_IMAGE_RESIZE,
                     teacher: str | None = None, dynamic_batch: bool = True, dynamic_size: bool = False,
                     opset: int | None = None, fp16: bool = False, class_names: Sequence[str] | None = None,
                     value_range: str | None = None) -> Path:
    """The whole explain pipeline of ``cnn`` + ``generator`` as one ONNX file (what
    ``Explainer.export_onnx`` writes; see there for the file). Neither module is modified: the
    export runs on CPU float32 copies.

    Args:
        representation: every field of ``maps.options.FIELDS`` (an explainer's ``representation``).
        input_size: (H, W) or int of the exported images (the traced size; fixed unless
            ``dynamic_size``).
        image_resize: how images are resized to the generator's size (``maps.resize``).
        teacher: what the generator was taught, recorded (default: the representation's teacher).
        the rest: as ``Explainer.export_onnx``.
    """
    _require_exporter()
    for name, flag in (("dynamic_batch", dynamic_batch), ("dynamic_size", dynamic_size), ("fp16", fp16)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    path, opset = output_path(path, ".onnx"), _check_opset(opset)
    if class_names is not None and (isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names)):
        raise TypeError(f"class_names: expected a list of str, got {class_names!r}")
    if value_range is not None and not isinstance(value_range, str):
        raise TypeError(f"value_range: expected a str describing the CNN's input values, got {value_range!r}")
    with torch.inference_mode(False):
        built = build_explain_graph(cnn, generator, representation, input_size, dynamic_size=dynamic_size)
        metadata = explainer_metadata(built, image_resize=image_resize, teacher=teacher, dynamic_batch=dynamic_batch,
                                      dynamic_size=dynamic_size, class_names=class_names, value_range=value_range,
                                      cnn_name=type(cnn).__name__)
        dims: dict[int, object] = {}
        if dynamic_batch:
            dims[0] = torch.export.Dim("batch", min=1, max=65536)
        if dynamic_size:
            dims[2], dims[3] = torch.export.Dim("height", min=8, max=8192), torch.export.Dim("width", min=8, max=8192)
        return _export(built.module, built.example_inputs(), path, list(EXPLAINER_INPUTS), list(EXPLAINER_OUTPUTS),
                       (dims, {0: dims[0]} if dynamic_batch else {}), opset, metadata, fp16)
