"""``compile(..., backend="inductor")``: the explain pipeline as one graph compiled by TorchInductor.

    compile():  the eager explainer's probe run, then ``export.graph.build_explain_graph`` (the
                graph the ONNX file and the .pt2 package hold: CNN forward, activation-only
                backward, CAMs, cumulative maps, generator, resizes; no autograd left) at the
                probe's input size -> ``torch.export`` -> ``torch.compile`` of its module
    explain():  the eager explainer's input handling (every form ``runtime.inputs`` takes), then
                the compiled graph per batch of equal-size images

When it compiles: the graph is traced at ``compile()`` (a few seconds; an untraceable CNN falls
back to the eager backend there, with one warning naming why). Inductor compiles on the first
call, or at ``compile()`` for the ``batch_sizes`` given: a minute or more the first time on a CPU,
seconds when Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default
/tmp/torchinductor_$USER) already holds it. Each batch size compiles once (static shapes: the
fastest code, and what CUDA graphs need). A symbolic batch was tried: Dynamo specialises it back
to the first batch size on the exported module's input checks, so it bought nothing. Past
Dynamo's recompile limit (8 shapes per image size) a new batch size runs the traced graph
uncompiled, with Dynamo's warning. A batch up to half the size of a compiled one is padded to
it (zeros; each image's result is its own) instead of compiled anew: the last, smaller batch of a
folder explained in batches of 32 costs no compile. A line on stderr says when it compiles and
how long it took; ``profile()`` reports it as "compile". A new (H, W) is traced first. A shape
whose compile fails runs eagerly, with a warning. On CUDA, ``mode="reduce-overhead"``: CUDA
graphs, one per batch size.

The graph runs in float32 (``dtype=None``). On the CPU its cumulative maps are one call of our
custom op (``ops.library``: the C++ kernel the eager backend runs; ``use_fused_op``); on CUDA
Inductor generates them from plain ops (float32 normalisation; ``export.graph``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from fastinterp._core.validation import check_target_range, stem_weight
from fastinterp.export.graph import BuiltGraph, build_explain_graph, use_fused_op
from fastinterp.runtime.explainer import Explainer

__all__ = ["InductorExplainer", "compile_mode", "inductor_explainer"]


def compile_mode(device: torch.device) -> str | None:
    """Inductor's mode: CUDA graphs on CUDA; the default on the CPU (see benchmarks/NOTES.md)."""
    return "reduce-overhead" if device.type == "cuda" else None


def _reason(error: Exception) -> str:
    """"Type: first line of the message", for the fallback warnings."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


class InductorExplainer(Explainer):
    """An :class:`Explainer` whose pipeline is one TorchInductor-compiled graph (see the module
    doc). Same API and attributes; ``backend`` is "inductor", ``compile_seconds`` maps each
    compiled shape (B, C, H, W) to its compile time (s), ``mode`` is Inductor's mode."""

    def __init__(self, eager: Explainer, built: BuiltGraph):
        cnn, generator = eager._models()
        super().__init__(cnn, generator, dict(eager.representation), eager.image_resize, eager.device, eager.dtype,
                         "inductor", eager.metadata, eager.input_size, eager.class_names)
        self.num_classes = eager.num_classes
        self.mode = compile_mode(eager.device)
        self.compile_seconds: dict[tuple[int, ...], float] = {}
        self._eager = eager  # a shape Inductor cannot compile still explains
        self._graphs: dict[tuple[int, int], Callable] = {}
        self._failed: dict[tuple[int, ...], str] = {}
        self._add_graph(built)

    def __repr__(self) -> str:
        return super().__repr__().replace("Explainer(", "InductorExplainer(", 1)

    def close(self) -> None:
        super().close()
        self._graphs.clear()
        self._eager.close()

    # ------------------------------------------------------------------ graphs
    def _add_graph(self, built: BuiltGraph) -> None:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export's notices
            program = torch.export.export(built.module, built.example_inputs(),
                                          dynamic_shapes=({0: batch}, {0: batch}))
        # a GraphModule of its own (its own code object, so Dynamo's per-code recompile limit is
        # per explainer and size), compiled per batch size
        self._graphs[built.input_size] = torch.compile(program.module(), dynamic=False, mode=self.mode,
                                                       fullgraph=True)

    def _graph(self, cnn: nn.Module, generator: nn.Module, size: tuple[int, int]) -> Callable | None:
        graph = self._graphs.get(size)
        if graph is None and size not in self._failed:
            try:
                self._add_graph(build_explain_graph(cnn, generator, self.representation, size, device=self.device,
                                                    fused_op=use_fused_op(self.device)))
                graph = self._graphs[size]
            except Exception as error:  # a CNN traceable at one size may not be at another
                self._fail(size, error)
        return graph

    def graph(self, size: tuple[int, int]) -> Callable:
        """The compiled graph for (H, W) images: ``(images (B, C, H, W), targets (B,) int64, -1 =
        predicted) -> (logits, targets, maps (B, H, W), cgm)``, called directly (no input checks;
        under ``torch.no_grad``)."""
        cnn, generator = self._models()
        graph = self._graph(cnn, generator, tuple(size))
        if graph is None:
            raise RuntimeError(f"size: no compiled graph for {tuple(size)} images ({self._failed[tuple(size)]})")
        return graph

    def _fail(self, key: tuple[int, ...], error: Exception) -> None:
        self._failed[key] = reason = _reason(error)
        warnings.warn(f"backend='inductor': could not compile the explain graph for images of shape {key} ({reason}); "
                      "those run on the eager backend", RuntimeWarning, stacklevel=5)

    # ------------------------------------------------------------------ the pipeline
    def _padded_batch(self, shape: tuple[int, ...]) -> int | None:
        """The smallest compiled batch size B' >= B for this (C, H, W) with B' <= 2B (a batch is
        padded to it rather than compiled anew: at most twice the work, no compile), or None."""
        fits = [s[0] for s in self.compile_seconds if s[1:] == shape[1:] and shape[0] < s[0] <= 2 * shape[0]]
        return min(fits) if fits else None

    def _run_pipeline(self, cnn: nn.Module, generator: nn.Module, x: torch.Tensor, chosen: torch.Tensor | None,
                      return_cgm: bool, mark: Callable[[str], None]) -> dict:
        shape = tuple(x.shape)
        graph = None if shape in self._failed else self._graph(cnn, generator, tuple(x.shape[2:]))
        if graph is None:
            return self._eager._run_pipeline(cnn, generator, x, chosen, return_cgm, mark)
        if chosen is None:
            chosen = torch.full((x.shape[0],), -1, dtype=torch.int64, device=self.device)
        elif self.num_classes is not None:
            check_target_range(chosen, self.num_classes)  # the compiled gather does not check its index
        batch = x.shape[0]
        padded = None if shape in self.compile_seconds else self._padded_batch(shape)
        if padded is not None:  # zeros after the images (each image is explained on its own)
            x = torch.cat([x, x.new_zeros(padded - batch, *x.shape[1:])])
            chosen = torch.cat([chosen, chosen.new_full((padded - batch,), -1)])
            shape = tuple(x.shape)
        compiling = shape not in self.compile_seconds
        if compiling:
            print(f"fastinterp: compiling the explain graph for images of shape {shape} with TorchInductor "
                  "(a minute or more the first time; seconds from Inductor's cache)...", file=sys.stderr, flush=True)
            start = time.perf_counter()
        try:
            with torch.no_grad():
                outputs = graph(x.detach(), chosen)
        except Exception as error:
            if not compiling:
                raise
            self._fail(shape, error)
            return self._eager._run_pipeline(cnn, generator, x[:batch], chosen[:batch], return_cgm, mark)
        if compiling:
            self.compile_seconds[shape] = seconds = time.perf_counter() - start
            print(f"fastinterp: compiled in {seconds:.1f} s", file=sys.stderr, flush=True)
            mark("compile")  # the compiling call's run included
        # slices of a padded batch; copies out of the CUDA graph's pool, which the next replay overwrites
        logits, targets, maps, cgm = (t[:batch].clone() if self.mode == "reduce-overhead" else t[:batch]
                                      for t in outputs)
        mark("graph")
        return {"logits": logits, "targets": targets, "maps": maps, "cgm": cgm if return_cgm else None}


def inductor_explainer(eager: Explainer) -> Explainer:
    """``eager`` (probed by compile) with its pipeline traced into one graph for TorchInductor; the
    eager explainer itself, with one warning naming why, when its CNN cannot be traced."""
    cnn, generator = eager._models()
    if eager.dtype is not None or stem_weight(cnn).dtype != torch.float32:
        raise ValueError("backend: 'inductor' compiles the float32 graph (a float32 CNN, dtype=None); use the eager "
                         f"backend for {eager.dtype or stem_weight(cnn).dtype}")
    try:
        built = build_explain_graph(cnn, generator, eager.representation, eager.input_size, device=eager.device,
                                    fused_op=use_fused_op(eager.device))
        return InductorExplainer(eager, built)
    except Exception as error:
        warnings.warn(f"backend='inductor': {type(cnn).__name__} cannot be traced into one graph "
                      f"({_reason(error)}); explaining "
                      "with the eager backend", RuntimeWarning, stacklevel=3)
        return eager
