"""``fastinterp explain`` as a library call: image files and folders in; per image an overlay PNG
on the original photo and the map at the photo's size (.npy), and one ``predictions.json``.
Needs numpy, Pillow, matplotlib and tqdm, not torch: it drives any explainer with ``explain``
(the torch ``Explainer`` or the ONNX Runtime ``OnnxExplainer``).

    file -> Pillow (EXIF orientation, RGB) -> uint8 original (H, W, 3)
         -> resized to the explainer's input size (bilinear, antialiased, float) -> batch
         -> explain(batch, targets) -> map (h, w) -> resized back to (H, W)
         -> <stem>.png (overlay on the original), <stem>.npy (float32 (H, W) in [0, 1])

Reading can run ahead of explaining, and writing behind it, on I/O threads (Pillow and numpy
release the GIL while decoding, encoding and copying). That pays only where explain leaves a core
idle: ``benchmarks/explain_folder.py`` measured, 500 demo-size images on this 2-core machine, the
file work at +22% of explain time with the threads and +17% without when torch runs on both cores,
and +6% with / +10% without when torch runs on one. So by default the threads are used on machines
with more than 2 cores (:func:`default_io_threads`). A file that cannot be read, or a batch that
cannot be explained, is reported by name and skipped; the rest go on.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastinterp._core.io import image_files, write_json
from fastinterp.runtime.explanation import Explanation, draw_overlay, get_colormap, resize_map
from fastinterp.runtime.inputs import read_rgb

__all__ = ["FilesReport", "ImageFile", "default_io_threads", "explain_files", "find_images", "read_resized",
           "resize_rgb"]

PREDICTED = "predicted"
TOP = 5  # classes per image in predictions.json


@dataclass(frozen=True)
class ImageFile:
    """One image to explain: its ``path``, and ``name``: where its outputs go, relative to the output
    folder and without suffix (``<folder's relative path>`` or the file's stem)."""

    path: Path
    name: str


@dataclass
class FilesReport:
    """What :func:`explain_files` did: ``explained`` (per image, its predictions.json record),
    ``failed`` ((file, error) pairs), ``predictions`` (the predictions.json path), and the wall
    time split into ``seconds`` (all) and ``explain_seconds`` (inside ``explain``)."""

    explained: list[dict] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    predictions: Path | None = None
    seconds: float = 0.0
    explain_seconds: float = 0.0


def default_io_threads() -> int:
    """I/O threads beside explain: 2 (a reader and a writer) where this process may use more than 2
    cores (its CPU affinity: a container's limit counts), else 0 (explain keeps every core; see the module doc for the measurement)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 if cores > 2 else 0


def find_images(sources: Sequence[str | Path], argument: str = "images") -> list[ImageFile]:
    """Files and folders -> the images to explain, in order. A file named directly is taken
    whatever its suffix (Pillow decides); a folder gives its image files (``IMAGE_SUFFIXES``),
    subfolders included, each named by its path relative to the folder (``cats/tom.jpg`` ->
    ``cats/tom``). Two images that would write the same output raise, naming both."""
    found: list[ImageFile] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = image_files(path, recursive=True)
            if not files:
                raise ValueError(f"{argument}: {path} holds no image files")
            found += [ImageFile(f, f.relative_to(path).with_suffix("").as_posix()) for f in files]
        elif path.is_file():
            found.append(ImageFile(path, path.stem))
        else:
            raise ValueError(f"{argument}: {path} is neither an image file nor a folder")
    seen: dict[str, Path] = {}
    for image in found:
        if image.name in seen:
            raise ValueError(f"{argument}: {seen[image.name]} and {image.path} would both write {image.name}.png; "
                             "explain them into separate --out folders, or rename one")
        seen[image.name] = image.path
    return found


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, h, w) in [0, 1]: bilinear, antialiased when shrinking
    (Pillow, per channel in float: the filter of ``fastinterp.resize_images``, which the
    ``fit`` images are made with)."""
    from PIL import Image

    pixels = rgb.astype(np.float32) / np.float32(255)
    if rgb.shape[:2] == tuple(size):
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32) for c in range(3)]
    return np.stack(channels)


def read_resized(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(original uint8 (H, W, 3), its float32 (3, h, w) resize to ``size``); ValueError naming the file."""
    original = read_rgb(path, "images")
    return original, resize_rgb(original, size)


OVERLAY_FORMATS = ("png", "jpg")  # jpg: encodes a 640x480 overlay ~20x faster than Pillow's PNG (NOTES.md)


def _write(out: Path, image: ImageFile, original: np.ndarray, maps: list[np.ndarray], stems: list[str],
           alpha: float, cmap, overlay_format: str) -> None:
    """One image's outputs: per target, the map at the photo's size (.npy) and the overlay (.png or .jpg)."""
    from PIL import Image

    picture = original.astype(np.float32) / np.float32(255)
    for heat, stem in zip(maps, stems):
        full = resize_map(heat, original.shape[:2])
        base = out / stem  # suffixes appended, not substituted: "a.1" -> "a.1.png", not "a.png"
        base.parent.mkdir(parents=True, exist_ok=True)
        np.save(base.with_name(f"{base.name}.npy"), full.astype(np.float32, copy=False))
        overlay = Image.fromarray(draw_overlay(picture, full, alpha, cmap))
        if overlay_format == "png":
            # Huffman coding only (zlib's Z_HUFFMAN_ONLY): 1.4-2x faster than level 1's default, and
            # smaller files on overlays (benchmarks/NOTES.md)
            overlay.save(base.with_name(f"{base.name}.png"), compress_level=1, compress_type=2)
        else:
            overlay.save(base.with_name(f"{base.name}.jpg"), quality=90)


def _record(image: ImageFile, shape: tuple[int, ...], explanations: list[Explanation],
            probabilities: list[np.ndarray], top: list, row: int, targets: Sequence[str | int], stems: list[str],
            overlay_format: str) -> dict[str, Any]:
    """predictions.json's entry of the batch's image ``row``, from the batch's explanations, their
    probabilities and top classes (computed once per batch)."""
    explained = []
    for explanation, chances, target, stem in zip(explanations, probabilities, targets, stems):
        chosen = int(np.asarray(explanation.targets)[row])
        explained.append({"target": target, "class": chosen, "name": explanation.class_name(chosen),
                          "probability": float(chances[row, chosen]), "overlay": f"{stem}.{overlay_format}",
                          "npy": f"{stem}.npy"})
    return {"file": str(image.path), "size": list(shape[:2]), "explained": explained,
            "top5": [{"class": p.index, "name": p.name, "probability": p.probability} for p in top[row]]}


def _loaded(images: list[ImageFile], size: tuple[int, int], reader: ThreadPoolExecutor | None, lookahead: int):
    """(position, image, (original, resized) or None, error or None) in order; read ``lookahead``
    ahead on ``reader``."""

    def load(image: ImageFile):
        try:
            return read_resized(image.path, size), None
        except ValueError as error:
            return None, error

    if reader is None:
        for index, image in enumerate(images):
            yield (index, image, *load(image))
        return
    pending: deque = deque()
    queue = iter(enumerate(images))
    while True:
        while len(pending) < lookahead and (item := next(queue, None)) is not None:
            pending.append((*item, reader.submit(load, item[1])))
        if not pending:
            return
        index, image, job = pending.popleft()
        yield (index, image, *job.result())


def explain_files(explainer: Any, sources: Sequence[str | Path], out: str | Path, *, size: tuple[int, int],
                  targets: Sequence[str | int] = (PREDICTED,), batch_size: int = 32, alpha: float = 0.5,
                  colormap: str = "jet", overlay_format: str = "png", io_threads: int | None = None,
                  progress: bool = True, on_error: Callable[[str, str], None] | None = None,
                  about: dict | None = None) -> FilesReport:
    """Explain every image of ``sources`` (files and folders, :func:`find_images`) with
    ``explainer`` and write, under ``out``: ``<name>.png`` (the overlay on the original photo,
    at its resolution; ``.jpg`` with ``overlay_format="jpg"``), ``<name>.npy`` (the map at the
    photo's size, float32 in [0, 1]) and ``predictions.json`` (per image: the explained class(es) with probability, the top 5 classes,
    names when the explainer knows them; the files that failed; ``about``).

    Args:
        size: (H, W) the images are resized to for the explainer (its input size).
        targets: "predicted" and / or class indices; each image is explained once per entry,
            written as ``<name>_<target>.png`` when there are several.
        io_threads: 0: read and write on the calling thread; else one reader and ``io_threads - 1``
            writers (at least one) beside it; None: :func:`default_io_threads`.
        on_error: called with (file, error) for each image that fails (also in the report).
    """
    import time

    from tqdm.auto import tqdm

    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
        raise ValueError(f"size: expected (H, W), two ints >= 1, got {size!r}")
    size = (int(size[0]), int(size[1]))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if not targets or any(t != PREDICTED and (isinstance(t, bool) or not isinstance(t, int) or t < 0) for t in targets):
        raise ValueError(f"targets: expected 'predicted' and / or class indices >= 0, got {list(targets)!r}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets: each at most once, got {list(targets)!r}")
    io_threads = default_io_threads() if io_threads is None else io_threads
    if isinstance(io_threads, bool) or not isinstance(io_threads, int) or io_threads < 0:
        raise ValueError(f"io_threads: expected an int >= 0, got {io_threads!r}")
    classes = getattr(explainer, "num_classes", None)
    if classes is not None and any(t != PREDICTED and t >= classes for t in targets):
        raise ValueError(f"targets: class indices must be in [0, {classes}) for a CNN with {classes} outputs, got "
                         f"{list(targets)!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    if overlay_format not in OVERLAY_FORMATS:
        raise ValueError(f"overlay_format: expected one of {OVERLAY_FORMATS}, got {overlay_format!r}")
    cmap = get_colormap(colormap)
    images = find_images(sources)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = FilesReport()
    records: dict[int, dict] = {}  # position in ``images`` -> its predictions.json entry
    writes: deque = deque()  # (position, image, future) of writes not yet checked
    start = time.perf_counter()

    def fail(image: ImageFile, error: object) -> None:
        report.failed.append((str(image.path), str(error)))
        if on_error is not None:
            on_error(str(image.path), str(error))

    def settle(limit: int) -> None:
        """Wait for the oldest writes until at most ``limit`` are outstanding; a failed one is reported."""
        while len(writes) > limit:
            index, image, job = writes.popleft()
            try:
                job.result()
            except OSError as error:
                records.pop(index, None)
                fail(image, f"writing its outputs failed: {error}")

    def run(batch: list) -> None:
        pixels = np.stack([resized for _, _, _, resized in batch])
        began = time.perf_counter()
        try:
            explanations = [explainer.explain(pixels, targets=None if t == PREDICTED else [t] * len(batch))
                            for t in targets]
        except (ValueError, TypeError, RuntimeError) as error:
            for _, image, _, _ in batch:
                fail(image, f"explaining its batch failed: {error}")
            return
        finally:
            report.explain_seconds += time.perf_counter() - began
        probabilities = [e.probabilities for e in explanations]
        top = explanations[0].top_k(TOP)
        for row, (index, image, original, _) in enumerate(batch):
            stems = [image.name if len(targets) == 1 else f"{image.name}_{t}" for t in targets]
            records[index] = _record(image, original.shape, explanations, probabilities, top, row, targets, stems,
                                     overlay_format)
            maps = [np.asarray(e.maps[row], dtype=np.float32) for e in explanations]
            args = (out, image, original, maps, stems, alpha, cmap, overlay_format)
            if writer is None:
                try:
                    _write(*args)
                except OSError as error:  # as a threaded write's failure (settle): this image only
                    records.pop(index, None)
                    fail(image, f"writing its outputs failed: {error}")
            else:
                writes.append((index, image, writer.submit(_write, *args)))
        settle(2 * batch_size)  # the writer is behind: hold no more originals than this

    reader = ThreadPoolExecutor(1, "fastinterp-read") if io_threads > 0 else None
    writer = ThreadPoolExecutor(max(1, io_threads - 1), "fastinterp-write") if io_threads > 0 else None
    bar = tqdm(total=len(images), desc="fastinterp explain", unit="image", disable=not progress, file=sys.stderr)
    try:
        batch: list = []
        for index, image, loaded, error in _loaded(images, size, reader, 2 * batch_size):
            if error is not None:
                fail(image, error)
                bar.update()
                continue
            batch.append((index, image, *loaded))
            if len(batch) == batch_size:
                run(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            run(batch)
            bar.update(len(batch))
        settle(0)
    finally:
        bar.close()
        for pool in (reader, writer):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    report.explained = [records[i] for i in sorted(records)]
    report.seconds = time.perf_counter() - start
    report.predictions = out / "predictions.json"
    content = {**(about or {}), "size": list(size), "targets": list(targets), "count": len(images),
               "explained": report.explained, "failed": [{"file": f, "error": e} for f, e in report.failed]}
    write_json(report.predictions, content)
    return report
