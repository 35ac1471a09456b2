"""Where a generator is made for the user's own CNN: ``fit`` (the pipeline), ``load_cnn`` (a CNN
from a specification string + a state dict), the held-out report."""

from fastinterp.fitting.cnn import load_cnn, load_weights, read_state_dict
from fastinterp.fitting.pipeline import TEACHERS, fit

__all__ = ["TEACHERS", "fit", "load_cnn", "load_weights", "read_state_dict"]
