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

from fastinterp import pretrained
from fastinterp._core.hashing import weights_sha256
from fastinterp._core.validation import check_model, check_size, first_conv, stem_weight
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.options import (ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION, FIELDS, KINDS,
                                     check_representation, representation_options)
from fastinterp.maps.preprocess import check_preprocess, parse_normalize, preprocess_of, with_preprocess
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE, image_resize_of
from fastinterp.runtime.explainer import Explainer
from fastinterp.runtime.inductor import inductor_explainer
from fastinterp.runtime.onnx_cache import onnxruntime_explainer

__all__ = ["DomainWarning", "compile", "domain_warning"]


class DomainWarning(UserWarning):
    """``compile``: the CNN is none of those the generator was trained on (filter it by this class
    where that is intended: cost measurements, held-out evaluations)."""

_AUTOCAST = (torch.float16, torch.bfloat16)
_BACKENDS = ("auto", "torch", "cpp", "triton", "inductor", "onnxruntime")
GENERATOR_IMAGE_CHANNELS = 3  # every generator of fastinterp.generator.networks takes RGB images


def _resolve_generator(generator: object) -> tuple[nn.Module, dict | None]:
    if isinstance(generator, (str, Path)):
        generator = pretrained.generator_path(generator)
        if not generator.is_file():
            raise FileNotFoundError(f"generator: no checkpoint file at {generator} (and not a shipped generator: "
                                    f"'demo' or one of {sorted(pretrained.names('generator'))})")
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
    elif representation is None:
        raise ValueError("representation: the generator module carries no metadata, so the representation it was "
                         "trained on is unknown; pass representation='gradient' or 'activation' (or a dict of "
                         "fields), or the checkpoint path (train_generator records it)")
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


def fit_command(cnn: nn.Module) -> str:
    """The ``fastinterp fit`` command that makes a generator for ``cnn`` (README: "Your own model")."""
    return (f"fastinterp fit --cnn <{type(cnn).__name__} as torchvision:NAME or file.py:factory> --weights <state dict> "
            "--images <folder of your images> --normalize <imagenet|none> --out <folder>")


def domain_warning(cnn: nn.Module, metadata: dict | None) -> str | None:
    """A warning when ``cnn`` is none of the CNNs a generator was trained on (by weight hash), naming
    what it was trained on and the command that makes a generator for this CNN; None otherwise
    (or when the metadata records no CNNs: nothing to compare)."""
    cnns = (metadata or {}).get("cnns") or []
    if not cnns:
        return None
    digest = weights_sha256(cnn)
    if any(entry.get("weights_sha256") == digest for entry in cnns):
        return None
    arch = getattr(cnn, "arch", None)
    same_arch = any(entry.get("class") == type(cnn).__name__ and entry.get("arch") == arch for entry in cnns)
    names = sorted({entry.get("arch") or entry.get("class") or entry.get("id") for entry in cnns})
    data = metadata.get("dataset_config")
    parts = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    parts = [p.get("dataset", p) for p in parts if isinstance(p, dict)]
    seen = sorted({p.get("name") or Path(str(p.get("root", "?"))).name for p in parts if isinstance(p, dict)})
    size = (metadata.get("representation") or {}).get("size")
    inputs = sorted({str(p.get("size")) for p in parts if isinstance(p, dict) and p.get("size") is not None})
    return (f"compile: this generator was trained for other CNNs ({len(cnns)}: {', '.join(map(str, names[:6]))}"
            f"{', ...' if len(names) > 6 else ''}) on {', '.join(seen) or 'unrecorded data'}"
            f"{f' at {inputs[0]} px' if len(inputs) == 1 else ''} (maps {size}x{size}); "
            f"{'this ' + type(cnn).__name__ + ' has the same architecture but other weights' if same_arch else type(cnn).__name__ + ' is not among them'}"
            f", so its maps may not follow this CNN's own. Make a generator for it: {fit_command(cnn)}")


def _resolve_preprocess(preprocess: object, metadata: dict | None) -> dict | None:
    """compile's ``preprocess`` (None: the generator's recorded one) -> the checked dict or None."""
    recorded = preprocess_of(metadata)
    if preprocess is None:
        return recorded
    if isinstance(preprocess, str):
        if preprocess not in ("imagenet", "none"):
            raise ValueError(f"preprocess: expected None, 'imagenet', 'none' or {{'normalize': {{'mean': [...], "
                             f"'std': [...]}}}}, got {preprocess!r}")
        chosen = parse_normalize(preprocess, "preprocess")
    else:
        chosen = check_preprocess(preprocess)
    if metadata is not None and chosen != recorded:
        warnings.warn(f"preprocess: the generator was trained on maps of the CNN given {recorded or 'no preprocessing'}"
                      f"; explaining with {chosen or 'none'} changes what the CNN sees", stacklevel=3)
    return chosen


def _resolve_class_names(class_names: object, metadata: dict | None, cnn: nn.Module) -> tuple[str, ...] | None:
    """compile's ``class_names``, else the generator's recorded ``classes``, else the CNN's own
    ``class_names`` (zoo CNNs). Their count is checked against the probe run's logits."""
    if class_names is None:
        recorded = (metadata or {}).get("classes")
        if isinstance(recorded, list) and recorded:
            return tuple(map(str, recorded))
        own = getattr(cnn, "class_names", None)  # a zoo CNN's, from its checkpoint
        return tuple(own) if isinstance(own, tuple) and all(isinstance(n, str) for n in own) else None
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence) or not all(
            isinstance(name, str) for name in class_names):
        raise TypeError(f"class_names: expected a sequence of str (one per class), got {class_names!r}")
    return tuple(class_names)


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
    preprocess: str | dict | None = None,
    class_names: Sequence[str] | None = None,
) -> Explainer:
    """An :class:`Explainer` running ``cnn`` and ``generator`` as one pipeline.

    Args:
        cnn: eager ``nn.Module`` returning logits (B, classes); never modified (see the module doc).
        generator: a module from ``fastinterp.load_generator`` / ``build_generator``, a generator
            checkpoint path, or a shipped generator's name ("demo" or one of
            ``fastinterp.pretrained.names("generator")``). The representation recorded in its metadata
            (kind, k, size, method, order, teacher, skip_1x1) is used, and its ``preprocess`` (e.g.
            ImageNet normalisation, from ``fastinterp fit --normalize``) is applied to the images
            before the CNN, so ``explain()`` takes [0, 1] images. A module without metadata needs
            ``representation=``. When ``cnn`` is none of the CNNs the generator was trained on
            (weight hash), a warning names what it was trained on and the ``fastinterp fit``
            command that makes one for this CNN.
        device: where to explain (default: the CNN's device). A CNN elsewhere is copied there
            (the user's module stays where it is). The generator is always copied (a snapshot:
            later changes to the module passed in are not seen), on the CPU in channels_last.
        dtype: None (the CNN's own dtype) or torch.float16 / torch.bfloat16: run under autocast;
            maps and logits still come back float32.
        representation: override: "gradient" / "activation" or a dict of fields. A k or size the
            generator cannot take raises; any other change from what it was trained on warns.
        batch_sizes: batch sizes to run once now (warm-up of allocators and kernel caches; with
            ``backend="inductor"``, compiling for them now), so the first real call is not slower.
        input_size: (H, W) or int of the probe run at compile time (default: the input size the
            generator's metadata records (``fastinterp fit``), else the CNN's ``input_size``
            attribute, as zoo CNNs have, else 224). The probe checks what can only be
            checked by running: enough conv layers for k, a poolable head for the activation kind.
        backend: "auto" (C++ on CPU, Triton on CUDA), "torch", "cpp", "triton": the eager
            pipeline with that ``fastinterp.ops.cumulative_average`` backend; "inductor": the
            pipeline traced into one graph (the one the ONNX export writes) and compiled by
            TorchInductor (``runtime.inductor``: traced now, compiled on the first call of each
            shape or now for ``batch_sizes``; float32; an untraceable CNN falls back to the eager
            backend with a warning); or "onnxruntime":
            the whole pipeline exported once to one ONNX file (cached under
            ``~/.cache/fastinterp/onnx``, keyed by the weights, representation and input size) and
            run by ONNX Runtime (``fastinterp.load_onnx``; returns an ``OnnxExplainer``, CPU
            float32, images at ``input_size``, any batch).
        preprocess: what the CNN expects of [0, 1] images, applied inside explain(): None (the
            generator's recorded ``preprocess``; none recorded: the images go to the CNN as they
            are), "imagenet", "none", or {"normalize": {"mean": [3], "std": [3]}}. A choice other
            than the recorded one warns (the generator was trained on the CNN's maps of the
            recorded input).
        class_names: the CNN's class names (default: the generator's metadata ``classes``, else the
            CNN's ``class_names`` attribute: zoo CNNs have it), shown by ``Explanation`` (repr, ``top_k``, ``save`` titles).
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
    warning = domain_warning(cnn, metadata)
    if warning is not None:
        warnings.warn(warning, DomainWarning, stacklevel=2)
    cnn = _device_copy(cnn, target)
    preprocess = _resolve_preprocess(preprocess, metadata)
    class_names_given = class_names is not None
    class_names = _resolve_class_names(class_names, metadata, cnn)
    if preprocess is not None:  # the CNN explains the input it expects; explain() takes [0, 1] images
        cnn = with_preprocess(cnn, preprocess)  # its normalisation on the CNN's device, in its dtype
    module = _generator_copy(module, target)
    # the eager explainer that the export / the compiled graph is made from
    ops_backend = "auto" if backend in ("onnxruntime", "inductor") else backend
    recorded_size = (metadata or {}).get("input_size")  # a generator made by `fastinterp fit` records it
    size = next(v for v in (input_size, recorded_size, getattr(cnn, "input_size", None), 224) if v is not None)
    size = check_size(tuple(size) if isinstance(size, list) else size, "input_size")
    explainer = Explainer(cnn, module, options, image_resize, target, dtype, ops_backend, metadata, size, class_names)
    probe = torch.rand(1, stem.in_channels, *size, dtype=weight.dtype, device=target,
                       generator=torch.Generator(device=target).manual_seed(0))
    try:
        explainer.num_classes = int(explainer.explain(probe).logits.shape[1])
    except ValueError as error:
        side = (f"the generator was trained on the {options['kind']} representation (k={options['k']})"
                if metadata is not None else f"the generator takes k={options['k']} cumulative maps")
        raise ValueError(f"compile: {side}, and {type(cnn).__name__} cannot give it: {error}") from error
    except (RuntimeError, TypeError) as error:
        raise RuntimeError(f"compile: the probe run of {type(cnn).__name__} on a (1, {stem.in_channels}, {size[0]}, "
                           f"{size[1]}) input failed ({error}); pass input_size= the size the CNN takes") from error
    names = explainer.class_names
    if names is not None and len(names) != explainer.num_classes:
        if class_names_given:
            raise ValueError(f"class_names: {len(names)} names, but {type(cnn).__name__} returns "
                             f"{explainer.num_classes} logits")
        explainer.class_names = None  # recorded for another CNN (the generator's or a checkpoint's): not this one's
    if batch_sizes is not None:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes: expected a list of ints >= 1, got {batch_sizes!r}")
    if backend == "onnxruntime":
        return onnxruntime_explainer(explainer, batch_sizes)
    if backend == "inductor":
        explainer = inductor_explainer(explainer)
    if batch_sizes is not None:
        for b in batch_sizes:
            explainer.explain(probe.expand(b, *probe.shape[1:]).contiguous())
    return explainer
