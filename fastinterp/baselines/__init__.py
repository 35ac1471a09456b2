"""Whole-model explanation methods a user compares with, each run on a model and images:
Grad-CAM, Grad-CAM++, LayerCAM (one layer, one pass), Score-CAM (one forward per channel) and RISE
(random masks), behind one call (``baseline_map``), and the batched scoring of perturbed images
(``scores``) that Score-CAM, RISE and the faithfulness metrics spend their time on."""

from fastinterp.baselines.methods import BASELINES, GRADIENT_BASELINES, baseline_map, check_options
from fastinterp.baselines.rise import RiseMasks, rise
from fastinterp.baselines.score_cam import score_cam, score_cam_weights

__all__ = ["BASELINES", "GRADIENT_BASELINES", "RiseMasks", "baseline_map", "check_options", "rise", "score_cam",
           "score_cam_weights"]
