"""Fidelity of an explanation map to a reference map (e.g. the generator's map to its teacher)."""

from __future__ import annotations

import torch

__all__ = ["fidelity", "mae", "pearson", "ssim"]


def _flat(maps: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2:
        raise ValueError(f"{name}: expected a tensor (B, ...) with at least 2 dimensions")
    return maps.detach().reshape(maps.shape[0], -1).to(torch.float64)


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample: (B, ...) x (B, ...) -> (B,) float64."""
    p, t = _flat(pred, "pred"), _flat(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {tuple(pred.shape)} differs from target's {tuple(target.shape)}")
    return (p - t).abs().mean(dim=1)


def pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample over pixels: (B,) float64 in [-1, 1]; 0 where either map
    is constant (no linear relation can be measured)."""
    p, t = _flat(pred, "pred"), _flat(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {tuple(pred.shape)} differs from target's {tuple(target.shape)}")
    p = p - p.mean(dim=1, keepdim=True)
    t = t - t.mean(dim=1, keepdim=True)
    denom = p.norm(dim=1) * t.norm(dim=1)
    return torch.where(denom > 0, (p * t).sum(dim=1) / torch.where(denom > 0, denom, 1.0), 0.0)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per sample (torchmetrics, Gaussian window 11, sigma 1.5, data range
    1: maps in [0, 1]): (B, H, W) x (B, H, W) -> (B,) float64."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError as error:  # pragma: no cover - torchmetrics is in the eval and dev extras
        raise ImportError("ssim needs torchmetrics: pip install 'fastinterp[eval]'") from error
    for name, maps in (("pred", pred), ("target", target)):
        if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
            raise ValueError(f"{name}: expected a tensor (B, H, W), got "
                             f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    if pred.shape != target.shape:
        raise ValueError(f"pred: shape {tuple(pred.shape)} differs from target's {tuple(target.shape)}")
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"pred: SSIM's 11x11 window needs maps of at least 11x11, got {tuple(pred.shape[-2:])}")
    for name, maps in (("pred", pred), ("target", target)):
        if not bool(torch.isfinite(maps).all()) or float(maps.min()) < 0 or float(maps.max()) > 1:
            raise ValueError(f"{name}: SSIM is computed with a data range of 1: expected finite maps in [0, 1]")
    values = structural_similarity_index_measure(pred.detach()[:, None].double(), target.detach()[:, None].double(),
                                                 data_range=1.0, reduction="none")
    return values.reshape(pred.shape[0])


def fidelity(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Batch means of :func:`mae` and :func:`pearson`."""
    return {"mae": mae(pred, target).mean().item(), "pearson": pearson(pred, target).mean().item()}
