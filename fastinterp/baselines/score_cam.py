"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
Networks", CVPR-W 2020): weight each channel of a layer by the class score of the image masked
with that channel's upsampled, normalised activation. No gradients; one forward per channel.

As pytorch-grad-cam's ``ScoreCAM`` (the implementation users compare with; tested against it):

    A        = the layer's activations (B, C, h, w) on the clean images
    M_k      = minmax_k(upsample(A_k)) to the input size (bilinear, align_corners=True)
    s_k      = logit_t(model(x * M_k))                 (one forward per channel)
    w        = softmax_k(s)                            (over the C channels)
    map      = normalise(ReLU(sum_k w_k A_k)) upsampled to ``size``   (as fastinterp's Grad-CAM)

The B x C masked images are built chunk by chunk, ``batch_size`` per forward, so memory is
bounded by ``batch_size`` images whatever C is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastinterp.maps.formulas import weighted_sum
from fastinterp.baselines.scores import Scorer
from fastinterp._core.validation import check_images, check_model, check_size

__all__ = ["score_cam", "score_cam_weights"]


def score_cam_weights(model: nn.Module, images: torch.Tensor, layer: str | None = None, targets: object = None,
                      batch_size: int = 64, score: str = "logit"):
    """(weights (B, C), activations (B, C, h, w), targets (B,), forwards run) of Score-CAM."""
    if layer is None:
        from fastinterp.maps.layers import conv_layers

        layer = conv_layers(model, images[:1])[-1]
    # the activations come from the scorer's clean forward (which also fixes the targets)
    scorer = Scorer(model, images, targets, score=score, batch_size=batch_size, watch=layer)
    activations = scorer.watched
    b, c = activations.shape[:2]
    height, width = images.shape[-2:]

    def make(rows: range):
        index = torch.arange(rows.start, rows.stop, device=images.device)
        image, channel = index // c, index % c
        a = activations[image, channel][:, None].float()  # (m, 1, h, w)
        up = F.interpolate(a, size=(height, width), mode="bilinear", align_corners=True)
        flat = up.flatten(1)
        low, high = flat.min(dim=1).values, flat.max(dim=1).values
        masks = (up - low[:, None, None, None]) / (high - low + 1e-8)[:, None, None, None]
        return images[image] * masks.to(images.dtype), image

    channel_scores = scorer.scores(make, b * c).reshape(b, c)
    return channel_scores.softmax(dim=1), activations, scorer.targets, scorer.forwards


def score_cam(model: nn.Module, images: torch.Tensor, layer: str | None = None, targets: object = None,
              batch_size: int = 64, size: int | tuple[int, int] | None = None, score: str = "logit") -> torch.Tensor:
    """Score-CAM maps (B, H, W) float32 in [0, 1].

    Args:
        model: eager ``nn.Module`` returning logits; run as an eval view, never modified.
        images: (B, C, H, W) on the model's device and dtype.
        layer: module name (default: the last ``nn.Conv2d`` that runs).
        targets: class per image (None: the argmax of the clean logits).
        batch_size: masked images per forward (memory bound); B x C forwards in all.
        size: output (H, W) or int (default: the images' size).
        score: "logit" (pytorch-grad-cam's ``ClassifierOutputTarget``) or "probability".
    """
    from fastinterp.ops import cumulative_average

    check_model(model)
    check_images(images, model)
    out_size = tuple(images.shape[-2:]) if size is None else check_size(size)
    weights, activations, _, _ = score_cam_weights(model, images, layer, targets, batch_size, score)
    raw = torch.relu(weighted_sum(weights, activations.float()))
    return cumulative_average([raw], out_size, [0])[:, 0]
