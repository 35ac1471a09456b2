"""The report's figures: a grid of every method's maps over the images, and the CGM ablation's
bars. Drawn with matplotlib (``pip install "fastinterp[eval]"``)."""

from __future__ import annotations

from pathlib import Path

from fastinterp._core.extras import require
from fastinterp.evaluation.stats import mean_se

__all__ = ["ablation_figure", "grid_figure"]


def grid_figure(path: Path, grid: dict, labels: dict[str, str]) -> None:
    matplotlib = require("matplotlib", "eval", "fastinterp evaluate draws its figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grid["maps"])
    rows, cols = grid["images"].shape[0], 2 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.5 * rows), squeeze=False)
    for r in range(rows):
        image = grid["images"][r].permute(1, 2, 0).clamp(0, 1).numpy()
        panels = [(image, None, f"label {int(grid['labels'][r])}"), (grid["masks"][r].float().numpy(), "gray", "GT mask")]
        panels += [(grid["maps"][n][r].numpy(), "jet", labels[n]) for n in names]
        for c, (data, cmap, title) in enumerate(panels):
            ax = axes[r][c]
            if cmap == "jet":
                ax.imshow(image)
                ax.imshow(data, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(data, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablation_figure(path: Path, ablations: dict[str, dict], labels: dict[str, str]) -> None:
    matplotlib = require("matplotlib", "eval", "fastinterp evaluate draws its figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    keys = (("change", "mean |map change| when CGM j -> its mean"), ("deletion", "deletion AUC increase (worse)"),
            ("insertion", "insertion AUC decrease (worse)"))
    width = 0.8 / max(1, len(ablations))
    for ax, (key, title) in zip(axes, keys):
        for i, (name, result) in enumerate(ablations.items()):
            stats = [mean_se(v) for v in result[key]]
            xs = [j + (i - (len(ablations) - 1) / 2) * width for j in range(len(stats))]
            ax.bar(xs, [m for m, _ in stats], width, yerr=[2 * s for _, s in stats], capsize=2, label=labels[name])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("CGM j (cumulative map; see the table for each generator's order)", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
