"""The explained class's score for many images, one batched forward per chunk: what Score-CAM,
RISE and every perturbation metric (deletion, insertion, Average Drop, ROAD) spend their time on.

The model runs as an eval view (``fastinterp.eval_view``) under ``torch.no_grad``: its training
flags, BatchNorm statistics and hooks are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from fastinterp.eval_view import eval_view
from fastinterp.validation import check_images, check_logits_and_targets, check_model, check_targets

__all__ = ["SCORES", "Scorer", "check_batch_size"]

SCORES = ("probability", "logit")


def check_batch_size(batch_size: object, name: str = "batch_size") -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name}: expected an int >= 1 (images per forward), got {batch_size!r}")
    return batch_size


class Scorer:
    """Scores of a model's explained classes on perturbed copies of ``images``.

    ``Scorer(model, images, targets, score, batch_size)`` checks its arguments, runs one clean
    forward and fixes the targets (given, or the argmax of the clean logits). ``scores(make, n)``
    then evaluates ``n`` perturbed images, built chunk by chunk by ``make(rows) -> (images (m, C,
    H, W), which (m,) image index)``, with at most ``batch_size`` images per forward: memory stays
    bounded whatever ``n`` is. ``forwards`` counts the images run (the cost unit of the report).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, targets: object = None, score: str = "probability",
                 batch_size: int = 64):
        check_model(model)
        check_images(images, model)
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        self.batch_size = check_batch_size(batch_size)
        self.score = score
        self.view = eval_view(model)
        self.images = images
        given = check_targets(targets, images.shape[0], images.device)
        self.forwards = 0
        with torch.no_grad():
            logits = torch.cat([self._logits(images[i:i + self.batch_size])
                                for i in range(0, images.shape[0], self.batch_size)])
        self.targets = check_logits_and_targets(logits, images.shape[0], given)
        self.clean = self._pick(logits, self.targets)  # (B,) float32: the score of each clean image

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += x.shape[0]
        return self.view(x)

    def _pick(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        values = logits.softmax(dim=1) if self.score == "probability" else logits
        return values.gather(1, targets[:, None])[:, 0]

    def chunks(self, n: int) -> Iterator[range]:
        for start in range(0, n, self.batch_size):
            yield range(start, min(start + self.batch_size, n))

    def scores(self, make: Callable[[range], tuple[torch.Tensor, torch.Tensor]], n: int,
               on_chunk: Callable[[int], None] | None = None) -> torch.Tensor:
        """(n,) float32 scores of the ``n`` images ``make`` builds, chunk by chunk."""
        out = torch.empty(n, dtype=torch.float32, device=self.images.device)
        with torch.no_grad():
            for rows in self.chunks(n):
                batch, which = make(rows)
                out[rows.start:rows.stop] = self._pick(self._logits(batch), self.targets[which])
                if on_chunk is not None:
                    on_chunk(len(rows))
        return out
