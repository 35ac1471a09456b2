"""Images the project makes itself (no downloads): coloured shapes on a textured canvas.

Class = the shape of the large object (0 circle, 1 square, 2 triangle); small distractor blobs of
other colours are scattered around it. The object's mask is the ground-truth evidence.
"""

from __future__ import annotations

import torch

__all__ = ["SHAPE_NAMES", "shapes"]

SHAPE_NAMES = ("circle", "square", "triangle")


def shapes(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images, deterministic in ``seed``.

    Returns images (n, 3, size, size) float32 in [0, 1], labels (n,) int64 and masks
    (n, size, size) bool (the labelled object's pixels).
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    labels = torch.randint(0, len(SHAPE_NAMES), (n,), generator=g)
    # texture: smooth random field, upsampled from 8x8 noise, in grey-blue tones
    field = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size),
                                            mode="bilinear", align_corners=False)
    images = 0.25 + 0.3 * field
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        r = float(torch.empty(1).uniform_(size * 0.12, size * 0.2, generator=g))
        cx, cy = (float(v) for v in torch.empty(2).uniform_(r + 2, size - r - 2, generator=g))
        dx, dy = xs - cx, ys - cy
        kind = int(labels[i])
        if kind == 0:
            mask = dx * dx + dy * dy <= r * r
        elif kind == 1:
            mask = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
        else:
            mask = (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.6)
        colour = torch.rand(3, generator=g) * 0.5 + 0.5
        images[i][:, mask] = colour[:, None]
        masks[i] = mask
        for _ in range(4):  # distractors: small squares-and-dots that never decide the class
            s = float(torch.empty(1).uniform_(1.5, 3.5, generator=g))
            px, py = (float(v) for v in torch.empty(2).uniform_(0, size, generator=g))
            blob = ((xs - px).abs() <= s) & ((ys - py).abs() <= s) & ~mask
            images[i][:, blob] = torch.rand(3, 1, generator=g)
    return images.clamp(0, 1), labels, masks
