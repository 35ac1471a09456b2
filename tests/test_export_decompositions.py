"""The export's backward decompositions (``fastinterp.export.decompositions``): the traced graph's
per-layer maps equal the eager ``fastinterp.layer_maps``, with the plain decompositions and with
the ONNX Runtime (NCHWc) forms of ``nchwc_layout``; the NCHWc ReLU mask is ``x > 0``.

The traced graph runs in torch here (no ONNX export: fast); tests/test_onnx_export.py runs the
exported files in ONNX Runtime, and the slow test below the NCHWc form there.
"""

from __future__ import annotations

import pytest
import torch

import fastinterp
from fastinterp.export.decompositions import _step, nchwc_layout, nchwc_layout_enabled
from fastinterp.export.trace import trace_layer_maps
from conftest import build, max_rel_error

# resnet18: BatchNorm, ReLU after residual Adds, strided 3x3 and 1x1 convs (their backward: a
# ConvTranspose), max pooling; mobilenet_v3_small: strided depthwise convs, hardswish, SE blocks
# mobilenet_v3_small (4 cases, ~16 s) in the slow suite: the fast subset keeps under 2 minutes
ARCHITECTURES = ["resnet18", pytest.param("mobilenet_v3_small", marks=pytest.mark.slow)]


def randomise_batch_norm(cnn: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics away from the identity, so that its backward scale is tested."""
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return cnn


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("nchwc", [False, True], ids=["plain", "nchwc"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_traced_maps_equal_the_eager_maps(arch, nchwc, method):
    cnn = randomise_batch_norm(build(arch))
    example = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with nchwc_layout(nchwc):
        graph = trace_layer_maps(cnn, "gradient", method, example)
    assert not nchwc_layout_enabled()  # the switch is scoped to the trace
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # not the traced example
    for targets in (torch.full((3,), -1), torch.tensor([4, 0, 9])):
        with torch.no_grad():
            logits, chosen, *maps = graph(images, targets)
        eager = fastinterp.layer_maps(cnn, images, targets=chosen, method=method)
        assert torch.equal(chosen, eager.targets)
        if (targets < 0).all():
            assert torch.equal(chosen, eager.logits.argmax(1))
        assert max_rel_error(logits, eager.logits) <= 1e-5
        assert len(maps) == len(eager.maps)
        for i, (got, ref) in enumerate(zip(maps, eager.maps)):
            assert got.shape == ref.shape, i
            assert max_rel_error(got, ref) <= 1e-4, f"layer {i}: {max_rel_error(got, ref):.2e}"  # NaN gives inf


def test_the_nchwc_relu_mask_is_x_greater_than_zero():
    tiny = torch.finfo(torch.float32).tiny  # 2^-126, the smallest normal float32
    x = torch.tensor([0.0, -0.0, -1.0, -tiny, tiny, 2 * tiny, 1e-30, 0.5, 1.0, 3.0, 1e30, 3.4e38, float("inf"),
                      -float("inf")])
    x = x.reshape(1, 2, 7, 1)  # a (B, C, h, w) map: the scale is a depthwise conv over C
    mask = _step(x)
    assert mask.dtype == x.dtype and mask.shape == x.shape
    assert torch.equal(mask, (x > 0).to(x.dtype))
    random = torch.randn(2, 5, 4, 3) * torch.logspace(-30, 30, 12).reshape(1, 1, 4, 3)
    assert torch.equal(_step(random), (random > 0).float())


@pytest.mark.slow  # exports
def test_the_nchwc_export_runs_in_onnx_runtime_with_the_eager_maps(tmp_path):
    """As tests/test_onnx_export.py checks the default export: against the float64 maps and the
    torch backend, on inputs away from ReLU / max-pool ties."""
    import types

    from fastinterp.generator.networks import build_generator
    from test_onnx_export import assert_same, float64_reference, stable_images

    cnn = randomise_batch_norm(build("resnet18"))
    torch.manual_seed(1)
    generator = build_generator("fast", k=8, size=32)
    explainer = fastinterp.compile(cnn, generator, input_size=64, representation="gradient")
    with nchwc_layout():
        path = explainer.export_onnx(tmp_path / "resnet18-nchwc.onnx")
    loaded = fastinterp.load_onnx(path, providers=["CPUExecutionProvider"])
    e = types.SimpleNamespace(cnn=cnn, generator=generator, explainer=explainer)
    for batch, targets in ((1, None), (4, [3, 0, 9, 3])):
        images = stable_images(explainer, (batch, 3, 64, 64), seed=batch)
        got = loaded.explain(images.numpy(), targets, return_cgm=True)
        assert_same(got, explainer.explain(images, targets, return_cgm=True), return_cgm=True,
                    exact=float64_reference(e, images, None if targets is None else torch.tensor(targets)))
