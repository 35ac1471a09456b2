"""fastinterp.metrics: hand-computable cases (a perfect, an inverted, a constant and a random map
give the expected values and ordering), the batched perturbation metrics against a naive
per-image, per-step loop, ROAD's imputation and scores and Average Drop against pytorch-grad-cam
(test-only dependency), memory bound, model state, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastinterp import metrics
from fastinterp.metrics.faithfulness import substrate
from conftest import assert_same_state, model_state


def linear_model(weights: torch.Tensor) -> nn.Module:
    """logits = [sum(w * x[:, 0]), 0]: the class-0 logit counts the pixels under ``weights``."""
    h, w = weights.shape
    conv = nn.Conv2d(1, 1, 1, bias=False)
    head = nn.Linear(h * w, 2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        head.weight.zero_()
        head.weight[0] = weights.flatten()
    return nn.Sequential(conv, nn.Flatten(), head).eval()


@pytest.fixture
def toy():
    """4x4 image of ones; the object (weight 1) is the 4 pixels of the bottom row."""
    weights = torch.zeros(4, 4)
    weights[3] = 1.0
    return linear_model(weights), torch.ones(1, 1, 4, 4), weights


def test_deletion_and_insertion_hand_values(toy):
    model, image, weights = toy
    perfect = weights[None].clone()
    inverted = 1 - weights[None]
    kw = {"targets": [0], "steps": 16, "score": "logit"}
    # perfect: the 4 object pixels go first -> logit 4, 3, 2, 1, 0, 0, ... (17 points)
    curve = metrics.deletion(model, image, perfect, **kw)
    assert curve.scores[0].tolist() == [4, 3, 2, 1] + [0] * 13
    assert curve.auc.item() == pytest.approx((4 + 3 + 2 + 1 - 2) / 16)
    # inverted: the object goes last -> 4 for 13 points, then 3, 2, 1, 0
    assert metrics.deletion(model, image, inverted, **kw).auc.item() == pytest.approx((4 * 13 + 3 + 2 + 1 - 2) / 16)
    # insertion from zeros is the mirror image
    kw_ins = {**kw, "substrate_kind": "zeros"}
    assert metrics.insertion(model, image, perfect, **kw_ins).auc.item() == pytest.approx((4 * 13 + 3 + 2 + 1 - 2) / 16)
    assert metrics.insertion(model, image, inverted, **kw_ins).auc.item() == pytest.approx((4 + 3 + 2 + 1 - 2) / 16)
    # a constant map removes pixels in row-major order: the object (bottom row) goes last
    constant = torch.full((1, 4, 4), 0.5)
    assert metrics.deletion(model, image, constant, **kw).auc.item() == pytest.approx((4 * 13 + 3 + 2 + 1 - 2) / 16)
    # random maps land between perfect and inverted
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        auc = metrics.deletion(model, image, torch.rand(1, 4, 4, generator=generator), **kw).auc.item()
        assert 0.5 <= auc <= 3.5


def naive_curve(model, images, maps, targets, steps, start, end):
    """One image, one step, one forward at a time."""
    out = torch.zeros(images.shape[0], steps + 1, dtype=torch.float64)
    h, w = images.shape[-2:]
    for b in range(images.shape[0]):
        order = sorted(range(h * w), key=lambda p: (-float(maps[b].flatten()[p]), p))
        for t in range(steps + 1):
            n = round(t * h * w / steps)
            chosen = torch.zeros(h * w, dtype=torch.bool)
            chosen[order[:n]] = True
            chosen = chosen.reshape(h, w)
            x = torch.where(chosen, end[b], start[b])
            with torch.no_grad():
                out[b, t] = model(x[None]).softmax(1)[0, targets[b]].double()
    return out


@pytest.mark.parametrize("steps,batch_size", [(7, 3), (16, 64)])
def test_batched_curves_equal_a_naive_loop(small_cnn, steps, batch_size):
    model = small_cnn.eval()
    gen = torch.Generator().manual_seed(steps)
    images = torch.rand(5, 3, 12, 10, generator=gen)
    maps = torch.rand(5, 12, 10, generator=gen)
    maps[1] = 0.25  # a constant map: ties in row-major order
    targets = torch.tensor([0, 1, 2, 3, 4])
    curve = metrics.deletion(model, images, maps, targets, steps=steps, batch_size=batch_size)
    expected = naive_curve(model, images, maps, targets, steps, images, torch.zeros_like(images))
    assert torch.allclose(curve.scores, expected, rtol=1e-5, atol=1e-6)
    # the trapezoid rule over t / steps
    assert np.allclose(curve.auc.numpy(), np.trapezoid(expected.numpy(), dx=1 / steps, axis=1))
    blurred = substrate(images, "blur")
    ins = metrics.insertion(model, images, maps, targets, steps=steps, batch_size=batch_size)
    assert torch.allclose(ins.scores, naive_curve(model, images, maps, targets, steps, blurred, images),
                          rtol=1e-5, atol=1e-6)


def test_average_drop_matches_pytorch_grad_cam(small_cnn):
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = small_cnn.eval()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 16, 16, generator=gen)
    maps = torch.rand(6, 16, 16, generator=gen)
    maps[0] = 1.0  # the image itself: no drop, no increase
    ours = metrics.average_drop(model, images, maps, [1, 2, 3, 4, 0, 1])
    targets = [ClassifierOutputSoftmaxTarget(t) for t in [1, 2, 3, 4, 0, 1]]
    drop = DropInConfidence()(images, maps.numpy(), targets, model)
    increase = IncreaseInConfidence()(images, maps.numpy(), targets, model)
    # theirs is the absolute drop max(0, Y - O); Average Drop % divides by Y
    assert np.allclose(ours["drop"].numpy() * ours["before"].numpy() / 100, drop, atol=1e-6)
    assert np.array_equal(ours["increase"].numpy() / 100, increase)
    assert ours["drop"][0] == 0 and ours["increase"][0] == 0


@pytest.mark.parametrize("shape,share", [((3, 9, 7), 0.3), ((1, 16, 16), 0.7), ((3, 5, 12), 0.05)])
def test_imputation_equals_the_road_reference(shape, share):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    gen = torch.Generator().manual_seed(int(share * 100))
    image = torch.rand(*shape, generator=gen)
    removed = torch.rand(*shape[1:], generator=gen) < share
    ours = metrics.noisy_linear_imputation(image, removed, noise=0.0)
    theirs = NoisyLinearImputer(noise=0.0)(image, (~removed).float())
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(ours[:, ~removed], image[:, ~removed])  # kept pixels untouched
    noisy = metrics.noisy_linear_imputation(image, removed, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert 0 < (noisy - ours).abs().max() < 0.1


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_scores_equal_pytorch_grad_cam(small_cnn, order):
    from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric,
                                                                  RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = small_cnn.eval()
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(4, 3, 8, 8, generator=gen)
    maps = torch.rand(4, 8, 8, generator=gen)  # continuous: no ties
    targets = [0, 1, 2, 3]
    ours = metrics.road(model, images, maps, targets, fractions=(0.25, 0.5), order=order, noise=0.0)
    assert ours.shape == (4, 2)
    # theirs: percentile p keeps the pixels below it -> p = 75 removes the top 25% (16 of 64 pixels)
    for column, percentile in enumerate((75, 50)):
        kind = RemoveMostRelevantFirst if order == "morf" else RemoveLeastRelevantFirst
        theirs = PerturbationConfidenceMetric(kind(percentile, NoisyLinearImputer(noise=0)))(
            images, maps.numpy(), [ClassifierOutputSoftmaxTarget(t) for t in targets], model, return_diff=False)
        assert np.allclose(ours[:, column].numpy(), theirs, atol=1e-5)


def test_road_and_average_drop_order_perfect_above_inverted(toy):
    model, image, weights = toy
    images = image.expand(1, 1, 4, 4) * torch.linspace(0.5, 1.0, 16).reshape(1, 1, 4, 4)
    perfect = weights[None] + 0.01 * torch.rand(1, 4, 4)
    inverted = 1 - perfect
    good = metrics.road_combined(model, images, perfect, [0], fractions=(0.25, 0.5), noise=0.0, score="logit")
    bad = metrics.road_combined(model, images, inverted, [0], fractions=(0.25, 0.5), noise=0.0, score="logit")
    assert good["combined"].item() > bad["combined"].item()
    assert good["morf"].item() < bad["morf"].item()


def test_localisation_hand_values():
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True  # 4 of 25 pixels
    perfect = masks.float()
    inverted = 1 - perfect
    constant = torch.full((4, 5, 5), 0.3)
    assert metrics.pointing_game(perfect, masks).tolist() == [1.0] * 4
    assert metrics.pointing_game(inverted, masks).tolist() == [0.0] * 4
    assert metrics.pointing_game(constant, masks).tolist() == [0.0] * 4  # points nowhere
    assert metrics.energy_pointing_game(perfect, masks).tolist() == [1.0] * 4
    assert metrics.energy_pointing_game(inverted, masks).tolist() == [0.0] * 4
    assert metrics.energy_pointing_game(constant, masks) == pytest.approx([4 / 25] * 4)
    assert metrics.energy_pointing_game(torch.zeros(4, 5, 5), masks).tolist() == [0.0] * 4
    assert metrics.top_k_iou(perfect, masks, fraction=4 / 25).tolist() == [1.0] * 4
    assert metrics.top_k_iou(inverted, masks, fraction=4 / 25).tolist() == [0.0] * 4
    # top 8 of a map peaked on the mask: the 4 mask pixels + 4 others -> IoU 4 / 8
    peaked = perfect + 0.01 * torch.arange(25.0).reshape(5, 5)
    assert metrics.top_k_iou(peaked, masks, fraction=8 / 25) == pytest.approx([0.5] * 4)
    random = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(0))
    assert (metrics.energy_pointing_game(random, masks) < 1).all()


def test_ssim_orders_similar_above_dissimilar():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, generator=gen)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3, dtype=torch.float64))
    close = (x + 0.05 * torch.randn(3, 32, 32, generator=gen)).clamp(0, 1)
    far = torch.rand(3, 32, 32, generator=gen)
    assert (metrics.ssim(close, x) > metrics.ssim(far, x) + 0.3).all()


def test_memory_bound_and_model_untouched(small_cnn):
    model = small_cnn.train()  # BatchNorm in train mode: explaining must not update it
    before = model_state(model)
    sizes = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    before["hooks"] = model_state(model)["hooks"]
    images = torch.rand(5, 3, 16, 16)
    maps = torch.rand(5, 16, 16)
    metrics.deletion(model, images, maps, steps=9, batch_size=4)
    metrics.average_drop(model, images, maps, batch_size=4)
    metrics.road_combined(model, images, maps, fractions=(0.5,), batch_size=4)
    assert max(sizes) == 4 and sum(sizes) > 50
    assert_same_state(before, model_state(model))


def test_bad_inputs_name_the_argument(small_cnn):
    model = small_cnn.eval()
    images = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)
    cases = [
        (lambda: metrics.deletion(model, images, torch.rand(2, 8, 9)), ValueError, "maps"),
        (lambda: metrics.deletion(model, images, torch.full((2, 8, 8), float("nan"))), ValueError, "maps"),
        (lambda: metrics.deletion(model, images, maps.int()), TypeError, "maps"),
        (lambda: metrics.deletion(model, images, maps, steps=0), ValueError, "steps"),
        (lambda: metrics.insertion(model, images, maps, substrate_kind="grey"), ValueError, "substrate"),
        (lambda: metrics.deletion(model, images, maps, score="softmax"), ValueError, "score"),
        (lambda: metrics.deletion(model, images, maps, batch_size=0), ValueError, "batch_size"),
        (lambda: metrics.deletion(model, images, maps, targets=[0, 9]), ValueError, "targets"),
        (lambda: metrics.road(model, images, maps, fractions=(0.0,)), ValueError, "fractions"),
        (lambda: metrics.road(model, images, maps, order="first"), ValueError, "order"),
        (lambda: metrics.average_drop(model, images, maps * 3), ValueError, "maps"),
        (lambda: metrics.average_drop(model, images, maps, score="logit"), ValueError, "score"),
        (lambda: metrics.ssim(maps * 2, maps), ValueError, "pred"),
        (lambda: metrics.ssim(torch.rand(2, 5, 5), torch.rand(2, 5, 5)), ValueError, "11x11"),
        (lambda: metrics.pointing_game(maps, torch.zeros(2, 8, 8)), TypeError, "masks"),
        (lambda: metrics.pointing_game(-maps, maps > 0.5), ValueError, "maps"),
        (lambda: metrics.top_k_iou(maps, maps > 0.5, fraction=0), ValueError, "fraction"),
        (lambda: metrics.noisy_linear_imputation(images[0], torch.ones(8, 8, dtype=torch.bool)), ValueError, "removed"),
        (lambda: metrics.ssim(maps, maps[:1]), ValueError, "pred"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=name):
            call()
