"""Class activation maps: the per-layer formulas (``formulas``) and the baselines a user compares
with (Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM, RISE)."""

from fastinterp.cams.formulas import METHODS, gradcam, gradcam_plus_plus, layercam, paper_gradcam, weighted_sum

__all__ = ["METHODS", "gradcam", "gradcam_plus_plus", "layercam", "paper_gradcam", "weighted_sum"]
