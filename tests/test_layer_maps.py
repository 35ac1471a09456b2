"""fastinterp.layer_maps: exact against a naive per-layer loop, one backward, no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastinterp
from fastinterp.maps.formulas import METHODS
from conftest import assert_same_state, build, images_for, max_rel_error, model_state, naive_layer_maps

EXACT_ARCHITECTURES = [
    "resnet18", "vgg11", pytest.param("densenet121", marks=pytest.mark.slow), "mobilenet_v3_small", "squeezenet1_1",
    pytest.param("efficientnet_b0", marks=pytest.mark.slow), pytest.param("inception_v3", marks=pytest.mark.slow),
    "mnasnet0_5",
]


def assert_maps_match(fast, slow, tol=1e-4):
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert a.shape == b.shape, i
        assert max_rel_error(a, b) <= tol, f"layer {i}: relative error {max_rel_error(a, b):.2e}"


@pytest.mark.parametrize("arch", EXACT_ARCHITECTURES)
def test_single_pass_equals_naive_per_layer_loop(arch):
    model, x = build(arch), images_for(arch, batch=2)
    result = fastinterp.layer_maps(model, x)
    assert result.layer_names == fastinterp.conv_layers(model, x)
    assert result.logits.shape == (2, 10)
    assert torch.equal(result.targets, result.logits.argmax(1))
    naive = naive_layer_maps(model, x, result.layer_names, result.targets)
    assert_maps_match(result.maps, naive)
    # a second call goes through the remembered in-place plan (fewer clones) and keeps a widening
    # 1x1 conv's input instead of its output (mobilenet, efficientnet, mnasnet): the same oracle
    again = fastinterp.layer_maps(model, x)
    assert_maps_match(again.maps, naive)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_the_lean_capture_equals_the_naive_loop(arch, monkeypatch):
    """The memory-lean capture (maps made in the backward, widening 1x1 convs keep their input;
    from LEAN_FROM_PIXELS on, here forced) against the same oracle, first call included."""
    from fastinterp.maps import representation

    monkeypatch.setattr(representation, "LEAN_FROM_PIXELS", 0)
    model, x = build(arch), images_for(arch, batch=2)
    for _ in range(2):
        result = fastinterp.layer_maps(model, x)
        assert_maps_match(result.maps, naive_layer_maps(model, x, result.layer_names, result.targets))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("arch", ["resnet18", pytest.param("vgg11", marks=pytest.mark.slow)])
def test_every_method_equals_naive(arch, method):
    model, x = build(arch), images_for(arch, batch=2)
    targets = torch.tensor([3, 7])
    result = fastinterp.layer_maps(model, x, targets=targets, method=method)
    assert torch.equal(result.targets, targets)
    assert_maps_match(result.maps, naive_layer_maps(model, x, result.layer_names, targets, method))


def test_inplace_relu_switched_on_after_first_call_is_still_exact(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    small_cnn[1].inplace = False
    fastinterp.layer_maps(small_cnn, x)  # learns: no output is overwritten
    small_cnn[1].inplace = True  # now conv "0"'s output is overwritten by the ReLU
    result = fastinterp.layer_maps(small_cnn, x)
    assert_maps_match(result.maps, naive_layer_maps(small_cnn.eval(), x, result.layer_names, result.targets))


class CountingModel(nn.Module):
    """Counts forward calls and backward passes through its output (in a dict shared with the
    eval views fastinterp runs: a view shares the model's attributes)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.counts = {"forwards": 0, "backwards": 0}

    def forward(self, x):
        self.counts["forwards"] += 1
        out = self.inner(x)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad):
        self.counts["backwards"] += 1


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
def test_one_forward_one_backward_and_no_parameter_gradients(arch):
    model = CountingModel(build(arch))
    for call in range(2):  # the first call on vgg11 also learns which outputs need clones
        fastinterp.layer_maps(model, images_for(arch))
        assert model.counts == {"forwards": call + 1, "backwards": call + 1}
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_no_grad_context_and_train_mode_give_the_same_maps():
    model, x = build("resnet18"), images_for("resnet18")
    reference = fastinterp.layer_maps(model, x).maps
    for p in model.parameters():
        p.requires_grad_(False)
    assert_maps_match(fastinterp.layer_maps(model, x).maps, reference, tol=1e-6)
    with torch.no_grad():
        assert_maps_match(fastinterp.layer_maps(model, x).maps, reference, tol=1e-6)
    model.train()  # explained in eval semantics
    assert_maps_match(fastinterp.layer_maps(model, x).maps, reference, tol=1e-6)
    assert model.training


def test_inference_mode_is_a_clear_error(small_cnn):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fastinterp.layer_maps(small_cnn, torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_model_state_unchanged(arch):
    model = build(arch).train()
    before = model_state(model)
    fastinterp.layer_maps(model, images_for(arch, batch=3))
    assert_same_state(before, model_state(model))


def test_model_state_unchanged_after_exceptions(small_cnn):
    small_cnn.train()
    before = model_state(small_cnn)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="targets"):  # raised after the forward pass
        fastinterp.layer_maps(small_cnn, x, targets=[0, 99])
    assert_same_state(before, model_state(small_cnn))

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    small_cnn.insert(3, Boom())  # raises inside the forward, after hooks are set
    before = model_state(small_cnn)
    with pytest.raises(RuntimeError, match="boom"):
        fastinterp.layer_maps(small_cnn, x)
    assert_same_state(before, model_state(small_cnn))


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_batch_independence(arch):
    model, x = build(arch), images_for(arch, batch=3)
    targets = torch.tensor([1, 4, 8])
    batched = fastinterp.layer_maps(model, x, targets=targets).maps
    for i in range(3):
        alone = fastinterp.layer_maps(model, x[i : i + 1], targets=targets[i : i + 1]).maps
        assert_maps_match(alone, [m[i : i + 1] for m in batched])


def test_targets_choose_the_explained_class():
    model, x = build("resnet18"), images_for("resnet18", batch=1)
    a = fastinterp.layer_maps(model, x, targets=2).maps[-1]
    b = fastinterp.layer_maps(model, x, targets=[5]).maps[-1]
    assert max_rel_error(a, b) > 1e-3


def test_selected_layers_come_back_in_execution_order():
    model, x = build("resnet18"), images_for("resnet18")
    result = fastinterp.layer_maps(model, x, layers=["layer4.1.conv2", "conv1", "layer1.0.conv1"])
    assert result.layer_names == ["conv1", "layer1.0.conv1", "layer4.1.conv2"]
    full = fastinterp.layer_maps(model, x)
    for name, m in zip(result.layer_names, result.maps):
        assert_maps_match([m], [full.maps[full.layer_names.index(name)]], tol=1e-6)
    # non-conv modules with a (B, C, h, w) output can be explained too
    assert fastinterp.layer_maps(model, x, layers=["layer2"]).maps[0].shape == (2, 8, 8)


def test_layer_that_never_runs_is_a_clear_error():
    model, x = build("inception_v3"), images_for("inception_v3")
    with pytest.raises(ValueError, match="did not run"):
        fastinterp.layer_maps(model, x, layers=["AuxLogits.conv0.conv", "Conv2d_1a_3x3.conv"])


def test_layer_that_runs_twice_is_a_clear_error():
    from test_layers import Reordered

    with pytest.raises(ValueError, match="more than once"):
        fastinterp.layer_maps(Reordered(), torch.randn(1, 3, 8, 8))
    assert len(fastinterp.layer_maps(Reordered(), torch.randn(1, 3, 8, 8), layers=["early", "late"]).maps) == 2


def test_maps_are_finite_and_constant_layers_give_zeros():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)
    result = fastinterp.layer_maps(model, torch.randn(2, 3, 4, 4))
    assert torch.isfinite(result.maps[0]).all()
    rep = fastinterp.ops.cumulative_average(result.maps, 8, [0])
    assert torch.equal(rep, torch.zeros_like(rep))


def test_memory_and_hooks_do_not_grow_over_repeated_calls(small_cnn):
    x = torch.randn(2, 3, 16, 16)
    before = model_state(small_cnn)
    for _ in range(50):
        fastinterp.layer_maps(small_cnn, x)
    assert_same_state(before, model_state(small_cnn))


@pytest.mark.parametrize("where", ["some", "global"])
def test_a_users_forward_hooks_run_and_the_map_is_of_what_they_return(small_cnn, where):
    """A conv whose output the user's forward hook changes is explained on the changed output, as
    a hook registered after the user's would see it (the naive loop registers one), whether the
    view wraps a conv's forward (no hook of its own) or adds to its hooks; the user's hook runs once
    per forward and stays on the model."""
    model = small_cnn.eval()
    calls = []

    def double(module, inputs, output):
        calls.append(module)
        return output * 2 + 0.1

    conv = model[2]  # the stride-2 Conv2d(8, 8)

    def is_that_conv(module):  # the view's copy or the model's module: same class and settings
        return isinstance(module, nn.Conv2d) and module.stride == (2, 2) and module.out_channels == 8

    handle = (conv.register_forward_hook(double) if where == "some"
              else torch.nn.modules.module.register_module_forward_hook(
                  lambda m, i, o: double(m, i, o) if is_that_conv(m) else None))
    try:
        images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        ours = fastinterp.layer_maps(model, images)
        assert len(calls) == 1 and calls[0] is not conv  # ran once, on the view's copy of the conv
        reference = naive_layer_maps(model, images, ours.layer_names, ours.targets)
        for i, (a, b) in enumerate(zip(ours.maps, reference)):
            assert max_rel_error(a, b) <= 1e-5, f"layer {i}"
        assert len(conv._forward_hooks) == (1 if where == "some" else 0)  # the user's own, nothing of ours
    finally:
        handle.remove()
