"""``fastinterp.compile(cnn, generator)``: an :class:`~fastinterp.runtime.explainer.Explainer` (or,
with ``backend="onnxruntime"``, the same pipeline exported once and run by ONNX Runtime).

What compile settles once, so that ``explain`` need not: the generator (a module or a checkpoint,
copied), the representation it was trained on (its metadata, or an override, checked by
``maps.options.check_representation``), the device and dtype, and a probe run that checks what
only running can (enough conv layers for k, a poolable head for the activation kind).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fastinterp._core.validation import check_model, check_size, first_conv, stem_weight
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.options import (ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION, FIELDS, KINDS,
                                     check_representation, representation_options)
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE, image_resize_of
from fastinterp.runtime.explainer import Explainer
from fastinterp.runtime.onnx_cache import onnxruntime_explainer

__all__ = ["compile"]

_AUTOCAST = (torch.float16, torch.bfloat16)
_BACKENDS = ("auto", "torch", "cpp", "triton", "onnxruntime")
GENERATOR_IMAGE_CHANNELS = 3  # every generator of fastinterp.generator.networks takes RGB images


def _resolve_generator(generator: object) -> tuple[nn.Module, dict | None]:
    if isinstance(generator, (str, Path)):
        if not Path(generator).is_file():
            raise FileNotFoundError(f"generator: no checkpoint file at {generator}")
        module, metadata = load_generator(generator)
        return module, metadata
    config = getattr(generator, "config", None)
    if not isinstance(generator, nn.Module) or not isinstance(config, dict) or not {"k", "size"} <= set(config):
        raise TypeError("generator: expected a generator from fastinterp.load_generator / build_generator or the path "
                        f"of a generator checkpoint, got {type(generator).__name__}")
    return generator, getattr(generator, "fastinterp_metadata", None)


def _resolve_options(generator: nn.Module, metadata: dict | None, representation: object) -> dict:
    """The representation to explain with: the generator's (metadata), or the demo's default at
    the generator's k and size; then ``representation`` (a kind or a dict of fields) on top."""
    config = generator.config
    if metadata is not None:
        trained = representation_options(metadata)
    else:
        trained = {**DEFAULT_REPRESENTATION, "k": config["k"], "size": config["size"]}
    options = dict(trained)
    if representation is None:
        pass
    elif isinstance(representation, str):
        if representation not in KINDS:
            raise ValueError(f"representation: expected one of {KINDS} or a dict of fields, got {representation!r}")
        if representation != options["kind"]:
            base = ACTIVATION_REPRESENTATION if representation == "activation" else DEFAULT_REPRESENTATION
            options.update({key: base[key] for key in ("kind", "order")})
    elif isinstance(representation, dict):
        unknown = sorted(set(representation) - set(FIELDS))
        if unknown:
            raise ValueError(f"representation: unknown field(s) {unknown}; expected some of {list(FIELDS)}")
        if representation.get("kind", options["kind"]) != options["kind"] and "order" not in representation:
            options["order"] = None  # a new kind without an order: that kind's default order
        options.update(representation)
    else:
        raise TypeError(f"representation: expected None, a kind {KINDS} or a dict, got {type(representation).__name__}")
    options = check_representation(options, argument="representation")
    for key in ("k", "size"):
        if options[key] != config[key]:
            raise ValueError(f"representation: {key}={options[key]!r}, but the generator takes {key}={config[key]} "
                             f"({'cumulative maps' if key == 'k' else 'pixels per side'})")
    if metadata is not None:
        changed = [key for key in FIELDS if options[key] != trained[key]]
        if changed:
            warnings.warn(f"the generator was trained on {', '.join(f'{k}={trained[k]!r}' for k in changed)}; "
                          f"explaining with {', '.join(f'{k}={options[k]!r}' for k in changed)} feeds it inputs it has "
                          "not seen", stacklevel=3)
    return options


def _normalise_device(device: torch.device) -> torch.device:
    """"cuda" -> "cuda:<current device>", so that it compares equal to the devices tensors report."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _device_copy(module: nn.Module, device: torch.device) -> nn.Module:
    weight = next(iter(module.parameters()), None)
    if weight is None or weight.device == device:
        return module
    # a copy, so that the user's module stays where it is
    return copy.deepcopy(module).to(device)


def _generator_copy(generator: nn.Module, device: torch.device) -> nn.Module:
    """The explainer's own copy of the generator (0.2-1.5 M parameters), on ``device``, in eval mode
    and without ``requires_grad`` (never changed after compile, so threads can share it); on the CPU
    in channels_last memory format: the fast generator runs 22% faster so at batch 4, 64x64, one
    thread (33.3 -> 26.0 ms; outputs equal to 1e-6; benchmarks/NOTES.md)."""
    generator = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
    if device.type == "cpu":
        generator = generator.to(memory_format=torch.channels_last)
    return generator


def compile(
    cnn: nn.Module,
    generator: nn.Module | str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    representation: str | dict | None = None,
    batch_sizes: Sequence[int] | None = None,
    input_size: int | tuple[int, int] | None = None,
    backend: str = "auto",
) -> Explainer:
    """An :class:`Explainer` running ``cnn`` and ``generator`` as one pipeline.

    Args:
        cnn: eager ``nn.Module`` returning logits (B, classes); never modified (see the module doc).
        generator: a module from ``fastinterp.load_generator`` / ``build_generator``, or a generator
            checkpoint path. The representation recorded in its metadata (kind, k, size, method,
            order, teacher, skip_1x1) is used; a module without metadata gets the shipped demo's
            (``DEFAULT_REPRESENTATION``) at its own k and size.
        device: where to explain (default: the CNN's device). A CNN elsewhere is copied there
            (the user's module stays where it is). The generator is always copied (a snapshot:
            later changes to the module passed in are not seen), on the CPU in channels_last.
        dtype: None (the CNN's own dtype) or torch.float16 / torch.bfloat16: run under autocast;
            maps and logits still come back float32.
        representation: override: "gradient" / "activation" or a dict of fields. A k or size the
            generator cannot take raises; any other change from what it was trained on warns.
        batch_sizes: batch sizes to run once now (warm-up of allocators and kernel caches), so the
            first real call is not slower.
        input_size: (H, W) or int of the probe run at compile time (default: the CNN's
            ``input_size`` attribute, as zoo CNNs have, else 224). The probe checks what can only be
            checked by running: enough conv layers for k, a poolable head for the activation kind.
        backend: "auto" (C++ on CPU, Triton on CUDA), "torch", "cpp", "triton": the eager
            pipeline with that ``fastinterp.ops.cumulative_average`` backend; or "onnxruntime":
            the whole pipeline exported once to one ONNX file (cached under
            ``~/.cache/fastinterp/onnx``, keyed by the weights, representation and input size) and
            run by ONNX Runtime (``fastinterp.load_onnx``; returns an ``OnnxExplainer``, CPU
            float32, images at ``input_size``, any batch).
    """
    check_model(cnn)
    if backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
    module, metadata = _resolve_generator(generator)
    options = _resolve_options(module, metadata, representation)
    if dtype is not None and dtype not in _AUTOCAST + (torch.float32,):
        raise ValueError(f"dtype: expected None, torch.float16, torch.bfloat16 or torch.float32, got {dtype!r}")
    dtype = None if dtype == torch.float32 else dtype
    image_resize = image_resize_of(metadata) if metadata is not None else DEFAULT_IMAGE_RESIZE
    weight = stem_weight(cnn)
    target = _normalise_device(weight.device if device is None else torch.device(device))
    stem = first_conv(cnn)
    if stem.in_channels != GENERATOR_IMAGE_CHANNELS:
        raise ValueError(f"cnn: takes {stem.in_channels}-channel images, but the generator takes "
                         f"{GENERATOR_IMAGE_CHANNELS}-channel images; explain a 3-channel CNN")
    cnn = _device_copy(cnn, target)
    module = _generator_copy(module, target)
    ops_backend = "auto" if backend == "onnxruntime" else backend  # the eager explainer the export is made from
    size = input_size if input_size is not None else getattr(cnn, "input_size", None) or 224
    size = check_size(size, "input_size")
    explainer = Explainer(cnn, module, options, image_resize, target, dtype, ops_backend, metadata, size)
    probe = torch.rand(1, stem.in_channels, *size, dtype=weight.dtype, device=target,
                       generator=torch.Generator(device=target).manual_seed(0))
    try:
        explainer.explain(probe)
    except ValueError as error:
        side = (f"the generator was trained on the {options['kind']} representation (k={options['k']})"
                if metadata is not None else f"the generator takes k={options['k']} cumulative maps")
        raise ValueError(f"compile: {side}, and {type(cnn).__name__} cannot give it: {error}") from error
    except (RuntimeError, TypeError) as error:
        raise RuntimeError(f"compile: the probe run of {type(cnn).__name__} on a (1, {stem.in_channels}, {size[0]}, "
                           f"{size[1]}) input failed ({error}); pass input_size= the size the CNN takes") from error
    if batch_sizes is not None:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes: expected a list of ints >= 1, got {batch_sizes!r}")
    if backend == "onnxruntime":
        return onnxruntime_explainer(explainer, batch_sizes)
    if batch_sizes is not None:
        for b in batch_sizes:
            explainer.explain(probe.expand(b, *probe.shape[1:]).contiguous())
    return explainer
