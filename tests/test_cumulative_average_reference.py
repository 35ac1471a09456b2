"""The PyTorch reference of ops.cumulative_average against the unfused direct formula."""

from __future__ import annotations

import pytest
import torch

from fastinterp.ops import cumulative_average, cumulative_average_reference, minmax_normalise
from test_representation import direct_cumulative


def ragged_maps(seed, num_layers, batch):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 20, (num_layers, 2), generator=g)
    return [torch.randn(batch, int(h), int(w), generator=g) * 10 ** float(torch.randint(-3, 4, (1,), generator=g))
            for h, w in sizes]


@pytest.mark.parametrize("seed", range(6))
def test_reference_equals_direct_formula_on_ragged_maps(seed):
    g = torch.Generator().manual_seed(100 + seed)
    num_layers = int(torch.randint(1, 25, (1,), generator=g))
    batch = int(torch.randint(1, 4, (1,), generator=g))
    maps = ragged_maps(seed, num_layers, batch)
    k = int(torch.randint(1, num_layers + 1, (1,), generator=g))
    positions = sorted(torch.randperm(num_layers, generator=g)[:k].tolist())
    size = (int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g)))
    out = cumulative_average_reference(maps, size, positions)
    expected = direct_cumulative(maps, size, positions)
    assert out.shape == (batch, k, *size) and out.dtype == torch.float32
    assert (out - expected).abs().max() <= 1e-5
    assert out.min() >= 0 and out.max() <= 1


def test_every_position_k_equals_l():
    maps = ragged_maps(7, 6, 2)
    out = cumulative_average(maps, 9, list(range(6)), backend="torch")
    assert (out - direct_cumulative(maps, (9, 9), list(range(6)))).abs().max() <= 1e-5
    # every plane stays in [0, 1]
    assert out[:, 0].amax() <= 1 and out[:, -1].amin() >= 0


def test_constant_maps_become_zeros_not_nan():
    maps = [torch.full((2, 3, 5), 7.0), torch.zeros(2, 1, 1), torch.randn(2, 4, 4)]
    out = cumulative_average(maps, 8, [0, 1, 2], backend="torch")
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :2], torch.zeros_like(out[:, :2]))
    assert out[:, 2].max() > 0


def test_normalisation_survives_huge_and_tiny_magnitudes():
    m = torch.tensor([[[-3e38, 3e38], [0.0, 1e-38]]])
    n = minmax_normalise(m)
    assert torch.isfinite(n).all() and n.min() == 0 and n.max() == 1
    tiny = torch.tensor([[[1e-44, 2e-44]]])  # subnormal float32
    assert torch.equal(minmax_normalise(tiny), torch.tensor([[[0.0, 1.0]]]))


def test_half_precision_inputs_give_float32_output():
    maps = [m.to(torch.bfloat16) for m in ragged_maps(3, 4, 2)]
    out = cumulative_average(maps, 10, [1, 3], backend="torch")
    assert out.dtype == torch.float32
    assert (out - direct_cumulative([m.float() for m in maps], (10, 10), [1, 3])).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "maps,size,positions,error,match",
    [
        ("notalist", 8, [0], TypeError, "maps"),
        ([], 8, [0], ValueError, "maps"),
        ([torch.zeros(2, 3)], 8, [0], ValueError, r"maps\[0\]"),
        ([torch.zeros(1, 3, 3, dtype=torch.int64)], 8, [0], TypeError, r"maps\[0\]"),
        ([torch.zeros(1, 3, 3), torch.zeros(2, 3, 3)], 8, [0, 1], ValueError, r"maps\[1\].*batch"),
        ([torch.tensor([[[float("nan")]]])], 8, [0], ValueError, "NaN"),
        ([torch.tensor([[[float("inf")]]])], 8, [0], ValueError, "infinite"),
        ([torch.zeros(1, 3, 3)], 0, [0], ValueError, "size"),
        ([torch.zeros(1, 3, 3)], (4, -1), [0], ValueError, "size"),
        ([torch.zeros(1, 3, 3)], 4.0, [0], TypeError, "size"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [1, 1], ValueError, "strictly increasing"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [2, 1], ValueError, "strictly increasing"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [0, 3], ValueError, r"\[0, 3\)"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [-1, 2], ValueError, "positions"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [], ValueError, "positions"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [0.0], TypeError, "positions"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [True], TypeError, "positions"),
        ([torch.zeros(1, 3, 3)] * 3, 4, [0], ValueError, "backend"),
    ],
)
def test_bad_input(maps, size, positions, error, match):
    backend = "cuda-magic" if match == "backend" else "auto"
    with pytest.raises(error, match=match):
        cumulative_average(maps, size, positions, backend=backend)
