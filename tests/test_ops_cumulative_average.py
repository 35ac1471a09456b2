"""The fused cumulative_average backends (C++/OpenMP, Triton) against the PyTorch reference.

Triton runs on CPU tensors under TRITON_INTERPRET=1 (the project's test command sets it); where
neither that nor CUDA is available its tests are skipped with the reason. Every output tensor is
poisoned with NaN before the call, so an element a backend forgets to write fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastinterp
from fastinterp import _C
from fastinterp.ops import BACKENDS, cumulative_average, cumulative_average_reference
from fastinterp.ops.packing import pack_maps, packed_dtype

TOL = 1e-5  # max abs error on fp32 inputs; outputs are in [0, 1]

TRITON_DEVICE = (
    "cuda" if torch.cuda.is_available() else "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else None
)
needs_triton = pytest.mark.skipif(
    TRITON_DEVICE is None, reason="Triton needs a CUDA device or TRITON_INTERPRET=1 (set by the project's test command)"
)
FAST = [
    pytest.param("cpp", "cpu", id="cpp"),
    pytest.param("triton", TRITON_DEVICE or "cpu", id="triton", marks=needs_triton),
]
ALL = [pytest.param("torch", "cpu", id="torch"), *FAST]


def run(backend, maps, size, positions, device):
    """Call ``backend`` through the public API into a NaN-poisoned ``out``; check it is returned."""
    maps = [m.to(device) for m in maps]
    out = torch.full((maps[0].shape[0], len(positions), *size), float("nan"), device=device)
    result = cumulative_average(maps, size, positions, backend=backend, out=out)
    assert result is out
    return out.cpu()


def max_err(out, ref):
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert not torch.isnan(out).any(), "an output element was left unwritten (still NaN)"
    return (out - ref).abs().max().item()


@st.composite
def problems(draw, max_layers, max_side, max_out, max_batch):
    """Ragged maps (random sizes 1..max_side, often repeating the previous map's size,
    magnitudes 1e-30..1e30, some constant), an output
    size (1..max_out per side: odd, non-multiples of the tile, smaller than some maps) and
    strictly increasing positions."""
    num_layers = draw(st.integers(1, max_layers))
    batch = draw(st.integers(1, max_batch))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(num_layers):
        if maps and draw(st.booleans()):  # runs of equal shapes, as in real CNNs
            h, w = maps[-1].shape[1:]
        else:
            h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
        kind = draw(st.sampled_from(["randn", "randn", "randn", "constant", "offset"]))
        scale = 10.0 ** draw(st.integers(-30, 30))
        m = torch.randn(batch, h, w, generator=g) * scale
        if kind == "constant":
            m = torch.full((batch, h, w), draw(st.floats(-1e30, 1e30)))
        elif kind == "offset":  # a large offset and a small spread: cancellation in (x - lo)
            m = 1000.0 * scale + m * 1e-3
        maps.append(m)
    size = (draw(st.integers(1, max_out)), draw(st.integers(1, max_out)))
    chosen = draw(st.sets(st.integers(0, num_layers - 1), min_size=1))
    return maps, size, sorted(chosen)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_layers=60, max_side=40, max_out=70, max_batch=5))
def test_cpu_backends_match_reference(backend, problem):
    maps, size, positions = problem
    ref = cumulative_average_reference(maps, size, positions)
    assert max_err(run(backend, maps, size, positions, "cpu"), ref) <= TOL


@needs_triton
@settings(max_examples=20 if TRITON_DEVICE == "cpu" else 200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_layers=60, max_side=40, max_out=37, max_batch=5))
@pytest.mark.slow
def test_triton_matches_reference(problem):
    maps, size, positions = problem
    ref = cumulative_average_reference(maps, size, positions)
    assert max_err(run("triton", maps, size, positions, TRITON_DEVICE), ref) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("size", [(45, 71), (7, 9), (40, 40)], ids=["upsample", "downsample", "identity"])
def test_resnet_like_shapes_multi_tile(backend, device, size):
    """Several tiles in both directions; upsampled, downsampled (Triton's 4-gather branch) and
    same-size maps (every path of both kernels), many small maps."""
    g = torch.Generator().manual_seed(5)
    sides = [40, 20, 20, 10, 10, 10, 5, 5, 3]
    maps = [torch.randn(2, s, s, generator=g) for s in sides]
    positions = [0, 2, 5, 8]
    ref = cumulative_average_reference(maps, size, positions)
    assert max_err(run(backend, maps, size, positions, device), ref) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("size", [(224, 224), (33, 17)])
def test_resnet50_layer_structure_with_paper_positions(backend, device, size):
    """resnet50's 53 conv-map shapes (scaled down by 8: runs of equal shapes) and positions."""
    sides = [14] + [7] * 11 + [4] * 13 + [2] * 19 + [1] * 9
    g = torch.Generator().manual_seed(11)
    maps = [torch.randn(3, s, s + 1, generator=g) for s in sides]
    positions = fastinterp.paper_positions(len(sides), 8)
    if backend == "triton" and device == "cpu":
        size = (size[0] // 9, size[1] // 5)  # keep the interpreter quick (still 2 tiles wide)
    ref = cumulative_average_reference(maps, size, positions)
    assert max_err(run(backend, maps, size, positions, device), ref) <= TOL


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_double_precision_inputs(backend, device, dtype):
    g = torch.Generator().manual_seed(1)
    maps = [(torch.randn(3, h, w, generator=g) * 50).to(dtype) for h, w in [(7, 5), (1, 9), (13, 13), (4, 2)]]
    ref = cumulative_average_reference(maps, (19, 11), [0, 2, 3])
    assert max_err(run(backend, maps, (19, 11), [0, 2, 3], device), ref) <= TOL


@pytest.mark.parametrize("backend,device", FAST)
def test_mixed_dtypes_are_promoted(backend, device):
    g = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 6, 6, generator=g).to(dt) for dt in (torch.float16, torch.bfloat16, torch.float32)]
    ref = cumulative_average_reference(maps, (9, 9), [1, 2])
    assert max_err(run(backend, maps, (9, 9), [1, 2], device), ref) <= TOL


@pytest.mark.parametrize("backend,device", FAST)
def test_extreme_magnitudes(backend, device):
    """Near-overflow range, subnormal float32 maps, and float64 maps beyond float32's range."""
    maps = [
        torch.tensor([[[-3e38, 3e38, 1.0], [0.0, 1e-38, -2e38]]]),
        torch.tensor([[[1e-44, 2e-44], [3e-44, 1e-45]]]),  # subnormal float32
        torch.tensor([[[1e30, 1e30 + 1e24], [1e30 - 1e24, 1e30]]]),  # huge offset, small spread
    ]
    ref = cumulative_average_reference(maps, (5, 7), [0, 1, 2])
    assert max_err(run(backend, maps, (5, 7), [0, 1, 2], device), ref) <= TOL
    maps64 = [torch.tensor([[[1e300, -1e300], [3e-300, 0.0]]], dtype=torch.float64),
              torch.tensor([[[1e-300, 2e-300, 5e-301]]], dtype=torch.float64)]
    ref = cumulative_average_reference(maps64, (3, 4), [0, 1])
    assert max_err(run(backend, maps64, (3, 4), [0, 1], device), ref) <= TOL


@pytest.mark.parametrize("backend,device", FAST)
def test_constant_maps_give_exact_zeros(backend, device):
    maps = [torch.full((2, 3, 5), 7.0), torch.zeros(2, 1, 1), torch.full((2, 4, 4), -1e30)]
    out = run(backend, maps, (6, 8), [0, 1, 2], device)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rounding_noise_is_a_constant_map_in_every_backend(backend, device, dtype):
    """A map constant up to a few ulps of its dtype (a uniform map whose channel sum was rounded
    differently at some pixels) is constant: zeros, not a full 0-to-1 map. A map varying by 64
    ulps is not. The rule is the reference's (``constant_rtol``), the same in every backend."""
    from fastinterp.ops import constant_rtol

    eps = torch.finfo(dtype).eps
    noisy = torch.full((2, 5, 6), 3.7, dtype=dtype)
    noisy[0, 1, 2] = torch.nextafter(noisy[0, 1, 2], torch.tensor(9.0, dtype=dtype))  # one ulp up
    noisy[1, 4, 0] = torch.nextafter(noisy[1, 4, 0], torch.tensor(0.0, dtype=dtype))  # one ulp down
    out = run(backend, [noisy], (7, 9), [0], device)
    assert torch.equal(out, torch.zeros_like(out))
    varied = torch.full((2, 5, 6), 3.7, dtype=dtype)
    varied[:, 2, 3] = 3.7 * (1 + 64 * eps)
    assert float((varied.amax() - varied.amin()) / varied.amax()) > constant_rtol(dtype)
    out = run(backend, [varied], (5, 6), [0], device)
    assert torch.equal(out, cumulative_average_reference([varied], (5, 6), [0]))
    assert out[:, 0, 2, 3].tolist() == [1.0, 1.0] and out.sum().item() == 2.0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("backend,device", ALL)
def test_float64_span_beyond_the_largest_double_is_normalised_not_nan(backend, device):
    """max - min overflows float64: every backend still returns the exact normalised values
    (the same size, so no interpolation: (x - min) / (max - min) in [0, 1])."""
    big = torch.finfo(torch.float64).max
    m = torch.tensor([[[-big, big], [0.0, big / 2]], [[big, big * 0.5], [-big * 0.5, -big]]], dtype=torch.float64)
    expected = torch.tensor([[[0.0, 1.0], [0.5, 0.75]], [[1.0, 0.75], [0.25, 0.0]]])
    out = run(backend, [m, m], (2, 2), [0, 1], device)
    assert torch.equal(out[:, 0], expected) and torch.equal(out[:, 1], expected)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 2])
def test_non_finite_input_raises(backend, device, bad, where):
    maps = [torch.randn(2, 4, 5) for _ in range(4)]
    maps[where][1, 2, 3] = bad
    with pytest.raises(ValueError, match=rf"maps\[{where}\]: contains NaN or infinite values"):
        run(backend, maps, (6, 6), [1, 3], device)
    # also when calling the backend function directly (no public-API pre-check)
    with pytest.raises(ValueError, match=rf"maps\[{where}\]: contains NaN or infinite values"):
        BACKENDS[backend]([m.to(device) for m in maps], (6, 6), [1, 3])


@pytest.mark.parametrize("backend,device", ALL)
def test_non_finite_map_after_last_position_still_raises(backend, device):
    maps = [torch.randn(1, 3, 3), torch.randn(1, 3, 3), torch.full((1, 2, 2), float("nan"))]
    with pytest.raises(ValueError, match=r"maps\[2\]"):
        run(backend, maps, (4, 4), [0, 1], device)


@pytest.mark.parametrize("backend,device", ALL)
def test_outputs_are_not_differentiable(backend, device):
    maps = [torch.randn(1, 3, 3, requires_grad=True), torch.randn(1, 2, 4, requires_grad=True)]
    out = cumulative_average([m.to(device) for m in maps], 5, [0, 1], backend=backend)
    assert not out.requires_grad and out.grad_fn is None


def test_auto_picks_cpp_on_cpu_and_triton_on_cuda_when_triton_is_there(monkeypatch):
    from fastinterp.kernels import cumulative_average as kernels
    from fastinterp.ops import pick_backend

    assert pick_backend("auto", torch.device("cpu")) == "cpp"
    monkeypatch.setattr(kernels, "AVAILABLE", True)
    assert pick_backend("auto", torch.device("cuda")) == "triton"
    monkeypatch.setattr(kernels, "AVAILABLE", False)  # no triton installed: the reference on CUDA
    assert pick_backend("auto", torch.device("cuda")) == "torch"
    assert pick_backend("auto", torch.device("mps")) == "torch"
    assert pick_backend("cpp", torch.device("cuda")) == "cpp"  # a named backend is taken as named
    assert sorted(BACKENDS) == ["cpp", "torch", "triton"]


def test_auto_on_cpu_runs_the_cpp_kernel(monkeypatch):
    calls = []
    real = BACKENDS["cpp"]
    monkeypatch.setitem(BACKENDS, "cpp", lambda *a, **k: calls.append(1) or real(*a, **k))
    cumulative_average([torch.randn(1, 3, 3)], 4, [0])
    assert calls == [1]


@pytest.mark.parametrize("backend,error,match", [
    ("cuda", ValueError, r"backend: expected 'auto' or one of \['cpp', 'torch', 'triton'\], got 'cuda'"),
    ("", ValueError, "backend"),
    ("CPP", ValueError, "backend"),
    (None, TypeError, "backend: expected a string"),
    (3, TypeError, "backend: expected a string"),
])
def test_bad_backend_argument(backend, error, match):
    with pytest.raises(error, match=match):
        cumulative_average([torch.randn(1, 3, 3)], 4, [0], backend=backend)


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend 'triton' runs on CUDA tensors"):
        cumulative_average([torch.randn(1, 3, 3)], 4, [0], backend="triton")


@pytest.mark.parametrize("out,match", [
    (torch.zeros(2, 1, 4, 4, dtype=torch.float64), "float32"),
    (torch.zeros(2, 2, 4, 4), r"shape \(2, 1, 4, 4\)"),
    (torch.zeros(2, 1, 4, 8)[..., ::2], "non-contiguous"),
])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_out_argument(backend, out, match):
    with pytest.raises(ValueError, match=match):
        cumulative_average([torch.randn(2, 3, 3)], 4, [0], backend=backend, out=out)


def test_packing_layout_and_dtype():
    maps = [torch.arange(2 * 2 * 3.0).view(2, 2, 3), torch.arange(2 * 1 * 2.0).view(2, 1, 2) + 100,
            torch.zeros(2, 5, 5)]
    packed = pack_maps(maps, 2, torch.float32)
    assert packed.table == [(0, 2, 3), (12, 1, 2)] and packed.batch == 2
    assert torch.equal(packed.data, torch.cat([maps[0].reshape(-1), maps[1].reshape(-1)]))
    assert packed_dtype([torch.zeros(1, dtype=torch.float16)], (torch.float32, torch.float64)) == torch.float32
    assert packed_dtype([torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1, dtype=torch.float16)],
                        (torch.float16, torch.bfloat16, torch.float32)) == torch.float32
    assert packed_dtype([torch.zeros(1, dtype=torch.float64)], (torch.float32, torch.float64)) == torch.float64


# ---- the compiled module itself -------------------------------------------------------------


def test_build_info_reports_openmp_as_built():
    """The default build has OpenMP (the CI also builds and tests one without: .ci/wheel_check.sh,
    which sets FASTINTERP_EXPECT_OPENMP=0)."""
    info = _C.build_info()
    assert info["openmp"] is (os.environ.get("FASTINTERP_EXPECT_OPENMP", "1") == "1")
    assert info["threads"] >= 1 and isinstance(info["avx2"], bool)
    assert callable(_C.cumulative_average)


@needs_triton
@pytest.mark.parametrize("over,error,match", [
    (dict(out=torch.zeros(3, 1, 4, 4)), ValueError, r"out: expected a contiguous float32 tensor of shape \(B=2, K=1, H, W\)"),
    (dict(out=torch.zeros(2, 2, 4, 4)), ValueError, r"out: .*\(B=2, K=1, H, W\).*\(2, 2, 4, 4\)"),
    (dict(out=torch.zeros(2, 1, 4, 4, dtype=torch.float64)), ValueError, "out: expected a contiguous float32"),
    (dict(table=[]), ValueError, "table: positions reach layer 0 but the table has 0 rows"),
    (dict(table=[(0, 3, 4), (24, 1, 1)], positions=[0, 1]), ValueError, r"table: row 1 .* does not fit in data of 24"),
    (dict(positions=[]), ValueError, "positions: expected strictly increasing"),
    (dict(batch=0), ValueError, "batch: expected an int >= 1"),
    (dict(rtol=1.5), ValueError, "rtol"),
    (dict(data=torch.zeros(2, 12)), ValueError, "data: expected a contiguous 1-D tensor"),
])
def test_triton_launcher_validates_its_arguments(over, error, match):
    from fastinterp.kernels import cumulative_average as kernels

    device = TRITON_DEVICE
    args = dict(data=torch.zeros(24), table=[(0, 3, 4)], batch=2, positions=[0], out=torch.zeros(2, 1, 4, 4),
                rtol=1e-6)
    args.update(over)
    args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(error, match=match):
        kernels.cumulative_average(**args)


def test_triton_grid_folds_the_batch_into_axis_0():
    """CUDA caps grid axes 1 and 2 at 65,535: (sample, tile) programs all go on axis 0."""
    from fastinterp.kernels import cumulative_average as kernels

    grid, tiles_w, tiles = kernels.launch_grid(100_000, 224, 224, block_h=16, block_w=32)
    assert grid == (100_000 * 14 * 7,) and tiles_w == 7 and tiles == 98
    with pytest.raises(ValueError, match="split the batch"):
        kernels.launch_grid(2**31 // 98 + 1, 224, 224, block_h=16, block_w=32)


def _c_args(**over):
    import numpy as np

    args = dict(maps=np.zeros(2 * 3 * 4, np.float32), table=np.array([[0, 3, 4]], np.int64), batch=2,
                positions=np.array([0], np.int64), out=np.zeros((2, 1, 5, 5), np.float32), rtol=1e-6)
    args.update(over)
    return args


@pytest.mark.parametrize("over,error,match", [
    (dict(maps="np.zeros(24, np.int32)"), TypeError, "maps: expected float32 or float64 values, got format 'i'"),
    (dict(maps="np.zeros((2, 12), np.float32)"), ValueError, r"maps: expected a C-contiguous 1-D.*shape \(2, 12\)"),
    (dict(table="np.array([[0, 3]], np.int64)"), ValueError, r"table: .*shape \(1, 2\)"),
    (dict(table="np.array([[1, 3, 4]], np.int64)"), ValueError, "table: row 0 .* does not fit in maps of 24 values"),
    (dict(positions="np.array([1], np.int64)"), ValueError, r"positions: .*\[0, 1\), got \[1\]"),
    (dict(out="np.zeros((2, 1, 5, 5), np.float64)"), TypeError, "out: expected float32 values"),
    (dict(out="np.zeros((2, 1, 5, 10), np.float32)[..., ::2]"), ValueError, "out: expected a C-contiguous"),
    (dict(out="np.zeros((3, 1, 5, 5), np.float32)"), ValueError, r"out: expected shape \(2, 1, H >= 1, W >= 1\)"),
    (dict(batch=0, out="np.zeros((0, 1, 5, 5), np.float32)"), ValueError, "batch: expected >= 1"),
    (dict(rtol=-1e-6), ValueError, r"rtol: expected a relative tolerance in \[0, 1\)"),
    # rows out of order: the scratch buffer is sized from the last row, so this wrote out of
    # bounds (a segfault) before the binding checked the order
    (dict(maps="np.zeros(28, np.float32)", table="np.array([[24, 1, 2], [0, 3, 4]], np.int64)",
          positions="np.array([1], np.int64)"), ValueError, r"table: row 1 starts at offset 0, inside or before row 0"),
    (dict(maps="np.zeros(28, np.float32)", table="np.array([[0, 3, 4], [20, 1, 2]], np.int64)",
          positions="np.array([1], np.int64)"), ValueError, r"table: row 1 starts at offset 20, .*ends at 24"),
])
def test_compiled_module_validates_its_buffers(over, error, match):
    import numpy as np

    over = {k: eval(v, {"np": np}) if isinstance(v, str) else v for k, v in over.items()}
    with pytest.raises(error, match=match):
        _C.cumulative_average(**_c_args(**over))


def test_compiled_module_refuses_a_read_only_out():
    import numpy as np

    out = np.zeros((2, 1, 5, 5), np.float32)
    out.setflags(write=False)
    with pytest.raises((ValueError, BufferError)):
        _C.cumulative_average(**_c_args(out=out))


@pytest.mark.slow
def test_editable_install_of_a_clean_copy_imports_the_compiled_module(tmp_path):
    """What a clean clone gets: the tracked + non-ignored files, ``pip install -e`` (no build
    isolation: scikit-build-core and pybind11 come from this environment), then import _C."""
    root = Path(fastinterp.__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not running from a git checkout")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                           check=True, capture_output=True).stdout.decode().split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, files):
        if (root / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, clone / name)
    prefix = tmp_path / "prefix"
    before = _C.__file__
    # --ignore-installed: without it pip uninstalls this environment's own fastinterp first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "--prefix", str(prefix), "-e", str(clone)], check=True, capture_output=True)
    assert Path(before).exists(), "installing the copy removed this environment's install"
    site_dir = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    torch_dir = str(Path(torch.__file__).resolve().parents[1])
    # -S: skip this environment's own .pth files (its editable finder would shadow the copy)
    code = (f"import site, sys; site.addsitedir({site_dir!r}); sys.path.append({torch_dir!r}); "
            "import fastinterp._C as c, fastinterp.ops as o, torch; "
            "assert c.build_info()['openmp']; print(c.__file__); "
            "print(float(o.cumulative_average([torch.rand(1, 3, 3)], 3, [0], backend='cpp').max()))")
    done = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True,
                          cwd=tmp_path)
    lines = done.stdout.split()
    assert str(tmp_path) in lines[0], f"imported {lines[0]}, not the clean copy's build"
    assert float(lines[1]) == 1.0
