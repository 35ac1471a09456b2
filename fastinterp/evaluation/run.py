"""Per-image metrics and costs of every method on one CNN's held-out images.

Images: the first ``n`` *correctly classified* images of a synthetic dataset's test split (held
out from every CNN's and generator's training), so that the explained class (the prediction) is
the class whose ground-truth mask the localisation metrics use. Every method explains the same
images and the same classes, in the same batches.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fastinterp.baselines import baseline_map
from fastinterp.datasets.images import synthetic_dataset
from fastinterp.maps.eval_view import eval_view
from fastinterp.evaluation.methods import Method
from fastinterp.metrics import (average_drop, deletion, energy_pointing_game, insertion, mae, pearson, pointing_game,
                                road_combined, ssim, top_k_iou)

__all__ = ["FAITHFULNESS", "FIDELITY", "LOCALISATION", "EvaluationConfig", "batching_overhead", "evaluate_cnn",
           "select_images"]

# metric -> (label, higher is better)
FAITHFULNESS = {"deletion": ("Deletion AUC", False), "insertion": ("Insertion AUC", True),
                "drop": ("Average Drop %", False), "increase": ("Increase in Conf. %", True),
                "road": ("ROAD (LeRF-MoRF)/2", True)}
LOCALISATION = {"pointing": ("Pointing game", True), "energy": ("Energy pointing", True),
                "iou": ("Top-10% IoU", True)}
FIDELITY = {"mae": ("MAE", False), "pearson": ("Pearson r", True), "ssim": ("SSIM", True)}


@dataclass
class EvaluationConfig:
    n: int = 128  # images per CNN
    batch: int = 32  # images explained together
    steps: int = 16  # deletion / insertion steps
    deletion_substrate: str = "zeros"  # as the RISE paper
    # not the paper's blur: at 64 px a blurred digit stays readable (47% of held-out digits are still
    # classified correctly after blur(11, sigma 5), 6% after the mean colour), so every insertion
    # curve started high and the metric could not rank the methods
    insertion_substrate: str = "mean"
    road_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    top_k: float = 0.1  # top-k IoU share of pixels
    rise_masks: int = 500
    score_batch: int = 128  # perturbed images per forward (metrics, Score-CAM, RISE)
    seed: int = 0  # dataset seed (test split) and RISE / ROAD seeds
    timing_repeats: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


def select_images(cnn: nn.Module, dataset: str, n: int, size: int, seed: int, batch: int = 128):
    """(images (n, 3, S, S), labels (n,), masks (n, S, S) bool, dataset indices (n,), candidates
    scanned): the first ``n`` correctly classified test-split images."""
    data = synthetic_dataset(dataset, 20 * n + 256, size=size, seed=seed, split="test")
    view = eval_view(cnn)
    kept: list[tuple] = []
    scanned = 0
    with torch.no_grad():
        for start in range(0, len(data), batch):
            rows = list(range(start, min(start + batch, len(data))))
            images, labels, masks = data.batch(rows)
            right = view(images).argmax(dim=1) == labels
            scanned = rows[-1] + 1
            kept += [(images[i], labels[i], masks[i], rows[i]) for i in right.nonzero()[:, 0].tolist()]
            if len(kept) >= n:
                break
    if len(kept) < n:
        raise ValueError(f"n: only {len(kept)} of {scanned} test images are classified correctly, {n} asked")
    kept = kept[:n]
    return (torch.stack([k[0] for k in kept]), torch.stack([k[1] for k in kept]), torch.stack([k[2] for k in kept]),
            torch.tensor([k[3] for k in kept]), scanned)


def _forward_ms(cnn: nn.Module, images: torch.Tensor, batch: int, repeats: int) -> float:
    """Median over ``repeats`` of a plain no-grad forward of all images, in ``batch``-sized chunks,
    per image (ms)."""
    view = eval_view(cnn)
    times = []
    with torch.no_grad():
        view(images[:batch])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, images.shape[0], batch):
                view(images[i:i + batch])
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / images.shape[0]


def evaluate_cnn(cnn: nn.Module, dataset: str, methods: list[Method], config: EvaluationConfig,
                 progress: bool = True, keep_maps: int = 6) -> dict:
    """Every method's per-image metrics on ``config.n`` held-out images explained by ``cnn``.

    Returns a dict: ``per_image[method][metric]`` lists (float), ``cost[method]`` (ms per image,
    multiple of the forward), ``fidelity[generator][metric]`` lists (to the generator's teacher,
    when the teacher is one of the methods), ``forward_ms`` (all JSON-able); the maps of the first
    ``keep_maps`` images (``grid``, tensors) for the qualitative figure, and the evaluated
    ``images`` and ``labels`` (tensors) for the CGM ablation.
    """
    from tqdm.auto import tqdm

    size = cnn.input_size
    images, labels, masks, indices, scanned = select_images(cnn, dataset, config.n, size, config.seed)
    forward_ms = _forward_ms(cnn, images, config.batch, config.timing_repeats)
    per_image = {m.name: {key: [] for key in (*FAITHFULNESS, *LOCALISATION)} for m in methods}
    seconds = {m.name: 0.0 for m in methods}
    maps_of: dict[str, list[torch.Tensor]] = {m.name: [] for m in methods}
    bar = tqdm(total=config.n * len(methods), desc=f"{dataset}: evaluating", unit="map", disable=not progress)
    common = {"score": "probability", "batch_size": config.score_batch}
    for method in methods:  # warm-up (allocator, autograd, first-call caches), so the cost column is steady state
        method.explain(images[:2], labels[:2])
    try:
        for start in range(0, config.n, config.batch):
            x, y, gt = images[start:start + config.batch], labels[start:start + config.batch], masks[start:start + config.batch]
            for method in methods:
                begin = time.perf_counter()
                maps = method.explain(x, y)
                seconds[method.name] += time.perf_counter() - begin
                maps = maps.detach().float()
                if tuple(maps.shape) != (x.shape[0], *x.shape[-2:]) or not bool(torch.isfinite(maps).all()):
                    raise RuntimeError(f"{method.name}: returned maps of shape {tuple(maps.shape)} (or non-finite)")
                maps_of[method.name].append(maps)
                row = per_image[method.name]
                row["deletion"] += deletion(cnn, x, maps, y, steps=config.steps, substrate_kind=config.deletion_substrate,
                                            **common).auc.tolist()
                row["insertion"] += insertion(cnn, x, maps, y, steps=config.steps,
                                              substrate_kind=config.insertion_substrate, **common).auc.tolist()
                drop = average_drop(cnn, x, maps.clamp(0, 1), y, **common)
                row["drop"] += drop["drop"].tolist()
                row["increase"] += drop["increase"].tolist()
                row["road"] += road_combined(cnn, x, maps, y, fractions=config.road_fractions, seed=config.seed,
                                             **common)["combined"].tolist()
                row["pointing"] += pointing_game(maps, gt).tolist()
                row["energy"] += energy_pointing_game(maps, gt).tolist()
                row["iou"] += top_k_iou(maps, gt, config.top_k).tolist()
                bar.update(x.shape[0])
    finally:
        bar.close()
    all_maps = {name: torch.cat(parts) for name, parts in maps_of.items()}
    fidelity = {}
    for method in methods:
        if method.kind == "generator" and method.teacher in all_maps:
            pred, teacher = all_maps[method.name], all_maps[method.teacher]
            fidelity[method.name] = {"teacher": method.teacher, "mae": mae(pred, teacher).tolist(),
                                     "pearson": pearson(pred, teacher).tolist(), "ssim": ssim(pred, teacher).tolist()}
    cost = {m.name: {"ms_per_image": 1e3 * seconds[m.name] / config.n,
                     "x_forward": 1e3 * seconds[m.name] / config.n / forward_ms} for m in methods}
    return {"dataset": dataset, "n": config.n, "scanned": scanned, "indices": indices.tolist(),
            "forward_ms": forward_ms, "per_image": per_image, "cost": cost, "fidelity": fidelity,
            "methods": {m.name: {"label": m.label, "kind": m.kind, "teacher": m.teacher, "details": m.details}
                        for m in methods},
            "grid": {"images": images[:keep_maps], "masks": masks[:keep_maps], "labels": labels[:keep_maps],
                     "maps": {name: maps[:keep_maps] for name, maps in all_maps.items()}},
            "images": images, "labels": labels}


def batching_overhead(cnn, dataset: str, n: int, steps: int, batch: int, seed: int) -> dict:
    """How much the deletion metric costs beyond the forwards it needs: its time on ``n`` test
    images against the same number of plain forwards in batches of ``batch`` (target <= 2x)."""
    images, _, _ = synthetic_dataset(dataset, n, size=cnn.input_size, seed=seed, split="test").batch(range(n))
    maps = torch.cat([baseline_map("gradcam", cnn, images[i:i + 128]) for i in range(0, n, 128)])
    start = time.perf_counter()
    deletion(cnn, images, maps, steps=steps, batch_size=batch)
    metric_s = time.perf_counter() - start
    forwards = (steps + 1) * n  # steps perturbed curve points and the clean forward (= step 0)
    view = eval_view(cnn)
    start = time.perf_counter()
    with torch.no_grad():
        done = 0
        while done < forwards:
            m = min(batch, forwards - done)
            view(images[done % n:done % n + m] if done % n + m <= n else images[:m])
            done += m
    forwards_s = time.perf_counter() - start
    return {"cnn": cnn.arch, "n": n, "steps": steps, "batch": batch, "forwards": forwards, "metric_s": metric_s,
            "forwards_s": forwards_s, "ratio": metric_s / forwards_s}
