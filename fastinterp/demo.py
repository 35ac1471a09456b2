"""The main job until a trained generator ships: train a small CNN on the project's own shapes
(seconds), explain fresh images with the paper's representation and render it to a PNG."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from fastinterp.representation import cnn_representation
from fastinterp.synthetic import SHAPE_NAMES, shapes

__all__ = ["demo_cnn", "run_demo", "train_demo_cnn"]


def demo_cnn(num_classes: int = len(SHAPE_NAMES)) -> nn.Module:
    """A 10-conv-layer VGG-style CNN for 64x64 images (BatchNorm, in-place ReLU)."""
    layers, channels = [], 3
    for width, pool in ((16, False), (16, True), (32, False), (32, True), (48, False), (48, True),
                        (64, False), (64, True), (96, False), (96, False)):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def train_demo_cnn(steps: int = 150, batch: int = 64, seed: int = 0) -> tuple[nn.Module, float]:
    """Train :func:`demo_cnn` on :func:`shapes`; returns (model in eval mode, held-out accuracy)."""
    torch.manual_seed(seed)
    model = demo_cnn()
    images, labels, _ = shapes(steps * batch // 4, seed=seed)  # each image seen ~4 times
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test_images, test_labels, _ = shapes(512, seed=seed + 1000)
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    return model, accuracy


def render(path: Path, images, masks, rep, labels) -> None:
    """Grid: image | GT mask | teacher | K cumulative maps, one row per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = rep.cgm.shape[1]
    rows, cols = images.shape[0], 3 + k
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for i in range(rows):
        panels = [(images[i].permute(1, 2, 0), None, f"{SHAPE_NAMES[labels[i]]} -> {SHAPE_NAMES[rep.targets[i]]}"),
                  (masks[i].float(), "gray", "GT mask"), (rep.teacher[i], "jet", f"teacher\n{rep.teacher_layer}")]
        panels += [(rep.cgm[i, j], "jet", f"CGM {j}: mean of\n{rep.positions[j] + 1}/{len(rep.layer_names)} layers") for j in range(k)]
        for ax, (img, cmap, title) in zip(axes[i], panels):
            ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=1)
            ax.set_axis_off()
            if i == 0 or cmap is None:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_demo(out: Path = Path("out/demo_representation.png"), num_images: int = 4, seed: int = 0) -> Path:
    start = time.perf_counter()
    model, accuracy = train_demo_cnn(seed=seed)
    trained = time.perf_counter()
    print(f"trained the demo CNN on synthetic shapes in {trained - start:.1f} s: held-out accuracy {accuracy:.1%}")
    images, labels, masks = shapes(num_images, seed=seed + 2000)
    t0 = time.perf_counter()
    with torch.no_grad():
        model(images)
    t1 = time.perf_counter()
    rep = cnn_representation(model, images, k=8, size=64, order="last_to_first", teacher="last")
    t2 = time.perf_counter()
    print(f"batch of {num_images}: CNN forward {1e3 * (t1 - t0):.1f} ms, representation "
          f"({len(rep.layer_names)} conv layers -> {rep.cgm.shape[1]} CGMs at 64x64) {1e3 * (t2 - t1):.1f} ms")
    render(out, images, masks, rep, labels)
    print(f"wrote {out.resolve()}")
    return out
