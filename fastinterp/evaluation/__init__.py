"""Judging explanations: every method (the CAM baselines and the trained generators) on held-out
images, by every metric of ``fastinterp.metrics``, with standard errors and costs, written as one
report (``fastinterp evaluate``).

    methods.py   the methods under evaluation, behind one ``explain(images, targets) -> maps``
    run.py       per-image metrics and costs of every method on one CNN's held-out images
    ablation.py  relevance of each CGM input of a generator (replace it by its mean)
    report.py    reports/evaluation.md + figures, and the ``fastinterp evaluate`` command
"""

from fastinterp.evaluation.methods import Method, baseline_methods, generator_method
from fastinterp.evaluation.run import EvaluationConfig, evaluate_cnn

__all__ = ["EvaluationConfig", "Method", "baseline_methods", "evaluate_cnn", "generator_method"]
