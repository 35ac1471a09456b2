"""Statistics of per-image scores: means with standard errors, paired differences."""

from __future__ import annotations

import math

__all__ = ["cell", "mean_se", "paired"]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for n = 1)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and SE of a - b over the same images."""
    return mean_se([x - y for x, y in zip(a, b)])


def cell(values: list[float], digits: int = 3) -> str:
    mean, se = mean_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}"
