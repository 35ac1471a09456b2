"""The whole-model baselines of fastinterp.baselines: Score-CAM against pytorch-grad-cam's ScoreCAM
(test-only dependency) on random-init torchvision models, RISE against a naive per-mask loop;
both bounded in memory (at most ``batch_size`` images per forward), deterministic for a seed,
and leaving the model untouched. ``baseline_map`` routes every name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from fastinterp import baselines
from fastinterp.baselines.rise import RiseMasks

from fastinterp.maps.representation import gradcam
from conftest import assert_same_state, build, model_state, naive_rise


@pytest.mark.parametrize("arch,layer", [("resnet18", "layer4.1.conv2"), ("resnet18", "layer3.1.conv2"),
                                        ("mobilenet_v3_small", None)])
def test_score_cam_equals_pytorch_grad_cam(arch, layer):
    model = build(arch)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    weights, activations, targets, forwards = baselines.score_cam_weights(model, images, layer, batch_size=100)
    channels = activations.shape[1]
    assert forwards == 2 * channels + 2  # one per (image, channel) + the clean forward
    name = layer or [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
    theirs = ScoreCAM(model, [dict(model.named_modules())[name]])
    theirs.batch_size = 100
    their_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    their_weights = theirs.get_cam_weights(images, None, their_targets, activations.numpy(), None)
    assert np.allclose(weights.numpy(), their_weights, rtol=1e-4, atol=1e-7)
    assert abs(weights.sum(1) - 1).max() < 1e-5
    maps = baselines.score_cam(model, images, layer, batch_size=37)
    their_maps = theirs(images, their_targets)
    # pytorch-grad-cam normalises then resizes with OpenCV and normalises again; we normalise at
    # the layer's resolution and resize (as our Grad-CAM): same map up to resampling
    varied = [(ours, ref) for ours, ref in zip(maps.numpy(), their_maps) if ref.std() > 1e-3]
    assert varied, "every map is constant: the comparison would test nothing"
    for ours, ref in varied:
        assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
    assert np.abs(maps.numpy() - their_maps).max() < 0.1
    assert maps.min() >= 0 and maps.max() <= 1


def test_rise_equals_a_naive_loop(small_cnn):
    model = small_cnn.eval()
    images = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 0, 4])
    ours = baselines.rise(model, images, targets, n_masks=24, cells=5, p=0.4, seed=7, batch_size=7)  # 2 masks x 3 images
    masks = RiseMasks(24, 20, 24, cells=5, p=0.4, seed=7)[0:24]
    assert masks.shape == (24, 20, 24) and 0 <= masks.min() and masks.max() <= 1
    assert torch.allclose(ours, naive_rise(model, images, targets, masks, 0.4), atol=1e-5)


def test_rise_masks_follow_the_paper():
    masks = RiseMasks(400, 32, 32, cells=4, p=0.5, seed=0)
    m = masks[0:400]
    assert abs(m.mean().item() - 0.5) < 0.05  # Bernoulli(p) cells, bilinear: mean ~ p
    assert not torch.equal(m[0], m[1])
    assert torch.equal(masks[10:20], m[10:20])  # any slice is the same masks
    assert (m.flatten(1).max(1).values - m.flatten(1).min(1).values > 0).any()  # smooth, not binary only


def test_rise_and_score_cam_deterministic_and_memory_bounded(small_cnn):
    model = small_cnn.train()  # must stay in train mode, BatchNorm statistics untouched
    before = model_state(model)
    sizes = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    before["hooks"] = model_state(model)["hooks"]
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = baselines.rise(model, images, n_masks=30, seed=3, batch_size=7)
    assert max(sizes) <= 7
    sizes.clear()
    b = baselines.rise(model, images, n_masks=30, seed=3, batch_size=64)
    assert torch.allclose(a, b, atol=1e-6)  # the masks do not depend on the batch size
    c = baselines.rise(model, images, n_masks=30, seed=4, batch_size=64)
    assert (a - c).abs().max() > 1e-3
    sizes.clear()
    s1 = baselines.score_cam(model, images, batch_size=5)
    # masked images + clean (scorer, which also captures the layer) + finding the last conv on one image
    assert max(sizes) <= 5 and sum(sizes) == 4 * 16 + 4 + 1
    assert torch.equal(s1, baselines.score_cam(model, images, batch_size=5))
    assert_same_state(before, model_state(model))


def test_baseline_map_routes_every_method(small_cnn):
    model = small_cnn.eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for method in baselines.GRADIENT_BASELINES:
        assert torch.equal(baselines.baseline_map(method, model, images, [1, 2]),
                           gradcam(model, images, targets=[1, 2], method=method))
    assert torch.equal(baselines.baseline_map("score-cam", model, images, [1, 2], batch_size=8),
                       baselines.score_cam(model, images, targets=[1, 2], batch_size=8))
    assert torch.equal(baselines.baseline_map("rise", model, images, [1, 2], n_masks=10, size=8),
                       baselines.rise(model, images, [1, 2], n_masks=10, size=8))
    assert baselines.baseline_map("rise", model, images, n_masks=10, size=(8, 12)).shape == (2, 8, 12)


def test_baseline_errors_name_the_argument(small_cnn):
    model = small_cnn.eval()
    images = torch.rand(2, 3, 16, 16)
    cases = [
        (lambda: baselines.baseline_map("eigencam", model, images), ValueError, "method"),
        (lambda: baselines.baseline_map("rise", model, images, layer="0"), ValueError, "layer"),
        (lambda: baselines.baseline_map("gradcam", model, images, n_masks=3), TypeError, "gradcam"),
        (lambda: baselines.score_cam(model, images, layer="nope"), ValueError, "layer"),
        (lambda: baselines.score_cam(model, images, layer="8"), ValueError, "layer"),  # Flatten: (B, C) output
        (lambda: baselines.score_cam(model, images, batch_size=0), ValueError, "batch_size"),
        (lambda: baselines.score_cam(model, images.double()), TypeError, "images"),
        (lambda: baselines.rise(model, images, n_masks=0), ValueError, "n_masks"),
        (lambda: baselines.rise(model, images, p=1.5), ValueError, "p"),
        (lambda: baselines.rise(model, images, targets=[0, 7]), ValueError, "targets"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=name):
            call()
