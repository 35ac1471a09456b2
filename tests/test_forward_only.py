"""The forward-only representation: the head's CAM against Grad-CAM and a hand computation, the
activation maps against plain hooks, no graph through the trunk, heads it refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_state, build, images_for, max_rel_error, model_state
from torch import nn

import fastinterp
from fastinterp.maps.forward_only import HEAD_MAP, activation_layer_maps, head_plan

# (architecture, the module whose output the head pools, does the head reduce to GAP + one Linear)
HEADS = [("resnet18", "layer4", True), ("mobilenet_v3_small", "features", False),
         ("vgg11", "features", False), ("shufflenet_v2_x0_5", "conv5", True)]


@pytest.mark.parametrize("arch, pooled, linear", HEADS)
def test_head_cam_is_gradcam_at_the_pooled_feature_map_up_to_scale(arch, pooled, linear):
    model, x = build(arch), images_for(arch, batch=3)
    maps = activation_layer_maps(model, x)
    assert head_plan(model, x).linear is linear and maps.layer_names[-1] == HEAD_MAP
    cam = maps.maps[-1]
    grad_cam = fastinterp.layer_maps(model, x, layers=[pooled], targets=maps.targets).maps[0]
    assert cam.shape == grad_cam.shape and bool((grad_cam > 0).any())
    # Grad-CAM averages the gradient over h x w; a GAP head's gradient is w / (h w) everywhere
    scale = cam.shape[1] * cam.shape[2] if linear else 1
    assert max_rel_error(cam, scale * grad_cam) < 1e-5
    assert torch.equal(maps.targets, maps.logits.argmax(1))


def test_head_cam_of_a_functional_pool_is_zhou_et_al_cam():
    """densenet121 pools ``relu(features)`` with F.adaptive_avg_pool2d: CAM = ReLU(sum_c W[t, c] F_c)."""
    model, x = build("densenet121"), images_for("densenet121", batch=2)
    targets = torch.tensor([3, 7])
    maps = activation_layer_maps(model, x, targets=targets)
    with torch.no_grad():
        features = F.relu(model.features(x))
    expected = torch.relu(torch.einsum("bc,bchw->bhw", model.classifier.weight[targets], features))
    assert head_plan(model, x).linear and max_rel_error(maps.maps[-1], expected) < 1e-5
    assert torch.equal(maps.targets, targets)


def test_activation_maps_are_the_channel_mean_of_abs_conv_outputs(small_cnn):
    x = images_for("small", batch=2)
    small_cnn.eval()  # explained in eval semantics: the reference runs BatchNorm the same way
    outputs = []
    handles = [m.register_forward_hook(lambda mod, i, o: outputs.append(o.detach().clone()))
               for m in small_cnn.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        small_cnn(x)
    for h in handles:
        h.remove()
    maps = activation_layer_maps(small_cnn, x)
    assert maps.layer_names == ["0", "2", "5", HEAD_MAP]
    for got, out in zip(maps.maps, outputs):
        assert max_rel_error(got, out.abs().mean(1)) < 1e-6


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_no_graph_through_the_trunk(arch):
    """Every conv output is computed without autograd: nothing of the trunk can be differentiated."""
    model, x = build(arch), images_for(arch, batch=2)
    seen = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            seen.append(output.requires_grad)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        activation_layer_maps(model, x)
    finally:
        handle.remove()
    assert seen and not any(seen)


def test_gap_linear_head_runs_no_autograd(monkeypatch):
    model, x = build("resnet18"), images_for("resnet18")

    def refuse(*args, **kwargs):
        raise AssertionError("autograd ran")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    activation_layer_maps(model, x)


def test_model_untouched_in_train_mode():
    model, x = build("mobilenet_v3_small"), images_for("mobilenet_v3_small")
    model.train()
    before = model_state(model)
    maps = activation_layer_maps(model, x)
    assert_same_state(before, model_state(model))
    model.eval()
    torch.testing.assert_close(activation_layer_maps(model, x).maps[-1], maps.maps[-1], rtol=0, atol=0)


def test_heads_without_a_pooling_are_refused():
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 62 * 62, 5))
    with pytest.raises(ValueError, match="runs no average pooling"):
        activation_layer_maps(flat, images_for("flat"))

    class ConvAfterPool(nn.Module):  # a squeeze-excitation pool in the trunk, then more convs, no head pool
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4 * 60 * 60, 5)

        def forward(self, x):
            x = self.a(x)
            x = x * F.adaptive_avg_pool2d(x, 1)
            return self.fc(self.b(x).flatten(1))

    with pytest.raises(ValueError, match=r"1 conv layer\(s\) run after its last average pooling"):
        activation_layer_maps(ConvAfterPool(), images_for("x"))


def test_activation_representation_puts_the_head_cam_first():
    model, x = build("resnet18"), images_for("resnet18", batch=2)
    rep = fastinterp.cnn_representation(model, x, **fastinterp.ACTIVATION_REPRESENTATION)
    assert rep.layer_names[0] == HEAD_MAP and rep.positions[0] == 0 and rep.teacher_cgm is None
    head = fastinterp.ops.cumulative_average([activation_layer_maps(model, x).maps[-1]], 64, [0])[:, 0]
    torch.testing.assert_close(rep.cgm[:, 0], head, rtol=0, atol=1e-6)
    # the teacher is still Grad-CAM of the last conv, for the same classes
    torch.testing.assert_close(rep.teacher, fastinterp.gradcam(model, x, targets=rep.targets, size=64),
                               rtol=0, atol=1e-6)
    assert rep.teacher_layer == "layer4.1.conv2"
    none = fastinterp.cnn_representation(model, x, kind="activation", teacher=None)
    assert none.teacher is None and torch.equal(none.cgm, rep.cgm)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_module_hook_and_function_mode_taps_agree(arch):
    """A head pooled by a module is tapped with pre-hooks (no Python on the trunk's ops); the
    TorchFunctionMode tap, used for functional pools, must give the same maps."""
    import dataclasses

    from fastinterp.maps import forward_only

    model, x = build(arch), images_for(arch, batch=2)
    plan = head_plan(model, x)
    assert plan.pool_module == "avgpool"
    by_hooks = activation_layer_maps(model, x)
    key = forward_only._plan_key(model, x)
    assert forward_only._PLANS[model][key] is plan
    forward_only._PLANS[model][key] = dataclasses.replace(plan, pool_module=None, linear_module=None)
    by_mode = activation_layer_maps(model, x)
    for a, b in zip(by_hooks.maps, by_mode.maps):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pooling_module_used_twice_is_tapped_by_the_function_mode():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x):
            x = self.conv(x)
            x = self.conv2(x * self.pool(x))  # the same pooling module in an SE-like gate...
            return self.fc(self.pool(x).flatten(1))  # ...and in the head

    model, x = Shared().eval(), images_for("x")
    plan = head_plan(model, x)
    assert plan.pool_index == 1 and plan.pool_module is None and plan.linear
    maps = activation_layer_maps(model, x)
    with torch.no_grad():
        features = model.conv2(model.conv(x) * model.pool(model.conv(x)))
    expected = torch.relu(torch.einsum("bc,bchw->bhw", model.fc.weight[maps.targets], features))
    assert max_rel_error(maps.maps[-1], expected) < 1e-5


def test_heads_that_read_more_than_the_pooled_features_are_refused():
    class ConcatPool(nn.Module):  # fastai's head: average and max pooling of the same features
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(8, 3)

        def forward(self, x):
            f = self.conv(x)
            return self.fc(torch.cat([F.adaptive_max_pool2d(f, 1), F.adaptive_avg_pool2d(f, 1)], 1).flatten(1))

    class TwoBranches(nn.Module):  # a second branch joins after the last pooling
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
            self.fa, self.fb = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            a = self.a(x)
            b = self.b(a)
            return self.fb(b.mean((2, 3))) + self.fa(a.mean((2, 3)))

    for model in (ConcatPool().eval(), TwoBranches().eval()):
        with pytest.raises(ValueError, match="head reads a tensor computed before its last average pooling"):
            activation_layer_maps(model, images_for("x"))


def test_a_replaced_head_gets_a_new_plan():
    model, x = build("resnet18"), images_for("resnet18")
    assert head_plan(model, x).linear
    model.fc = nn.Sequential(nn.Linear(512, 16), nn.ReLU(), nn.Linear(16, 10))
    assert not head_plan(model, x).linear  # not the stale GAP + Linear plan
    maps = activation_layer_maps(model, x)
    expected = fastinterp.layer_maps(model, x, layers=["layer4"], targets=maps.targets).maps[0]
    assert max_rel_error(maps.maps[-1], expected) < 1e-5
