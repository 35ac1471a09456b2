"""``fastinterp.fit``: a generator made for the user's own CNN from a folder of their images, in
one resumable call. The stages (each skipped when an earlier run finished it):

    images (folder / Dataset / DataLoader) -> resized to the CNN's input size, a seeded 10% held out
      -> accuracy of the CNN on labelled images (a warning near chance: wrong preprocessing?)
      -> build_dataset: CGMs + teacher maps of the CNN on its preprocessed input   out/data/{train,val}
      -> train_generator: the fast generator, L1 warm-up then pix2pix                out/generator.safetensors
      -> report on the held-out images: fidelity, deletion / insertion vs the teacher,
         cost per image as a multiple of the forward                                  out/report.md, fit.json

``out/fit.json`` records the config; rerunning with the same arguments resumes (verified shards
kept, training continued from its saved state), and changed arguments are refused, naming them.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastinterp._core.hashing import file_sha256, weights_sha256
from fastinterp._core.io import write_json
from fastinterp._core.validation import check_size
from fastinterp._version import __version__
from fastinterp.baselines.methods import BASELINES, check_options
from fastinterp.datasets.build import build_dataset, rank_device, rank_world
from fastinterp.datasets.images import DatasetImages, ImageFiles, Subset, held_out_split, spread_indices
from fastinterp.datasets.reader import ExplanationDataset, read_manifest
from fastinterp.fitting.cnn import load_cnn
from fastinterp.fitting.report import write_report
from fastinterp.generator.checkpoint import load_generator
from fastinterp.generator.networks import build_discriminator, build_generator
from fastinterp.generator.training import AUGMENTATIONS, TrainConfig, train_generator
from fastinterp.maps.eval_view import eval_view
from fastinterp.maps.options import ACTIVATION_REPRESENTATION, DEFAULT_REPRESENTATION, KINDS
from fastinterp.maps.preprocess import check_preprocess, parse_normalize, with_preprocess

__all__ = ["FIT_FORMAT", "TEACHERS", "fit"]

FIT_FORMAT = "fastinterp-fit/1"
TEACHERS = BASELINES  # gradcam, gradcam++, layercam, score-cam, rise
DEFAULT_TEACHER = "score-cam"
DEFAULT_REPRESENTATION_KIND = "activation"
SHARD_SIZE = 128  # small shards: the first one gives the time estimate early, a kill loses little


def _say(progress: bool, text: str) -> None:
    if rank_world()[0] != 0:
        return
    print(f"fit: {text}", file=sys.stderr if progress else sys.stdout, flush=True)


def _images(images: object, input_size: tuple[int, int], classes: list[str], argument: str):
    if isinstance(images, (str, Path)):
        return ImageFiles(images, input_size, classes=classes, argument=argument)
    return DatasetImages(images, input_size, classes=classes, argument=argument)


def _split(data, fraction: float, seed: int):
    if isinstance(data, ImageFiles):
        return data.split(fraction, seed)
    kept, held = held_out_split(len(data), fraction, seed)
    return Subset(data, kept, "train"), Subset(data, held, "val")


def _outputs(model: nn.Module, images: torch.Tensor) -> int:
    """The number of logits of ``model`` on ``images`` (through an eval view: the model is untouched)."""
    with torch.no_grad():
        return int(eval_view(model)(images[:1]).shape[1])


@torch.no_grad()
def cnn_accuracy(model: nn.Module, data, limit: int = 512, batch_size: int = 64) -> tuple[float, int] | None:
    """Top-1 accuracy (and count) of ``model`` (an eval-mode view; the user's module is untouched)
    on up to ``limit`` labelled images of ``data``; None when the images carry no labels."""
    if not getattr(data, "labelled", False):
        return None
    view, n, correct = eval_view(model), min(limit, len(data)), 0
    device = next(iter(model.parameters())).device
    rows = spread_indices(len(data), n)  # evenly spaced: a folder is sorted by class
    for start in range(0, n, batch_size):
        images, labels, _ = data.batch(rows[start:start + batch_size])
        correct += int((view(images.to(device)).argmax(1).cpu() == labels).sum())
    return correct / n, n


def _check_config(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The state of an earlier run in ``out`` with the same config (or a fresh one); refuses another config."""
    path = out / "fit.json"
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError:
            state = {}
        old = state.get("config") or {}
        if state.get("format") == FIT_FORMAT and old != config:
            differ = sorted(key for key in set(old) | set(config) if old.get(key) != config.get(key))
            raise ValueError(f"out: {out} holds a fit with another config (differs in {differ}); pass another --out "
                             "or delete it")
        if state.get("format") == FIT_FORMAT:
            return state
    return {"format": FIT_FORMAT, "config": config, "fastinterp_version": __version__, "stages": {}}


def _write(out: Path, state: dict[str, Any]) -> None:
    if rank_world()[0] == 0:
        write_json(out / "fit.json", state)


def _spawned_build(rank: int, world: int, cnn_spec: str, weights, num_classes, data, kwargs) -> None:
    """One worker of ``processes=N``: rebuilds the CNN from its spec and builds its shards."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model = load_cnn(cnn_spec, weights, num_classes)
    build_dataset([(kwargs.pop("cnn_id"), model)], data, part=(rank, world), **kwargs)


def _build(cnn_id: str, model: nn.Module, data, out_dir: Path, n: int, options: dict[str, Any], *, progress: bool,
           processes: int, cnn_spec: object, weights, num_classes, estimate: bool) -> float:
    """Build one dataset folder; returns seconds spent. ``estimate``: after the first new shard, say
    how long the whole build will take."""
    started = time.perf_counter()
    kwargs = dict(n=n, out_dir=out_dir, shard_size=SHARD_SIZE, progress=progress, **options)
    previous = read_manifest(out_dir)
    if previous is not None and previous.get("complete"):
        build_dataset([(cnn_id, model)], data, max_shards=0, **kwargs)  # verifies, computes nothing
        return 0.0
    if processes > 1:
        if not isinstance(cnn_spec, str):
            raise ValueError("processes: workers rebuild the CNN from its specification; pass cnn as a string "
                             "(torchvision:NAME, file.py:factory, a checkpoint) to use processes > 1")
        import torch.multiprocessing as mp

        try:
            mp.spawn(_spawned_build, args=(processes, cnn_spec, weights, num_classes, data,
                                           {**kwargs, "cnn_id": cnn_id, "progress": False}), nprocs=processes,
                     join=True)
        except mp.ProcessRaisedException as error:  # a worker's error, as one line
            last = str(error).strip().splitlines()[-1]
            raise ValueError(f"processes: a build worker failed: {last}") from None
        build_dataset([(cnn_id, model)], data, max_shards=0, **{**kwargs, "progress": False})
        return time.perf_counter() - started
    done_before = len((previous or {}).get("shards", []))
    if estimate and math.ceil(n / SHARD_SIZE) > done_before + 1:
        build_dataset([(cnn_id, model)], data, max_shards=1, **kwargs)
        first = time.perf_counter() - started
        left = math.ceil(n / SHARD_SIZE) - done_before - 1
        _say(progress, f"first shard of {SHARD_SIZE} examples took {first:.0f} s; about {left * first / 60:.1f} min "
                       "more for this dataset")
    build_dataset([(cnn_id, model)], data, **kwargs)
    return time.perf_counter() - started


def fit(
    cnn: nn.Module | str,
    images: object,
    *,
    out: str | Path,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    val_images: object = None,
    preprocess: dict[str, Any] | None = None,
    input_size: int | tuple[int, int] | None = None,
    representation: str = DEFAULT_REPRESENTATION_KIND,
    teacher: str = DEFAULT_TEACHER,
    teacher_options: dict[str, Any] | None = None,
    examples: int | None = None,
    steps: int = 1000,
    batch_size: int = 32,
    augment: tuple[str, ...] = (),
    size: int = 64,
    k: int = 8,
    val_fraction: float = 0.1,
    report_images: int = 96,
    seed: int = 0,
    device: str | torch.device | None = None,
    processes: int = 1,
    progress: bool = True,
) -> Path:
    """Make a generator that explains ``cnn`` as ``teacher`` does, from ``images``; returns the path
    of ``out/generator.safetensors`` (give it to ``fastinterp.compile(cnn, path)``).

    Args:
        cnn: an ``nn.Module`` or a specification (``fastinterp.fitting.cnn``: a zoo checkpoint,
            a shipped CNN name, "torchvision:NAME", "file.py:factory", "package.module:factory").
        images: a folder (``<class>/<image>`` with labels, or flat: each image explained for its
            predicted class), a torch ``Dataset`` of image tensors (3, H, W) in [0, 1] or (image,
            label), or a ``DataLoader`` of them.
        out: output folder (resumed when it holds an earlier run of the same config).
        weights, num_classes: the state dict file and output count for a spec (``load_cnn``).
        val_images: held-out images for the report (default: a seeded ``val_fraction`` of
            ``images``).
        preprocess: None or "none" (the CNN takes [0, 1] images), "imagenet", or ``{"normalize":
            {"mean": [...], "std": [...]}}``; recorded in the generator, applied by ``compile``.
        input_size: the CNN's input (H, W) or int (default: its ``input_size`` attribute, else 224).
        representation: "activation" (forward only at explain time: the default) or "gradient".
        teacher: the explanation learnt, one of ``TEACHERS``, of the feature map the head pools
            ("pooled"; RISE: of the whole model). Default "score-cam" (see the README: a Grad-CAM
            teacher there is CGM 0 of the activation representation itself).
        teacher_options: options of that method (e.g. ``{"batch_size": 128}``, ``{"n_masks": 2000}``).
        examples: training examples to build (default: every training image, once).
        steps, batch_size: generator training steps and batch (L1 alone for the first 3/4).
        augment: training augmentations (``fastinterp.generator.training.AUGMENTATIONS``: "flip",
            "cgm-gain"); none by default.
        size, k: the generator's resolution and number of CGMs.
        report_images: held-out images scored by deletion / insertion (fidelity uses all).
        device: where the CNN runs (default: CUDA when available, else the CPU; under torchrun,
            each rank's own GPU).
        processes: build the datasets in this many local processes (cnn must be a spec string).
            Under ``torchrun`` (``torch.distributed`` initialised) leave it at 1: the ranks split the
            shards as ``build_dataset`` does and train with DistributedDataParallel; rank 0 writes.
        progress: tqdm bars; False: one line per stage.
    """
    out = Path(out)
    started = time.perf_counter()
    if representation not in KINDS:
        raise ValueError(f"representation: expected one of {KINDS}, got {representation!r}")
    if teacher not in TEACHERS:
        raise ValueError(f"teacher: expected one of {TEACHERS}, got {teacher!r}")
    if representation == "activation" and teacher == "gradcam":
        raise ValueError("teacher: Grad-CAM of the feature map the head pools is CGM 0 of the activation "
                         "representation itself (the head's CAM), so a generator would only copy an input; use "
                         "representation='gradient' (--representation gradient) or another teacher "
                         "(score-cam, rise, gradcam++, layercam)")
    try:
        teacher_options = check_options(teacher, teacher_options)
    except ValueError as error:
        raise ValueError(f"teacher_options: {error}") from None
    if isinstance(preprocess, str):
        preprocess = parse_normalize(preprocess, "preprocess")
    preprocess = check_preprocess(preprocess)
    for name, value, minimum in (("steps", steps, 1), ("batch_size", batch_size, 1), ("size", size, 16), ("k", k, 1),
                                 ("report_images", report_images, 1), ("processes", processes, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if isinstance(augment, str) or not all(name in AUGMENTATIONS for name in augment):
        raise ValueError(f"augment: expected names from {AUGMENTATIONS}, got {augment!r}")
    if not (isinstance(val_fraction, float) and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction: expected a float in (0, 1), got {val_fraction!r}")

    rank, world = rank_world()  # under torchrun every rank builds its shards and trains; rank 0 writes
    if world > 1 and processes > 1:
        raise ValueError("processes: under torchrun the ranks come from torchrun; leave processes at 1")
    model = load_cnn(cnn, weights, num_classes)
    target = rank_device(None if device is None else str(device), rank)
    if target.type == "cuda" and target.index is None:  # "cuda" -> the current device, as parameters report it
        target = torch.device("cuda", torch.cuda.current_device())
    on_device = model if next(iter(model.parameters())).device == target else copy.deepcopy(model).to(target)
    input_size = check_size(input_size if input_size is not None else getattr(model, "input_size", None) or 224,
                            "input_size")
    explaining = with_preprocess(on_device, preprocess)
    probe = torch.rand(1, 3, *input_size, device=target)
    try:
        outputs = _outputs(explaining, probe)
    except Exception as error:  # the user's forward: say which input it failed on
        raise ValueError(f"cnn: a forward of a (1, 3, {input_size[0]}, {input_size[1]}) input failed ({error}); pass "
                         "--input-size the size the CNN takes") from None
    data = _images(images, input_size, [str(i) for i in range(outputs)], "images")
    if len(data.classes) and len(data.classes) != outputs and getattr(data, "labelled", False):
        raise ValueError(f"images: {len(data.classes)} class folders, but the CNN has {outputs} outputs")
    if val_images is None:
        train_data, val_data = _split(data, val_fraction, seed)
    else:
        train_data, val_data = data, _images(val_images, input_size, list(data.classes), "val_images")
    n = len(train_data) if examples is None else examples
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(train_data):
        raise ValueError(f"examples: expected an int in [1, {len(train_data)}] (the training images), got {examples!r}")

    base = ACTIVATION_REPRESENTATION if representation == "activation" else DEFAULT_REPRESENTATION
    # last to first for both kinds: CGM 0 is the deepest map alone (the gradient kind's last conv; the
    # activation kind's head CAM), the one closest to a teacher at the pooled feature map. First to
    # last left a Grad-CAM teacher uncorrelated with every CGM on mobilenet_v2 at 64 px (r <= 0.03;
    # benchmarks/NOTES.md), and the generator learnt only the mean map.
    options = {"kind": representation, "k": k, "size": size, "method": base["method"], "order": "last_to_first",
               "teacher": "pooled", "skip_1x1": base["skip_1x1"], "preprocess": preprocess, "target": "predicted"}
    if not (representation == "gradient" and teacher == "gradcam"):  # else the representation's pass computes it
        options.update(teacher_method=teacher, teacher_options=teacher_options)
    cnn_id = cnn.split(":")[-1] if isinstance(cnn, str) else type(model).__name__
    cnn_id = Path(cnn_id).stem if isinstance(cnn, str) and cnn.endswith(".safetensors") else cnn_id
    # what the generator depends on (the weights by content, not by path; the report's options are not here:
    # the report is redone whenever the generator changes, and kept otherwise)
    config = {"cnn": cnn if isinstance(cnn, str) else type(model).__name__, "cnn_weights_sha256": weights_sha256(model),
              "preprocess": preprocess,
              "input_size": list(input_size), "representation": representation, "teacher": teacher,
              "teacher_options": teacher_options, "examples": n, "steps": steps, "batch_size": batch_size,
              **({"augment": list(augment)} if augment else {}),
              "size": size, "k": k, "val_fraction": val_fraction if val_images is None else None, "seed": seed,
              "images": train_data.config, "val_images": val_data.config}
    out.mkdir(parents=True, exist_ok=True)
    state = _check_config(out, config)
    _write(out, state)
    stages = state["stages"]

    accuracy = cnn_accuracy(explaining, train_data)
    if accuracy is not None:
        share, count = accuracy
        stages["accuracy"] = {"top1": share, "images": count, "chance": 1 / outputs}
        _say(progress, f"the CNN classifies {share:.1%} of {count} labelled images correctly (chance {1 / outputs:.1%})")
        if share < max(1.5 / outputs, 1 / outputs + 0.1) and rank == 0:
            warnings.warn(f"fit: the CNN's accuracy on these labelled images ({share:.1%}) is near chance "
                          f"({1 / outputs:.1%}): the usual sign of wrong preprocessing; check --normalize "
                          f"(now {'none' if preprocess is None else preprocess['normalize']})", stacklevel=2)

    for name, part, count in (("train", train_data, n), ("val", val_data, len(val_data))):
        seconds = _build(cnn_id, on_device, part, out / "data" / name, count, options,
                         progress=progress, processes=processes, cnn_spec=cnn, weights=weights,
                         num_classes=num_classes, estimate=name == "train")
        stages.setdefault(f"build_{name}_s", 0.0)
        stages[f"build_{name}_s"] += seconds
        _say(progress, f"dataset {name}: {count} examples in {out / 'data' / name} ({seconds:.0f} s)")
        _write(out, state)

    seconds = _train(out, options, config, data.classes if getattr(data, "labelled", False) else None, steps,
                     batch_size, tuple(augment), seed, progress, target)
    stages.setdefault("train_s", 0.0)
    stages["train_s"] += seconds
    _say(progress, f"generator: {steps} steps -> {out / 'generator.safetensors'} ({seconds:.0f} s)")
    _write(out, state)

    if rank != 0:  # the other ranks of a torchrun fit are done: rank 0 writes the report
        return out / "generator.safetensors"
    generator_sha256 = file_sha256(out / "generator.safetensors")
    previous = state.get("report") or {}
    if previous.get("generator_sha256") != generator_sha256 or previous.get("report_images") != min(
            report_images, len(val_data)) or not (out / "report.md").is_file():
        report_started = time.perf_counter()
        state["report"] = write_report(out, on_device, preprocess, val_data, config, state, report_images, progress)
        state["report"]["generator_sha256"] = generator_sha256
        stages["report_s"] = time.perf_counter() - report_started
    stages["total_s_this_run"] = time.perf_counter() - started
    _write(out, state)
    _say(progress, f"report: {out / 'report.md'} (held-out r {state['report']['fidelity']['pearson']:.3f}, "
                   f"MAE {state['report']['fidelity']['mae']:.3f})")
    return out / "generator.safetensors"


def _train(out: Path, options: dict, config: dict, classes, steps: int, batch_size: int, augment: tuple[str, ...],
           seed: int, progress: bool, device: torch.device) -> float:
    path = out / "generator.safetensors"
    if path.is_file():
        try:
            _, metadata = load_generator(path)
            if metadata.get("steps_done") == steps and metadata.get("fit", {}).get("config") == config:
                return 0.0
        except ValueError:
            pass  # an unreadable leftover: train (resuming from the saved state)
    started = time.perf_counter()
    train = ExplanationDataset(out / "data" / "train")
    val = ExplanationDataset(out / "data" / "val")
    torch.manual_seed(seed)
    generator = build_generator("fast", k=options["k"], size=options["size"]).to(device)
    discriminator = build_discriminator(size=options["size"]).to(device)
    train_config = TrainConfig(steps=steps, batch_size=batch_size, strategy="l1-warmup",
                               warmup_steps=(3 * steps) // 4, val_every=max(1, steps // 5),
                               checkpoint_every=max(1, min(100, steps // 10)), seed=seed, augment=augment)
    metadata = {"input_size": config["input_size"], "classes": list(classes) if classes else None,
                "fit": {"config": config, "fastinterp_version": __version__}}
    train_generator(generator, discriminator, train, train_config, out, val_data=val, resume=True, metadata=metadata,
                    progress=progress)
    return time.perf_counter() - started
