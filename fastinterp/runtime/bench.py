"""``fastinterp-bench``: what ``explain()`` costs, beside the CNN's plain forward, in one run.

The pair profiled: the user's CNN (``cnn``: any ``fitting.cnn.load_cnn`` spec, shipped names and
"demo" included), a torchvision model (``model``; random weights: timings do not depend on them) or
a folder's checkpoint pair (``checkpoints``), with a generator checkpoint (``generator``: a shipped
name, "demo" or a path) or a fresh generator of one kind (``fresh_generator``). The normalisation the
generator records (or ``normalize``) is in front of the CNN for every method, the forward baseline
included, so that ratios compare like with like. For every batch size x thread count it times, in
interleaved rounds (one call of each method per round, so that a noisy machine slows them alike):

    forward         the CNN alone under torch.inference_mode() (the baseline of every ratio)
    gradcam         fastinterp.gradcam: one layer's Grad-CAM (the last conv)
    pytorch-gradcam pytorch_grad_cam.GradCAM on the last conv, when installed (on a copy)
    hand-<kind>     the README's hand-written pipeline (cnn_representation, resize, generator)
    explain-<kind>  Explainer.explain, per representation kind (default: a checkpoint's own kind,
                    both kinds for a fresh generator)
  with --backends ... onnxruntime (the CNN and each kind's pipeline exported once to ONNX):
    ort-forward     the CNN alone in ONNX Runtime (the baseline of the ONNX ratios)
    ort-explain-<kind>  fastinterp.load_onnx(...).explain: the whole pipeline as one ONNX graph
  with --backends ... inductor / pt2 (float32):
    compiled-forward    torch.compile of the CNN (static shapes, Inductor's default mode on the
                        CPU, CUDA graphs on CUDA): the second baseline
    inductor-explain-<kind>  compile(..., backend="inductor").explain
    inductor-graph-<kind>    its compiled graph called directly (smallest batch): explain minus
                        this is fastinterp's own per-call Python around the graph
    pt2-explain-<kind>  fastinterp.load_pt2(...).explain of a package exported in this run
  and, unless quick, each compile timed in fresh processes: cold (an empty Inductor cache) then
  warm (the same cache), the .pt2 file's size, and its load + first explain in a fresh process.

and reports p50/p95/p99 latency (ms), images/s, the ratio of p50 to the forward's p50, each
method's peak memory (``MEMORY_CPU``: on the CPU each method in a fresh process of its own,
``runtime.bench_memory``; ``MEMORY_CUDA``), the Python time of a call (``PYTHON_MS``) and the
per-stage breakdown of explain (median of ``Explainer.profile``). Output: a markdown table on
stdout, ``--json FILE`` for the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from fastinterp import pretrained
from fastinterp._core.validation import check_size
from fastinterp._version import __version__
from fastinterp.datasets.zoo import load_cnn as load_zoo_cnn
from fastinterp.fitting.cnn import load_cnn
from fastinterp.generator.checkpoint import load_generator
from fastinterp.generator.networks import GENERATOR_KINDS, build_generator
from fastinterp.maps.layers import conv_layers
from fastinterp.maps.options import KINDS, representation_options
from fastinterp.maps.preprocess import IMAGENET, check_preprocess, parse_normalize, preprocess_of, with_preprocess
from fastinterp.maps.representation import cnn_representation, gradcam
from fastinterp.maps.resize import resize_images
from fastinterp.runtime import bench_memory
from fastinterp.runtime.compiler import DomainWarning
from fastinterp.runtime.compiler import compile as compile_explainer
from fastinterp.runtime.onnx_backend import load_onnx

__all__ = ["PYTHON_MS", "BenchConfig", "markdown", "run_bench"]

PYTHON_MS = ("Python ms (CPU, smallest batch only): each method is called a few more times under torch.profiler; "
             "for each such call, its wall time minus the time during which at least one profiled op of that "
             "same call ran (the union of its aten ops and autograd nodes, nested ones counted once), then the "
             "median over the calls. It cannot go negative (the ops of a call lie inside it), and it includes the "
             "profiler's own bookkeeping between ops, so it is an upper bound of the call's Python and framework "
             "time; the forward's own is the CNN's Python.")


MEMORY_KEYS = ("peak_mb", "first_call_mb", "held_mb", "peak_rss_mb", "first_call_rss_mb")
MEMORY_CPU = ("peak MB (CPU): each method in a fresh process of its own (python -m fastinterp.runtime.bench "
              "--memory), so that no method inherits the heap another left: after one warm-up call and "
              "malloc_trim(0), the peak resident memory (VmHWM) of one call minus the resident memory held "
              "before it (VmRSS: libraries, weights, sessions, images). 'first call' is the same for the "
              "process's first call (lazy initialisation and compiles included); 'peak RSS' the absolute peak.")
MEMORY_CUDA = ("peak MB (CUDA): torch.cuda.max_memory_allocated over the warm-up calls minus the memory "
               "allocated before them (the caching allocator counts live allocations: nothing is inherited).")


@dataclass
class BenchConfig:
    """What one ``fastinterp-bench`` run measures (the command's flags, one field each)."""

    model: str = "resnet50"  # torchvision classifier, random weights (when neither cnn nor checkpoints)
    size: int | None = None  # input side; default: the generator's recorded input size, the CNN's input_size, 224
    classes: int = 1000  # outputs of model
    generator: str | None = None  # a generator checkpoint: a shipped name, "demo" or a path (None: a fresh one)
    checkpoints: str | None = None  # "demo" (the shipped pair) or a folder with cnn/generator.safetensors
    cnn: str | None = None  # the user's CNN: a fitting.cnn.load_cnn spec (file, shipped name, torchvision:NAME...)
    weights: str | None = None  # the state dict of cnn (.safetensors or .pt)
    num_classes: int | None = None  # outputs of a torchvision:NAME cnn
    normalize: str | dict | None = None  # what the CNN expects of [0, 1] images, where the generator records nothing
    fresh_generator: str = "fast"  # the kind of the fresh generator used without generator / checkpoints
    representations: list[str] | None = None  # default: a --generator checkpoint's own kind, else every kind
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    threads: list[int] = field(default_factory=lambda: [torch.get_num_threads()])
    iters: int = 15  # timed rounds
    warmup: int = 2
    device: str = "cpu"
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    pytorch_grad_cam: bool = True  # compare with pytorch-grad-cam when it is installed
    backends: list[str] = field(default_factory=lambda: ["torch"])
    ort_providers: list[str] | None = None
    compile_times: bool = True  # inductor / pt2: time each compile in fresh processes, cold then warm cache
    memory: bool = True  # CPU: each method's peak memory in a fresh process (MEMORY_CPU)

    def quick(self) -> BenchConfig:
        """A tiny run (batch 2, 3 rounds; a torchvision model: resnet18 at 64 px): checks the tool,
        not the numbers."""
        torchvision_model = self.checkpoints is None and self.cnn is None
        small = {"model": "resnet18", "size": 64, "classes": 10} if torchvision_model else {}
        return BenchConfig(**{**self.__dict__, **small, "batch_sizes": [2], "iters": 3, "warmup": 1,
                              "compile_times": False})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ side logs two lines per use."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _busy_ms(events: Iterable[Any]) -> float:
    """The time (ms) during which at least one of ``events`` (torch.profiler FunctionEvents) ran:
    the union of their intervals, user annotations (record_function ranges) left out, so that a
    nested op or ops of two threads at once count once."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in events
                   if not getattr(e, "is_user_annotation", False) and e.time_range.end > e.time_range.start)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e3


def _outside_ops_ms(methods: dict[str, Callable[[], object]], iters: int) -> dict[str, float]:
    """Per method, ``PYTHON_MS``: for each of a few profiled calls (torch.profiler, CPU), that
    call's wall time minus the time inside its ops (``_busy_ms`` of the same call); the median."""
    from torch.profiler import ProfilerActivity, profile

    result = {}
    for name, method in methods.items():
        values = []
        for _ in range(max(3, min(iters, 7))):
            with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                method()
                wall = 1e3 * (time.perf_counter() - start)
            # the ops ran within the call, so busy <= wall; max() absorbs the two clocks' microsecond grain
            values.append(max(0.0, wall - _busy_ms(prof.events())))
        result[name] = statistics.median(values)
    return result


@dataclass
class _Pair:
    """What is profiled: ``model`` (the CNN behind its normalisation: what every baseline runs),
    ``explained`` (what compile gets: the CNN itself where the generator records the normalisation,
    which compile then applies), the generator, the input (H, W), the generator's trained
    representation kind (None: a fresh generator) and the report's description."""

    model: nn.Module
    explained: nn.Module
    generator: nn.Module
    size: tuple[int, int]
    kind: str | None
    described: str


def _shipped(kind: str) -> str:
    return ", ".join(["demo", *pretrained.names(kind)])


def _generator(args: BenchConfig) -> tuple[nn.Module, dict | None, str]:
    """(generator, its metadata or None for a fresh one, description)."""
    if args.checkpoints is not None:
        if args.generator is not None:
            raise ValueError("generator: checkpoints already names the generator; give one of them")
        path = (pretrained.path(pretrained.DEMO[1]) if args.checkpoints == "demo"
                else Path(args.checkpoints) / "generator.safetensors")
        spec = args.checkpoints
    elif args.generator is not None:
        spec, path = args.generator, pretrained.generator_path(args.generator)
        if not path.is_file():
            raise ValueError(f"generator: {args.generator!r} is neither a generator checkpoint file nor a shipped "
                             f"generator (one of {_shipped('generator')}; fastinterp.pretrained.names() says what "
                             "each is)")
    else:
        if args.fresh_generator not in GENERATOR_KINDS:
            raise ValueError(f"fresh_generator: expected one of {GENERATOR_KINDS}, got {args.fresh_generator!r}")
        torch.manual_seed(0)
        generator = build_generator(args.fresh_generator, k=8, size=64).eval()
        return generator, None, f"fresh {args.fresh_generator} generator"
    generator, metadata = load_generator(path)
    try:
        kind = representation_options(metadata)["kind"]
    except ValueError as error:
        raise ValueError(f"generator: {path}: {error}; a generator checkpoint made by fastinterp fit or "
                         "train-generator records it") from None
    return generator, metadata, f"generator {spec} ({generator.config['kind']}, {kind} representation)"


def _cnn(args: BenchConfig) -> tuple[nn.Module, str]:
    """(the CNN, its description)."""
    if args.checkpoints is not None:
        path = (pretrained.path(pretrained.DEMO[0]) if args.checkpoints == "demo"
                else Path(args.checkpoints) / "cnn.safetensors")
        cnn, meta = load_zoo_cnn(path)
        return cnn, f"{meta['arch']} ({args.checkpoints})"
    if args.cnn is not None:
        try:
            cnn = load_cnn(args.cnn, args.weights, args.num_classes, argument="cnn")
        except ValueError as error:
            if ":" in args.cnn or Path(args.cnn).is_file():
                raise
            raise ValueError(f"{error} (shipped CNNs: {_shipped('cnn')})") from None
        weights = f", weights {args.weights}" if args.weights is not None else ""
        return cnn, f"{args.cnn} ({getattr(cnn, 'arch', None) or type(cnn).__name__}{weights})"
    torch.manual_seed(0)
    builder = getattr(torchvision.models, args.model, None)
    if builder is None:
        raise ValueError(f"model: torchvision has no model {args.model!r}")
    kwargs = {"aux_logits": False, "init_weights": False} if args.model in ("inception_v3", "googlenet") else {}
    return builder(weights=None, num_classes=args.classes, **kwargs).eval(), f"{args.model} (random weights)"


def _models(args: BenchConfig) -> _Pair:
    generator, metadata, generator_described = _generator(args)
    cnn, cnn_described = _cnn(args)
    given = (parse_normalize(args.normalize, "normalize") if isinstance(args.normalize, str)
             else check_preprocess(args.normalize, "normalize"))
    recorded = preprocess_of(metadata)
    if given is not None and recorded is not None and given != recorded:
        raise ValueError(f"normalize: the generator records the CNN's normalisation ({recorded['normalize']}) and "
                         "compile applies it; leave out normalize")
    preprocess = recorded if recorded is not None else given
    model = with_preprocess(cnn, preprocess)
    size = check_size(args.size or (metadata or {}).get("input_size") or getattr(cnn, "input_size", None) or 224,
                      "size")
    # the user's own generator: its kind only (another would warn); --checkpoints keeps every kind, as
    # the README's tables were made
    kind = None if metadata is None or args.checkpoints is not None else representation_options(metadata)["kind"]
    normalised = ("" if preprocess is None else ", inputs normalised: "
                  + ("imagenet" if preprocess == IMAGENET else
                     f"mean {preprocess['normalize']['mean']}, std {preprocess['normalize']['std']}"))
    return _Pair(model, cnn if recorded is not None else model, generator, size, kind,
                 f"{cnn_described} + {generator_described}{normalised}")


def _tensor_mb(module: nn.Module) -> float:
    """Bytes of ``module``'s parameters and buffers (shared ones once), MB."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in (*module.parameters(), *module.buffers())}
    return sum(storages.values()) / 2**20


def _explainers(explained: nn.Module, generator: nn.Module, labels: list[str], size: tuple[int, int]) -> dict:
    """One eager explainer per label: a representation kind, float32 ("gradient"), or kind-dtype
    under autocast ("gradient-bfloat16")."""
    dtypes = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    with warnings.catch_warnings():  # a cost measurement: the generator need not have seen this CNN
        warnings.simplefilter("ignore", DomainWarning)
        return {label: compile_explainer(explained, generator, representation=label.split("-")[0], input_size=size,
                                         dtype=dtypes[label.split("-")[1] if "-" in label else "float32"])
                for label in labels}


def _pytorch_gradcam(model: nn.Module, size: tuple[int, int], device: torch.device):
    """pytorch_grad_cam.GradCAM on the last conv of a copy of ``model`` (it registers hooks on the
    model it is given); None when pytorch-grad-cam is not installed."""
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        return None
    from pytorch_grad_cam import GradCAM

    last_conv = conv_layers(model, torch.rand(1, 3, *size, device=device))[-1]
    cam_model = copy.deepcopy(model)
    return GradCAM(model=cam_model, target_layers=[dict(cam_model.named_modules())[last_conv]])


def _torch_methods(model: nn.Module, generator: nn.Module, explainers: dict, pgc,
                   images: torch.Tensor) -> dict[str, Callable[[], object]]:
    """forward, gradcam, pytorch-gradcam (``pgc`` not None), hand-<kind> and explain-<label> per
    explainer, each a call on ``images``. The baselines run ``model``: the CNN behind the
    normalisation explain() applies."""
    def forward():
        with torch.inference_mode():
            model(images)

    methods: dict[str, Callable[[], object]] = {"forward": forward, "gradcam": lambda: gradcam(model, images)}
    if pgc is not None:
        methods["pytorch-gradcam"] = lambda: pgc(input_tensor=images, targets=None)
    for label, explainer in explainers.items():  # the hand-written pipeline, float32, once per kind
        kind = label.split("-")[0]
        if f"hand-{kind}" in methods or (label != kind and kind in explainers):
            continue
        options = dict(explainer.representation)

        def hand(options=options, explainer=explainer):
            rep = cnn_representation(model, images, **{**options, "teacher": None})
            small = resize_images(images, options["size"], explainer.image_resize)
            with torch.inference_mode():
                out = generator(small, rep.cgm)
                return torch.nn.functional.interpolate(out, size=images.shape[-2:], mode="bilinear",
                                                       antialias=True, align_corners=False)

        methods[f"hand-{kind}"] = hand
    for label, explainer in explainers.items():
        methods[f"explain-{label}"] = lambda explainer=explainer: explainer.explain(images)
    return methods


def run_bench(args: BenchConfig, progress: bool = True) -> dict:
    """Every measurement of one run (see the module doc)."""
    from tqdm.auto import tqdm

    device = torch.device(args.device)
    pair = _models(args)
    model, explained, generator = pair.model.to(device), pair.explained.to(device), pair.generator.to(device)
    kinds = args.representations or ([pair.kind] if pair.kind is not None else list(KINDS))
    size = pair.size
    explainers = _explainers(explained, generator, [kind if dtype == "float32" else f"{kind}-{dtype}"
                                                    for dtype in dict.fromkeys(args.dtypes) for kind in kinds], size)
    pgc = _pytorch_gradcam(model, size, device) if args.pytorch_grad_cam else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    onnx = _export_onnx(model, explainers, size, args) if "onnxruntime" in args.backends else None
    compiled = _compiled(model, explained, generator, explainers, size, args) \
        if {"inductor", "pt2"} & set(args.backends) else None
    rows, breakdowns = [], []
    threads_before = torch.get_num_threads()
    configs = [(t, b) for t in args.threads for b in args.batch_sizes]
    total = len(configs) * (args.warmup + args.iters) * (3 + len(explainers) + len(kinds)
                                                         + (pgc is not None) + (0 if onnx is None else
                                                                                len(onnx["files"]))
                                                         + (0 if compiled is None else 1 + 3 * len(kinds)))
    total += len(configs) * (3 + len(explainers) + len(kinds) + (pgc is not None)
                             + (0 if onnx is None else len(onnx["files"]))
                             + (0 if compiled is None else 1 + 3 * len(kinds))) * (args.memory and device.type == "cpu")
    bar = tqdm(total=total, desc="fastinterp-bench", unit="call", disable=not progress, file=sys.stderr)
    for threads, batch in configs:
        torch.set_num_threads(threads)
        images = torch.rand(batch, 3, *size, device=device, generator=torch.Generator(device).manual_seed(1))

        methods = _torch_methods(model, generator, explainers, pgc, images)
        if onnx is not None:
            methods.update(_onnx_methods(onnx, images, threads, args))
        if compiled is not None:
            methods.update(_compiled_methods(compiled, images, smallest=batch == min(args.batch_sizes)))
        times: dict[str, list[float]] = {name: [] for name in methods}
        peaks: dict[str, dict[str, float]] = {}
        for name, method in methods.items():  # warm-up; on CUDA, each method's own peak memory
            if device.type == "cuda":
                sync()
                torch.cuda.reset_peak_memory_stats()
                held = torch.cuda.memory_allocated()
            for _ in range(args.warmup):
                method()
                bar.update()
            sync()
            if device.type == "cuda":
                peaks[name] = {"peak_mb": (torch.cuda.max_memory_allocated() - held) / 2**20}
        if device.type == "cpu" and args.memory and bench_memory.supported():
            for name in methods:  # each in a fresh process: nothing inherited from the methods before it
                if not name.startswith("inductor-graph-"):  # the same graph as inductor-explain
                    folder = (onnx["folder"] if name.startswith("ort-") else
                              compiled["folder"] if name.startswith("pt2-") else None)
                    peaks[name] = bench_memory.measure_in_child(
                        {"config": args.__dict__, "method": name, "batch": batch, "threads": threads,
                         "folder": None if folder is None else str(folder)})
                bar.update()
        for _ in range(args.iters):  # interleaved rounds
            for name, method in methods.items():
                sync()
                start = time.perf_counter()
                method()
                sync()
                times[name].append(1e3 * (time.perf_counter() - start))
                bar.update()
        # at the smallest batch only: at larger ones the run-to-run spread of the ops exceeds the Python time
        small = batch == min(args.batch_sizes)
        # eager torch methods only: ONNX Runtime runs no aten ops for the profiler to see, and
        # Inductor's generated kernels are not profiled ops either (for those: explain minus graph)
        torch_methods = {name: m for name, m in methods.items()
                         if not name.startswith(("ort-", "inductor-", "pt2-", "compiled-"))}
        python = _outside_ops_ms(torch_methods, args.iters) if device.type == "cpu" and small else {}
        for kind in kinds:  # fastinterp's Python around the compiled graph: explain minus the graph alone
            if f"inductor-graph-{kind}" in times:
                python[f"inductor-explain-{kind}"] = max(0.0, statistics.median(times[f"inductor-explain-{kind}"])
                                                         - statistics.median(times[f"inductor-graph-{kind}"]))
        base = statistics.median(times["forward"])
        compiled_base = statistics.median(times["compiled-forward"]) if "compiled-forward" in times else None
        for name, values in times.items():
            p50 = statistics.median(values)
            rows.append({"threads": threads, "batch": batch, "method": name, "p50_ms": p50,
                         "p95_ms": _percentile(values, 95), "p99_ms": _percentile(values, 99),
                         "images_per_s": 1e3 * batch / p50, "ratio_to_forward": p50 / base,
                         "ratio_to_compiled_forward": None if compiled_base is None else p50 / compiled_base,
                         **{key: peaks.get(name, {}).get(key) for key in MEMORY_KEYS},
                         "outside_ops_ms": python.get(name)})
        for kind, explainer in explainers.items():
            profiles = []
            for _ in range(max(1, args.iters // 2)):
                profiles.append(explainer.profile(images))
                bar.update()
            stages = sorted({s for p in profiles for s in p}, key=lambda s: list(profiles[0]).index(s))
            breakdowns.append({"threads": threads, "batch": batch, "kind": kind,
                               "stages_ms": {s: statistics.median(p.get(s, 0.0) for p in profiles) for s in stages}})
    bar.close()
    torch.set_num_threads(threads_before)
    for explainer in explainers.values():
        explainer.close()
    if onnx is not None:  # the exported files (resnet50: ~100 MB each)
        onnx["sessions"].clear()
        shutil.rmtree(onnx["folder"], ignore_errors=True)
    if compiled is not None:
        for explainer in (*compiled["inductor"].values(), *compiled["pt2"].values()):
            explainer.close()
        shutil.rmtree(compiled["folder"], ignore_errors=True)
    return {
        "model": pair.described, "input": f"3x{size[0]}x{size[1]}", "device": str(device), "dtypes": args.dtypes,
        "representations": kinds,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "fastinterp": __version__, "iters": args.iters,
        "warmup": args.warmup, "rows": rows, "breakdown": breakdowns,
        "weights_mb": {"cnn": _tensor_mb(model), "generator": _tensor_mb(generator)},
        "memory": None if device.type == "cpu" and not (args.memory and bench_memory.supported()) else
        (MEMORY_CUDA if device.type == "cuda" else MEMORY_CPU),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "onnx": None if onnx is None else {key: onnx[key] for key in ("export_s", "mb", "providers", "onnxruntime")},
        "compiled": None if compiled is None else compiled["report"],
    }


def _compiled(model: nn.Module, explained: nn.Module, generator: nn.Module, explainers: dict,
              size: tuple[int, int], args: BenchConfig) -> dict:
    """The compiled forward, and per representation kind of ``explainers`` (the eager ones) the
    inductor explainer and/or the .pt2 package (float32, exported into a temporary folder), with
    their compile times: in this process, and unless
    ``args.compile_times`` is False in fresh processes, cold (an empty Inductor cache) then warm."""
    import tempfile

    from fastinterp.runtime.inductor import compile_mode
    from fastinterp.runtime.pt2_backend import load_pt2

    folder = Path(tempfile.mkdtemp(prefix="fastinterp-bench-compiled-"))
    report: dict[str, Any] = {"in_run_s": {}, "fresh": {}, "pt2_mb": {}}
    inductor, packages = {}, {}
    for kind in dict.fromkeys(label.split("-")[0] for label in explainers):
        for backend in ("inductor", "pt2"):
            if backend in args.backends and args.compile_times:  # before this process compiles anything
                report["fresh"][f"{backend}-{kind}"] = _fresh_compile_times(args, kind, backend, folder)
        if "inductor" in args.backends:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DomainWarning)
                inductor[kind] = compile_explainer(explained, generator, representation=kind, input_size=size,
                                                   backend="inductor", batch_sizes=args.batch_sizes)
            report["in_run_s"][f"inductor-{kind}"] = time.perf_counter() - start
        if "pt2" in args.backends:
            path = folder / f"{kind}.pt2"
            if not path.is_file():  # not made by the fresh-process timing
                eager = explainers.get(kind)  # the float32 one (absent when only --dtypes bfloat16 ran)
                if eager is None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DomainWarning)
                        eager = compile_explainer(explained, generator, representation=kind, input_size=size)
                start = time.perf_counter()
                eager.export_pt2(path)
                report["in_run_s"][f"pt2-{kind}"] = time.perf_counter() - start
            report["pt2_mb"][kind] = path.stat().st_size / 1e6
            packages[kind] = load_pt2(path, device=args.device)
    forward = torch.compile(copy.deepcopy(model), dynamic=False, mode=compile_mode(torch.device(args.device)))
    return {"inductor": inductor, "pt2": packages, "forward": forward, "folder": folder, "report": report}


def _fresh_compile_times(args: BenchConfig, kind: str, backend: str, folder: Path) -> dict[str, float]:
    """``_time_compile`` in two fresh processes sharing one new Inductor cache: cold, then warm; for
    pt2 also load + first explain of the package in a third."""
    import json
    import subprocess
    import tempfile

    cache = tempfile.mkdtemp(prefix="fastinterp-inductor-cache-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    config = json.dumps(args.__dict__)
    times = {}
    for label in ("cold", "warm", "load") if backend == "pt2" else ("cold", "warm"):
        step = "load" if label == "load" else backend
        run = subprocess.run([sys.executable, "-m", "fastinterp.runtime.bench", config, kind, step, str(folder)],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"backends: timing {backend} ({kind}) in a fresh process failed: "
                               f"{run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
        times[f"{label}_s"] = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
    shutil.rmtree(cache, ignore_errors=True)
    return times


def _time_compile(config: dict, kind: str, step: str, folder: str) -> float:
    """In a fresh process (``python -m fastinterp.runtime.bench``): seconds of compile(...,
    backend="inductor") + its first explain at the smallest batch ("inductor"), of export_pt2
    ("pt2": writes folder/kind.pt2), or of load_pt2 + its first explain ("load")."""
    from fastinterp.runtime.pt2_backend import load_pt2

    args = BenchConfig(**config)
    pair = _models(args)
    device = torch.device(args.device)
    images = torch.rand(min(args.batch_sizes), 3, *pair.size, device=device)
    path = Path(folder) / f"{kind}.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if step == "load":
            load_pt2(path, device=device).explain(images)
        elif step == "inductor":
            compile_explainer(pair.explained.to(device), pair.generator.to(device), representation=kind,
                              input_size=pair.size, backend="inductor").explain(images)
        else:
            eager = compile_explainer(pair.explained.to(device), pair.generator.to(device), representation=kind,
                                      input_size=pair.size)
            start = time.perf_counter()
            eager.export_pt2(path)
    return time.perf_counter() - start


def _compiled_forward(forward: Callable, images: torch.Tensor) -> Callable[[], object]:
    def call():
        with torch.inference_mode():
            forward(images)
    return call


def _compiled_methods(compiled: dict, images: torch.Tensor, smallest: bool) -> dict[str, Callable[[], object]]:
    methods: dict[str, Callable[[], object]] = {"compiled-forward": _compiled_forward(compiled["forward"], images)}
    targets = torch.full((images.shape[0],), -1, dtype=torch.int64, device=images.device)
    for kind, explainer in compiled["inductor"].items():
        methods[f"inductor-explain-{kind}"] = lambda explainer=explainer, images=images: explainer.explain(images)
        if smallest:
            graph = explainer.graph(tuple(images.shape[-2:]))

            def direct(graph=graph, images=images):
                with torch.no_grad():
                    graph(images, targets)

            methods[f"inductor-graph-{kind}"] = direct
    array = images.cpu().numpy()
    for kind, explainer in compiled["pt2"].items():
        methods[f"pt2-explain-{kind}"] = lambda explainer=explainer, array=array: explainer.explain(array)
    return methods


def _export_onnx(cnn, explainers: dict, size: tuple[int, int], args) -> dict:
    """Export the CNN alone and each float32 explainer to ONNX (a temporary folder); time it."""
    import tempfile
    import warnings

    import onnxruntime

    folder = Path(tempfile.mkdtemp(prefix="fastinterp-bench-"))
    files, export_s, mb = {}, {}, {}
    start = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(copy.deepcopy(cnn).cpu().eval(), (torch.rand(2, 3, *size),), None,
                                    dynamo=True, input_names=["images"], dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(folder / "cnn.onnx"))
    files["forward"], export_s["forward"] = folder / "cnn.onnx", time.perf_counter() - start
    for label, explainer in explainers.items():
        if label in KINDS:  # float32 explainers only
            start = time.perf_counter()
            files[f"explain-{label}"] = explainer.export_onnx(folder / f"{label}.onnx")
            export_s[f"explain-{label}"] = time.perf_counter() - start
    for name, path in files.items():
        mb[name] = path.stat().st_size / 1e6
    return {"files": files, "export_s": export_s, "mb": mb, "providers": _ort_providers(args), "folder": folder,
            "onnxruntime": onnxruntime.__version__, "sessions": {}}


def _ort_providers(args: BenchConfig) -> list[str]:
    return args.ort_providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device != "cpu"
                                  else ["CPUExecutionProvider"])


def _onnx_methods(onnx: dict, images: torch.Tensor, threads: int, args) -> dict[str, Callable[[], object]]:
    """ONNX Runtime sessions at ``threads`` intra-op threads (made once per thread count); images
    go in as numpy (host memory)."""
    import numpy as np
    import onnxruntime as ort

    array = np.ascontiguousarray(images.detach().cpu().numpy())
    sessions = onnx["sessions"].setdefault(threads, {})
    if not sessions:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's threads spin after a run by default: interleaved with torch calls they
        # would take the cores from the next (torch) method. Off for every session here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for name, path in onnx["files"].items():
            if name == "forward":
                sessions[name] = ort.InferenceSession(str(path), options, providers=onnx["providers"])
            else:
                sessions[name] = load_onnx(path, providers=onnx["providers"], threads=threads,
                                           config={"session.intra_op.allow_spinning": "0"})
    methods: dict[str, Callable[[], object]] = {}
    for name, session in sessions.items():
        methods[f"ort-{name}"] = (lambda session=session: session.run(None, {"images": array})) if name == "forward" \
            else (lambda explainer=session: explainer.explain(array))
    return methods


def markdown(report: dict) -> str:
    lines = [f"fastinterp-bench: {report['model']}, input {report['input']}, {report['device']}, explain in "
             f"{' and '.join(report['dtypes'])}, torch "
             f"{report['torch']}, {report['iters']} interleaved rounds after {report['warmup']} warm-up calls, "
             f"{report['date']}", "",
             "| threads | batch | method | p50 ms | p95 ms | p99 ms | images/s | x forward | peak MB | Python ms |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        python = "" if r.get("outside_ops_ms") is None else f"{r['outside_ops_ms']:.2f}"
        lines.append(f"| {r['threads']} | {r['batch']} | {r['method']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['images_per_s']:.1f} | {r['ratio_to_forward']:.3f} | {peak} | {python} |")
    lines += ["", PYTHON_MS]
    if report.get("memory"):
        lines += _memory_markdown(report)
    if report.get("onnx"):
        onnx = report["onnx"]
        lines += ["", f"ONNX Runtime {onnx['onnxruntime']} ({', '.join(onnx['providers'])}): export "
                  + ", ".join(f"{name} {onnx['export_s'][name]:.1f} s / {onnx['mb'][name]:.1f} MB" for name in onnx["mb"])
                  + ". Ratios measured side by side:", "",
                  "| threads | batch | kind | ort explain / ort forward | ort explain / torch explain |", "|---:|---:|---|---:|---:|"]
        by = {(r["threads"], r["batch"], r["method"]): r["p50_ms"] for r in report["rows"]}
        for (threads, batch, method), p50 in by.items():
            if method.startswith("ort-explain-"):
                kind = method.removeprefix("ort-explain-")
                lines.append(f"| {threads} | {batch} | {kind} | {p50 / by[(threads, batch, 'ort-forward')]:.3f} | "
                             f"{p50 / by[(threads, batch, 'explain-' + kind)]:.3f} |")
    if report.get("compiled"):
        lines += _compiled_markdown(report)
    if report["breakdown"]:
        stages = list(dict.fromkeys(s for b in report["breakdown"] for s in b["stages_ms"]))
        lines += ["", "explain() per stage (ms, median of Explainer.profile, synchronised per stage):", "",
                  "| threads | batch | kind | " + " | ".join(stages) + " |",
                  "|---:|---:|---|" + "---:|" * len(stages)]
        for b in report["breakdown"]:
            cells = " | ".join(f"{b['stages_ms'][s]:.2f}" if s in b["stages_ms"] else "" for s in stages)
            lines.append(f"| {b['threads']} | {b['batch']} | {b['kind']} | {cells} |")
    return "\n".join(lines)


def _memory_markdown(report: dict) -> list[str]:
    weights = report["weights_mb"]
    lines = ["", f"Memory: {report['memory']} Weights, held before every call and not in the columns: CNN "
             f"{weights['cnn']:.1f} MB, generator {weights['generator']:.1f} MB.", ""]
    cpu = report["device"] == "cpu"
    lines += ["| threads | batch | method | peak MB | x forward |"
              + (" first call MB | held MB | peak RSS MB | peak RSS x forward |" if cpu else ""),
              "|---:|---:|---|---:|---:|" + ("---:|---:|---:|---:|" if cpu else "")]
    forward = {(r["threads"], r["batch"]): r for r in report["rows"] if r["method"] == "forward"}
    for r in report["rows"]:
        if r["peak_mb"] is None:
            continue
        f = forward[(r["threads"], r["batch"])]
        line = f"| {r['threads']} | {r['batch']} | {r['method']} | {r['peak_mb']:.0f} | {r['peak_mb'] / f['peak_mb']:.2f} |"
        if cpu:
            line += (f" {r['first_call_mb']:.0f} | {r['held_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] / f['peak_rss_mb']:.2f} |")
        lines.append(line)
    return lines


def _compiled_markdown(report: dict) -> list[str]:
    c = report["compiled"]
    by = {(r["threads"], r["batch"], r["method"]): r["p50_ms"] for r in report["rows"]}
    lines = ["", "Compiled backends, ratios measured side by side (inductor: compile(..., backend='inductor'); "
             "pt2: a package from Explainer.export_pt2):", "",
             "| threads | batch | kind | inductor / forward | inductor / compiled forward | pt2 / forward | "
             "pt2 / inductor | compiled forward / forward |", "|---:|---:|---|---:|---:|---:|---:|---:|"]

    def ratio(a, b):
        return "" if a is None or b is None else f"{a / b:.3f}"

    for threads, batch, kind in dict.fromkeys((t, b, m.rsplit("-", 1)[-1]) for (t, b, m) in by
                                              if m.startswith(("inductor-explain-", "pt2-explain-"))):
        forward, cforward = by[(threads, batch, "forward")], by.get((threads, batch, "compiled-forward"))
        ind, pt2 = by.get((threads, batch, f"inductor-explain-{kind}")), by.get((threads, batch, f"pt2-explain-{kind}"))
        lines.append(f"| {threads} | {batch} | {kind} | {ratio(ind, forward)} | {ratio(ind, cforward)} | "
                     f"{ratio(pt2, forward)} | {ratio(pt2, ind)} | {ratio(cforward, forward)} |")
    times = [f"{name} {seconds:.1f} s" for name, seconds in c["in_run_s"].items()]
    lines += ["", "Compile times in this run (trace + compile + the batch_sizes' first calls): "
              + (", ".join(times) or "none") + "."]
    for name, fresh in c["fresh"].items():
        load = f", load + first explain {fresh['load_s']:.2f} s" if "load_s" in fresh else ""
        lines.append(f"- {name}, fresh processes: cold cache {fresh['cold_s']:.1f} s, warm cache "
                     f"{fresh['warm_s']:.1f} s{load}")
    for kind, mb in c["pt2_mb"].items():
        lines.append(f"- pt2-{kind}: {mb:.1f} MB")
    return lines


def _memory_method(request: dict) -> Callable[[], object]:
    """In a fresh process (``bench_memory.measure_in_child``'s child): the one method
    ``request["method"]`` (a row name) of a run of ``request["config"]``, built from scratch, at
    ``request["batch"]``; ``request["folder"]`` holds the files the parent exported (ONNX, .pt2)."""
    args = BenchConfig(**request["config"])
    name, batch, folder = request["method"], request["batch"], request["folder"]
    torch.set_num_threads(request["threads"])
    pair = _models(args)
    device = torch.device(args.device)
    model, explained, generator = pair.model.to(device), pair.explained.to(device), pair.generator.to(device)
    images = torch.rand(batch, 3, *pair.size, device=device, generator=torch.Generator(device).manual_seed(1))
    kind = name.rsplit("-", 1)[-1]
    if name.startswith("ort-"):
        key = "forward" if name == "ort-forward" else name.removeprefix("ort-")
        onnx = {"files": {key: Path(folder) / ("cnn.onnx" if key == "forward" else f"{kind}.onnx")},
                "providers": _ort_providers(args), "sessions": {}}
        return _onnx_methods(onnx, images, request["threads"], args)[name]
    if name == "compiled-forward":
        from fastinterp.runtime.inductor import compile_mode

        return _compiled_forward(torch.compile(copy.deepcopy(model), dynamic=False, mode=compile_mode(device)), images)
    if name.startswith("pt2-"):
        from fastinterp.runtime.pt2_backend import load_pt2

        package, array = load_pt2(Path(folder) / f"{kind}.pt2", device=device), images.cpu().numpy()
        return lambda: package.explain(array)
    if name.startswith("inductor-"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DomainWarning)
            compiled = compile_explainer(explained, generator, representation=kind, input_size=pair.size,
                                         backend="inductor", batch_sizes=[batch])
        return lambda: compiled.explain(images)
    label = name.split("-", 1)[1] if name.startswith(("explain-", "hand-")) else None
    explainers = {} if label is None else _explainers(explained, generator, [label], pair.size)
    pgc = _pytorch_gradcam(model, pair.size, device) if name == "pytorch-gradcam" else None
    return _torch_methods(model, generator, explainers, pgc, images)[name]


if __name__ == "__main__":
    import json

    if sys.argv[1] == "--memory":  # bench_memory.measure_in_child's child: one request (JSON)
        print(json.dumps(bench_memory.measure(_memory_method(json.loads(sys.argv[2])))))
    else:  # _fresh_compile_times' child: config JSON, kind, step, folder
        print(json.dumps({"seconds": _time_compile(json.loads(sys.argv[1]), *sys.argv[2:5])}))
