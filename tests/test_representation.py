"""cnn_representation, gradcam and paper_positions against direct formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fastinterp
from conftest import build, images_for, max_rel_error


def direct_cumulative(maps, size, positions):
    """Stack every normalised upsampled map, cumulative sum, divide, pick: the unfused formula."""
    planes = []
    for m in maps:
        lo = m.amin(dim=(1, 2), keepdim=True)
        hi = m.amax(dim=(1, 2), keepdim=True)
        n = torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(m))
        planes.append(F.interpolate(n[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0])
    stacked = torch.stack(planes, dim=1)
    means = stacked.cumsum(dim=1) / torch.arange(1, len(maps) + 1).view(1, -1, 1, 1)
    return means[:, positions]


def released_positions(num_layers, k=8):
    """The released code's float arithmetic, as written there."""
    percentages = [math.ceil(i * 100 / (k - 1)) for i in range(k)]
    return [math.ceil(p * (num_layers - 1) / 100) for p in percentages]


def test_paper_positions_match_the_released_float_formula():
    assert fastinterp.paper_positions(53) == [0, 8, 16, 23, 31, 38, 45, 52]
    for layers in range(9, 400):
        assert fastinterp.paper_positions(layers) == released_positions(layers)
    for k in range(2, 12):
        assert fastinterp.paper_positions(200, k) == released_positions(200, k)


def test_paper_positions_refuses_repeated_positions():
    assert released_positions(8) == [0, 2, 3, 4, 5, 6, 7, 7]  # the rule repeats for 8 layers
    with pytest.raises(ValueError, match="repeated"):
        fastinterp.paper_positions(8)
    with pytest.raises(ValueError, match="k"):
        fastinterp.paper_positions(20, k=1)
    with pytest.raises(TypeError, match="num_layers"):
        fastinterp.paper_positions(20.0)


@pytest.mark.parametrize("order", ["last_to_first", "first_to_last"])
def test_representation_equals_direct_formula(order):
    model, x = build("resnet18"), images_for("resnet18", batch=2)
    rep = fastinterp.cnn_representation(model, x, k=8, size=32, order=order)
    raw = fastinterp.layer_maps(model, x)
    maps = raw.maps[::-1] if order == "last_to_first" else raw.maps
    names = raw.layer_names[::-1] if order == "last_to_first" else raw.layer_names
    assert rep.layer_names == names
    assert rep.positions == fastinterp.paper_positions(20)
    expected = direct_cumulative(maps, (32, 32), rep.positions)
    assert rep.cgm.shape == (2, 8, 32, 32) and rep.cgm.dtype == torch.float32
    assert max_rel_error(rep.cgm, expected) < 1e-5
    assert 0 <= rep.cgm.min() and rep.cgm.max() <= 1
    # the last CGM of either order averages every layer: the same plane
    other = fastinterp.cnn_representation(
        model, x, k=8, size=32, order="first_to_last" if order == "last_to_first" else "last_to_first")
    assert max_rel_error(rep.cgm[:, -1], other.cgm[:, -1]) < 1e-5
    assert max_rel_error(rep.cgm[:, 0], other.cgm[:, 0]) > 1e-2


@pytest.mark.parametrize("teacher,index", [("last", -1), ("first", 0), ("layer3.0.conv1", None)])
def test_teacher_is_one_normalised_layer_map(teacher, index):
    model, x = build("resnet18"), images_for("resnet18", batch=2)
    rep = fastinterp.cnn_representation(model, x, size=(24, 40), teacher=teacher)
    raw = fastinterp.layer_maps(model, x)
    i = raw.layer_names.index(teacher) if index is None else index
    assert rep.teacher_layer == raw.layer_names[i]
    assert rep.teacher.shape == (2, 24, 40)
    assert max_rel_error(rep.teacher, direct_cumulative([raw.maps[i]], (24, 40), [0])[:, 0]) < 1e-5


def test_paper_preset_runs():
    model, x = build("vgg16"), images_for("vgg16", batch=1)
    rep = fastinterp.cnn_representation(model, x, k=8, size=64, method="paper-gradcam",
                                        order="last_to_first", teacher="first")
    assert rep.teacher_layer == "features.0" and rep.layer_names[0] == "features.28"
    assert rep.positions == fastinterp.paper_positions(13)
    assert torch.isfinite(rep.cgm).all() and torch.isfinite(rep.teacher).all()


def test_gradcam_default_is_last_conv_at_input_resolution():
    model, x = build("resnet18"), images_for("resnet18", batch=2)
    cam = fastinterp.gradcam(model, x)
    raw = fastinterp.layer_maps(model, x, layers=["layer4.1.conv2"])
    assert cam.shape == (2, 64, 64)
    assert max_rel_error(cam, direct_cumulative(raw.maps, (64, 64), [0])[:, 0]) < 1e-5
    small = fastinterp.gradcam(model, x, layer="layer2.0.conv1", size=16, targets=3)
    raw = fastinterp.layer_maps(model, x, layers=["layer2.0.conv1"], targets=3)
    assert max_rel_error(small, direct_cumulative(raw.maps, (16, 16), [0])[:, 0]) < 1e-5


def test_gradcam_backward_stops_at_the_last_conv():
    """The default layer is found in the same pass; the backward does not reach the stem."""
    model, x = build("resnet18"), images_for("resnet18", batch=1)
    reached = []
    model.conv1.register_full_backward_hook(lambda *args: reached.append(True))
    fastinterp.gradcam(model, x)
    assert reached == []
    model.conv1._backward_hooks.clear()


# ---- defaults, presets, 1x1 layers, the teacher ------------------------------------------------

def test_defaults_keep_the_teacher_out_of_the_inputs():
    """With the paper's order and teacher="last", CGM 0 *is* the teacher (a generator learns to
    copy it). The default accumulates from the first conv, and its teacher is the pooled block
    output (no conv's own map), so the teacher is no input."""
    import inspect

    model, x = build("resnet18"), images_for("resnet18", batch=2)
    rep = fastinterp.cnn_representation(model, x)
    assert rep.teacher_cgm is None and rep.layer_names[0] == "conv1" and rep.teacher_layer == "layer4"
    last = fastinterp.cnn_representation(model, x, teacher="last")
    assert last.teacher_cgm is None and last.teacher_layer == "layer4.1.conv2"
    assert (rep.cgm[:, 0] - rep.teacher).abs().max() > 0.1
    old = fastinterp.cnn_representation(model, x, order="last_to_first", teacher="last")
    assert old.teacher_cgm == 0 and torch.equal(old.cgm[:, 0], old.teacher)
    assert fastinterp.cnn_representation(model, x, **fastinterp.PAPER_PRESET).teacher_cgm is None
    defaults = {name: p.default for name, p in inspect.signature(fastinterp.cnn_representation).parameters.items()}
    defaults["order"] = fastinterp.maps.options.default_order(defaults["kind"])  # None: the kind's default
    assert {key: defaults[key] for key in fastinterp.DEFAULT_REPRESENTATION} == fastinterp.DEFAULT_REPRESENTATION
    assert fastinterp.DEFAULT_REPRESENTATION["order"] == "first_to_last"


def test_skip_1x1_leaves_out_the_squeeze_excitation_convs():
    model, x = build("mobilenet_v3_small"), images_for("mobilenet_v3_small", batch=2)
    raw = fastinterp.layer_maps(model, x)
    pointwise = [n for n, m in zip(raw.layer_names, raw.maps) if m.shape[1:] == (1, 1)]
    assert len(raw.layer_names) == 52 and len(pointwise) == 18
    assert all(n.endswith((".fc1", ".fc2")) for n in pointwise)  # the SE blocks' convs
    kept = [(n, m) for n, m in zip(raw.layer_names, raw.maps) if n not in pointwise]
    rep = fastinterp.cnn_representation(model, x, size=16, skip_1x1=True)
    assert rep.layer_names == [n for n, _ in kept] and rep.positions == fastinterp.paper_positions(34)
    assert max_rel_error(rep.cgm, direct_cumulative([m for _, m in kept], (16, 16), rep.positions)) < 1e-5
    every = fastinterp.cnn_representation(model, x, size=16, skip_1x1=False)
    assert every.layer_names == raw.layer_names and every.positions == fastinterp.paper_positions(52)
    with pytest.raises(TypeError, match="skip_1x1"):
        fastinterp.cnn_representation(model, x, skip_1x1="yes")


def test_last_teacher_of_a_multi_branch_head_is_its_last_conv_and_a_block_can_be_named():
    """teacher="last" means the last conv to run: for inception_v3 one of Mixed_7c's four branches.
    Naming the block gives Grad-CAM of the concatenated block output, in the same pass."""
    model, x = build("inception_v3"), images_for("inception_v3", batch=1)  # 96 px: Mixed_7* maps are 1x1
    rep = fastinterp.cnn_representation(model, x, size=16, skip_1x1=False, teacher="last")
    assert rep.teacher_layer == "Mixed_7c.branch_pool.conv"
    block = fastinterp.cnn_representation(model, x, size=16, teacher="Mixed_7c", skip_1x1=False)
    assert block.teacher_layer == "Mixed_7c" and block.layer_names == rep.layer_names
    torch.testing.assert_close(block.cgm, rep.cgm, rtol=0, atol=1e-6)
    torch.testing.assert_close(block.teacher, fastinterp.gradcam(model, x, layer="Mixed_7c", size=16),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="teacher: 'Mixed_9z' is not a module"):
        fastinterp.cnn_representation(model, x, teacher="Mixed_9z")


def test_representation_options_read_back_what_a_generator_was_trained_on():
    meta = {"representation": {"k": 8, "size": 64, "method": "gradcam", "order": "first_to_last",
                               "teacher": "last", "image_resize": "bilinear-antialias"}}
    assert fastinterp.representation_options(meta) == {  # skip_1x1 and kind predate: the values used then
        "k": 8, "size": 64, "method": "gradcam", "order": "first_to_last", "teacher": "last", "skip_1x1": False,
        "kind": "gradient"}
    meta["representation"]["skip_1x1"] = True
    assert fastinterp.representation_options(meta)["skip_1x1"] is True
    with pytest.raises(ValueError, match="lacks"):
        fastinterp.representation_options({"representation": {"k": 8}})
