"""Faithfulness of explanation maps to the model they explain: does the model's score follow the
pixels the map ranks highest? Every metric runs the model through ``fastinterp.baselines.scores.Scorer``:
one batched forward per perturbation step for the whole batch (chunked to ``batch_size``), in
eval semantics, without touching the model.

    deletion / insertion   (Petsiuk et al., RISE, BMVC 2018) the target's probability as the
                           map's top pixels are removed (-> substrate) / inserted (substrate ->
                           image), ``steps`` equal steps; AUC by the trapezoid rule over the
                           removed fraction in [0, 1]. Deletion: lower is better; insertion: higher.
    average_drop / increase_in_confidence  (Chattopadhay et al., Grad-CAM++, WACV 2018) the image
                           multiplied by the map: drop_i = 100 max(0, Y_i - O_i) / Y_i (lower is
                           better), increase_i = 100 [O_i > Y_i] (higher is better).
    road                   (Rong et al., "A Consistent and Efficient Evaluation Strategy for
                           Attribution Methods", ICML 2022) remove a fraction of the pixels, most
                           (MoRF) or least (LeRF) relevant first, fill them by noisy linear
                           imputation (``imputation``), score the target; ``road_combined`` =
                           mean over fractions of (LeRF - MoRF) / 2 (higher is better, as
                           pytorch-grad-cam's ``ROADCombined``).

Pixel ranking: descending map value; ties keep pixel order (row-major), so a constant map removes
pixels top-left first. Every function returns per-image values (float64 tensors): the report
averages them and gives standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastinterp.metrics.imputation import noisy_linear_imputation
from fastinterp.baselines.scores import Scorer

__all__ = ["DELETION_SUBSTRATES", "PerturbationCurve", "average_drop", "deletion", "insertion", "road",
           "road_combined", "ROAD_FRACTIONS"]

DELETION_SUBSTRATES = ("zeros", "blur", "mean")
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class PerturbationCurve:
    """A deletion or insertion curve for B images."""

    fractions: torch.Tensor  # (steps + 1,) share of pixels removed / inserted, 0 .. 1
    scores: torch.Tensor  # (B, steps + 1) the target's score at each step
    auc: torch.Tensor  # (B,) float64: trapezoid area under scores over fractions


def check_maps(maps: object, images: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """``maps`` must be a finite (B, H, W) float tensor matching the images' batch and size."""
    expected = (images.shape[0], *images.shape[-2:])
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor of shape {expected}, got "
                        f"{type(maps).__name__ if not isinstance(maps, torch.Tensor) else maps.dtype}")
    if tuple(maps.shape) != expected:
        raise ValueError(f"{name}: expected shape (B, H, W) = {expected} (one map per image, at its size), "
                         f"got {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return maps.to(images.device)


def pixel_rank(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H*W) int64: each pixel's position when sorted by descending value (ties:
    row-major order), 0 = the most relevant pixel."""
    flat = maps.flatten(1)
    order = torch.sort(-flat.double(), dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand_as(order))
    return rank


def substrate(images: torch.Tensor, kind: str) -> torch.Tensor:
    """What removed pixels become: "zeros", "blur" (Gaussian, kernel 11, sigma 5, as RISE's
    insertion) or "mean" (each image's per-channel mean)."""
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    raise ValueError(f"substrate: expected one of {DELETION_SUBSTRATES}, got {kind!r}")


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    return steps


def _curve(model, images, maps, targets, steps, start, end, score, batch_size, progress, desc,
           clean_step: int) -> PerturbationCurve:
    """Scores of images whose first n_t ranked pixels come from ``end`` and the rest from ``start``
    (n_t = round(t * H * W / steps), t = 0..steps). Step ``clean_step`` (0 or ``steps``) is the
    image itself: its score is the scorer's clean forward, not run again."""
    from tqdm.auto import tqdm

    scorer = Scorer(model, images, targets, score=score, batch_size=batch_size)
    maps = check_maps(maps, images)
    steps = _check_steps(steps)
    b, c, h, w = images.shape
    rank = pixel_rank(maps).reshape(b, 1, h, w)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).long()
    starts, ends = start(images), end(images)
    run_steps = torch.tensor([t for t in range(steps + 1) if t != clean_step], device=images.device)

    def make(rows: range):
        index = torch.arange(rows.start, rows.stop, device=images.device)
        step, image = run_steps[index // b], index % b
        switched = rank[image] < counts.to(images.device)[step][:, None, None, None]
        return torch.where(switched, ends[image], starts[image]), image

    bar = tqdm(total=steps * b, desc=desc, unit="img", disable=not progress, leave=False)
    try:
        perturbed = scorer.scores(make, steps * b, on_chunk=bar.update).reshape(steps, b)
    finally:
        bar.close()
    scores = torch.empty(steps + 1, b, dtype=torch.float64, device=images.device)
    scores[run_steps] = perturbed.double()
    scores[clean_step] = scorer.clean.double()
    scores = scores.T
    auc = (scores.sum(dim=1) - (scores[:, 0] + scores[:, -1]) / 2) / steps
    return PerturbationCurve(fractions=counts.double() / (h * w), scores=scores, auc=auc)


def deletion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: object = None, steps: int = 32,
             substrate_kind: str = "zeros", score: str = "probability", batch_size: int = 64,
             progress: bool = False) -> PerturbationCurve:
    """Deletion curve and AUC (lower is better): the top-ranked pixels are replaced by the
    substrate ("zeros" as in the RISE paper), ``steps`` equal steps from 0 to every pixel.
    ``steps * B`` forwards + B clean ones (which give step 0 and the targets)."""
    return _curve(model, images, maps, targets, steps, lambda x: x, lambda x: substrate(x, substrate_kind),
                  score, batch_size, progress, "deletion", clean_step=0)


def insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: object = None, steps: int = 32,
              substrate_kind: str = "blur", score: str = "probability", batch_size: int = 64,
              progress: bool = False) -> PerturbationCurve:
    """Insertion curve and AUC (higher is better): starting from the substrate ("blur" as in the
    RISE paper), the top-ranked pixels of the image are put back, ``steps`` equal steps."""
    return _curve(model, images, maps, targets, steps, lambda x: substrate(x, substrate_kind), lambda x: x,
                  score, batch_size, progress, "insertion", clean_step=steps)


def average_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: object = None,
                 score: str = "probability", batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per image (B,) float64: ``drop`` = 100 max(0, Y - O) / Y and ``increase`` = 100 [O > Y],
    Y the target's probability on the image, O on the image multiplied by its map (in [0, 1]).
    Average Drop % and Increase in Confidence % are their means. 2B forwards. A probability that
    underflows to 0 gives a drop of 0 (nothing left to drop)."""
    if score != "probability":
        raise ValueError(f"score: Average Drop divides by the clean score, so it needs 'probability' (> 0), "
                         f"got {score!r}")
    scorer = Scorer(model, images, targets, score=score, batch_size=batch_size)
    maps = check_maps(maps, images)
    if float(maps.min()) < 0 or float(maps.max()) > 1:
        raise ValueError("maps: Average Drop multiplies the image by the map, expected values in [0, 1], got "
                         f"[{float(maps.min()):.4g}, {float(maps.max()):.4g}]")
    masked = images * maps[:, None].to(images.dtype)
    after = scorer.scores(lambda rows: (masked[rows.start:rows.stop],
                                        torch.arange(rows.start, rows.stop, device=images.device)),
                          images.shape[0]).double()
    before = scorer.clean.double()
    drop = torch.where(before > 0, 100 * torch.clamp(before - after, min=0) / torch.where(before > 0, before, 1.0), 0.0)
    return {"drop": drop, "increase": 100 * (after > before).double(), "before": before, "after": after}


def _check_fractions(fractions: object) -> tuple[float, ...]:
    if not isinstance(fractions, (list, tuple)) or not fractions or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1 for f in fractions):
        raise ValueError(f"fractions: expected a non-empty sequence of shares in (0, 1), got {fractions!r}")
    return tuple(float(f) for f in fractions)


def road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: object = None,
         fractions: tuple[float, ...] = ROAD_FRACTIONS, order: str = "morf", noise: float = 0.01, seed: int = 0,
         score: str = "probability", batch_size: int = 64) -> torch.Tensor:
    """ROAD scores (B, len(fractions)) float64: the target's score after removing round(f * H * W)
    pixels, most relevant first ("morf": lower is better) or least relevant first ("lerf": higher
    is better), imputed by :func:`noisy_linear_imputation` (Gaussian noise of std ``noise``,
    seeded per fraction and per image position in the batch). ``len(fractions) * B`` forwards and
    as many sparse solves; the imputed images of the batch are held at once (F x B images)."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order: expected 'morf' or 'lerf', got {order!r}")
    fractions = _check_fractions(fractions)
    scorer = Scorer(model, images, targets, score=score, batch_size=batch_size)
    maps = check_maps(maps, images)
    b, _, h, w = images.shape
    rank = pixel_rank(maps if order == "morf" else -maps).reshape(b, h, w)
    imputed = []
    for f in fractions:
        removed = rank < min(h * w - 1, max(1, round(f * h * w)))  # at least one pixel kept and one removed
        # one seeded generator per (fraction, image): an image's noise does not depend on its neighbours
        imputed.append(torch.stack([
            noisy_linear_imputation(images[i], removed[i], noise,
                                    torch.Generator().manual_seed(seed * 1_000_003 + int(f * 1e6) * 1009 + i))
            for i in range(b)]))
    stacked = torch.stack(imputed)  # (F, B, C, H, W)

    def make(rows: range):
        index = torch.arange(rows.start, rows.stop, device=images.device)
        return stacked[index // b, index % b], index % b

    return scorer.scores(make, len(fractions) * b).reshape(len(fractions), b).T.double()


def road_combined(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: object = None,
                  fractions: tuple[float, ...] = ROAD_FRACTIONS, noise: float = 0.01, seed: int = 0,
                  score: str = "probability", batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per image (B,): ``morf`` and ``lerf`` (mean ROAD score over ``fractions``) and ``combined``
    = (lerf - morf) / 2 (higher is better)."""
    morf = road(model, images, maps, targets, fractions, "morf", noise, seed, score, batch_size).mean(dim=1)
    lerf = road(model, images, maps, targets, fractions, "lerf", noise, seed + 1, score, batch_size).mean(dim=1)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}
