"""The main job: explain freshly generated cluttered digits with the shipped CNN and the shipped
fast generator (``fastinterp.pretrained.DEMO``, package data in ``fastinterp/pretrained/demo``)
through the runtime (``fastinterp.compile(cnn, generator).explain(images)``), time it per stage and
render a PNG grid.

The two checkpoints were made with the project's own commands: see
``fastinterp/pretrained/demo/README.md``. Drawing needs matplotlib (``pip install
"fastinterp[demo]"``)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fastinterp import pretrained
from fastinterp._core.extras import require
from fastinterp.datasets.images import cluttered_digits
from fastinterp.datasets.zoo import load_cnn
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.representation import cnn_representation
from fastinterp.metrics import fidelity
from fastinterp.runtime.compiler import DomainWarning, domain_warning
from fastinterp.runtime.compiler import compile as compile_explainer

__all__ = ["DEMO_FILES", "demo_checkpoints", "render_explanations", "run_demo"]

DEMO_FILES = ("cnn.safetensors", "generator.safetensors")  # a folder of a demo pair (checkpoints=)


@contextmanager
def demo_checkpoints(folder: str | Path | None = None) -> Iterator[tuple[Path, Path]]:
    """(cnn, generator) checkpoint paths: the shipped ones (``fastinterp.pretrained.DEMO``), or the
    two files ``DEMO_FILES`` of ``folder``."""
    if folder is not None:
        yield Path(folder) / DEMO_FILES[0], Path(folder) / DEMO_FILES[1]
        return
    cnn, generator = pretrained.DEMO
    yield pretrained.path(cnn), pretrained.path(generator)


def render_explanations(path: Path, images, masks, rep, generated, labels, order: str = "first_to_last") -> None:
    """Grid: image | GT mask | teacher | generator map | K cumulative maps, one row per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = rep.cgm.shape[1]
    rows, cols = images.shape[0], 4 + k
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows), squeeze=False)
    for i in range(rows):
        panels = [(images[i].permute(1, 2, 0), None, f"digit {int(labels[i])} -> {int(rep.targets[i])}"),
                  (masks[i].float(), "gray", "GT mask"), (rep.teacher[i], "jet", f"teacher: Grad-CAM\nof {rep.teacher_layer}"),
                  (generated[i, 0], "jet", "generator")]
        end = "last" if order == "last_to_first" else "first"
        panels += [(rep.cgm[i, j], "jet", f"CGM {j}: mean of the\n{end} {rep.positions[j] + 1}/{len(rep.layer_names)} layers")
                   for j in range(k)]
        for ax, (img, cmap, title) in zip(axes[i], panels):
            ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=1)
            ax.set_axis_off()
            if i == 0 or cmap is None:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_demo(out: Path = Path("out/demo_explanations.png"), num_images: int = 6, seed: int = 0,
             checkpoints: str | Path | None = None,
             clock: Callable[[], float] = time.perf_counter) -> dict:
    """Explain fresh cluttered digits with the shipped CNN + fast generator through the runtime
    (``fastinterp.compile(cnn, generator).explain(images)``); write a PNG grid.

    Args:
        checkpoints: a folder holding ``cnn.safetensors`` and ``generator.safetensors`` (default:
            the shipped ones).
        clock: seconds, for the CNN-forward and explain timings (each timed on the second of two
            runs); the per-stage breakdown is ``Explainer.profile``'s.

    Returns {"png": path, "generator": {"mae", "pearson"} vs the teacher, "best_cgm": (j, {"mae",
    "pearson"}) for the single CGM closest to the teacher (the baseline the generator must beat),
    "ms": {"cnn", "explain"} wall times for the whole batch, "stages": explain's per-stage ms}.
    """
    require("matplotlib", "demo", "the demo draws its picture")
    with demo_checkpoints(checkpoints) as (cnn_path, generator_path):
        cnn, cnn_meta = load_cnn(cnn_path)
        generator, gen_meta = load_generator(generator_path)
    with warnings.catch_warnings():  # the demo generator was trained on other zoo CNNs, by design: say so once
        warnings.simplefilter("ignore", DomainWarning)
        explainer = compile_explainer(cnn, generator, batch_sizes=[num_images])
    if domain_warning(cnn, gen_meta) is not None:
        print(f"note: the demo generator never saw this CNN: it was trained on {len(gen_meta.get('cnns', []))} other "
              "zoo CNNs (it explains this one as a held-out CNN); `fastinterp fit` makes one for your own CNN")
    options = explainer.representation
    images, labels, masks = cluttered_digits(num_images, size=cnn_meta["input_size"], seed=10_000 + seed,
                                             split="test")
    for _ in range(2):  # the first pass warms up allocators and kernels; the second is timed
        t0 = clock()
        with torch.inference_mode():
            cnn(images)
        t1 = clock()
        explanation = explainer.explain(images, return_cgm=True)
        t2 = clock()
    stages = explainer.profile(images)
    explainer.close()
    # the teacher the generator imitates (Grad-CAM of the last conv): a reference, not part of explain
    rep = cnn_representation(cnn, images, **options)
    print(f"CNN {cnn_meta['arch']} (test accuracy {cnn_meta['test_accuracy']:.1%}), generator "
          f"{generator.config['kind']} ({gen_meta['steps_done']} training steps); timings: second of two runs, "
          f"{torch.get_num_threads()} threads")
    print(f"batch of {num_images} fresh test digits: CNN forward {1e3 * (t1 - t0):.1f} ms, explain() "
          f"{1e3 * (t2 - t1):.1f} ms ({options['kind']} representation: {len(rep.layer_names)} conv layers -> "
          f"{options['k']} CGMs at {options['size']}x{options['size']}, then the generator)")
    print("explain() per stage (Explainer.profile, ms): "
          + ", ".join(f"{stage} {ms:.1f}" for stage, ms in stages.items()))
    generated = explanation.maps
    score = fidelity(generated, rep.teacher)
    inputs = [fidelity(rep.cgm[:, j], rep.teacher) for j in range(rep.cgm.shape[1])]
    best = min(range(len(inputs)), key=lambda j: inputs[j]["mae"])
    print(f"generator vs teacher on these images: MAE {score['mae']:.3f}, Pearson r {score['pearson']:.3f} "
          f"(copying the closest input, CGM {best}: MAE {inputs[best]['mae']:.3f}, r {inputs[best]['pearson']:.3f})")
    render_explanations(out, images, masks, rep, generated[:, None], labels, order=options["order"])
    print(f"wrote {out.resolve()}")
    return {"png": out, "generator": score, "best_cgm": (best, inputs[best]),
            "ms": {"cnn": 1e3 * (t1 - t0), "explain": 1e3 * (t2 - t1)}, "stages": stages}
