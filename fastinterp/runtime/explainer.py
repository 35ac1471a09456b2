"""The production runtime: ``fastinterp.compile(cnn, generator)`` -> an :class:`Explainer` whose
``explain(images)`` returns the CNN's logits and the generator's explanation maps in one call.

    images (B, C, H, W)
      -> representation   gradient kind: CNN forward + the activation-only backward (capture)
                          activation kind: CNN forward only, the head's CAM (forward_only)
      -> per-layer maps -> ops.cumulative_average (C++ on CPU, Triton on CUDA) -> CGMs (B, K, S, S)
      -> resize_images (the resize the generator's training images were made with)
      -> generator (inference mode) -> resize_maps back to (H, W) -> maps (B, H, W) in [0, 1]

Nothing of the user's CNN or generator is modified: every call runs them through an eval view
(``fastinterp.maps.eval_view``: per-call shallow copies of their module trees in eval mode, sharing
their tensors), and the hooks that capture layer outputs are registered on those copies only. So
the model's own calls return what they did, in the same time, while an explainer exists, and
nothing needs undoing at ``close()``. The runtime keeps no per-call state on the explainer, so
threads may share one. (The eager path runs hooks every call; tracing it once into one graph is
what the ONNX export will do.)
"""

from __future__ import annotations

import copy
import os
import time
import types
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastinterp.maps.capture import capture
from fastinterp.maps.forward_only import activation_layer_maps
from fastinterp.ops import cumulative_average
from fastinterp.maps.representation import (
    ACTIVATION_REPRESENTATION,
    DEFAULT_REPRESENTATION,
    KINDS,
    ORDERS,
    _check_method,
    _maps_from_capture,
    _skip_1x1,
    default_order,
    paper_positions,
    representation_options,
)
from fastinterp.maps.resize import (
    DEFAULT_IMAGE_RESIZE,
    image_resize_of,
    resize_images,
    resize_maps,
)
from fastinterp.runtime.explanation import Explanation
from fastinterp._core.validation import (
    check_model,
    check_size,
    first_conv,
    stem_weight,
)

__all__ = ["Explainer", "compile"]

_FIELDS = ("kind", "k", "size", "method", "order", "teacher", "skip_1x1")
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
_AUTOCAST = (torch.float16, torch.bfloat16)
GENERATOR_IMAGE_CHANNELS = 3  # every generator of fastinterp.generator.networks takes RGB images


def _resolve_generator(generator: object) -> tuple[nn.Module, dict | None]:
    if isinstance(generator, (str, Path)):
        from fastinterp.generator.checkpoint import load_generator

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
        unknown = sorted(set(representation) - set(_FIELDS))
        if unknown:
            raise ValueError(f"representation: unknown field(s) {unknown}; expected some of {list(_FIELDS)}")
        if representation.get("kind", options["kind"]) != options["kind"] and "order" not in representation:
            options["order"] = None  # a new kind without an order: that kind's default order
        options.update(representation)
    else:
        raise TypeError(f"representation: expected None, a kind {KINDS} or a dict, got {type(representation).__name__}")
    if options["kind"] not in KINDS:
        raise ValueError(f"representation: kind must be one of {KINDS}, got {options['kind']!r}")
    options["order"] = default_order(options["kind"]) if options["order"] is None else options["order"]
    if options["order"] not in ORDERS:
        raise ValueError(f"representation: order must be one of {ORDERS}, got {options['order']!r}")
    _check_method(options["method"])
    if not isinstance(options["skip_1x1"], bool):
        raise TypeError(f"representation: skip_1x1 must be True or False, got {options['skip_1x1']!r}")
    if not isinstance(options["teacher"], str) or not options["teacher"]:
        raise TypeError(f"representation: teacher must be 'last', 'first' or a module name, got {options['teacher']!r}")
    for key in ("k", "size"):
        if options[key] != config[key]:
            raise ValueError(f"representation: {key}={options[key]!r}, but the generator takes {key}={config[key]} "
                             f"({'cumulative maps' if key == 'k' else 'pixels per side'})")
    if metadata is not None:
        changed = [key for key in _FIELDS if options[key] != trained[key]]
        if changed:
            warnings.warn(f"the generator was trained on {', '.join(f'{k}={trained[k]!r}' for k in changed)}; "
                          f"explaining with {', '.join(f'{k}={options[k]!r}' for k in changed)} feeds it inputs it has "
                          "not seen", stacklevel=3)
    return options


class Explainer:
    """Explains a CNN's predictions with a trained generator; made by :func:`compile`.

    ``explain(images, targets=None, return_cgm=False)`` (also ``explainer(images)``), ``profile``,
    ``close()`` (or use it as a context manager). Attributes: ``representation`` (the options the
    CGMs are made with), ``image_resize``, ``device``, ``dtype`` (autocast dtype or None).
    """

    def __init__(self, cnn: nn.Module, generator: nn.Module, options: dict, image_resize: str,
                 device: torch.device, dtype: torch.dtype | None, backend: str, metadata: dict | None):
        self._cnn, self._generator = cnn, generator
        self._generator_dtype = stem_weight(generator).dtype  # our own copy: it never changes
        self.representation = types.MappingProxyType(dict(options))  # read-only: threads share it
        self.image_resize, self.device, self.dtype, self.backend = image_resize, device, dtype, backend
        self.metadata = metadata
        self.input_size: tuple[int, int] | None = None  # (H, W) of compile's probe run
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the models; ``explain`` raises afterwards. Nothing of them needs restoring (the
        explainer never modified them)."""
        self._closed = True
        self._cnn = self._generator = None

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        o = self.representation
        state = "closed" if self._closed else f"{type(self._cnn).__name__} + {type(self._generator).__name__}"
        return (f"Explainer({state}, {o['kind']} representation k={o['k']} size={o['size']} method={o['method']} "
                f"order={o['order']} teacher={o['teacher']}, imitates {self.teacher_method}, device={self.device}, "
                f"dtype={self.dtype})")

    @property
    def teacher_method(self) -> str:
        """The explanation the generator was trained to imitate ("gradcam", "score-cam", "rise"...):
        its checkpoint's ``teacher_method``, else the representation's method (checkpoints made
        before the option existed imitated that)."""
        recorded = (self.metadata or {}).get("teacher_method")
        return recorded if isinstance(recorded, str) else self.representation["method"]

    def export_onnx(self, path: str | Path, *, dynamic_batch: bool = True, dynamic_size: bool = False,
                    opset: int | None = None, fp16: bool = False, input_size: int | tuple[int, int] | None = None,
                    class_names: Sequence[str] | None = None, value_range: str | None = None) -> Path:
        """Write the whole pipeline (CNN forward, the activation-only backward for the gradient
        kind, CAMs, cumulative maps, generator, resizes) as ONE ONNX file; run it with
        ``fastinterp.load_onnx(path)`` (ONNX Runtime, no torch needed).

        Inputs ``images`` (B, C, H, W) float32, ``targets`` (B,) int64 (-1: predicted class);
        outputs ``logits``, ``chosen_targets``, ``maps`` (B, H, W) in [0, 1], ``cgm`` (B, K, S, S). The
        representation, input size, class names, value range and weight hashes go into its
        ``metadata_props`` (``fastinterp.export.onnx``). Needs ``pip install "fastinterp[onnx]"``.

        Args:
            dynamic_batch: any batch size (else the traced one, 2).
            dynamic_size: any H, W (else ``input_size``); CNNs whose ops fix the size refuse.
            opset: ONNX opset (default and minimum 18: antialiased Resize).
            fp16: store weights and compute in float16 (inputs and outputs stay float32), for GPU
                execution providers; ONNX Runtime's CPU provider runs it slowly.
            input_size: (H, W) or int (default: compile's ``input_size``).
            class_names: names of the CNN's classes, recorded in the metadata.
            value_range: how input values are expected (e.g. "RGB in [0, 1]"), recorded.
        """
        from fastinterp.export import export_explainer

        return export_explainer(self, path, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, opset=opset,
                                fp16=fp16, input_size=input_size,
                                class_names=None if class_names is None else list(class_names),
                                value_range=value_range)

    def _models(self) -> tuple[nn.Module, nn.Module]:
        cnn, generator = self._cnn, self._generator
        if self._closed or cnn is None:
            raise RuntimeError("explainer: it was closed; compile a new one with fastinterp.compile(cnn, generator)")
        return cnn, generator

    # ------------------------------------------------------------------ inputs
    def _images(self, images: object, cnn: nn.Module) -> tuple[torch.Tensor, bool]:
        weight = stem_weight(cnn)
        if isinstance(images, np.ndarray):
            expected = _NUMPY_DTYPES.get(weight.dtype)
            if expected is None:
                raise TypeError(f"images: numpy has no {weight.dtype} (the CNN's dtype); pass a torch tensor")
            if images.dtype != expected:
                raise TypeError(f"images: expected a numpy array of dtype {np.dtype(expected).name} (the CNN's "
                                f"{weight.dtype}), got {images.dtype}")
            tensor, as_numpy = torch.from_numpy(np.ascontiguousarray(images)).to(self.device), True
        elif isinstance(images, torch.Tensor):
            if images.device != self.device:
                raise ValueError(f"images: on {images.device}, but the explainer runs on {self.device}; move them "
                                 f"with .to({str(self.device)!r}) or compile with device={str(images.device)!r}")
            tensor, as_numpy = images, False
        else:
            raise TypeError(f"images: expected a float torch.Tensor or numpy array (B, C, H, W), got "
                            f"{type(images).__name__}")
        if tensor.dim() == 3:
            tensor = tensor[None]
        elif tensor.dim() != 4:
            raise ValueError(f"images: expected (B, C, H, W) or one image (C, H, W), got shape {tuple(tensor.shape)}")
        return tensor, as_numpy  # channels, dtype, finiteness, B >= 1: checked once, by the representation

    # ------------------------------------------------------------------ the pipeline
    def _targets(self, targets: object) -> object:
        if isinstance(targets, np.ndarray):
            if not np.issubdtype(targets.dtype, np.integer):
                raise TypeError(f"targets: expected class indices (an integer numpy array), got dtype {targets.dtype}")
            return torch.from_numpy(targets)
        if isinstance(targets, torch.Tensor) and targets.device != self.device:
            raise ValueError(f"targets: on {targets.device}, but the explainer runs on {self.device}")
        return targets

    def _run(self, images: object, targets: object, return_cgm: bool, mark: Callable[[str], None]) -> Explanation:
        # also inside the caller's torch.inference_mode() (serving code): the gradient kind needs
        # autograd, and the outputs are ordinary tensors either way
        with torch.inference_mode(False):
            return self._run_pipeline(images, targets, return_cgm, mark)

    def _run_pipeline(self, images: object, targets: object, return_cgm: bool,
                      mark: Callable[[str], None]) -> Explanation:
        cnn, generator = self._models()
        x, as_numpy = self._images(images, cnn)
        if x.is_inference():  # made under the caller's inference mode: autograd cannot use it
            x = x.clone()
        targets = self._targets(targets)
        o = self.representation
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with autocast:
            if o["kind"] == "gradient":
                cap = capture(cnn, x, targets=targets, on_stage=mark)
                maps, names = _maps_from_capture(cap, o["method"]), cap.layer_names
                logits, targets_out = cap.logits, cap.targets
            else:
                act = activation_layer_maps(cnn, x, targets)
                maps, names, logits, targets_out = act.maps, act.layer_names, act.logits, act.targets
                mark("forward")
            maps, names = _skip_1x1(maps, names, o["skip_1x1"])
            positions = _positions(len(maps), o["k"], cnn)
            if o["order"] == "last_to_first":
                maps = maps[::-1]
            with torch.no_grad():  # no_grad, not inference_mode: the outputs stay ordinary tensors
                cgm = cumulative_average(maps, o["size"], positions, backend=self.backend)
                mark("maps")
                explanation = self._generate(generator, x, cgm, mark)
        logits = logits.float() if logits.dtype in _AUTOCAST else logits
        result = Explanation(logits=logits, targets=targets_out, maps=explanation, cgm=cgm if return_cgm else None)
        if as_numpy:
            result = Explanation(*(None if v is None else v.detach().cpu().numpy()
                                   for v in (result.logits, result.targets, result.maps, result.cgm)))
        return result

    def explain(self, images: object, targets: object = None, *, return_cgm: bool = False) -> Explanation:
        """Explain a batch.

        Args:
            images: float tensor (on the explainer's device, the CNN's dtype) or numpy array (the
                CNN's dtype), (B, C, H, W) or one image (C, H, W), finite, in the value range the CNN
                expects (its own preprocessing).
            targets: None (each image's predicted class), an int, a sequence of ints, a (B,) int
                tensor or numpy array.
            return_cgm: also return the generator's input CGMs (B, K, S, S).

        Returns an :class:`Explanation`: ``logits`` (B, classes), ``targets`` (B,), ``maps`` (B, H, W)
        float32 in [0, 1]; numpy arrays when numpy was passed, else tensors on the device.
        """
        if not isinstance(return_cgm, bool):
            raise TypeError(f"return_cgm: expected True or False, got {return_cgm!r}")
        return self._run(images, targets, return_cgm, _no_mark)

    __call__ = explain

    def _generate(self, generator: nn.Module, x: torch.Tensor, cgm: torch.Tensor,
                  mark: Callable[[str], None]) -> torch.Tensor:
        """The pipeline's tail, under the caller's no_grad and autocast: image resize, generator,
        map resize -> (B, H, W) float32."""
        # resized in float32 at least (the CPU has no bfloat16/float16 antialiased resize)
        small = resize_images(x.detach().to(torch.promote_types(x.dtype, torch.float32)), self.representation["size"],
                              self.image_resize).to(self._generator_dtype)
        mark("resize")
        if self.device.type == "cpu":
            small = small.contiguous(memory_format=torch.channels_last)
            cgm = cgm.contiguous(memory_format=torch.channels_last)
        out = generator(small, cgm)  # the explainer's own copy, in eval mode: no view needed
        mark("generator")
        explanation = resize_maps(out[:, 0].float(), tuple(x.shape[-2:]))
        mark("resize")
        return explanation

    def generate(self, images: torch.Tensor, cgm: torch.Tensor) -> torch.Tensor:
        """The generator alone on given CGMs: images (B, C, H, W) and ``cgm`` (B, K, S, S) float in
        [0, 1] (e.g. ``explain(..., return_cgm=True).cgm`` with some maps changed, as the CGM
        ablation of ``fastinterp evaluate`` does) -> maps (B, H, W) float32 in [0, 1]."""
        _, generator = self._models()
        o = self.representation
        if not isinstance(cgm, torch.Tensor) or cgm.dim() != 4 or cgm.shape[1] != o["k"]:
            raise ValueError(f"cgm: expected a tensor (B, {o['k']}, S, S), got "
                             f"{tuple(cgm.shape) if isinstance(cgm, torch.Tensor) else type(cgm).__name__}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != cgm.shape[0]:
            raise ValueError(f"images: expected a tensor (B, C, H, W) with B = {cgm.shape[0]} (the cgm's batch)")
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with torch.no_grad(), autocast:  # as explain() runs it
            return self._generate(generator, images.to(self.device), cgm.to(self.device, self._generator_dtype),
                                  _no_mark)

    def profile(self, images: object, targets: object = None) -> dict[str, float]:
        """One ``explain`` with a wall-clock time (ms) per stage: "forward" (the CNN; for the
        activation kind including the head's CAM), "backward" (gradient kind), "maps" (CAM formulas
        + the fused cumulative average), "resize" (image resize + map resize), "generator", and
        "total". Synchronises the device between stages (CUDA), so the total is slightly higher
        than an unprofiled call."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        stages: dict[str, float] = {}
        last = [time.perf_counter()]
        start = last[0]

        def mark(stage: str) -> None:
            sync()
            now = time.perf_counter()
            stages[stage] = stages.get(stage, 0.0) + 1e3 * (now - last[0])
            last[0] = now

        sync()
        self._run(images, targets, False, mark)
        stages["total"] = 1e3 * (last[0] - start)
        return stages


_BACKENDS = ("auto", "torch", "cpp", "triton", "onnxruntime")


def onnx_cache_dir() -> Path:
    """Where ``compile(..., backend="onnxruntime")`` keeps its exports: $XDG_CACHE_HOME/fastinterp/onnx
    (default ~/.cache/fastinterp/onnx)."""
    from fastinterp.runtime.onnx_backend import cache_dir

    return cache_dir("onnx")


def _onnxruntime_explainer(explainer: Explainer, batch_sizes: Sequence[int] | None):
    """Export ``explainer`` once (cached by content) and load it into ONNX Runtime."""
    import hashlib
    import json

    from fastinterp._version import __version__
    from fastinterp.export.onnx import weights_sha256
    from fastinterp.runtime.onnx_backend import load_onnx

    if explainer.dtype is not None or explainer.device.type != "cpu":
        raise ValueError("backend: 'onnxruntime' runs the CPU float32 export (dtype=None, device='cpu'); load a GPU or "
                         "fp16 export with fastinterp.load_onnx(path, providers=...)")
    cnn, generator = explainer._models()
    # what the graph depends on: weights, and the modules' settings (strides, dilations, eps...), in repr
    key = json.dumps([__version__, torch.__version__, dict(explainer.representation), explainer.image_resize,
                      explainer.input_size, weights_sha256(cnn), weights_sha256(generator), repr(cnn), repr(generator)])
    path = onnx_cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.onnx"
    if not path.is_file():
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial.onnx")
        os.close(handle)
        try:
            explainer.export_onnx(partial)
            os.replace(partial, path)  # atomic: a concurrent compile never reads a half-written file
        finally:
            Path(partial).unlink(missing_ok=True)
    loaded = load_onnx(path, providers=["CPUExecutionProvider"])
    for b in batch_sizes or ():
        loaded.explain(np.zeros((b, loaded.channels, *explainer.input_size), dtype=np.float32))
    return loaded


def _no_mark(stage: str) -> None:
    pass


def _positions(num_layers: int, k: int, cnn: nn.Module) -> list[int]:
    try:
        return paper_positions(num_layers, k)
    except ValueError as error:
        raise ValueError(f"representation: the generator takes k={k} cumulative maps, but {type(cnn).__name__} gives "
                         f"{num_layers} layer maps at this input size, too few for {k} distinct positions ({error})"
                         ) from None


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
    explainer = Explainer(cnn, module, options, image_resize, target, dtype, ops_backend, metadata)
    size = input_size if input_size is not None else getattr(cnn, "input_size", None) or 224
    size = explainer.input_size = check_size(size, "input_size")
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
        return _onnxruntime_explainer(explainer, batch_sizes)
    if batch_sizes is not None:
        for b in batch_sizes:
            explainer.explain(probe.expand(b, *probe.shape[1:]).contiguous())
    return explainer
