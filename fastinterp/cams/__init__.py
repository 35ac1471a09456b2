"""Class activation maps: the per-layer formulas (``formulas``: Grad-CAM, Grad-CAM++, LayerCAM) and
the baselines a user compares with, as whole methods on a model (``baselines``: the three above,
``score_cam`` and ``rise``)."""

from fastinterp.cams.baselines import BASELINES, GRADIENT_BASELINES, baseline_map, check_options
from fastinterp.cams.formulas import METHODS, gradcam, gradcam_plus_plus, layercam, paper_gradcam, weighted_sum
from fastinterp.cams.rise import RiseMasks, rise
from fastinterp.cams.score_cam import score_cam, score_cam_weights

__all__ = ["BASELINES", "GRADIENT_BASELINES", "METHODS", "RiseMasks", "baseline_map", "check_options", "gradcam", "gradcam_plus_plus",
           "layercam", "paper_gradcam", "rise", "score_cam", "score_cam_weights", "weighted_sum"]
