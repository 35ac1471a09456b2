"""``torch.ops.fastinterp.cumulative_average`` (fastinterp/ops/library.py): the custom op against
``torch.library.opcheck`` and the PyTorch reference, eager, inside ``torch.compile(fullgraph=True)``
and under fake tensors."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from conftest import max_rel_error
from fastinterp.ops import cumulative_average_op, cumulative_average_reference

RTOL = 1e-5  # max |op - reference| / max |reference|; NaN anywhere counts as inf
OP = torch.ops.fastinterp.cumulative_average.default


def random_maps(shapes, batch, seed, constant=(), dtype=torch.float32):
    """Fresh maps (batch, h, w) of N(0, 1) * 10^U(-3, 3) + offset; ``constant``: indices made constant."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for i, (h, w) in enumerate(shapes):
        scale = 10.0 ** (torch.rand(1, generator=g).item() * 6 - 3)
        m = torch.randn(batch, h, w, generator=g) * scale + torch.randn(1, generator=g).item()
        if i in constant:
            m = torch.full_like(m, 2.5)
        maps.append(m.to(dtype))
    return maps


# (layer shapes, batch, output (H, W), positions, indices of constant maps)
CASES = [
    pytest.param([(7, 7)], 1, (5, 9), [0], (), id="one-map-b1"),
    pytest.param([(14, 10), (7, 7), (7, 7), (1, 1), (3, 5)], 3, (16, 12), [1, 2, 4], (2,), id="ragged-b3-constant"),
    pytest.param([(28, 28), (14, 14), (7, 7), (4, 6)], 1, (8, 24), [0, 1, 2, 3], (0,), id="downsample-b1"),
    pytest.param([(2, 3), (9, 4), (5, 5)], 3, (31, 17), [0, 2], (), id="upsample-b3-nonsquare"),
]


@pytest.mark.parametrize("shapes, batch, size, positions, constant", CASES)
def test_opcheck(shapes, batch, size, positions, constant):
    maps = random_maps(shapes, batch, seed=0, constant=constant)
    torch.library.opcheck(OP, (maps, list(size), positions))


def test_opcheck_with_maps_that_require_grad_and_mixed_dtypes():
    maps = random_maps([(6, 6), (3, 4)], 2, seed=1)
    maps = [maps[0].double().requires_grad_(), maps[1].half().requires_grad_()]
    torch.library.opcheck(OP, (maps, [7, 5], [0, 1]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shapes, batch, size, positions, constant", CASES)
def test_equals_reference_on_fresh_maps(shapes, batch, size, positions, constant, seed):
    maps = random_maps(shapes, batch, seed=100 + seed, constant=constant)
    out = cumulative_average_op(maps, size, positions)
    ref = cumulative_average_reference(maps, size, positions)
    assert out.shape == (batch, len(positions), *size) and out.dtype == torch.float32
    assert max_rel_error(out, ref) <= RTOL


def test_a_constant_map_adds_zeros():
    maps = random_maps([(6, 5), (3, 3)], 3, seed=2, constant=(1,))
    out = cumulative_average_op(maps, (8, 7), [0, 1])
    assert torch.allclose(out[:, 1], out[:, 0] / 2, rtol=0, atol=1e-7)
    assert torch.equal(cumulative_average_op(maps[1:], (8, 7), [0]), torch.zeros(3, 1, 8, 7))


def test_relative_error_never_passes_nan():
    ref = torch.rand(1, 1, 4, 4)
    bad = ref.clone()
    bad[0, 0, 1, 2] = float("nan")
    assert max_rel_error(bad, ref) == float("inf") > RTOL


def test_int_size_is_a_square():
    maps = random_maps([(5, 3)], 2, seed=3)
    assert torch.equal(cumulative_average_op(maps, 6, [0]), cumulative_average_op(maps, (6, 6), [0]))


def test_output_never_requires_grad():
    maps = [m.requires_grad_() for m in random_maps([(4, 4), (2, 2)], 2, seed=4)]
    out = cumulative_average_op(maps, (6, 6), [0, 1])
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("args, error, message", [
    (lambda m: (m, [6, 6], [0, 2]), ValueError, "positions: each must be in"),
    (lambda m: (m, [6, 6], [1, 0]), ValueError, "positions: must be strictly increasing"),
    (lambda m: (m, [0, 6], [0]), ValueError, "size: must be >= 1"),
    (lambda m: ([m[0], m[1][:1]], [6, 6], [0, 1]), ValueError, "maps[1]: batch size 1"),
    (lambda m: ([m[0].long()], [6, 6], [0]), TypeError, "maps[0]: expected a floating-point tensor"),
])
def test_bad_arguments_name_the_argument_eagerly_and_under_fake_tensors(args, error, message):
    maps = random_maps([(4, 4), (2, 2)], 2, seed=5)
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        cumulative_average_op(*args(maps))
    with FakeTensorMode() as mode, pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        cumulative_average_op(*args([mode.from_tensor(m) for m in maps]))


def test_non_finite_map_raises_naming_it():
    maps = random_maps([(4, 4), (3, 3)], 2, seed=6)
    maps[1][1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"maps\[1\]: contains NaN or infinite values"):
        cumulative_average_op(maps, (5, 5), [0, 1])


def test_fake_impl_gives_the_output_shape_and_dtype_without_running_the_kernel():
    with FakeTensorMode():
        maps = [torch.empty(3, 14, 10, dtype=torch.float64), torch.empty(3, 7, 7, dtype=torch.float16)]
        out = cumulative_average_op(maps, (16, 12), [0, 1])
    assert out.shape == (3, 2, 16, 12) and out.dtype == torch.float32 and out.device.type == "cpu"
    meta = OP([torch.empty(2, 5, 5, device="meta")] * 3, [4, 9], [0, 2])
    assert meta.shape == (2, 2, 4, 9) and meta.dtype == torch.float32 and meta.device.type == "meta"


def test_importing_again_or_reloading_keeps_one_registration():
    import fastinterp.ops.library as library

    again = importlib.import_module("fastinterp.ops.library")
    importlib.reload(library)
    assert again is library and torch.ops.fastinterp.cumulative_average.default is OP
    maps = random_maps([(4, 4)], 1, seed=7)
    assert max_rel_error(cumulative_average_op(maps, (6, 6), [0]), cumulative_average_reference(maps, (6, 6), [0])) <= RTOL


def test_inside_torch_compile_fullgraph_inductor_calls_the_op():
    from torch._inductor.utils import run_and_get_code

    def cumulative(maps):
        return cumulative_average_op(maps, (9, 11), [0, 2])

    maps = random_maps([(5, 7), (3, 3), (4, 4)], 3, seed=8, constant=(2,))
    compiled = torch.compile(cumulative, fullgraph=True, dynamic=False)
    out, code = run_and_get_code(compiled, maps)
    assert any("torch.ops.fastinterp.cumulative_average" in c for c in code)  # called, not traced through
    assert max_rel_error(out, cumulative_average_reference(maps, (9, 11), [0, 2])) <= RTOL
    fresh = random_maps([(5, 7), (3, 3), (4, 4)], 3, seed=9)  # same shapes: no recompile
    assert max_rel_error(compiled(fresh), cumulative_average_reference(fresh, (9, 11), [0, 2])) <= RTOL


@pytest.mark.cuda
def test_cuda_op_equals_reference_eager_and_compiled():
    maps = random_maps([(14, 10), (7, 7), (7, 7), (3, 5)], 3, seed=10, constant=(2,))
    ref = cumulative_average_reference(maps, (16, 12), [1, 3])
    cuda = [m.cuda() for m in maps]
    assert max_rel_error(cumulative_average_op(cuda, (16, 12), [1, 3]).cpu(), ref) <= RTOL
    compiled = torch.compile(lambda ms: cumulative_average_op(ms, (16, 12), [1, 3]), fullgraph=True)
    assert max_rel_error(compiled(cuda).cpu(), ref) <= RTOL
