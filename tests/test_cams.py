"""The CAM formulas checked independently of our own code: against pytorch-grad-cam (a test-only
dependency, the library users compare us with) and against hand computations whose gradients
are known in closed form. The per-layer oracle of test_layer_maps uses the same formulas as the
code, so a wrong formula (a sum for Grad-CAM's mean, LayerCAM without its ReLU) would pass it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import fastinterp
from fastinterp.maps import formulas
import fastinterp.maps.forward_only  # noqa: F401
from conftest import build, images_for

THEIRS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}


def louder(model: nn.Module) -> nn.Module:
    """Scale the classifier by 1e6: pytorch-grad-cam adds 1e-7 to the span it normalises by and
    1e-6 to Grad-CAM++'s denominator, both comparable to a random-init network's raw maps."""
    head = model.fc if hasattr(model, "fc") else model.classifier
    head = head[-1] if isinstance(head, nn.Sequential) else head
    with torch.no_grad():
        head.weight.mul_(1e6)
    return model


def renormalised(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's last step: it min-max normalises again after resizing (bilinear
    upsampling does not reach the low-resolution extremes exactly)."""
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    return (maps - lo) / (span + 1e-7)


@pytest.mark.parametrize("method", sorted(THEIRS))
@pytest.mark.parametrize("arch,layer", [("resnet18", "layer4.1.conv2"), ("resnet18", "layer2.0.conv1"),
                                        ("mobilenet_v3_small", "features.12.0")])
def test_end_to_end_equals_pytorch_grad_cam(arch, layer, method):
    """Their hooks, their formula, their normalisation and cv2 resize; our single pass."""
    model, x = louder(build(arch)), images_for(arch, batch=3)
    targets = [1, 4, 7]
    ours = fastinterp.gradcam(model, x, layer=layer, targets=targets, method=method)
    module = dict(model.named_modules())[layer]
    with THEIRS[method](model=model, target_layers=[module]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    assert ours.shape == theirs.shape == (3, *x.shape[-2:])
    assert (renormalised(ours) - theirs).abs().max().item() < 1e-4
    assert (theirs.amax(dim=(1, 2)) > 0.99).sum() >= 2  # most maps compared are not all zero


@pytest.mark.parametrize("method", sorted(THEIRS))
def test_raw_formula_equals_pytorch_grad_cam_on_random_tensors(method):
    """Unnormalised maps for given activations and gradients (their get_cam_image, then the ReLU
    their pipeline applies), on tensors where their eps is negligible."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 16, 5, 7, generator=g, dtype=torch.float64) * 3
    grad = torch.randn(2, 16, 5, 7, generator=g, dtype=torch.float64) * 10
    layer = nn.Conv2d(1, 1, 1)  # their constructor wants a model; only the formula is used
    with THEIRS[method](model=layer, target_layers=[layer]) as instance:
        theirs = np.maximum(instance.get_cam_image(None, None, None, a.numpy(), grad.numpy(), False), 0)
    ours = formulas.METHODS[method](a, grad)
    # Grad-CAM++: their eps = 1e-6 in the denominator moves the weights by ~1e-5 relative
    rtol = 1e-4 if method == "gradcam++" else 1e-9
    torch.testing.assert_close(ours, torch.from_numpy(theirs), rtol=rtol, atol=rtol * float(ours.max()))


def gap_cnn(channels=6, classes=4):
    """conv -> global average pool -> linear: d y_t / d A_c,ij = W[t, c] / (h w), in closed form."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, classes)).eval()


def test_raw_maps_equal_a_hand_computation():
    model = gap_cnn()
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([2, 0])
    with torch.no_grad():
        a = model[0](x)  # (2, 6, 7, 9)
    h, w = a.shape[-2:]
    g = (model[3].weight[t] / (h * w))[:, :, None, None].expand_as(a)  # the gradient, by hand
    by_hand = {
        # Grad-CAM: ReLU(sum_c mean_ij(G_c) A_c): the mean, not the sum (a factor h w)
        "gradcam": torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1)),
        # LayerCAM: ReLU(sum_c ReLU(G_c,ij) A_c,ij)
        "layercam": torch.relu((torch.relu(g) * a).sum(1)),
        # Grad-CAM++ with a constant gradient g_c: alpha = g^2 / (2 g^2 + S_c g^3), w_c = h w alpha relu(g)
        "gradcam++": torch.relu((((g[..., :1, :1] ** 2 / (2 * g[..., :1, :1] ** 2 + a.sum((2, 3), keepdim=True)
                                                            * g[..., :1, :1] ** 3)) * h * w
                                  * torch.relu(g[..., :1, :1])) * a).sum(1)),
    }
    assert not torch.equal(by_hand["gradcam"], by_hand["layercam"])  # some weights are negative
    for method, expected in by_hand.items():
        (got,) = fastinterp.layer_maps(model, x, targets=t, method=method).maps
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch,block", [("inception_v3", "Mixed_7c"), ("resnet18", "layer4"),
                                        ("mobilenet_v2", "features"), ("densenet121", "features")])
def test_the_default_teacher_is_grad_cam_of_the_pooled_feature_map_as_pytorch_grad_cam(arch, block):
    """The default teacher ("pooled") is the map of the block whose output the head pools: on
    inception_v3 the final block Mixed_7c (pytorch-grad-cam's target), not one branch's last conv."""
    model, x = louder(build(arch)), images_for(arch, batch=2)
    if arch == "inception_v3":  # a 3x3 final map (at 96 px it is 1x1: every map normalises to zeros)
        x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    targets = [1, 4]
    rep = fastinterp.cnn_representation(model, x, targets=torch.tensor(targets), size=tuple(x.shape[-2:]))
    assert rep.teacher_layer == block
    module = dict(model.named_modules())[block]
    with GradCAM(model=model, target_layers=[module]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    if arch == "densenet121":  # densenet pools relu(features): the ReLU is the only difference
        assert fastinterp.maps.forward_only.pooled_layer(model, x) == "features"
        return
    assert (renormalised(rep.teacher) - theirs).abs().max().item() < 1e-4
    assert (theirs.amax(dim=(1, 2)) > 0.99).any()  # maps, not zeros
    last = fastinterp.cnn_representation(model, x, targets=torch.tensor(targets), size=tuple(x.shape[-2:]),
                                         teacher="last")
    assert last.teacher_layer != block  # "last" is still read as recorded: the last conv to run
    if arch == "inception_v3":
        assert (renormalised(last.teacher) - theirs).abs().max().item() > 0.1


def test_pooled_falls_back_to_the_last_conv_without_a_pooling_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.rand(2, 3, 12, 12)
    model(x)
    pooled = fastinterp.cnn_representation(model, x, teacher="pooled", size=12, k=2)
    last = fastinterp.cnn_representation(model, x, teacher="last", size=12, k=2)
    assert pooled.teacher_layer == last.teacher_layer == "2"
    assert torch.equal(pooled.teacher, last.teacher)


def test_grad_cam_at_the_pooled_map_is_cgm0_of_the_activation_representation():
    """Why ``fastinterp fit`` refuses a Grad-CAM teacher with the forward-only representation: the
    head's CAM (CGM 0, order last_to_first) already is Grad-CAM of the pooled feature map."""
    model, x = build("resnet18"), images_for("resnet18", batch=3)
    rep = fastinterp.cnn_representation(model, x, kind="activation", order="last_to_first", teacher="pooled")
    torch.testing.assert_close(rep.cgm[:, 0], rep.teacher, atol=1e-5, rtol=0)
