"""Localisation of explanation maps against ground-truth object masks (the synthetic datasets
draw one for the labelled object).

    pointing_game          (Zhang et al., ECCV 2016) 1 if the map's maximum lies in the mask.
                           No tolerance margin (the paper's 15 px is a quarter of our 64 px
                           images). A constant map points nowhere: 0.
    energy_pointing_game   (Wang et al., Score-CAM, 2020) share of the map's mass inside the mask,
                           sum(map * mask) / sum(map); 0 for an all-zero map.
    top_k_iou              IoU of the mask with the map's top ``fraction`` pixels (ties: row-major
                           order, as the perturbation metrics).

Maps (B, H, W) non-negative floats, masks (B, H, W) bool; per-image float64 results (B,).
"""

from __future__ import annotations

import torch

__all__ = ["energy_pointing_game", "pointing_game", "top_k_iou"]


def _check(maps: object, masks: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point() or maps.dim() != 3:
        raise TypeError(f"maps: expected a float tensor (B, H, W), got "
                        f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise TypeError(f"masks: expected a bool tensor (B, H, W), got "
                        f"{masks.dtype if isinstance(masks, torch.Tensor) else type(masks).__name__}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks: shape {tuple(masks.shape)} differs from the maps' {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps: contains NaN or infinite values")
    if float(maps.min()) < 0:
        raise ValueError(f"maps: expected non-negative values (a saliency map), min {float(maps.min()):.4g}")
    return maps.flatten(1).double(), masks.flatten(1).to(maps.device)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) 1.0 where the map's (first) maximum pixel is in the mask, else 0.0."""
    flat, mask = _check(maps, masks)
    hit = mask.gather(1, flat.argmax(dim=1, keepdim=True))[:, 0]
    constant = flat.max(dim=1).values == flat.min(dim=1).values
    return (hit & ~constant).double()


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) sum(map inside the mask) / sum(map), in [0, 1]."""
    flat, mask = _check(maps, masks)
    total = flat.sum(dim=1)
    inside = (flat * mask).sum(dim=1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)


def top_k_iou(maps: torch.Tensor, masks: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """(B,) IoU of the mask and the map's top round(fraction * H * W) pixels."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a share of pixels in (0, 1], got {fraction!r}")
    flat, mask = _check(maps, masks)
    from fastinterp.metrics.faithfulness import pixel_rank

    k = max(1, round(fraction * flat.shape[1]))
    top = pixel_rank(flat) < k
    union = (top | mask).sum(dim=1).double()
    return torch.where(union > 0, (top & mask).sum(dim=1).double() / torch.where(union > 0, union, 1.0), 0.0)
