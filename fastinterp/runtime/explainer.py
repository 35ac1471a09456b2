"""Where a map is served: :class:`Explainer`, made by ``fastinterp.compile(cnn, generator)``
(``runtime.compile``), whose ``explain(images)`` returns the CNN's logits and the generator's
explanation maps in one call.

    images (B, C, H, W)   checked once, here (the inner stages trust them)
      -> cnn_representation (maps.representation; validate=False)
           gradient kind: CNN forward + the activation-only backward (maps.capture)
           activation kind: CNN forward only, the head's CAM (maps.forward_only)
           per-layer maps -> ops.cumulative_average (C++ on CPU, Triton on CUDA) -> CGMs (B, K, S, S)
      -> resize_images (the resize the generator's training images were made with)
      -> generator (inference mode) -> resize_maps back to (H, W) -> maps (B, H, W) in [0, 1]

Nothing of the user's CNN or generator is modified: every call runs them through an eval view
(``fastinterp.maps.eval_view``: per-call shallow copies of their module trees in eval mode, sharing
their tensors), and the hooks that capture layer outputs are registered on those copies only. So
the model's own calls return what they did, in the same time, while an explainer exists, and
nothing needs undoing at ``close()``. The runtime keeps no per-call state on the explainer, so
threads may share one. (The eager path runs hooks every call; the ONNX export traces it once
into one graph.)
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastinterp._core.validation import check_images, check_targets, first_conv, stem_weight
from fastinterp.maps.representation import TooFewLayersError, cnn_representation
from fastinterp.maps.resize import resize_images, resize_maps
from fastinterp.runtime.explanation import Explanation
from fastinterp.runtime.inputs import Images, as_image_batches, in_order

__all__ = ["Explainer"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
_AUTOCAST = (torch.float16, torch.bfloat16)


class Explainer:
    """Explains a CNN's predictions with a trained generator; made by ``fastinterp.compile``.

    ``explain(images, targets=None, return_cgm=False)`` (also ``explainer(images)``), ``profile``,
    ``generate``, ``export_onnx``, ``export_pt2``, ``close()`` (or use it as a context manager). Attributes:
    ``representation`` (the options the CGMs are made with, read-only), ``image_resize``,
    ``device``, ``dtype`` (autocast dtype or None), ``backend``, ``metadata`` (the generator's),
    ``input_size`` (of compile's probe run), ``num_classes`` (the CNN's outputs), ``class_names``
    (or None).
    """

    def __init__(self, cnn: nn.Module, generator: nn.Module, options: dict, image_resize: str,
                 device: torch.device, dtype: torch.dtype | None, backend: str, metadata: dict | None,
                 input_size: tuple[int, int], class_names: Sequence[str] | None = None):
        self._cnn, self._generator = cnn, generator
        self._generator_dtype = stem_weight(generator).dtype  # our own copy: it never changes
        self.representation = types.MappingProxyType(dict(options))  # read-only: threads share it
        # what cnn_representation takes (no teacher: explaining needs none)
        self._maps_options = {key: value for key, value in options.items() if key != "teacher"}
        self.image_resize, self.device, self.dtype, self.backend = image_resize, device, dtype, backend
        self.metadata = metadata
        self.input_size = input_size  # (H, W) of compile's probe run
        self.class_names = None if class_names is None else tuple(class_names)
        self.num_classes: int | None = None  # the CNN's outputs, set by compile's probe run
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
        ``metadata_props`` (``fastinterp.export.format``). Needs ``pip install "fastinterp[onnx]"``.

        Args:
            dynamic_batch: any batch size (else the traced one, 2).
            dynamic_size: any H, W (else ``input_size``); CNNs whose ops fix the size refuse.
            opset: ONNX opset (default and minimum 18: antialiased Resize).
            fp16: store weights and compute in float16 (inputs and outputs stay float32), for GPU
                execution providers; ONNX Runtime's CPU provider runs it slowly.
            input_size: (H, W) or int (default: compile's ``input_size``).
            class_names: names of the CNN's classes, recorded in the metadata (default: the explainer's).
            value_range: how input values are expected (e.g. "RGB in [0, 1]"), recorded.
        """
        from fastinterp.export.onnx import export_explainer  # torch.onnx and onnx: only when exporting

        cnn, generator = self._models()
        rep = self.representation
        return export_explainer(cnn, generator, rep, path, input_size=self.input_size if input_size is None else input_size,
                                image_resize=self.image_resize, teacher=(self.metadata or {}).get("teacher", rep["teacher"]),
                                dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, opset=opset, fp16=fp16,
                                class_names=list(class_names) if class_names is not None
                                else list(self.class_names) if self.class_names is not None else None,
                                value_range=value_range)

    def export_pt2(self, path: str | Path, *, dynamic_batch: bool = True,
                   input_size: int | tuple[int, int] | None = None, class_names: Sequence[str] | None = None,
                   value_range: str | None = None) -> Path:
        """Compile the whole pipeline ahead of time with AOTInductor into ONE ``.pt2`` package for this
        explainer's device (CPU or CUDA), float32; run it with ``fastinterp.load_pt2(path)`` (torch,
        no model code, no compile). The graph is the one ``export_onnx`` writes; the package's
        metadata holds the same entries. Compiling takes a minute or more on a CPU.

        Args:
            dynamic_batch: any batch size (else the traced one, 2).
            input_size, class_names, value_range: as ``export_onnx``.
        """
        from fastinterp.export.pt2 import export_pt2  # Inductor: only when packaging

        cnn, generator = self._models()
        rep = self.representation
        return export_pt2(cnn, generator, rep, path, input_size=self.input_size if input_size is None else input_size,
                          image_resize=self.image_resize, teacher=(self.metadata or {}).get("teacher", rep["teacher"]),
                          dynamic_batch=dynamic_batch, device=self.device,
                          class_names=list(class_names) if class_names is not None
                          else list(self.class_names) if self.class_names is not None else None,
                          value_range=value_range)

    def _models(self) -> tuple[nn.Module, nn.Module]:
        cnn, generator = self._cnn, self._generator
        if self._closed or cnn is None:
            raise RuntimeError("explainer: it was closed; compile a new one with fastinterp.compile(cnn, generator)")
        return cnn, generator

    # ------------------------------------------------------------------ the boundary: every check, once
    def _batches(self, images: object, cnn: nn.Module, layout: str | None) -> Images:
        """``images`` in any accepted form (``runtime.inputs``) -> float batches of equal-size images;
        uint8 pixels (numpy, PIL, files, uint8 tensors) become x / 255 in the CNN's dtype on the device."""
        dtype = stem_weight(cnn).dtype

        as_numpy = _NUMPY_DTYPES.get(dtype)

        def scale_uint8(pixels):
            if isinstance(pixels, np.ndarray):
                if as_numpy is not None:  # numpy stays numpy (moved to the device with the float arrays)
                    return pixels.astype(as_numpy) / as_numpy(255)
                pixels = torch.from_numpy(pixels).to(self.device)
            elif pixels.device != self.device:
                raise ValueError(f"images: on {pixels.device}, but the explainer runs on {self.device}; move them "
                                 f"with .to({str(self.device)!r}) or compile with device={str(pixels.device)!r}")
            return pixels.to(dtype).div_(255)

        return as_image_batches(images, first_conv(cnn).in_channels, layout=layout, scale_uint8=scale_uint8)

    def _tensor(self, pixels: object, cnn: nn.Module) -> torch.Tensor:
        """One batch's float pixels (B, C, H, W) as a tensor on the device, checked (``check_images``)."""
        if isinstance(pixels, np.ndarray):
            weight = stem_weight(cnn)
            expected = _NUMPY_DTYPES.get(weight.dtype)
            if expected is None:
                raise TypeError(f"images: numpy has no {weight.dtype} (the CNN's dtype); pass a torch tensor or uint8 "
                                "pixels")
            if pixels.dtype != expected:
                raise TypeError(f"images: expected a numpy array of dtype {np.dtype(expected).name} (the CNN's "
                                f"{weight.dtype}) or uint8 pixels, got {pixels.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        else:
            if pixels.device != self.device:
                raise ValueError(f"images: on {pixels.device}, but the explainer runs on {self.device}; move them "
                                 f"with .to({str(self.device)!r}) or compile with device={str(pixels.device)!r}")
            tensor = pixels
        check_images(tensor, cnn)  # channels, dtype, finiteness, B >= 1
        return tensor

    def _targets(self, targets: object, batch: int) -> torch.Tensor | None:
        """None or a (B,) int64 tensor on the device (range: checked against the logits later)."""
        if isinstance(targets, np.ndarray):
            if not np.issubdtype(targets.dtype, np.integer):
                raise TypeError(f"targets: expected class indices (an integer numpy array), got dtype {targets.dtype}")
            targets = torch.from_numpy(targets)
        elif isinstance(targets, torch.Tensor) and targets.device != self.device:
            raise ValueError(f"targets: on {targets.device}, but the explainer runs on {self.device}")
        return check_targets(targets, batch, self.device)

    # ------------------------------------------------------------------ the pipeline
    def _run(self, images: object, targets: object, return_cgm: bool, mark: Callable[[str], None],
             layout: str | None = None) -> Explanation:
        # also inside the caller's torch.inference_mode() (serving code): the gradient kind needs
        # autograd, and the outputs are ordinary tensors either way
        with torch.inference_mode(False):
            cnn, generator = self._models()
            batches = self._batches(images, cnn, layout)
            chosen = self._targets(targets, batches.count)
            parts = []
            for batch in batches.batches:
                x = self._tensor(batch.pixels, cnn)
                own = chosen if chosen is None or len(batches.batches) == 1 else chosen[batch.indices]
                part = self._run_pipeline(cnn, generator, x, own, return_cgm, mark)
                part["images"] = batch.pixels  # as they came (numpy stays numpy: no copy back)
                parts.append(part)
            result = in_order(batches, parts)
        if not batches.tensors:  # numpy, PIL images or files came in: numpy goes out
            result = {key: _to_numpy(value) for key, value in result.items()}
        return Explanation(**result, class_names=self.class_names)

    def _run_pipeline(self, cnn: nn.Module, generator: nn.Module, x: torch.Tensor, chosen: torch.Tensor | None,
                      return_cgm: bool, mark: Callable[[str], None]) -> dict:
        if x.is_inference():  # made under the caller's inference mode: autograd cannot use it
            x = x.clone()
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        with autocast:
            try:
                rep = cnn_representation(cnn, x, chosen, teacher=None, backend=self.backend, on_stage=mark,
                                         validate=False, **self._maps_options)
            except TooFewLayersError as error:
                raise error.for_generator(cnn) from None
            with torch.no_grad():  # no_grad, not inference_mode: the outputs stay ordinary tensors
                explanation = self._generate(generator, x, rep.cgm, mark)
        logits = rep.logits.float() if rep.logits.dtype in _AUTOCAST else rep.logits
        return {"logits": logits, "targets": rep.targets, "maps": explanation, "cgm": rep.cgm if return_cgm else None}

    def explain(self, images: object, targets: object = None, *, return_cgm: bool = False,
                layout: str | None = None) -> Explanation:
        """Explain images.

        Args:
            images: any of
                - a float tensor (on the explainer's device, the CNN's dtype) or numpy array (the
                  CNN's dtype), in the value range the CNN takes (as before);
                - uint8 pixels (tensor or numpy): scaled to [0, 1];
                - a PIL image or an image file path (read with Pillow, made RGB, scaled to [0, 1]);
                - (B, C, H, W), one image (C, H, W), or channels last (B, H, W, C) / (H, W, C);
                - a list of images (3-D arrays, PIL images, paths), of any sizes: explained in
                  groups of equal size, each map at its own image's size.
                The preprocessing recorded in the generator (or given to compile) is applied
                inside, so [0, 1] images (and uint8, PIL, files) go in as they are.
            targets: None (each image's predicted class), an int, a sequence of ints, a (B,) int
                tensor or numpy array.
            return_cgm: also return the generator's input CGMs (B, K, S, S).
            layout: None (inferred: ``fastinterp.runtime.inputs``'s rule), "CHW" or "HWC" for
                arrays whose shape cannot tell (e.g. (3, 32, 3)).

        Returns an :class:`Explanation`: ``logits`` (B, classes), ``targets`` (B,), ``maps`` (B, H, W)
        float32 in [0, 1] (a list of (H_i, W_i) maps for a list of images of different sizes),
        ``images`` (what the CNN took), ``class_names``; tensors on the device when tensors were
        passed, else numpy arrays.
        """
        if not isinstance(return_cgm, bool):
            raise TypeError(f"return_cgm: expected True or False, got {return_cgm!r}")
        return self._run(images, targets, return_cgm, _no_mark, layout)

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

    def profile(self, images: object, targets: object = None, *, layout: str | None = None) -> dict[str, float]:
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
        self._run(images, targets, False, mark, layout)
        stages["total"] = 1e3 * (last[0] - start)
        return stages


def _no_mark(stage: str) -> None:
    pass


def _to_numpy(value: object) -> object:
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bfloat16
