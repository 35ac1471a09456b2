"""Class activation map formulas: one small function per method, shared pipeline elsewhere
(``fastinterp.gradcam`` is the model-level call; these are the per-layer arithmetic).

Each function maps a layer's activations ``A`` and the gradient ``G = d y_t / d A`` of the target
logit, both (B, C, h, w), to a map (B, h, w). They only differ in how channels are weighted,
as in pytorch-grad-cam, but run batched on tensors on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CHANNEL_WEIGHTS", "METHODS", "gradcam_formula", "gradcam_weights", "gradcam_plus_plus_formula", "layercam_formula", "paper_gradcam_formula",
           "weighted_sum"]


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w[b, k] * A[b, k] : (B, C), (B, C, h, w) -> (B, h, w), as one batched matmul (what
    einsum runs too; written out, the traced ONNX graph has 3 nodes per layer, not 12)."""
    b, c, h, w = activations.shape
    return torch.matmul(weights.unsqueeze(1), activations.reshape(b, c, h * w)).reshape(b, h, w)


def gradcam_weights(gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights: mean_ij(G_k), (B, C, h, w) -> (B, C)."""
    return gradients.mean(dim=(2, 3))


def gradcam_formula(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ReLU(sum_k mean_ij(G_k) * A_k)."""
    return torch.relu(weighted_sum(gradcam_weights(gradients), activations))


def gradcam_plus_plus_formula(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), closed form with an exponential score:

    alpha_kij = G^2 / (2 G^2 + sum_ab A_kab * G^3)  (0 where the denominator is 0),
    w_k = sum_ij alpha_kij * ReLU(G_kij),   map = ReLU(sum_k w_k A_k).
    """
    g2 = gradients * gradients
    denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * gradients
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0)
    weights = (alpha * torch.relu(gradients)).sum(dim=(2, 3))
    return torch.relu(weighted_sum(weights, activations))


def layercam_formula(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): ReLU(sum_k ReLU(G_k) * A_k), element-wise weights."""
    return torch.relu((torch.relu(gradients) * activations).sum(dim=1))


def paper_gradcam_formula(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """The released code of arXiv 2301.08067: w_k = mean_ij((A > 0) * (G > 0) * G), map =
    sum_k w_k A_k with no ReLU (normalisation follows)."""
    positive = (activations > 0) & (gradients > 0)
    weights = torch.where(positive, gradients, 0).mean(dim=(2, 3))
    return weighted_sum(weights, activations)


# The methods whose map is ReLU(sum_k w_k(G) * A_k), channel weights from the gradient alone: the map
# of a 1x1 conv's output A = W Y + b is then ReLU(sum_c (w W)_c Y_c + w . b), from its input Y
# (``fastinterp.maps.capture`` keeps the input of a widening 1x1 conv instead of its output).
CHANNEL_WEIGHTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gradcam": gradcam_weights}

METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": gradcam_formula,
    "gradcam++": gradcam_plus_plus_formula,
    "layercam": layercam_formula,
    "paper-gradcam": paper_gradcam_formula,
}
