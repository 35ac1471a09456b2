"""Groundwork for the compiled runtime (issue 23), before any of it is built: ``torch.compile`` of
the graph the ONNX export already traces (``trace_layer_maps`` + ``ExplainGraph``), its compile
time with a cold and a warm Inductor cache, its latency beside the eager explain and the plain
inference-mode forward of the same process, and its maps' distance from the eager ones.

    TORCHINDUCTOR_CACHE_DIR=/tmp/ind python benchmarks/inductor_probe.py resnet50 224 8 gradient   # cold
    TORCHINDUCTOR_CACHE_DIR=/tmp/ind python benchmarks/inductor_probe.py resnet50 224 8 gradient   # warm

Arguments: torchvision ARCH (random weights, 1000 classes), input SIDE, BATCH, KIND (gradient or
activation); a fresh fast generator. Results: benchmarks/NOTES.md."""
import sys
import time
import warnings

import torch
import torchvision

import fastinterp
from fastinterp.export.trace import trace_layer_maps
from fastinterp.export.graph import ExplainGraph
from fastinterp.generator.networks import build_generator
from fastinterp.maps.representation import paper_positions
from fastinterp.maps.options import ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION

arch, side, batch, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
cnn = getattr(torchvision.models, arch)(num_classes=1000).eval()
gen = build_generator("fast").eval()
o = DEFAULT_REPRESENTATION if kind == "gradient" else ACTIVATION_REPRESENTATION
x = torch.rand(batch, 3, side, side)
t0 = time.perf_counter()
with torch.inference_mode(False):
    graph = trace_layer_maps(cnn, o["kind"], o["method"], x[:2], dynamic_size=False)
    with torch.no_grad():
        _, _, *maps = graph(x[:2], torch.full((2,), -1))
    module = ExplainGraph(graph, gen, list(range(len(maps))), paper_positions(len(maps), 8),
                          o["order"] == "last_to_first", (64, 64), resize_images=side != 64).eval()
t1 = time.perf_counter()
compiled = torch.compile(module, dynamic=False)
targets = torch.full((batch,), -1)
with torch.no_grad():
    t2 = time.perf_counter()
    out = compiled(x, targets)
    t3 = time.perf_counter()
    for _ in range(2):
        compiled(x, targets)
    s = time.perf_counter()
    for _ in range(5):
        compiled(x, targets)
    t_comp = (time.perf_counter() - s) / 5
    s = time.perf_counter()
    for _ in range(3):
        with torch.inference_mode():
            cnn(x)
    t_fwd = (time.perf_counter() - s) / 3
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ex = fastinterp.compile(cnn, gen, representation=kind, input_size=side)
ex.explain(x)
s = time.perf_counter()
for _ in range(3):
    ref = ex.explain(x)
t_eager = (time.perf_counter() - s) / 3
err = (out[2] - ref.maps).abs().max().item()
print(f"{arch} {side} b{batch} {kind}: trace {t1-t0:.1f} s, compile+first call {t3-t2:.1f} s, compiled {1e3*t_comp:.0f} ms, "
      f"eager explain {1e3*t_eager:.0f} ms, forward {1e3*t_fwd:.0f} ms, max |maps diff| {err:.1e}")
