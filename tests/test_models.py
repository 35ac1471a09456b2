"""Generators and discriminator: shapes, ranges, FLOP budget, config round trip, clear errors,
and that each one can actually learn (tiny overfits, seconds each)."""

from __future__ import annotations

import pytest
import torch

from fastinterp.generator.networks import (
    GENERATOR_KINDS,
    ConditionNet,
    build_discriminator,
    build_generator,
    count_flops,
    count_parameters,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and far faster on a busy machine (no spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tiny architectures: every code path, a fraction of the cost.
TINY = {
    "gsft": {"blocks": 2, "channels": 16, "cond_channels": 8, "cond_hidden": 16, "sft_hidden": 8},
    "lsft": {"blocks": 5, "channels": 16, "cond_channels": 8, "cond_hidden": 16, "sft_hidden": 8},
    "fast": {"channels": [8, 16], "cond_channels": 8, "blocks": 1},
}


def inputs(b, k, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, k, s, s, generator=g)


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
@pytest.mark.parametrize("k,s", [(8, 16), (3, 12), (1, 8)])
def test_generator_shapes_and_range(kind, k, s):
    torch.manual_seed(0)
    g = build_generator(kind, k=k, size=s, **TINY[kind])
    image, cgm = inputs(2, k, s)
    out = g(image, cgm)
    assert out.shape == (2, 1, s, s) and out.dtype == torch.float32
    assert bool(((out >= 0) & (out <= 1)).all()) and bool(torch.isfinite(out).all())
    out.mean().backward()
    assert all(p.grad is not None for p in g.parameters()), "every parameter takes part"


@pytest.mark.parametrize("kind", ["gsft", "lsft"])
def test_paper_default_depth_builds_and_runs(kind):
    torch.manual_seed(0)
    g = build_generator(kind)
    assert g.config["blocks"] == (32 if kind == "gsft" else 15) and g.config["channels"] == 64
    with torch.no_grad():
        out = g(*inputs(1, 8, 64))
    assert out.shape == (1, 1, 64, 64)
    assert 0.05 < out.min() and out.max() < 0.95, "a saturated sigmoid at init would stall training"


def test_lsft_conditions_block_2m_on_cgm_m():
    """5 blocks = 3 SFT blocks: CGMs 0..2 steer the output, CGMs 3.. condition nothing."""
    torch.manual_seed(0)
    g = build_generator("lsft", k=5, size=8, **TINY["lsft"])
    image, cgm = inputs(1, 5, 8)
    base = g(image, cgm)
    for j in range(5):
        changed = cgm.clone()
        changed[:, j] = 1 - changed[:, j]
        assert (not torch.equal(g(image, changed), base)) == (j < 3), j


@pytest.mark.parametrize("s", [5, 6, 7, 64])
def test_condition_net_keeps_any_size(s):
    assert ConditionNet(2, hidden=4, out_channels=3)(torch.rand(1, 2, s, s)).shape == (1, 3, s, s)


def test_fast_generator_flop_budget_and_size_rule():
    g = build_generator("fast")
    flops = count_flops(g, *inputs(1, 8, 64))
    assert 0.1e9 < flops <= 0.5e9, flops
    assert count_flops(g, *inputs(2, 8, 64)) == 2 * flops  # per sample, linear in batch
    assert count_parameters(g) == sum(p.numel() for p in g.parameters()) > 0
    with pytest.raises(ValueError, match="divisible by 4"):
        build_generator("fast", size=66)
    assert build_generator("fast", size=66, channels=[8, 16]).config["size"] == 66  # 2 scales: even S


@pytest.mark.slow
def test_fast_generator_exports_with_a_dynamic_batch():
    """No data-dependent control flow: torch.export (the ONNX exporter's front end) traces it once
    for any batch size, into standard aten ops only."""
    g = build_generator("fast", k=3, size=16, **TINY["fast"]).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(g, inputs(2, 3, 16), dynamic_shapes=({0: batch}, {0: batch}))
    image, cgm = inputs(5, 3, 16, seed=1)
    assert torch.allclose(program.module()(image, cgm), g(image, cgm), atol=1e-6)
    ops = {str(n.target).split(".")[1] for n in program.graph.nodes if n.op == "call_function"}
    assert ops <= {"conv2d", "leaky_relu", "add", "mul", "cat", "avg_pool2d", "upsample_nearest2d", "sigmoid"}, ops


def test_normalized_cgm_inputs_ignore_each_maps_scale_and_offset():
    """normalize_cgm: each CGM min-max scaled per image, so a CNN family that keeps less contrast in
    its deep maps feeds the same input; exports to standard ops; off by default (older checkpoints)."""
    torch.manual_seed(0)
    g = build_generator("fast", k=3, size=16, **TINY["fast"], normalize_cgm=True).eval()
    assert build_generator("fast", k=3, size=16).config["normalize_cgm"] is False
    image, cgm = inputs(2, 3, 16)
    scale = torch.tensor([0.3, 1.0, 2.5]).view(1, 3, 1, 1)
    offset = torch.tensor([0.1, -0.2, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(g(image, cgm * scale + offset), g(image, cgm), atol=1e-5)
    plain = build_generator("fast", k=3, size=16, **TINY["fast"]).eval()
    plain.load_state_dict(g.state_dict())
    assert not torch.allclose(plain(image, cgm * scale), plain(image, cgm), atol=1e-3)  # the option is what does it
    flat = cgm.clone()
    flat[:, 1] = 0.5  # a constant map: no division by zero
    assert torch.isfinite(g(image, flat)).all()
    program = torch.export.export(g, inputs(2, 3, 16))
    assert torch.allclose(program.module()(image, cgm), g(image, cgm), atol=1e-6)


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_config_round_trip_rebuilds_the_same_architecture(kind):
    g = build_generator(kind, k=3, size=16, **TINY[kind])
    config = g.config
    assert config["kind"] == kind and config["k"] == 3 and config["size"] == 16
    again = build_generator(**config)
    assert again.config == config
    assert {n: t.shape for n, t in g.state_dict().items()} == {n: t.shape for n, t in again.state_dict().items()}
    again.load_state_dict(g.state_dict())
    image, cgm = inputs(2, 3, 16)
    assert torch.equal(g(image, cgm), again(image, cgm))
    import json

    assert json.loads(json.dumps(config)) == config  # JSON-safe: survives checkpoint metadata


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="kind"):
        build_generator("unet")
    with pytest.raises(TypeError, match="widht"):
        build_generator("gsft", widht=3)
    with pytest.raises(TypeError, match="cond_hidden"):
        build_generator("fast", cond_hidden=3)  # a paper option, not a fast one
    with pytest.raises(ValueError, match="blocks"):
        build_generator("gsft", blocks=0)
    with pytest.raises(TypeError, match="channels"):
        build_generator("lsft", channels=16.0)
    with pytest.raises(ValueError, match="channels"):
        build_generator("fast", channels=[16])
    with pytest.raises(ValueError, match="k"):
        build_generator("fast", k=0)
    with pytest.raises(TypeError, match="channels"):
        build_discriminator(channels="64")
    with pytest.raises(ValueError, match="too small"):
        build_discriminator(size=8)


@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_forward_rejects_wrong_shapes(kind):
    g = build_generator(kind, k=3, size=16, **TINY[kind])
    image, cgm = inputs(2, 3, 16)
    with pytest.raises(ValueError, match=r"cgm: expected shape \(B, 3, 16, 16\)"):
        g(image, torch.rand(2, 4, 16, 16))  # wrong K
    with pytest.raises(ValueError, match="image: expected shape"):
        g(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))  # wrong S
    with pytest.raises(ValueError, match="batch sizes differ"):
        g(image, cgm[:1])
    with pytest.raises(TypeError, match="floating-point"):
        g(image, (cgm > 0.5).long())


def test_discriminator_shapes_and_conditioning_on_cgms():
    d = build_discriminator()
    image = torch.rand(2, 3, 64, 64)
    assert d(image, torch.rand(2, 1, 64, 64)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="map: expected shape"):
        d(image, torch.rand(2, 64, 64))
    with pytest.raises(ValueError, match="k=0"):
        d(image, torch.rand(2, 1, 64, 64), torch.rand(2, 8, 64, 64))
    dk = build_discriminator(k=3, size=16, channels=[8, 16, 16])
    assert dk(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)).shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="needs the CGMs"):
        dk(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16))
    assert build_discriminator(**dk.config).config == dk.config


@pytest.mark.slow
@pytest.mark.parametrize("kind", GENERATOR_KINDS)
def test_each_generator_overfits_a_learnable_target(kind):
    """Target = mean of the CGMs: reachable from the inputs; the untrained net is far from it.
    CGMs are smooth CAM-like blobs (4x4 noise upsampled), as real cumulative maps are."""
    torch.manual_seed(0)
    k, s = 3, 16
    image, _ = inputs(16, k, s, seed=1)
    coarse = torch.rand(16, k, 4, 4, generator=torch.Generator().manual_seed(5))
    cgm = torch.nn.functional.interpolate(coarse, size=s, mode="bilinear")
    target = cgm.mean(dim=1, keepdim=True)
    g = build_generator(kind, k=k, size=s, **TINY[kind])
    with torch.no_grad():
        before = (g(image, cgm) - target).abs().mean().item()
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    for _ in range(120):
        loss = (g(image, cgm) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (g(image, cgm) - target).abs().mean().item()
    assert after < 0.5 * before and after < 0.05, (before, after)


def test_discriminator_learns_matching_pairs():
    """Real: (image, its map); fake: (image, another image's map) and (image, noise)."""
    torch.manual_seed(0)
    s = 16
    image = torch.rand(16, 3, s, s, generator=torch.Generator().manual_seed(2))
    teacher = image.mean(dim=1, keepdim=True)
    fake = torch.cat([teacher.roll(1, dims=0)[:8], torch.rand(8, 1, s, s)])
    d = build_discriminator(size=s, channels=[16, 32, 32])
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(40):
        real_logits, fake_logits = d(torch.cat([image, image]), torch.cat([teacher, fake])).chunk(2)
        loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real_score = d(image, teacher).mean(dim=(1, 2, 3))
        fake_score = d(image, fake).mean(dim=(1, 2, 3))
    accuracy = ((real_score > 0).float().mean() + (fake_score < 0).float().mean()) / 2
    assert accuracy >= 0.9, (real_score, fake_score)
    shuffled = fake_score[:8]  # the harder half: plausible maps of the wrong image
    assert (shuffled < 0).float().mean() >= 0.75, shuffled
