"""The explanation methods a user compares with, behind one call: ``baseline_map(name, model,
images, targets)`` -> (B, H, W) float32 in [0, 1] at the images' size (or ``size``).

    "gradcam", "gradcam++", "layercam"   one forward + one backward to ``layer`` (default: the last
                                         conv that runs): ``fastinterp.maps.representation.gradcam``
    "score-cam"                          one forward per channel of ``layer`` (``score_cam``)
    "rise"                               ``n_masks`` forwards per image (``rise``)

Each can also be the teacher of ``build-dataset`` (``teacher_method``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["BASELINES", "GRADIENT_BASELINES", "baseline_map", "check_options"]

GRADIENT_BASELINES = ("gradcam", "gradcam++", "layercam")
BASELINES = (*GRADIENT_BASELINES, "score-cam", "rise")


def check_options(method: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` must be keyword arguments ``method`` takes (beyond model, images, targets, layer,
    size): none for the gradient baselines. Checked before any work starts."""
    import inspect

    if method not in BASELINES:
        raise ValueError(f"method: expected one of {BASELINES}, got {method!r}")
    options = dict(options or {})
    if method in GRADIENT_BASELINES:
        allowed: set[str] = set()
    else:
        from fastinterp.baselines.rise import rise
        from fastinterp.baselines.score_cam import score_cam

        function = score_cam if method == "score-cam" else rise
        allowed = set(inspect.signature(function).parameters) - {"model", "images", "targets", "layer", "size"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"options: {method} takes {sorted(allowed) or 'no options'}, got {unknown}")
    return options


def baseline_map(method: str, model: nn.Module, images: torch.Tensor, targets: object = None, *,
                 layer: str | None = None, size: int | tuple[int, int] | None = None,
                 **options: Any) -> torch.Tensor:
    """Maps (B, H, W) in [0, 1] of ``method`` (one of ``BASELINES``). ``options`` go to
    :func:`~fastinterp.baselines.score_cam.score_cam` (batch_size, score) or
    :func:`~fastinterp.baselines.rise.rise` (n_masks, cells, p, seed, batch_size, score)."""
    if method in GRADIENT_BASELINES:
        from fastinterp.maps.representation import gradcam

        if options:
            raise TypeError(f"{method}: takes no options, got {sorted(options)}")
        return gradcam(model, images, layer=layer, targets=targets, size=size, method=method)
    if method == "score-cam":
        from fastinterp.baselines.score_cam import score_cam

        return score_cam(model, images, layer=layer, targets=targets, size=size, **options)
    if method == "rise":
        from fastinterp.baselines.rise import rise

        if layer is not None:
            raise ValueError("layer: RISE explains the whole model (it masks the input); pass layer=None")
        return rise(model, images, targets=targets, size=size, **options)
    raise ValueError(f"method: expected one of {BASELINES}, got {method!r}")
