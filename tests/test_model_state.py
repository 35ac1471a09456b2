"""Explaining (and training) changes nothing of the caller's: regression tests for the state
gaps found by trying fastinterp as a user would."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fastinterp
from conftest import assert_same_state, build, images_for, max_rel_error, model_state, naive_layer_maps


def spectral_cnn(parametrization: bool) -> nn.Module:
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 8, 3, padding=1)
    stem = nn.utils.parametrizations.spectral_norm(stem) if parametrization else nn.utils.spectral_norm(stem)
    return nn.Sequential(stem, nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("parametrization", [True, False], ids=["parametrizations", "hook"])
def test_spectral_norm_stem_in_train_mode_is_explained_as_passed(parametrization):
    """Reading a parametrized weight in train mode runs a power iteration (it updates ``_u``/``_v``
    and the weight explained was then 7.8e-2 off the model as passed). Nothing reads it so."""
    model = spectral_cnn(parametrization).train()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    as_passed = copy.deepcopy(model).eval()  # its weight, with no power iteration
    before = model_state(model)
    assert fastinterp.conv_layers(model, x) == ["0", "3"]
    result = fastinterp.layer_maps(model, x)
    fastinterp.cnn_representation(model, x, k=2, size=8)
    fastinterp.gradcam(model, x)
    assert_same_state(before, model_state(model))
    naive = naive_layer_maps(as_passed, x, result.layer_names, result.targets)
    assert all(max_rel_error(a, b) <= 1e-5 for a, b in zip(result.maps, naive))


def test_frozen_parameters_and_an_inplace_op_that_appears_after_the_first_call(small_cnn):
    """The documented re-run, not "a leaf Variable that requires grad is being used in an in-place
    operation"."""
    small_cnn.requires_grad_(False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    small_cnn[1].inplace = False
    fastinterp.layer_maps(small_cnn, x)  # learns: nothing is overwritten in place
    small_cnn[1].inplace = True  # now conv "0"'s output is
    result = fastinterp.layer_maps(small_cnn, x)
    naive = naive_layer_maps(small_cnn.eval(), x, result.layer_names, result.targets)
    assert all(max_rel_error(a, b) <= 1e-5 for a, b in zip(result.maps, naive))
    assert not any(p.requires_grad for p in small_cnn.parameters())


def test_an_inplace_op_on_the_input_changes_neither_the_images_nor_the_maps():
    class Centre(nn.Module):
        def forward(self, x):
            return x.sub_(0.5)

    torch.manual_seed(0)
    model = nn.Sequential(Centre(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    kept = x.clone()
    maps = fastinterp.layer_maps(model, x).maps
    assert torch.equal(x, kept)
    assert torch.equal(fastinterp.layer_maps(model, x).maps[0], maps[0])


def test_maps_are_float32_under_autocast():
    model, x = build("resnet18"), images_for("resnet18")
    plain = fastinterp.layer_maps(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fastinterp.layer_maps(model, x)
        rep = fastinterp.cnn_representation(model, x, k=4, size=16)
        cam = fastinterp.gradcam(model, x)
    assert all(m.dtype == torch.float32 for m in mixed.maps)
    assert rep.cgm.dtype == rep.teacher.dtype == cam.dtype == torch.float32
    # the same maps up to the bfloat16 forward: the last layer's maps correlate
    a, b = mixed.maps[-1].flatten(), plain.maps[-1].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9


# ---- training ------------------------------------------------------------------------------------

class Explanations(torch.utils.data.Dataset):
    def __init__(self, n=8, k=2, size=16):
        g = torch.Generator().manual_seed(0)
        self.items = [{"image": torch.rand(3, size, size, generator=g), "cgm": torch.rand(k, size, size, generator=g),
                       "teacher": torch.rand(size, size, generator=g)} for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class FailingOnCall(nn.Module):
    """Runs ``inner`` and raises on its ``fail_at``-th call (the generator's adversarial loss)."""

    def __init__(self, inner, fail_at):
        super().__init__()
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def forward(self, *args):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.inner(*args)


@pytest.mark.parametrize("fail", [False, True], ids=["finished", "exception"])
def test_train_generator_restores_flags_modes_and_the_global_rng(tmp_path, fail):
    from fastinterp.generator.networks import build_discriminator, build_generator
    from fastinterp.generator.training import TrainConfig, train_generator

    torch.manual_seed(0)
    generator, inner = build_generator("fast", k=2, size=16), build_discriminator(size=16)
    discriminator = FailingOnCall(inner, fail_at=2 if fail else 0)  # call 2: inside the frozen section
    first = next(inner.parameters())
    first.requires_grad_(False)  # the user froze one of its parameters
    flags = [p.requires_grad for p in discriminator.parameters()]
    generator.eval()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    config = TrainConfig(steps=2, batch_size=2, strategy="joint", checkpoint_every=10, val_every=10)
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            train_generator(generator, discriminator, Explanations(), config, tmp_path, progress=False,
                            metadata={"representation": {"kind": "gradient"}})
    else:
        train_generator(generator, discriminator, Explanations(), config, tmp_path, progress=False,
                            metadata={"representation": {"kind": "gradient"}})
    assert [p.requires_grad for p in discriminator.parameters()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert not generator.training and discriminator.training  # as they were passed
