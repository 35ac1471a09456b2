"""The explanation methods a report compares, each as ``Method.explain(images, targets) -> maps``
(B, H, W) float32 in [0, 1] at the images' size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastinterp.baselines import BASELINES, baseline_map

__all__ = ["Method", "baseline_methods", "generator_method"]

LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM", "score-cam": "Score-CAM",
          "rise": "RISE"}


@dataclass
class Method:
    name: str  # short id, e.g. "score-cam" or "fast"
    label: str  # as printed in tables and figures
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    kind: str  # "baseline" or "generator"
    teacher: str | None = None  # for a generator: the baseline it was trained to imitate
    details: dict[str, Any] = field(default_factory=dict)  # options, representation, checkpoint
    explainer: Any = None  # for a generator: its fastinterp Explainer (the CGM ablation reuses it)


def baseline_methods(cnn: nn.Module, names: tuple[str, ...] = BASELINES, rise_masks: int = 500,
                     batch_size: int = 64, seed: int = 0) -> list[Method]:
    """The baselines on ``cnn``, each at the last conv layer that runs (RISE: the whole model)."""
    methods = []
    for name in names:
        options: dict[str, Any] = {}
        if name == "score-cam":
            options = {"batch_size": batch_size}
        elif name == "rise":
            options = {"n_masks": rise_masks, "batch_size": batch_size, "seed": seed}

        def explain(images, targets, name=name, options=options):
            return baseline_map(name, cnn, images, targets, **options)

        methods.append(Method(name, LABELS[name], explain, "baseline", details=options))
    return methods


def generator_method(cnn: nn.Module, name: str, checkpoint: str | Path) -> Method:
    """A trained generator on ``cnn`` (``fastinterp.compile``: its representation from the
    checkpoint's metadata, eager torch backend)."""
    import warnings

    import fastinterp
    from fastinterp.runtime.compiler import DomainWarning

    with warnings.catch_warnings():  # held-out CNNs are what the evaluation measures
        warnings.simplefilter("ignore", DomainWarning)
        explainer = fastinterp.compile(cnn, checkpoint)
    rep = explainer.representation
    teacher = explainer.teacher_method

    def explain(images, targets):
        return explainer.explain(images, targets).maps

    label = f"{name} ({rep['kind']})"
    return Method(name, label, explain, "generator", teacher=teacher,
                  details={"checkpoint": str(checkpoint), "representation": dict(rep)}, explainer=explainer)
