"""On a CUDA device (``cuda`` marker; skipped without one, run by ``bash benchmarks/gpu_check.sh``):
the Triton kernel against the PyTorch reference, the runtime against the same pipeline on the CPU,
and the exported pipeline in ONNX Runtime's CUDA / TensorRT providers against the torch CUDA backend.

Tolerances: the kernel 1e-5 absolute (the CPU backends' bound; maps in [0, 1]); cuDNN's
convolutions round differently from the CPU's, so whole pipelines 1e-3 on maps in [0, 1] (fp16
ONNX: 5e-2). Outputs are poisoned with NaN first, so an element the kernel never writes fails.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import fastinterp
from fastinterp.generator.networks import build_generator
from fastinterp.ops import cumulative_average, cumulative_average_reference
from conftest import build

pytestmark = pytest.mark.cuda

KERNEL_ATOL = 1e-5
PIPELINE_ATOL = 1e-3


def ragged_case(rng: random.Random, dtype: torch.dtype):
    """L maps of random sizes (some constant), an output size and K positions."""
    exponents = (-2, 3) if dtype == torch.float16 else (-30, 30)  # finite after the cast
    length, batch = rng.randint(1, 60), rng.randint(1, 6)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    maps = []
    for _ in range(length):
        h, w = rng.randint(1, 120), rng.randint(1, 120)
        m = torch.randn(batch, h, w, generator=generator) * 10.0 ** rng.randint(*exponents)
        if rng.random() < 0.1:
            m = torch.full((batch, h, w), rng.uniform(-5, 5))
        maps.append(m.to(dtype))
    size = (rng.randint(1, 300), rng.randint(1, 300))
    positions = sorted(rng.sample(range(length), rng.randint(1, length)))
    return maps, size, positions


@pytest.mark.parametrize("dtype, count", [(torch.float32, 200), (torch.float16, 30), (torch.bfloat16, 30),
                                          (torch.float64, 30)])
def test_triton_matches_the_reference_on_ragged_shapes(dtype, count):
    rng = random.Random(0)
    for _ in range(count):
        maps, size, positions = ragged_case(rng, dtype)
        reference = cumulative_average_reference(maps, size, positions)
        out = torch.full((maps[0].shape[0], len(positions), *size), float("nan"), device="cuda")
        cumulative_average([m.cuda() for m in maps], size, positions, backend="triton", out=out)
        error = (out.cpu() - reference).abs().max().item()
        assert error <= KERNEL_ATOL, (len(maps), size, positions, error)  # NaN (unwritten) fails too


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_map_is_named(bad):
    maps = [torch.randn(2, 9, 9, device="cuda") for _ in range(3)]
    maps[1][0, 3, 3] = bad
    with pytest.raises(ValueError, match=r"maps\[1\]"):
        cumulative_average(maps, 32, [0, 2], backend="triton")


def test_a_batch_beyond_the_grid_limit_and_the_numerics_rules():
    # 70,000 > CUDA's 65,535 limit of grid axis 1 (the kernel folds it into axis 0)
    maps = [torch.rand(70_000, 2, 3, device="cuda"), torch.rand(70_000, 1, 1, device="cuda")]
    out = torch.full((70_000, 2, 5, 4), float("nan"), device="cuda")
    cumulative_average(maps, (5, 4), [0, 1], backend="triton", out=out)
    reference = cumulative_average_reference([m.cpu() for m in maps], (5, 4), [0, 1])
    assert (out.cpu() - reference).abs().max().item() <= KERNEL_ATOL
    # one ulp of noise on a constant map: zeros, as the reference
    noisy = torch.full((2, 5, 6), 3.7, device="cuda")
    noisy[0, 1, 2] = torch.nextafter(noisy[0, 1, 2], torch.tensor(9.0, device="cuda"))
    assert torch.equal(cumulative_average([noisy], (5, 6), [0], backend="triton").cpu(), torch.zeros(2, 1, 5, 6))
    # a float64 map whose span overflows: exact values, never NaN
    big = torch.finfo(torch.float64).max
    huge = torch.tensor([[[-big, big], [0.0, big / 2]]], dtype=torch.float64, device="cuda")
    assert torch.equal(cumulative_average([huge], (2, 2), [0], backend="triton").cpu(),
                       torch.tensor([[[[0.0, 1.0], [0.5, 0.75]]]]))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "densenet121", "vgg13"])
@pytest.mark.parametrize("kind", ["gradient", "activation"])
def test_explain_on_cuda_matches_the_cpu_pipeline(arch, kind):
    cnn, generator = build(arch), build_generator("fast", k=8, size=64).eval()
    x = torch.rand(3, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    cpu = fastinterp.compile(cnn, generator, representation=kind, input_size=80, backend="torch").explain(x)
    # device="cuda" (no index): the explainer copies the CPU CNN there and normalises the device
    on_gpu = fastinterp.compile(cnn, generator, representation=kind, input_size=80, device="cuda")
    assert next(cnn.parameters()).device.type == "cpu"  # the user's CNN stays where it was
    out = on_gpu.explain(x.cuda())
    assert out.maps.device.type == "cuda" and torch.equal(out.targets.cpu(), cpu.targets)
    assert (out.maps.cpu() - cpu.maps).abs().max().item() <= PIPELINE_ATOL


def test_onnx_runtime_on_the_gpu_matches_the_torch_cuda_backend(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        pytest.skip(f"onnxruntime has no CUDAExecutionProvider (has {available}): pip install 'fastinterp[gpu]'")
    cnn, generator = build("resnet18"), build_generator("fast", k=8, size=64).eval()
    explainer = fastinterp.compile(cnn, generator, input_size=96, device="cuda", representation="gradient")
    files = {"fp32": explainer.export_onnx(tmp_path / "fp32.onnx"),
             "fp16": explainer.export_onnx(tmp_path / "fp16.onnx", fp16=True)}
    configs = [("cuda-fp32", files["fp32"], ["CUDAExecutionProvider"], PIPELINE_ATOL),
               ("cuda-fp16", files["fp16"], ["CUDAExecutionProvider"], 5e-2)]
    if "TensorrtExecutionProvider" in available:
        configs.append(("tensorrt-fp16", files["fp32"], None, 5e-2))  # default providers: TensorRT first
    x = torch.rand(4, 3, 96, 96, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    reference = explainer.explain(x)
    for name, path, providers, atol in configs:
        got = fastinterp.load_onnx(path, providers=providers).explain(x.cpu().numpy())
        assert np.array_equal(got.targets, reference.targets.cpu().numpy()), name
        assert float(np.abs(got.maps - reference.maps.cpu().numpy()).max()) <= atol, name


def test_fit_builds_and_trains_on_the_gpu_and_its_dataset_matches_the_cpus(tmp_path):
    """``fastinterp.fit(..., device="cuda")``: the dataset is built by the CNN on the GPU; its CGMs
    and teacher maps equal a CPU build of the same images (cuDNN rounding: PIPELINE_ATOL), and the
    generator is trained and reported."""
    from PIL import Image

    from fastinterp.datasets.reader import ExplanationDataset

    rng = np.random.default_rng(0)
    for i in range(20):
        folder = tmp_path / "images" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    cnn = build("resnet18")
    common = dict(steps=2, batch_size=4, report_images=2, teacher="gradcam++", input_size=64, preprocess="imagenet",
                  progress=False)
    gpu = fastinterp.fit(cnn, tmp_path / "images", out=tmp_path / "gpu", device="cuda", **common)
    fastinterp.fit(cnn, tmp_path / "images", out=tmp_path / "cpu", device="cpu", **common)
    assert gpu.is_file() and (tmp_path / "gpu" / "report.md").is_file()
    a, b = ExplanationDataset(tmp_path / "gpu" / "data" / "train"), ExplanationDataset(tmp_path / "cpu" / "data" / "train")
    same = [j for j in range(len(a)) if int(a[j]["target"]) == int(b[j]["target"])]  # a near-tie may flip a class
    assert len(same) >= len(a) - 2
    for j in same:
        for key in ("cgm", "teacher"):
            assert (a[j][key] - b[j][key]).abs().max().item() < PIPELINE_ATOL * 10, (j, key)  # float16 storage


def test_images_as_they_come_on_cuda():
    """PIL images, uint8 numpy (moved to the device) and uint8 CUDA tensors give the CUDA float
    tensor's maps; numpy in gives numpy out, a CUDA tensor in gives CUDA tensors out."""
    from PIL import Image

    torch.manual_seed(0)
    explainer = fastinterp.compile(build("resnet18").cuda(), build_generator("fast").eval(), input_size=64,
                                   representation="gradient")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = explainer.explain(torch.from_numpy(pixels).cuda().permute(0, 3, 1, 2).float() / 255)
    for form in (pixels, [Image.fromarray(p) for p in pixels], torch.from_numpy(pixels).cuda()):
        got = explainer.explain(form)
        maps = got.maps if isinstance(got.maps, torch.Tensor) else torch.from_numpy(got.maps).cuda()
        assert maps.device.type == "cuda" if isinstance(form, torch.Tensor) else isinstance(got.maps, np.ndarray)
        torch.testing.assert_close(maps, expected.maps, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="images: on cpu, but the explainer runs on cuda"):
        explainer.explain(torch.from_numpy(pixels))


@pytest.mark.parametrize("kind", ["gradient", "activation"])
def test_inductor_on_cuda_with_cuda_graphs_matches_the_eager_cuda_backend(kind):
    """compile(..., backend="inductor") on CUDA (mode="reduce-overhead": CUDA graphs per batch
    size; the cumulative maps from Inductor's own Triton kernel) against the eager CUDA backend;
    two calls per batch size, so that a replayed graph's outputs are checked, not only the first."""
    cnn = build("resnet18").cuda()
    generator = build_generator("fast", k=8, size=32)
    eager = fastinterp.compile(cnn, generator, representation=kind, input_size=64)
    compiled = fastinterp.compile(cnn, generator, representation=kind, input_size=64, backend="inductor",
                                  batch_sizes=[1, 4])
    assert compiled.mode == "reduce-overhead"
    for batch in (1, 4):
        first = torch.rand(batch, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(batch))
        second = torch.rand_like(first)
        a, b = compiled.explain(first), compiled.explain(second)  # a must survive b's replay
        for got, images in ((a, first), (b, second)):
            ref = eager.explain(images)
            assert torch.equal(got.targets, ref.targets)
            assert (got.maps - ref.maps).abs().max().item() <= 1e-3


def test_pt2_package_on_cuda_matches_the_eager_cuda_backend(tmp_path):
    cnn = build("resnet18").cuda()
    explainer = fastinterp.compile(cnn, build_generator("fast", k=8, size=32), representation="gradient",
                                   input_size=64)
    loaded = fastinterp.load_pt2(explainer.export_pt2(tmp_path / "cuda.pt2"))
    assert loaded.device.type == "cuda" and loaded.metadata["fastinterp.device"] == "cuda"
    images = torch.rand(3, 3, 64, 64, device="cuda")
    ref, got = explainer.explain(images), loaded.explain(images.cpu().numpy())
    assert (got.targets == ref.targets.cpu().numpy()).all()
    assert np.abs(got.maps - ref.maps.cpu().numpy()).max() <= 1e-3
