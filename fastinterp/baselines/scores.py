"""The explained class's score for many images, one batched forward per chunk: what Score-CAM,
RISE and every perturbation metric (deletion, insertion, Average Drop, ROAD) spend their time on.

The model runs as an eval view (``fastinterp.maps.eval_view``) under ``torch.no_grad``: its training
flags, BatchNorm statistics and hooks are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from fastinterp.maps.eval_view import add_forward_hook, eval_view
from fastinterp._core.validation import check_images, check_logits_and_targets, check_model, check_targets

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
    ``watch``: a module name whose (B, C, h, w) output on the clean images is kept as ``watched``
    (Score-CAM's activations, from the same forward).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, targets: object = None, score: str = "probability",
                 batch_size: int = 64, watch: str | None = None):
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
        self.watched: torch.Tensor | None = None
        outputs: list[torch.Tensor] = []
        handle = None if watch is None else add_forward_hook(self._module(watch), self._keeper(watch, outputs))
        try:
            with torch.no_grad():
                chunks = []
                for i in range(0, images.shape[0], self.batch_size):
                    chunks.append(self._logits(images[i:i + self.batch_size]))
                    if watch is not None and len(outputs) != len(chunks):
                        raise ValueError(f"layer: {watch!r} ran {len(outputs) - len(chunks) + 1} times in one "
                                         "forward; expected exactly once")
                logits = torch.cat(chunks)
        finally:
            if handle is not None:
                handle.remove()
        if watch is not None:
            self.watched = torch.cat(outputs)
        self.targets = check_logits_and_targets(logits, images.shape[0], given)
        self.clean = self._pick(logits, self.targets)  # (B,) float32: the score of each clean image

    def _module(self, name: object) -> nn.Module:
        if not isinstance(name, str):
            raise TypeError(f"layer: expected a module name (str) or None, got {type(name).__name__}")
        modules = dict(self.view.named_modules())
        if name not in modules:
            raise ValueError(f"layer: {name!r} is not a module of the model")
        return modules[name]

    @staticmethod
    def _keeper(name: str, outputs: list[torch.Tensor]):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"layer: {name!r} returns {type(output).__name__}, expected a (B, C, h, w) tensor")
            outputs.append(output.detach().clone())
        return hook

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
