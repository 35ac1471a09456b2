"""How good an explanation map is.

    fidelity       to a reference map (e.g. a generator's map to its teacher): MAE, Pearson r, SSIM
    faithfulness   to the model: deletion / insertion AUC, Average Drop / Increase in Confidence, ROAD
    localisation   against ground-truth masks: pointing game, energy pointing game, top-k IoU
"""

from fastinterp.metrics.faithfulness import (DELETION_SUBSTRATES, ROAD_FRACTIONS, PerturbationCurve, average_drop,
                                             deletion, insertion, pixel_rank, road, road_combined)
from fastinterp.metrics.fidelity import fidelity, mae, pearson, ssim
from fastinterp.metrics.imputation import noisy_linear_imputation
from fastinterp.metrics.localisation import energy_pointing_game, pointing_game, top_k_iou

__all__ = ["DELETION_SUBSTRATES", "ROAD_FRACTIONS", "PerturbationCurve", "average_drop", "deletion",
           "energy_pointing_game", "fidelity", "insertion", "mae", "noisy_linear_imputation", "pearson", "pixel_rank",
           "pointing_game", "road", "road_combined", "ssim", "top_k_iou"]
