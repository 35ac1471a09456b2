"""ROAD's noisy linear imputation (Rong et al., ICML 2022; the authors' ``NoisyLinearImputer``,
also in pytorch-grad-cam): every removed pixel becomes the weighted mean of its 8 neighbours
(1/6 for the 4 direct ones, 1/12 for the diagonals; weights of neighbours outside the image
dropped), kept pixels fixed. That is one sparse linear system per image, solved exactly (SciPy's
``spsolve``) for all channels at once, then Gaussian noise of std ``noise`` is added to the
imputed pixels. Vectorised construction (COO) instead of the reference's per-entry ``lil_matrix``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_imputation"]

NEIGHBOUR_WEIGHTS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                     ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_imputation(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """(C, H, W) image, (H, W) bool ``removed`` -> (C, H, W) with the removed pixels imputed.

    Removed pixels must connect to at least one kept pixel (a fully removed image has no solution)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    if removed.shape != image.shape[-2:] or removed.dtype != torch.bool:
        raise ValueError(f"removed: expected a bool (H, W) = {tuple(image.shape[-2:])} mask, got "
                         f"{removed.dtype} {tuple(removed.shape)}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise: expected a standard deviation >= 0, got {noise!r}")
    c, h, w = image.shape
    gone = removed.cpu().numpy().reshape(-1)
    unknown = np.flatnonzero(gone)
    if unknown.size == 0:
        return image.clone()
    if unknown.size == h * w:
        raise ValueError("removed: every pixel is removed; nothing is left to impute from")
    values = image.detach().cpu().double().numpy().reshape(c, -1)
    variable = np.full(h * w, -1, dtype=np.int64)
    variable[unknown] = np.arange(unknown.size)
    y, x = unknown // w, unknown % w
    rows, cols, data = [], [], []
    rhs = np.zeros((unknown.size, c))
    diagonal = np.zeros(unknown.size)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        eq = np.flatnonzero(inside)
        neighbour = ny[inside] * w + nx[inside]
        diagonal[eq] -= weight
        is_unknown = gone[neighbour]
        rows.append(eq[is_unknown])
        cols.append(variable[neighbour[is_unknown]])
        data.append(np.full(int(is_unknown.sum()), weight))
        known_eq, known_pixel = eq[~is_unknown], neighbour[~is_unknown]
        np.add.at(rhs, known_eq, -weight * values[:, known_pixel].T)
    rows.append(np.arange(unknown.size))
    cols.append(np.arange(unknown.size))
    data.append(diagonal)
    matrix = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(unknown.size, unknown.size)).tocsc()
    solution = spsolve(matrix, rhs)
    solution = solution.reshape(unknown.size, c) if c > 1 else solution.reshape(unknown.size, 1)
    filled = torch.from_numpy(solution.T.copy()).to(image.dtype)
    if noise > 0:
        filled = filled + noise * torch.randn(filled.shape, generator=generator, dtype=torch.float32).to(image.dtype)
    out = image.detach().clone().reshape(c, -1)
    out[:, torch.from_numpy(unknown).to(image.device)] = filled.to(image.device)
    return out.reshape(c, h, w)
