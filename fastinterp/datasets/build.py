"""Training sets for the explanation generator: run one or several CNNs over a dataset and store,
per example, the image at the generator's resolution, the K cumulative maps (CGMs), the teacher
map, the explained class, the label, the ground-truth mask (when the dataset has one) and which
CNN explained it.

Layout of ``out_dir``::

    manifest.json                  config, CNN ids (+ weight hashes), shards with counts and sha256
    shard-00000.safetensors        image (m, 3, S, S), cgm (m, K, S, S), teacher (m, S, S) [dtype],
    shard-00001.safetensors ...    target, label, prediction, cnn, index (m,) int64, mask (m, S, S) bool

Example ``j`` (0 <= j < n) is dataset item ``j`` explained by CNN ``j % C`` (``assign=
"round_robin"``) or item ``j // C`` explained by CNN ``j % C`` (``assign="all"``: every CNN
explains every image). Shard ``s`` holds examples ``s * shard_size ...``; each shard is computed
in the same batches whatever happened before, so a run resumed after an interruption writes the
same bytes as an uninterrupted one (same torch build, thread count and backend).

Several processes split the shards: shard ``s`` is computed by rank ``s % world`` (each rank on
its own device), which records each finished shard in its own ``manifest.rank-RRRRR.json``.
Under ``torchrun`` (``torch.distributed`` initialised) rank 0 then checks every shard's sha256 and
writes ``manifest.json``, the ranks agreeing over gloo. ``fastinterp build-dataset --processes N``
on one machine needs no process group: N workers build their parts (``part=(rank, N)``), and once
all have finished the parent's own call verifies every shard and writes the manifest. A resumed
build (any number of processes) keeps every verified shard of the manifest and of leftover rank
files, so the bytes are those of a single-process build.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fastinterp._core.hashing import file_sha256, weights_sha256
from fastinterp._core.io import save_tensors, write_json
from fastinterp._core.validation import declared_outputs, stem_weight
from fastinterp._version import __version__
from fastinterp.baselines import BASELINES, baseline_map, check_options
from fastinterp.datasets.images import DATASETS, DatasetImages, SyntheticImages
from fastinterp.datasets.reader import DATASET_FORMAT, FLOAT_KEYS, MANIFEST, read_manifest
from fastinterp.maps.options import DEFAULT_REPRESENTATION, check_representation
from fastinterp.maps.preprocess import check_preprocess, with_preprocess
from fastinterp.maps.representation import cnn_representation
from fastinterp.maps.resize import DEFAULT_IMAGE_RESIZE, resize_images

__all__ = ["ASSIGN", "STORE_DTYPES", "TARGETS", "build_dataset", "rank_device", "rank_world"]

RANK_FORMAT = "fastinterp-explanations-rank/1"
SHARD_FORMAT = "fastinterp-explanations-shard/1"
ASSIGN = ("round_robin", "all")
TARGETS = ("predicted", "label")
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _check_cnns(cnns: object) -> list[tuple[str, nn.Module]]:
    if isinstance(cnns, (str, bytes)) or not isinstance(cnns, Sequence) or len(cnns) == 0:
        raise TypeError("cnns: expected a non-empty list of (cnn_id, model) pairs")
    checked = []
    for entry in cnns:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], nn.Module)):
            raise TypeError(f"cnns: expected (cnn_id: str, model: nn.Module) pairs, got {entry!r:.80}")
        checked.append((entry[0], entry[1]))
    ids = [i for i, _ in checked]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cnns: ids must be unique, got {ids}")
    return checked


def _resolve_dataset(dataset: object, length: int, input_size: int | None, seed: int, split: str,
                     cnns: list[tuple[str, nn.Module]]):
    """A dataset object with ``.config``, ``.batch`` and ``.classes`` holding >= ``length`` items."""
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {sorted(DATASETS)} or a dataset object, got {dataset!r}")
        if input_size is None:
            sizes = {getattr(m, "input_size", None) for _, m in cnns}
            if len(sizes) != 1 or None in sizes:
                raise ValueError("input_size: the CNNs do not all carry the same .input_size "
                                 f"({sorted(map(str, sizes))}); pass input_size")
            input_size = sizes.pop()
        return SyntheticImages(dataset, length, size=input_size, seed=seed, split=split)
    if not all(hasattr(dataset, attr) for attr in ("batch", "classes", "config")):
        if not isinstance(dataset, (Dataset, DataLoader)):
            raise TypeError("dataset: expected a name in "
                            f"{sorted(DATASETS)}, a fastinterp.datasets.images dataset (SyntheticImages, ImageFiles, "
                            f"...), a torch Dataset or a DataLoader, got {type(dataset).__name__}")
        if input_size is None:
            sizes = {getattr(m, "input_size", None) for _, m in cnns}
            input_size = sizes.pop() if len(sizes) == 1 and None not in sizes else 224
        dataset = DatasetImages(dataset, input_size, classes=_output_classes(cnns, dataset), argument="dataset")
    if len(dataset) < length:
        raise ValueError(f"n: needs {length} dataset items but the dataset holds {len(dataset)}")
    return dataset


def _output_classes(cnns: list[tuple[str, nn.Module]], dataset: object) -> list[str]:
    """The dataset's class names, else one per output of the (first) CNN."""
    classes = getattr(dataset, "classes", None)
    if classes:
        return list(classes)
    outputs = declared_outputs(cnns[0][1])
    if outputs is None:
        raise ValueError("dataset: has no .classes and the CNN's number of outputs is unknown; wrap it in "
                         "fastinterp.datasets.images.DatasetImages(data, size, classes=[...])")
    return [str(i) for i in range(outputs)]


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def rank_device(requested: str | None, rank: int) -> torch.device:
    """``requested``, else this rank's own GPU (``LOCAL_RANK``, or the rank, modulo the GPUs) when
    CUDA is there, else the CPU."""
    if requested is not None:
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % torch.cuda.device_count())


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rank_file(out_dir: Path, rank: int) -> Path:
    return out_dir / f"manifest.rank-{rank:05d}.json"


def _rank_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("manifest.rank-*.json"))


def _read_rank_file(path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The shard entries a rank recorded in ``path``; refuses one of another config."""
    try:
        progress = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []  # cut short while written (writes are atomic, so only a foreign file): recompute
    if not isinstance(progress, dict) or progress.get("format") != RANK_FORMAT:
        return []
    if progress.get("config") != config:
        raise ValueError(f"out_dir: {path} was left by a build with another config; pass another out_dir or "
                         "delete it")
    return list(progress.get("shards", []))


def _resize(images: torch.Tensor, masks: torch.Tensor | None, size: tuple[int, int], method: str):
    """Images (``fastinterp.maps.resize.resize_images``, as at explain time) and masks (nearest) to
    ``size``; unchanged if already there."""
    images = resize_images(images, size, method)
    if masks is not None and tuple(masks.shape[-2:]) != size:
        masks = nn.functional.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    return images, masks


def _explain_shard(cnns, data, examples: range, item_of, cnn_of, options: dict[str, Any],
                   batch_size: int, classes: int, on_batch) -> dict[str, torch.Tensor]:
    """Every output tensor of the examples ``examples``, computed in batches of ``batch_size``."""
    dtype = STORE_DTYPES[options["dtype"]]
    size = (options["size"], options["size"])
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(examples.start, examples.stop, batch_size):
        batch = range(start, min(start + batch_size, examples.stop))
        items = [item_of(j) for j in batch]
        which = torch.tensor([cnn_of(j) for j in batch], dtype=torch.int64)
        images, labels, masks = data.batch(items)
        out = {"cgm": torch.empty(len(batch), options["k"], *size), "teacher": torch.empty(len(batch), *size),
               "target": torch.empty(len(batch), dtype=torch.int64),
               "prediction": torch.empty(len(batch), dtype=torch.int64)}
        for c in sorted(set(which.tolist())):  # one sub-batch per CNN, in CNN order
            rows = (which == c).nonzero()[:, 0]
            model = cnns[c][1]
            stem = stem_weight(model)  # the CNN's device and dtype
            rep = cnn_representation(
                model, images[rows].to(stem.device, stem.dtype),
                targets=None if options["target"] == "predicted" else labels[rows].to(stem.device),
                k=options["k"], size=size, method=options["method"], order=options["order"],
                teacher=options["teacher"], skip_1x1=options["skip_1x1"], kind=options["kind"],
                backend=options["backend"])
            if rep.logits.shape[1] != classes:
                raise ValueError(f"cnns: {cnns[c][0]!r} has {rep.logits.shape[1]} outputs, the dataset "
                                 f"{classes} classes")
            own_teacher = options.get("teacher_method") in (None, options["method"])
            if own_teacher and rep.teacher_cgm is not None and not options["allow_teacher_input"]:
                raise ValueError(
                    f"teacher: for {cnns[c][0]!r}, CGM {rep.teacher_cgm} is the teacher map itself (layer "
                    f"{rep.teacher_layer!r}, order {options['order']!r}), so a generator would learn to copy an "
                    "input; use order='first_to_last' with teacher='last' (the default), or pass "
                    "allow_teacher_input=True (--allow-teacher-input) if that is what you want")
            teacher_map = rep.teacher
            if not own_teacher:  # another method's map of the same classes
                method = options["teacher_method"]
                teacher_map = baseline_map(
                    method, model, images[rows].to(stem.device, stem.dtype), rep.targets,
                    layer=None if method == "rise" else rep.teacher_layer, size=size,
                    **options.get("teacher_options", {}))
            out["cgm"][rows], out["teacher"][rows] = rep.cgm.float().cpu(), teacher_map.float().cpu()
            out["target"][rows], out["prediction"][rows] = rep.targets.cpu(), rep.logits.argmax(1).cpu()
        images, masks = _resize(images, masks, size, options["image_resize"])
        out.update(image=images, label=labels, cnn=which, index=torch.tensor(items, dtype=torch.int64))
        if masks is not None:
            out["mask"] = masks
        for key, value in out.items():
            parts.setdefault(key, []).append(value.to(dtype) if key in FLOAT_KEYS else value)
        on_batch(len(batch))
    return {key: torch.cat(values).contiguous() for key, values in parts.items()}


def build_dataset(
    cnns: Sequence[tuple[str, nn.Module]],
    dataset: object,
    n: int,
    out_dir: str | Path,
    k: int = 8,
    size: int = 64,
    batch_size: int = 64,
    shard_size: int = 512,
    seed: int = 0,
    split: str = "train",
    input_size: int | None = None,
    method: str = DEFAULT_REPRESENTATION["method"],
    order: str | None = None,
    teacher: str = DEFAULT_REPRESENTATION["teacher"],
    skip_1x1: bool = DEFAULT_REPRESENTATION["skip_1x1"],
    kind: str = DEFAULT_REPRESENTATION["kind"],
    allow_teacher_input: bool = False,
    teacher_method: str | None = None,
    teacher_options: dict[str, Any] | None = None,
    target: str = "predicted",
    assign: str = "round_robin",
    dtype: str = "float16",
    backend: str = "auto",
    progress: bool = True,
    max_shards: int | None = None,
    part: tuple[int, int] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> Path:
    """Explain ``n`` examples with ``cnns`` and write them as shards to ``out_dir``; returns the
    manifest path. Re-running with the same arguments skips every shard whose sha256 matches the
    manifest and recomputes the rest (resume after an interruption).

    Args:
        cnns: [(cnn_id, model), ...]; the models return logits over the dataset's classes.
        dataset: "digits" / "shapes" (synthetic, ``seed``, ``split``, at ``input_size``, default the
            CNNs' common ``.input_size``) or a ``SyntheticImages`` / ``ImageFolderImages`` object.
        k, size, method, order, teacher, skip_1x1, kind, backend: as in
            :func:`fastinterp.cnn_representation` (``order`` None: the kind's default, recorded resolved).
        allow_teacher_input: build even if a CGM equals the teacher map (``order`` and ``teacher``
            at the same end: a generator trained on it learns to copy that input); refused by
            default.
        teacher_method: the explanation the generator learns: None (``method``'s map of the
            ``teacher`` layer, computed in the representation's pass) or one of
            ``fastinterp.baselines.BASELINES`` ("gradcam", "gradcam++", "layercam", "score-cam" at the
            ``teacher`` layer; "rise" of the whole model), explaining the same classes.
        teacher_options: options of that method (e.g. ``{"n_masks": 1000}`` for RISE,
            ``{"batch_size": 128}``), recorded in the config.
        target: "predicted" (explain the CNN's argmax, the paper's setting) or "label".
        assign: "round_robin" (item j -> CNN j % C) or "all" (every CNN explains every item).
        dtype: storage of image, cgm, teacher: "float16" (half the disk) or "float32".
        preprocess: what the CNNs expect of their input beyond [0, 1] images
            (``fastinterp.maps.preprocess``: ``{"normalize": {"mean": [...], "std": [...]}}``); the CNNs
            explain the preprocessed images, the stored images stay in [0, 1]. Recorded in the config
            (and from there in a generator's metadata).
        max_shards: stop after computing this many new shards (time-limited jobs; per process when
            several share the build); rerun to go on.

        part: ``(rank, world)`` of a build split over processes that do not talk to each other:
            compute only the shards ``s`` with ``s % world == rank``, record them in this rank's
            file and write no manifest; returns that file. A later call with the same arguments
            and no ``part`` verifies every rank's shards and writes the manifest (computing
            whatever a rank left undone).

    Under ``torch.distributed`` (``torchrun``) every rank calls this with the same arguments and
    its own CNNs' device; shard ``s`` is computed by rank ``s % world``, and rank 0 writes the
    manifest once every rank's shards are verified.
    """
    from tqdm.auto import tqdm

    cnns = _check_cnns(cnns)
    for name, value, minimum in (("n", n, 1), ("size", size, 1), ("batch_size", batch_size, 1),
                                 ("shard_size", shard_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    if max_shards is not None and (isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 0):
        raise ValueError(f"max_shards: expected None or an int >= 0, got {max_shards!r}")
    rank, world = rank_world()
    collective = world > 1  # ranks that agree over torch.distributed, not through a later call
    if part is not None:
        if (not isinstance(part, tuple) or len(part) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in part) or not 0 <= part[0] < part[1]):
            raise ValueError(f"part: expected None or (rank, world) ints with 0 <= rank < world, got {part!r}")
        if collective:
            raise ValueError("part: the ranks come from torch.distributed here; leave part at None")
        rank, world = part
    order = check_representation({"kind": kind, "k": k, "size": size, "method": method, "order": order,
                                  "teacher": teacher, "skip_1x1": skip_1x1})["order"]
    for name, value, allowed in (("target", target, TARGETS), ("assign", assign, ASSIGN),
                                 ("dtype", dtype, tuple(STORE_DTYPES))):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    if not isinstance(allow_teacher_input, bool):
        raise TypeError(f"allow_teacher_input: expected True or False, got {allow_teacher_input!r}")
    if teacher_method is not None and teacher_method not in BASELINES:
        raise ValueError(f"teacher_method: expected None or one of {BASELINES}, got {teacher_method!r}")
    if teacher_options is not None and (not isinstance(teacher_options, dict) or teacher_method is None):
        raise ValueError("teacher_options: expected a dict of options of teacher_method (and a teacher_method), "
                         f"got {teacher_options!r}")
    if teacher_method is not None:
        try:
            check_options(teacher_method, teacher_options)
        except ValueError as error:  # before any manifest is written: a typo must not block the out_dir
            raise ValueError(f"teacher_options: {error}") from None
    preprocess = check_preprocess(preprocess)
    count = len(cnns)
    length = n if assign == "round_robin" else math.ceil(n / count)
    data = _resolve_dataset(dataset, length, input_size, seed, split, cnns)
    item_of = (lambda j: j) if assign == "round_robin" else (lambda j: j // count)
    class_names = list(data.classes) or _output_classes(cnns, data)  # a flat folder: one per CNN output
    classes = len(class_names)

    options = {"kind": kind, "k": k, "size": size, "method": method, "order": order, "teacher": teacher, "skip_1x1": skip_1x1,
               "allow_teacher_input": allow_teacher_input, "image_resize": DEFAULT_IMAGE_RESIZE,
               "target": target, "backend": backend, "dtype": dtype}
    if teacher_method is not None:  # recorded only when set: datasets built before stay resumable
        options.update(teacher_method=teacher_method, teacher_options=dict(teacher_options or {}))
    if preprocess is not None:  # likewise
        options.update(preprocess=preprocess)
    if target == "label" and getattr(data, "labelled", True) is False:
        raise ValueError("target: 'label' needs labelled images (a <class>/<image> folder); these have no labels")
    config = {**options, "n": n, "assign": assign, "batch_size": batch_size, "shard_size": shard_size,
              "dataset": data.config, "classes": class_names, "torch": torch.__version__,
              "cnns": [{"id": cid, "class": type(m).__name__, "arch": getattr(m, "arch", None),
                        "weights_sha256": weights_sha256(m)} for cid, m in cnns]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out_dir)
    if previous is not None and previous.get("config") != config:
        old = previous.get("config") or {}
        differ = sorted(key for key in set(old) | set(config) if old.get(key) != config.get(key))
        raise ValueError(f"out_dir: {out_dir} holds a dataset built with another config (differs in {differ}); "
                         "pass another out_dir or delete it")
    num_shards = math.ceil(n / shard_size)
    entries: dict[int, dict[str, Any]] = {}
    in_manifest = {entry["index"] for entry in (previous or {}).get("shards", [])}
    recorded = list((previous or {}).get("shards", []))
    for path in _rank_files(out_dir):  # shards finished by the ranks of an interrupted build
        recorded += _read_rank_file(path, config)
    for entry in recorded:
        path = out_dir / entry["file"]
        if entry["index"] not in entries and path.is_file() and file_sha256(path) == entry["sha256"]:
            entries[entry["index"]] = entry  # verified: keep
    # what only rank files hold is carried in this rank's file too, so that a second interruption
    # (which overwrites the rank files) loses nothing
    carried = [entries[i] for i in sorted(entries) if i not in in_manifest]

    def manifest(complete: bool) -> dict[str, Any]:
        return {"format": DATASET_FORMAT, "fastinterp_version": __version__, "config": config,
                "num_shards": num_shards, "complete": complete,
                "shards": [entries[i] for i in sorted(entries)]}

    explaining = [(cid, with_preprocess(model, preprocess)) for cid, model in cnns]  # what the maps are made of
    mine = [s for s in range(num_shards) if s % world == rank]
    done = sum(entries[s]["count"] for s in mine if s in entries)
    total = sum(min((s + 1) * shard_size, n) - s * shard_size for s in mine)
    bar = tqdm(total=total, initial=done, desc="explaining" if world == 1 else f"explaining (rank {rank} of {world})",
               unit="ex", disable=not progress or rank != 0)
    computed, written = 0, list(carried)
    try:
        for s in mine:
            if s in entries:
                continue
            if max_shards is not None and computed >= max_shards:
                break
            examples = range(s * shard_size, min((s + 1) * shard_size, n))
            tensors = _explain_shard(explaining, data, examples, item_of, lambda j: j % count, options,
                                     batch_size, classes, bar.update)
            path = out_dir / _shard_name(s)
            save_tensors(path, tensors, {"format": SHARD_FORMAT, "index": s, "start": examples.start,
                                        "count": len(examples)})
            entries[s] = {"index": s, "file": path.name, "start": examples.start, "count": len(examples),
                          "bytes": path.stat().st_size, "sha256": file_sha256(path)}
            computed += 1
            written.append(entries[s])
            if world == 1:
                write_json(out_dir / MANIFEST, manifest(complete=len(entries) == num_shards))
            else:  # every rank its own file: a killed build keeps what each rank finished
                write_json(_rank_file(out_dir, rank), {"format": RANK_FORMAT, "config": config, "shards": written})
    finally:
        bar.close()
    if part is not None:  # the call that follows all parts writes the manifest
        return _rank_file(out_dir, rank)
    if collective:  # rank 0 verifies every rank's shards, then writes the one manifest
        reports: list[Any] = [None] * world
        dist.all_gather_object(reports, written)
        if rank == 0:
            for report in reports:
                for entry in report:
                    path = out_dir / entry["file"]
                    if not path.is_file() or file_sha256(path) != entry["sha256"]:
                        raise RuntimeError(f"out_dir: shard {path} written by another rank does not match its "
                                           "recorded sha256 (do the ranks share one folder?)")
                    entries[entry["index"]] = entry
    if rank == 0:
        write_json(out_dir / MANIFEST, manifest(complete=len(entries) == num_shards))
        for path in _rank_files(out_dir):  # now in the manifest
            path.unlink()
    if collective:
        dist.barrier()  # no rank returns before the manifest is written
    return out_dir / MANIFEST
