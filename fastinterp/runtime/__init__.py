"""Serving explanations: ``compile(cnn, generator)`` -> ``Explainer.explain(images)`` ->
``Explanation`` (logits, targets, maps; overlays and PNG grids)."""

from fastinterp.runtime.explainer import Explainer, compile
from fastinterp.runtime.explanation import Explanation

__all__ = ["Explainer", "Explanation", "compile"]
