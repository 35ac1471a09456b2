"""RISE (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018): the class probability of the image under N random smooth masks, averaged
with those masks as weights. Model-agnostic (no layer, no gradient); N forwards per image.

    grid_i   ~ Bernoulli(p) on an s x s grid                           (N seeded masks)
    M_i      = bilinear upsampling of grid_i to ((s + 1) * ch, (s + 1) * cw), ch = ceil(H / s),
               cropped at a random shift in [0, ch) x [0, cw) to H x W  (as the paper's code)
    map      = sum_i P(t | x * M_i) * M_i / (N * p),  then min-max normalised to [0, 1]

The masks depend only on (seed, N, s, p, H, W): the same seed gives the same masks, and so the
same maps, whatever the batch size or the images. They are built ``batch_size`` at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastinterp.baselines.scores import Scorer
from fastinterp._core.validation import check_images, check_model, check_size

__all__ = ["RiseMasks", "rise"]


class RiseMasks:
    """The N seeded masks of RISE for (H, W) images; ``masks[i:j]`` -> (j - i, H, W) float32."""

    def __init__(self, n: int, height: int, width: int, cells: int = 7, p: float = 0.5, seed: int = 0):
        for name, value, minimum in (("n_masks", n, 1), ("cells", cells, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"p: expected a probability in (0, 1], got {p!r}")
        generator = torch.Generator().manual_seed(seed)
        self.n, self.height, self.width, self.p = n, height, width, float(p)
        self.cell = (math.ceil(height / cells), math.ceil(width / cells))
        self.grids = (torch.rand(n, 1, cells, cells, generator=generator) < p).float()
        self.shifts = torch.stack([torch.randint(0, self.cell[0], (n,), generator=generator),
                                   torch.randint(0, self.cell[1], (n,), generator=generator)], dim=1)
        self.up = ((cells + 1) * self.cell[0], (cells + 1) * self.cell[1])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: slice) -> torch.Tensor:
        grids, shifts = self.grids[rows], self.shifts[rows]
        up = F.interpolate(grids, size=self.up, mode="bilinear", align_corners=False)[:, 0]
        y = shifts[:, 0, None] + torch.arange(self.height)  # (m, H)
        x = shifts[:, 1, None] + torch.arange(self.width)  # (m, W)
        # bilinear weights of 0/1 cells can round to 1 + 1 ulp: clamp to the [0, 1] a mask means
        return up[torch.arange(len(grids))[:, None, None], y[:, :, None], x[:, None, :]].clamp_(0, 1)


def rise(model: nn.Module, images: torch.Tensor, targets: object = None, n_masks: int = 4000, cells: int = 7,
         p: float = 0.5, seed: int = 0, batch_size: int = 64, size: int | tuple[int, int] | None = None,
         score: str = "probability") -> torch.Tensor:
    """RISE maps (B, H, W) float32 in [0, 1].

    Args:
        model: eager ``nn.Module`` returning logits; run as an eval view, never modified.
        images: (B, C, H, W) on the model's device and dtype.
        targets: class per image (None: the argmax of the clean logits).
        n_masks, cells, p, seed: the masks (paper: N = 4000, s = 7, p = 0.5 for 224x224 ImageNet).
        batch_size: masked images per forward (memory bound); B x N forwards in all.
        size: output (H, W) or int (default: the images' size).
        score: "probability" (the paper: softmax) or "logit".
    """
    from fastinterp.ops import cumulative_average

    check_model(model)
    check_images(images, model)
    out_size = tuple(images.shape[-2:]) if size is None else check_size(size)
    b, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    masks = RiseMasks(n_masks, height, width, cells, p, seed)
    scorer = Scorer(model, images, targets, score=score, batch_size=batch_size)
    saliency = torch.zeros(b, height, width, dtype=torch.float64, device=images.device)
    # masks in the outer loop (each built once), images in the inner one: chunk = masks x images
    per_chunk = max(1, batch_size // b)
    for start in range(0, n_masks, per_chunk):
        m = masks[start:min(start + per_chunk, n_masks)].to(images.device)  # (m, H, W)
        count = m.shape[0]

        def make(rows: range, m=m):
            index = torch.arange(rows.start, rows.stop, device=images.device)
            image, mask = index % b, index // b
            return images[image] * m[mask][:, None].to(images.dtype), image

        s = scorer.scores(make, count * b).reshape(count, b)
        saliency += torch.einsum("mb,mhw->bhw", s.double(), m.double())
    saliency /= n_masks * masks.p
    return cumulative_average([saliency.float()], out_size, [0])[:, 0]
