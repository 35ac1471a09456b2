"""Which CGM inputs a generator relies on (the paper's bar chart, Sec. 5): replace CGM j by its
mean over the evaluated images (a map that carries no information about the image at hand) and
measure how much the output map and its faithfulness change.

    change_j   = mean |map - map_j|                        (0: CGM j is ignored)
    deletion_j = deletion AUC(map_j) - deletion AUC(map)   (> 0: worse without CGM j)
    insertion_j = insertion AUC(map) - insertion AUC(map_j) (> 0: worse without CGM j)

Per image, so the report gives standard errors; same images, same classes as the main table.
"""

from __future__ import annotations

import torch
from torch import nn

from fastinterp.metrics import deletion, insertion

__all__ = ["cgm_ablation"]


def cgm_ablation(cnn: nn.Module, explainer, images: torch.Tensor, targets: torch.Tensor, steps: int = 16,
                 batch: int = 32, score_batch: int = 128, deletion_substrate: str = "zeros",
                 insertion_substrate: str = "mean") -> dict:
    """Per-image changes (lists of float, one list per CGM) of ablating each CGM of ``explainer``'s
    generator on ``images``."""
    cgms, maps = [], []
    for i in range(0, images.shape[0], batch):
        out = explainer.explain(images[i:i + batch], targets[i:i + batch], return_cgm=True)
        cgms.append(out.cgm)
        maps.append(out.maps)
    cgm, full = torch.cat(cgms), torch.cat(maps)
    mean = cgm.mean(dim=0)  # (K, S, S)
    k = cgm.shape[1]
    common = {"steps": steps, "batch_size": score_batch}
    base_del = deletion(cnn, images, full, targets, substrate_kind=deletion_substrate, **common).auc
    base_ins = insertion(cnn, images, full, targets, substrate_kind=insertion_substrate, **common).auc
    result = {"change": [], "deletion": [], "insertion": []}
    for j in range(k):
        ablated = cgm.clone()
        ablated[:, j] = mean[j]
        out = torch.cat([explainer.generate(images[i:i + batch], ablated[i:i + batch])
                         for i in range(0, images.shape[0], batch)])
        result["change"].append((out - full).abs().flatten(1).mean(dim=1).double().tolist())
        result["deletion"].append(
            (deletion(cnn, images, out, targets, substrate_kind=deletion_substrate, **common).auc - base_del).tolist())
        result["insertion"].append(
            (base_ins - insertion(cnn, images, out, targets, substrate_kind=insertion_substrate, **common).auc).tolist())
    return result
