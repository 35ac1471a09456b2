"""Shared test helpers: seeded random-init torchvision models and a naive per-layer oracle."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fastinterp.maps.representation import layer_maps_reference as naive_layer_maps  # noqa: F401
from fastinterp.ops import cumulative_average

# Input side per architecture: small enough for a 2-core CPU, large enough for every model
# (inception_v3 needs >= 75 pixels).
INPUT_SIDE = {"inception_v3": 96}


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests need a CUDA device: skipped without one (benchmarks/gpu_check.sh runs them on
    a lent GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: bash benchmarks/gpu_check.sh on a GPU machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def build(name: str, seed: int = 0) -> nn.Module:
    """A random-init torchvision classifier (no downloads), seeded, in eval mode."""
    torch.manual_seed(seed)
    kwargs = {"init_weights": False, "aux_logits": True} if name == "inception_v3" else {}
    return getattr(torchvision.models, name)(num_classes=10, **kwargs).eval()


def images_for(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    side = INPUT_SIDE.get(name, 64)
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are all zero); NaN anywhere gives inf."""
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / scale


def model_state(model: nn.Module) -> dict:
    """Everything explaining must leave untouched: flags, buffers (bitwise), grads, hooks."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(getattr(m, "_backward_pre_hooks", {})))
            for m in model.modules()
        ],
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    for g0, g1 in zip(before["grads"], after["grads"]):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    for key in ("buffers", "params"):
        assert before[key].keys() == after[key].keys()
        for name in before[key]:
            assert torch.equal(before[key][name], after[key][name]), f"{key} {name} changed"


@pytest.fixture
def small_cnn() -> nn.Module:
    """A plain nn.Sequential CNN with BatchNorm and an in-place ReLU right after a conv."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


def naive_rise(model, images, targets, masks: torch.Tensor, p: float) -> torch.Tensor:
    """sum_i P(t | x * M_i) M_i / (N p), one image and one mask per forward, min-max normalised."""
    out = []
    for b in range(images.shape[0]):
        saliency = torch.zeros(images.shape[-2:], dtype=torch.float64)
        for mask in masks:
            with torch.no_grad():
                prob = model((images[b] * mask)[None]).softmax(1)[0, targets[b]]
            saliency += prob.double() * mask.double()
        out.append(saliency / (len(masks) * p))
    return cumulative_average([torch.stack(out).float()], tuple(images.shape[-2:]), [0])[:, 0]
