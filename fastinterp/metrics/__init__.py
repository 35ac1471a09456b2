"""How good an explanation map is: fidelity to a reference map."""

from fastinterp.metrics.fidelity import fidelity, mae, pearson

__all__ = ["fidelity", "mae", "pearson"]
