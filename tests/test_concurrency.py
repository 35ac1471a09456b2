"""Concurrent calls on one model (8 threads): the same maps as sequential calls, and the model is
never modified. Before the eval view (``fastinterp.maps.eval_view``), hooks and training flags were
the model's own: threads saw each other's forwards ("ran more than once"), and in train mode one
thread's restore of the flags ran another's forward in train mode (BatchNorm statistics changed,
maps silently wrong)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import fastinterp
from conftest import assert_same_state, build, model_state

THREADS = 8
CALLS = 3  # per thread


def run_threads(work):
    """Run ``work(thread_index)`` in THREADS threads released together; re-raise the first error."""
    barrier = threading.Barrier(THREADS)
    results, errors = [None] * THREADS, []

    def target(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def inplace_relu_cnn() -> nn.Module:
    """In-place ReLUs right after convs (their outputs must be cloned) and BatchNorm."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


MODELS = {"resnet18": lambda: build("resnet18"), "vgg11": lambda: build("vgg11"), "inplace_relu": inplace_relu_cnn}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_threads_get_the_sequential_maps_and_leave_the_model_untouched(name, mode):
    model = MODELS[name]().train(mode == "train")
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(2, 3, 32, 32, generator=g) for _ in range(THREADS)]
    expected = [fastinterp.layer_maps(model, x).maps for x in images]  # sequential, one per thread
    before = model_state(model)

    def work(i):
        out = []
        for _ in range(CALLS):
            out.append(fastinterp.layer_maps(model, images[i]).maps)
            out.append(fastinterp.cnn_representation(model, images[i], k=3, size=16, skip_1x1=False).cgm)
        return out

    for i, calls in enumerate(run_threads(work)):
        for call in calls[::2]:
            assert len(call) == len(expected[i])
            for got, want in zip(call, expected[i]):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        reference = fastinterp.cnn_representation(model, images[i], k=3, size=16, skip_1x1=False).cgm
        for cgm in calls[1::2]:
            torch.testing.assert_close(cgm, reference, rtol=0, atol=1e-6)
    assert_same_state(before, model_state(model))
    assert model.training is (mode == "train")


def test_threads_discover_the_same_conv_layers():
    model = build("resnet18").train()
    expected = fastinterp.conv_layers(model, torch.randn(1, 3, 32, 32))
    before = model_state(model)
    results = run_threads(lambda i: [fastinterp.conv_layers(model, torch.randn(1, 3, 32, 32)) for _ in range(CALLS)])
    assert all(names == expected for calls in results for names in calls)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "inception_v3"])
def test_the_view_walk_finds_the_modules_named_modules_lists(arch):
    """eval_view_with finds, in the walk that makes the view, the view's own modules of a kind with
    named_modules' names and order (a shared module once, at its first name): capture and the
    forward-only maps watch these instead of walking the view again."""
    from fastinterp.maps.eval_view import eval_view_with

    model = build(arch)
    shared = nn.Conv2d(3, 3, 1)
    for candidate in (model, nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared, nn.Conv2d(3, 3, 1)))):
        view, found = eval_view_with(candidate, nn.Conv2d)
        expected = [(n, m) for n, m in view.named_modules() if isinstance(m, nn.Conv2d)]
        assert [n for n, _ in found] == [n for n, _ in expected]
        assert all(a is b for (_, a), (_, b) in zip(found, expected))
        originals = {id(m) for m in candidate.modules()}
        assert not any(id(m) in originals for _, m in found)  # the view's copies, never the model's modules
