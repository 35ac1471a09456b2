"""``fastinterp-bench``: what ``explain()`` costs, beside the CNN's plain forward, in one run.

For a torchvision model (random weights: timings do not depend on them; a fresh generator of the
chosen kind) or the demo's checkpoint pair, for every batch size x thread count it times, in
interleaved rounds (one call of each method per round, so that a noisy machine slows them alike):

    forward         the CNN alone under torch.inference_mode() (the baseline of every ratio)
    gradcam         fastinterp.gradcam: one layer's Grad-CAM (the last conv)
    pytorch-gradcam pytorch_grad_cam.GradCAM on the last conv, when installed (on a copy)
    hand-<kind>     the README's hand-written pipeline (cnn_representation, resize, generator)
    explain-<kind>  Explainer.explain, per representation kind
  with --backends ... onnxruntime (the CNN and each kind's pipeline exported once to ONNX):
    ort-forward     the CNN alone in ONNX Runtime (the baseline of the ONNX ratios)
    ort-explain-<kind>  fastinterp.load_onnx(...).explain: the whole pipeline as one ONNX graph

and reports p50/p95/p99 latency (ms), images/s, the ratio of p50 to the forward's p50, the peak
resident memory of that method's calls (Linux: VmHWM, reset before each method's first call; on
CUDA: torch.cuda.max_memory_allocated), the Python time of a call (CPU: p50 wall time minus the
time inside aten ops measured by torch.profiler) and the per-stage breakdown of explain (median
of ``Explainer.profile``). Output: a markdown table on stdout, ``--json FILE`` for the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

from fastinterp import pretrained
from fastinterp._version import __version__
from fastinterp.datasets.zoo import load_cnn
from fastinterp.generator.checkpoint import load_generator
from fastinterp.generator.networks import build_generator
from fastinterp.maps.layers import conv_layers
from fastinterp.maps.options import KINDS
from fastinterp.maps.representation import cnn_representation, gradcam
from fastinterp.maps.resize import resize_images
from fastinterp.runtime.compiler import DomainWarning
from fastinterp.runtime.compiler import compile as compile_explainer
from fastinterp.runtime.onnx_backend import load_onnx

__all__ = ["BenchConfig", "markdown", "run_bench"]


@dataclass
class BenchConfig:
    """What one ``fastinterp-bench`` run measures (the command's flags, one field each)."""

    model: str = "resnet50"  # torchvision classifier, random weights
    size: int = 224  # input side in pixels
    classes: int = 1000
    generator: str = "fast"  # fresh generator kind
    checkpoints: str | None = None  # "demo" (the shipped pair) or a folder with cnn/generator.safetensors
    representations: list[str] = field(default_factory=lambda: list(KINDS))
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    threads: list[int] = field(default_factory=lambda: [torch.get_num_threads()])
    iters: int = 15  # timed rounds
    warmup: int = 2
    device: str = "cpu"
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    pytorch_grad_cam: bool = True  # compare with pytorch-grad-cam when it is installed
    backends: list[str] = field(default_factory=lambda: ["torch"])
    ort_providers: list[str] | None = None

    def quick(self) -> BenchConfig:
        """A tiny run (resnet18 at 64 px, batch 2, 3 rounds): checks the tool, not the numbers."""
        small = {"model": "resnet18", "size": 64, "classes": 10} if self.checkpoints is None else {}
        return BenchConfig(**{**self.__dict__, **small, "batch_sizes": [2], "iters": 3, "warmup": 1})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _reset_peak_rss() -> bool:
    """Reset Linux's peak resident set size (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


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


def _inside_ops_ms(methods: dict[str, Callable[[], object]], iters: int) -> dict[str, float]:
    """Per method, the median over a few calls of the time spent inside top-level aten ops
    (torch.profiler, CPU). A call's unprofiled wall time minus this is its Python (and framework)
    time: the profiler's own per-op cost inflates the ops, so this estimate errs low, never high
    by the profiler's overhead."""
    from torch.profiler import ProfilerActivity, profile

    result = {}
    for name, method in methods.items():
        values = []
        for _ in range(max(3, min(iters, 7))):
            with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
                method()
            values.append(sum(e.cpu_time_total for e in prof.events() if e.cpu_parent is None) / 1e3)
        result[name] = statistics.median(values)
    return result


def _models(args: BenchConfig) -> tuple[torch.nn.Module, torch.nn.Module, int, str]:
    """(cnn, generator, input side, description)."""
    if args.checkpoints is not None:
        if args.checkpoints == "demo":
            cnn_path, gen_path = (pretrained.path(name) for name in pretrained.DEMO)
        else:
            cnn_path, gen_path = Path(args.checkpoints) / "cnn.safetensors", Path(args.checkpoints) / "generator.safetensors"
        cnn, meta = load_cnn(cnn_path)
        generator, _ = load_generator(gen_path)
        return cnn, generator, meta["input_size"], f"{meta['arch']} + {generator.config['kind']} generator ({args.checkpoints})"
    torch.manual_seed(0)
    builder = getattr(torchvision.models, args.model, None)
    if builder is None:
        raise ValueError(f"model: torchvision has no model {args.model!r}")
    kwargs = {"aux_logits": False, "init_weights": False} if args.model in ("inception_v3", "googlenet") else {}
    cnn = builder(weights=None, num_classes=args.classes, **kwargs).eval()
    generator = build_generator(args.generator, k=8, size=64).eval()
    return cnn, generator, args.size, f"{args.model} (random weights) + fresh {args.generator} generator"


def run_bench(args: BenchConfig, progress: bool = True) -> dict:
    """Every measurement of one run (see the module doc)."""
    from tqdm.auto import tqdm

    device = torch.device(args.device)
    cnn, generator, side, described = _models(args)
    cnn, generator = cnn.to(device), generator.to(device)
    dtypes = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    # one explainer per (representation, dtype): "gradient", "activation", "gradient-bfloat16", ...
    with warnings.catch_warnings():  # a cost measurement: the generator need not have seen this CNN
        warnings.simplefilter("ignore", DomainWarning)
        explainers = {kind if dtype == "float32" else f"{kind}-{dtype}":
                      compile_explainer(cnn, generator, representation=kind, input_size=side, dtype=dtypes[dtype])
                      for dtype in dict.fromkeys(args.dtypes) for kind in args.representations}
    last_conv = conv_layers(cnn, torch.rand(1, 3, side, side, device=device))[-1]
    pgc = None
    if importlib.util.find_spec("pytorch_grad_cam") is not None and args.pytorch_grad_cam:
        from pytorch_grad_cam import GradCAM

        cam_model = copy.deepcopy(cnn)  # it registers hooks on the model it is given
        pgc = GradCAM(model=cam_model, target_layers=[dict(cam_model.named_modules())[last_conv]])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    onnx = _export_onnx(cnn, explainers, side, args) if "onnxruntime" in args.backends else None
    rows, breakdowns = [], []
    threads_before = torch.get_num_threads()
    configs = [(t, b) for t in args.threads for b in args.batch_sizes]
    total = len(configs) * (args.warmup + args.iters) * (3 + len(explainers) + len(args.representations)
                                                         + (pgc is not None) + (0 if onnx is None else
                                                                                len(onnx["files"])))
    bar = tqdm(total=total, desc="fastinterp-bench", unit="call", disable=not progress, file=sys.stderr)
    for threads, batch in configs:
        torch.set_num_threads(threads)
        images = torch.rand(batch, 3, side, side, device=device, generator=torch.Generator(device).manual_seed(1))

        # every method binds this round's images (default arguments: no late binding across batch sizes)
        def forward(images=images):
            with torch.inference_mode():
                cnn(images)

        methods: dict[str, Callable[[], object]] = {"forward": forward,
                                                    "gradcam": lambda images=images: gradcam(cnn, images)}
        if pgc is not None:
            methods["pytorch-gradcam"] = lambda images=images: pgc(input_tensor=images, targets=None)
        for kind in args.representations:  # the hand-written pipeline, float32
            explainer = explainers.get(kind) or next(e for label, e in explainers.items() if label.startswith(kind))
            options = dict(explainer.representation)

            def hand(options=options, explainer=explainer, images=images):
                rep = cnn_representation(cnn, images, **{**options, "teacher": None})
                small = resize_images(images, options["size"], explainer.image_resize)
                with torch.inference_mode():
                    out = generator(small, rep.cgm)
                    return torch.nn.functional.interpolate(out, size=images.shape[-2:], mode="bilinear",
                                                           antialias=True, align_corners=False)

            methods[f"hand-{kind}"] = hand
        for label, explainer in explainers.items():
            methods[f"explain-{label}"] = lambda explainer=explainer, images=images: explainer.explain(images)
        if onnx is not None:
            methods.update(_onnx_methods(onnx, images, threads, args))
        times: dict[str, list[float]] = {name: [] for name in methods}
        peaks: dict[str, float | None] = {}
        for name, method in methods.items():  # warm-up, and each method's own peak memory
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            reset = _reset_peak_rss()
            for _ in range(args.warmup):
                method()
                bar.update()
            sync()
            peaks[name] = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                           else _peak_rss_mb() if reset else None)
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
        # torch methods only: ONNX Runtime runs no aten ops for the profiler to see
        torch_methods = {name: m for name, m in methods.items() if not name.startswith("ort-")}
        inside = _inside_ops_ms(torch_methods, args.iters) if device.type == "cpu" and small else {}
        base = statistics.median(times["forward"])
        for name, values in times.items():
            p50 = statistics.median(values)
            rows.append({"threads": threads, "batch": batch, "method": name, "p50_ms": p50,
                         "p95_ms": _percentile(values, 95), "p99_ms": _percentile(values, 99),
                         "images_per_s": 1e3 * batch / p50, "ratio_to_forward": p50 / base,
                         "peak_mb": peaks[name],
                         "outside_ops_ms": p50 - inside[name] if name in inside else None})
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
        import shutil

        onnx["sessions"].clear()
        shutil.rmtree(onnx["folder"], ignore_errors=True)
    return {
        "model": described, "input": f"3x{side}x{side}", "device": str(device), "dtypes": args.dtypes,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "fastinterp": __version__, "iters": args.iters,
        "warmup": args.warmup, "rows": rows, "breakdown": breakdowns,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "onnx": None if onnx is None else {key: onnx[key] for key in ("export_s", "mb", "providers", "onnxruntime")},
    }


def _export_onnx(cnn, explainers: dict, side: int, args) -> dict:
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
        program = torch.onnx.export(copy.deepcopy(cnn).cpu().eval(), (torch.rand(2, 3, side, side),), None,
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
    providers = args.ort_providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device != "cpu"
                                       else ["CPUExecutionProvider"])
    return {"files": files, "export_s": export_s, "mb": mb, "providers": providers, "folder": folder,
            "onnxruntime": onnxruntime.__version__, "sessions": {}}


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
        sessions["forward"] = ort.InferenceSession(str(onnx["files"]["forward"]), options, providers=onnx["providers"])
        for name, path in onnx["files"].items():
            if name != "forward":
                sessions[name] = load_onnx(path, providers=onnx["providers"], threads=threads,
                                           config={"session.intra_op.allow_spinning": "0"})
    methods: dict[str, Callable[[], object]] = {
        "ort-forward": lambda array=array: sessions["forward"].run(None, {"images": array})}
    for name, explainer in sessions.items():
        if name != "forward":
            methods[f"ort-{name}"] = lambda explainer=explainer, array=array: explainer.explain(array)
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
    lines += ["", "Python ms (smallest batch, CPU): p50 wall time minus the time inside top-level aten ops (median "
              "of profiled calls, torch.profiler): the call's Python and framework time, to ~1 ms (the ops' own "
              "spread); the forward's own is the CNN's Python."]
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
    if report["breakdown"]:
        stages = list(dict.fromkeys(s for b in report["breakdown"] for s in b["stages_ms"]))
        lines += ["", "explain() per stage (ms, median of Explainer.profile, synchronised per stage):", "",
                  "| threads | batch | kind | " + " | ".join(stages) + " |",
                  "|---:|---:|---|" + "---:|" * len(stages)]
        for b in report["breakdown"]:
            cells = " | ".join(f"{b['stages_ms'][s]:.2f}" if s in b["stages_ms"] else "" for s in stages)
            lines.append(f"| {b['threads']} | {b['batch']} | {b['kind']} | {cells} |")
    return "\n".join(lines)
