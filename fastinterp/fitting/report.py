"""The held-out report of ``fastinterp.fit``: how faithfully the fitted generator follows its
teacher on images it never trained on, how faithful both are to the CNN, and what each costs.

    fidelity        generator vs teacher maps at the generator's resolution: MAE, Pearson r, SSIM
                    (means over every held-out image, with standard errors)
    faithfulness    deletion (lower is better) and insertion (higher) AUCs of the CNN's probability,
                    generator maps vs teacher maps on the same images: the paired difference and its
                    standard error (``|difference| <= 2 SE``: no measurable difference)
    cost            milliseconds per image of the CNN's forward, the teacher and the compiled
                    explainer (CNN + generator), each as a multiple of the forward
    grid.png        image | teacher | generator for the first held-out images (Pillow)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastinterp.baselines.methods import baseline_map
from fastinterp.datasets.images import spread_indices
from fastinterp.datasets.reader import ExplanationDataset
from fastinterp.evaluation.stats import mean_se, paired
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.eval_view import eval_view
from fastinterp.maps.forward_only import pooled_layer
from fastinterp.maps.preprocess import with_preprocess
from fastinterp.maps.resize import resize_maps
from fastinterp.metrics import mae, pearson
from fastinterp.metrics.faithfulness import deletion, insertion
from fastinterp.metrics.fidelity import ssim
from fastinterp.runtime.compiler import compile as compile_explainer

__all__ = ["write_report"]

GRID_ROWS = 8


def _per_image_ms(run, images: torch.Tensor, batch: int, repeats: int = 2) -> float:
    """Best of ``repeats`` timed passes over ``images`` in batches of ``batch``, per image (ms)."""
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            run(images[start:start + batch])
        if images.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(images)


def _grid(path: Path, images: torch.Tensor, teacher: torch.Tensor, generated: torch.Tensor) -> None:
    """Rows of image | teacher map | generator map (grayscale, white = important), 2 px gaps."""
    from PIL import Image

    rows, _, h, w = images.shape
    canvas = np.full((rows * (h + 2), 3 * (w + 2), 3), 255, dtype=np.uint8)
    for r in range(rows):
        picture = (images[r].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        panels = [picture] + [np.repeat((m[r].clamp(0, 1).numpy()[..., None] * 255).round().astype(np.uint8), 3, 2)
                              for m in (teacher, generated)]
        for c, panel in enumerate(panels):
            canvas[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = panel
    Image.fromarray(canvas).save(path)


@torch.no_grad()
def _maps(out: Path, cnn: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch: int):
    """The compiled explainer of ``out/generator.safetensors`` and its maps (B, H, W) for ``targets``."""
    explainer = compile_explainer(cnn, out / "generator.safetensors", input_size=tuple(images.shape[-2:]))
    device = explainer.device
    maps = torch.cat([explainer.explain(images[s:s + batch].to(device), targets[s:s + batch].to(device)).maps.cpu()
                      for s in range(0, len(images), batch)])
    return explainer, maps


def write_report(out: Path, cnn: nn.Module, preprocess: dict | None, val_data, config: dict[str, Any],
                 state: dict[str, Any], report_images: int, progress: bool) -> dict[str, Any]:
    """Score the fitted generator on the held-out examples of ``out/data/val``; write
    ``out/report.md`` and ``out/grid.png``; returns the numbers (stored in ``fit.json``)."""
    held = ExplanationDataset(out / "data" / "val")
    generator, metadata = load_generator(out / "generator.safetensors")
    generator.eval()
    rows = [held[i] for i in range(len(held))]
    cgm = torch.stack([r["cgm"] for r in rows])
    small_images = torch.stack([r["image"] for r in rows])
    teacher = torch.stack([r["teacher"] for r in rows]).float()
    targets = torch.stack([r["target"] for r in rows])
    with torch.no_grad():
        predicted = torch.cat([generator(small_images[s:s + 64], cgm[s:s + 64]).float()
                               for s in range(0, len(rows), 64)])[:, 0]
    fidelity = {"n": len(rows)}
    for name, values in (("mae", mae(predicted, teacher)), ("pearson", pearson(predicted, teacher))):
        fidelity[name], fidelity[f"{name}_se"] = mean_se(values.double().tolist())
    try:
        fidelity["ssim"], fidelity["ssim_se"] = mean_se(ssim(predicted.clamp(0, 1), teacher.clamp(0, 1)).tolist())
    except ImportError:  # torchmetrics is in the eval extra
        fidelity["ssim"] = fidelity["ssim_se"] = None

    # faithfulness and cost on the images at the CNN's input size, as explained in production
    count = min(report_images, len(val_data))
    rows = spread_indices(len(val_data), count)  # evenly spaced: a folder is sorted by class
    images, _, _ = val_data.batch(rows)
    targets = targets[rows]
    teacher_rows = teacher[rows]
    device = next(iter(cnn.parameters())).device
    explaining = with_preprocess(cnn, preprocess)
    batch = 16
    explainer, generated = _maps(out, cnn, images, targets, batch)
    teacher_full = resize_maps(teacher_rows, tuple(images.shape[-2:]))
    faithfulness = {}
    for metric in (deletion, insertion):
        scores = {}
        for name, maps in (("generator", generated), ("teacher", teacher_full)):
            curve = metric(explaining, images.to(device), maps.to(device), targets.to(device),
                           progress=progress)
            scores[name] = curve.auc.cpu().tolist()
        difference, se = paired(scores["generator"], scores["teacher"])
        faithfulness[metric.__name__] = {"generator": mean_se(scores["generator"]), "teacher": mean_se(scores["teacher"]),
                                         "difference": difference, "difference_se": se,
                                         "within_2se": abs(difference) <= 2 * se}

    timing = images[:min(count, 32)].to(device)
    forward_view = eval_view(explaining)  # eval mode without touching the user's module
    teacher_name = config["teacher"]
    rep_layer = None if teacher_name == "rise" else pooled_layer(explaining, timing)  # None: the last conv
    options = config["teacher_options"] or {}
    with torch.no_grad():
        forward_ms = _per_image_ms(lambda x: forward_view(x), timing, batch)
    teacher_ms = _per_image_ms(lambda x: baseline_map(teacher_name, explaining, x, layer=rep_layer, **options),
                               timing[:min(len(timing), 8)], batch, repeats=1)
    explain_ms = _per_image_ms(lambda x: explainer.explain(x), timing, batch)
    cost = {"batch": batch, "forward_ms": forward_ms, "teacher_ms": teacher_ms, "explain_ms": explain_ms,
            "teacher_x_forward": teacher_ms / forward_ms, "explain_x_forward": explain_ms / forward_ms,
            "explain_share_of_teacher": explain_ms / teacher_ms, "device": str(device),
            "threads": torch.get_num_threads()}
    _grid(out / "grid.png", images[:GRID_ROWS].cpu(), teacher_full[:GRID_ROWS], generated[:GRID_ROWS])
    report = {"fidelity": fidelity, "faithfulness": faithfulness, "cost": cost, "report_images": count,
              "steps_done": metadata.get("steps_done")}
    (out / "report.md").write_text(_markdown(config, state, report))
    return report


def _markdown(config: dict, state: dict, report: dict) -> str:
    f, d, i, c = report["fidelity"], report["faithfulness"]["deletion"], report["faithfulness"]["insertion"], report["cost"]
    pm = lambda pair: f"{pair[0]:.3f} ± {pair[1]:.3f}"  # noqa: E731
    ssim = "n/a (pip install 'fastinterp[eval]')" if f["ssim"] is None else f"{f['ssim']:.3f} ± {f['ssim_se']:.3f}"
    accuracy = state["stages"].get("accuracy")
    lines = [
        f"# fastinterp fit: {config['cnn']}",
        "",
        f"Teacher **{config['teacher']}** (of the feature map the head pools), **{config['representation']}** "
        f"representation, {config['examples']} training examples at {config['input_size'][0]}x{config['input_size'][1]} "
        f"px (maps {config['size']}x{config['size']}), {report['steps_done']} steps; preprocess "
        f"{config['preprocess'] or 'none ([0, 1] images)'}.",
        "" if accuracy is None else f"The CNN classifies {accuracy['top1']:.1%} of {accuracy['images']} labelled "
                                    f"training images correctly (chance {accuracy['chance']:.1%}).",
        "",
        f"## Fidelity to the teacher ({f['n']} held-out images)",
        "",
        "| MAE | Pearson r | SSIM |",
        "|---:|---:|---:|",
        f"| {f['mae']:.3f} ± {f['mae_se']:.3f} | {f['pearson']:.3f} ± {f['pearson_se']:.3f} | {ssim} |",
        "",
        f"## Faithfulness to the CNN ({report['report_images']} held-out images; AUC of the class probability)",
        "",
        "| | generator | teacher | generator - teacher (paired) | within 2 SE |",
        "|---|---:|---:|---:|---|",
        f"| deletion (lower is better) | {pm(d['generator'])} | {pm(d['teacher'])} | {d['difference']:+.3f} ± "
        f"{d['difference_se']:.3f} | {'yes' if d['within_2se'] else 'no'} |",
        f"| insertion (higher is better) | {pm(i['generator'])} | {pm(i['teacher'])} | {i['difference']:+.3f} ± "
        f"{i['difference_se']:.3f} | {'yes' if i['within_2se'] else 'no'} |",
        "",
        f"## Cost per image (batch {c['batch']}, {c['device']}, {c['threads']} threads)",
        "",
        "| | ms per image | x forward |",
        "|---|---:|---:|",
        f"| the CNN's forward | {c['forward_ms']:.2f} | 1.00 |",
        f"| teacher ({config['teacher']}) | {c['teacher_ms']:.2f} | {c['teacher_x_forward']:.2f} |",
        f"| fitted explainer (CNN + generator) | {c['explain_ms']:.2f} | {c['explain_x_forward']:.2f} |",
        "",
        f"The explainer costs {c['explain_share_of_teacher']:.1%} of the teacher per image.",
        "",
        "Stages (seconds, summed over runs): " + ", ".join(f"{k} {v:.0f}" for k, v in state["stages"].items()
                                                          if k.endswith("_s")),
        "",
        "![held-out images: image | teacher | generator](grid.png)",
        "",
        "Use it: `fastinterp.compile(cnn, \"generator.safetensors\")` (applies the preprocessing; explain() takes "
        "[0, 1] images).",
        "",
    ]
    return "\n".join(lines)
