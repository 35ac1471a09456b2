"""Synthetic datasets: determinism by (seed, split, index), shapes and ranges, masks, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastinterp.datasets.images import (
    DATASETS,
    SHAPE_CLASSES,
    SyntheticImages,
    _digit_fragment,
    _digit_pools,
    _sklearn_digits,
    cluttered_digits,
    collate,
    digit_split_indices,
    image_folder,
    num_classes,
    synthetic_dataset,
    textured_shapes,
)

MAKERS = {"digits": cluttered_digits, "shapes": textured_shapes}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_shapes_ranges_and_masks(name):
    images, labels, masks = MAKERS[name](48, size=64, seed=5)
    assert images.shape == (48, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (48,) and labels.dtype == torch.int64
    assert masks.shape == (48, 64, 64) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
    assert labels.min() >= 0 and labels.max() < num_classes(name)
    area = masks.float().mean((1, 2))
    assert (area > 0.01).all() and (area < 0.4).all()  # non-empty, an object, not the canvas
    # the object: its rows/columns span 8-40 px and lie inside the canvas
    for mask in masks:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert 8 <= rows[-1] - rows[0] + 1 <= 40 and 8 <= cols[-1] - cols[0] + 1 <= 40
    # the object differs from its surroundings: mask pixels are not background-coloured
    inside = (images * masks[:, None]).sum((2, 3)) / masks.sum((1, 2))[:, None]
    outside = (images * ~masks[:, None]).sum((2, 3)) / (~masks).sum((1, 2))[:, None]
    assert ((inside - outside).abs().max(1).values > 0.05).float().mean() > 0.9


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_deterministic_by_seed_and_index(name):
    a = MAKERS[name](12, seed=3)
    b = MAKERS[name](12, seed=3)
    c = MAKERS[name](12, seed=4)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    # sample i depends on (seed, split, i) only: any subset regenerates
    big = SyntheticImages(name, 1000, seed=3)
    for i in (0, 7, 11):
        image, label, mask = big[i]
        assert torch.equal(image, a[0][i]) and label == int(a[1][i]) and torch.equal(mask, a[2][i])
    test = MAKERS[name](12, seed=3, split="test")
    assert not torch.equal(test[0], a[0])


def test_digits_train_and_test_halves_are_disjoint():
    split = digit_split_indices()
    train, test = set(split["train"].tolist()), set(split["test"].tolist())
    assert not train & test and len(train | test) == 1797 and abs(len(train) - len(test)) <= 1
    pools = _digit_pools()
    images, labels = _sklearn_digits()
    for name in ("train", "test"):
        assert np.array_equal(pools[name][0], images[split[name]])
        assert set(pools[name][1].tolist()) == set(range(10))
    # a test-split sample draws its digit from the test half: its label distribution is the test pool's
    _, labels_test, _ = cluttered_digits(200, seed=0, split="test")
    assert set(labels_test.tolist()) == set(range(10))


def test_digit_fragments_never_hold_a_whole_digit():
    rng = np.random.default_rng(0)
    images, _ = _sklearn_digits()
    for index in range(0, 1797, 9):
        digit = images[index]
        fragment = _digit_fragment(rng, digit)
        if fragment is None:
            continue
        assert fragment.shape[0] <= 5 and fragment.shape[1] <= 5
        assert 0.1 * digit.sum() <= fragment.sum() <= 0.6 * digit.sum() + 1e-5


def test_digit_size_is_learnable_scale():
    _, _, masks = cluttered_digits(64, seed=1)
    heights = torch.stack([m.any(1).sum() for m in masks]).float()
    assert heights.min() >= 10 and heights.max() <= 36 and heights.mean() > 18


def test_labels_cover_every_class():
    for name, maker in MAKERS.items():
        _, labels, _ = maker(200, seed=2)
        assert set(labels.tolist()) == set(range(len(DATASETS[name].classes)))


def test_other_sizes():
    images, _, masks = textured_shapes(4, size=96, seed=0)
    assert images.shape == (4, 3, 96, 96) and masks.shape == (4, 96, 96)
    images, _, _ = cluttered_digits(4, size=32, seed=0)
    assert images.shape == (4, 3, 32, 32)
    images, labels, masks = cluttered_digits(0)
    assert images.shape == (0, 3, 64, 64) and labels.shape == (0,) and masks.shape == (0, 64, 64)


def test_dataset_object_and_registry():
    data = synthetic_dataset("shapes", 5, size=40, seed=1, split="test")
    assert len(data) == 5 and data.classes == SHAPE_CLASSES
    assert data.config == {"kind": "synthetic", "name": "shapes", "size": 40, "seed": 1, "split": "test"}
    images, labels, masks = data.batch([4, 0])
    assert images.shape == (2, 3, 40, 40) and torch.equal(images[1], data[0][0])
    with pytest.raises(IndexError, match="index"):
        data[5]
    with pytest.raises(TypeError, match="index"):
        data[1.0]
    assert num_classes("digits") == 10 and num_classes("shapes") == 4 and num_classes(data) == 4
    assert set(DATASETS) == {"digits", "shapes"}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"split": "val"}, ValueError, "split"),
    ({"n": -1}, ValueError, "n:"),
    ({"n": 2.0}, TypeError, "n:"),
    ({"seed": -1}, ValueError, "seed"),
    ({"size": 16}, ValueError, "size"),
    ({"name": "mnist"}, ValueError, "name"),
])
def test_bad_arguments(kwargs, error, match):
    args = {"name": "digits", "n": 2, "size": 64, "seed": 0, "split": "train", **kwargs}
    with pytest.raises(error, match=match):
        SyntheticImages(**args)
    with pytest.raises(ValueError, match="dataset"):
        num_classes("mnist")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, shape in (("cat", (50, 70)), ("dog", (80, 40))):
        (tmp_path / cls).mkdir()
        for j in range(2):
            Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(tmp_path / cls / f"{j}.png")
    data = image_folder(tmp_path, 32)
    assert len(data) == 4 and data.classes == ("cat", "dog") and num_classes(data) == 2
    image, label, mask = data[3]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and label == 1 and mask is None
    images, labels, masks = collate([data[0], data[3]])
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1] and masks is None
    with pytest.raises(ValueError, match="path"):
        image_folder(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="path"):
        image_folder(tmp_path / "empty", 32)
