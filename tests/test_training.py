"""GAN training: strategies, resumable bit-identical state, checkpoints, DDP on gloo."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastinterp

from fastinterp._core.io import load_tensors, save_tensors
from fastinterp.generator.checkpoint import TRAIN_STATE_FORMAT, load_generator, save_generator
from fastinterp.generator.networks import build_discriminator, build_generator
from fastinterp.metrics import mae, pearson
from fastinterp.generator.training import CGM_GAIN, TrainConfig, augment_batch, batch_indices, dataset_fidelity, fidelity_report, train_generator

K, S = 3, 16


class ToyExplanations(torch.utils.data.Dataset):
    """Teacher = mean of the CGMs: learnable from the generator's inputs."""

    def __init__(self, n=24, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.image = torch.rand(n, 3, S, S, generator=g)
        self.cgm = torch.rand(n, K, S, S, generator=g)
        self.teacher = self.cgm.mean(dim=1)

    def __len__(self):
        return self.image.shape[0]

    def __getitem__(self, i):
        return {"image": self.image[i], "cgm": self.cgm[i], "teacher": self.teacher[i]}


def nets(seed=0, kind="fast"):
    torch.manual_seed(seed)
    return build_generator(kind, k=K, size=S, **SMALL[kind]), build_discriminator(size=S)


SMALL = {"fast": {}, "gsft": {"blocks": 2}, "lsft": {"blocks": 3}}


# what a checkpoint of in-memory toy data records (train_generator refuses to write a checkpoint
# that does not say which representation its CGMs came from)
TOY_METADATA = {"representation": {**fastinterp.DEFAULT_REPRESENTATION, "k": K, "size": S}}


def quiet(**kw):
    return {"progress": False, "metadata": TOY_METADATA, **kw}


def test_batch_indices_cover_each_epoch_once_and_are_pure():
    first = torch.cat([batch_indices(s, 4, 10, seed=3) for s in range(5)])  # 2 epochs of 10
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, 4, 10, seed=3), batch_indices(3, 4, 10, seed=3))
    assert not torch.equal(batch_indices(0, 4, 10, seed=3), batch_indices(0, 4, 10, seed=4))


def _batch(n=64, k=4, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 3, s, s, generator=g), "cgm": torch.rand(n, k, s, s, generator=g),
            "teacher": torch.rand(n, 1, s, s, generator=g)}


def test_flip_mirrors_image_cgm_and_teacher_of_the_same_examples():
    batch = _batch()
    copy = {key: value.clone() for key, value in batch.items()}
    out = augment_batch(batch, ("flip",), seed=3)
    assert all(torch.equal(batch[key], copy[key]) for key in batch)  # the input is left as it was
    flipped = [torch.equal(out["image"][i], batch["image"][i].flip(-1)) for i in range(64)]
    for key in ("image", "cgm", "teacher"):
        for i in range(64):
            assert torch.equal(out[key][i], batch[key][i].flip(-1) if flipped[i] else batch[key][i]), (key, i)
    assert 16 <= sum(flipped) <= 48


def test_cgm_gain_scales_each_cgm_alone_within_its_range():
    batch = _batch()
    out = augment_batch(batch, ("cgm-gain",), seed=3)
    assert torch.equal(out["image"], batch["image"]) and torch.equal(out["teacher"], batch["teacher"])
    ratio = out["cgm"] / batch["cgm"]  # (B, K, S, S), constant over each map
    gain = ratio[:, :, :1, :1]
    torch.testing.assert_close(ratio, gain.expand_as(ratio))
    assert CGM_GAIN[0] <= gain.min() and gain.max() <= CGM_GAIN[1]
    assert gain.min() < 0.7 and gain.max() > 1.4 and gain.flatten().unique().numel() == gain.numel()


def test_augmentation_is_a_function_of_the_seed_and_a_rank_takes_its_rows():
    batch = _batch()
    both = ("flip", "cgm-gain")
    a, b = augment_batch(batch, both, seed=5), augment_batch(batch, both, seed=5)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["cgm"], augment_batch(batch, both, seed=6)["cgm"])
    part = augment_batch({key: value[16:32] for key, value in batch.items()}, both, seed=5, rows=slice(16, 32))
    assert all(torch.equal(part[key], a[key][16:32]) for key in a)
    plain = augment_batch(batch, (), seed=5)
    assert all(torch.equal(plain[key], batch[key]) for key in batch)


@pytest.mark.parametrize("augment", ["rotate", ("rotate",), ("flip", "flip")])
def test_unknown_augmentations_are_refused(augment):
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment=augment)


@pytest.mark.slow
@pytest.mark.parametrize("augment", [(), ("flip", "cgm-gain")])
def test_resume_equals_uninterrupted(tmp_path, augment):
    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=100, val_every=100, augment=augment)
    data = ToyExplanations()
    g1, d1 = nets()
    train_generator(g1, d1, data, config, tmp_path / "straight", **quiet())
    g2, d2 = nets()
    train_generator(g2, d2, data, config, tmp_path / "split", stop_after=3, **quiet())
    g3, d3 = nets()  # a fresh process would start from fresh modules
    train_generator(g3, d3, data, config, tmp_path / "split", resume=True, **quiet())
    for a, b in [(g1, g3), (d1, d3)]:
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    g4, d4 = nets()
    with pytest.raises(ValueError, match="another training config"):
        train_generator(g4, d4, data, TrainConfig(steps=7, batch_size=8), tmp_path / "split", resume=True, **quiet())
    if augment:  # the same config without augmentation is another config
        with pytest.raises(ValueError, match="augment"):
            train_generator(g4, d4, data, TrainConfig(steps=6, batch_size=8, checkpoint_every=100, val_every=100),
                            tmp_path / "split", resume=True, **quiet())


@pytest.mark.slow
def test_a_state_saved_before_augmentation_existed_resumes(tmp_path):
    config = TrainConfig(steps=4, batch_size=8)
    g, d = nets()
    train_generator(g, d, ToyExplanations(), config, tmp_path, stop_after=2, **quiet())
    path = tmp_path / "train_state.safetensors"
    tensors, meta = load_tensors(path, TRAIN_STATE_FORMAT)
    del meta["config"]["augment"]
    save_tensors(path, tensors, meta)
    g, d = nets()
    train_generator(g, d, ToyExplanations(), config, tmp_path, resume=True, **quiet())
    assert load_generator(tmp_path / "generator.safetensors")[1]["steps_done"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("strategy,updates", [("joint", 7), ("seed", 3), ("l1-warmup", 3)])
def test_strategies_update_the_discriminator_as_documented(tmp_path, strategy, updates):
    config = TrainConfig(steps=7, batch_size=4, strategy=strategy, d_every=3, warmup_steps=4)
    g, d = nets()
    d_before = {k: v.clone() for k, v in d.state_dict().items()}
    train_generator(g, d, ToyExplanations(), config, tmp_path, **quiet())
    tensors, meta = load_tensors(tmp_path / "train_state.safetensors", "fastinterp-train-state/1")
    steps = [v for k, v in tensors.items() if k.startswith("optD.") and k.endswith(".step")]
    assert steps and all(int(s) == updates for s in steps)
    assert any(not torch.equal(d_before[k], v) for k, v in d.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fast", "gsft", "lsft"])
def test_training_reduces_l1_and_checkpoint_round_trip(tmp_path, kind):
    data = ToyExplanations(n=16)
    g, d = nets(kind=kind)
    before = dataset_fidelity(g, data)
    history = train_generator(g, d, data, TrainConfig(steps=60, batch_size=16, strategy="l1-warmup",
                                                      warmup_steps=60, lr=2e-3, val_every=60),
                              tmp_path, val_data=data, **quiet(metadata={**TOY_METADATA, "dataset": "toy"}))
    after = dataset_fidelity(g, data)
    assert after["mae"] < 0.5 * before["mae"], (before, after)
    assert history[-1]["val_mae"] == pytest.approx(after["mae"])
    loaded, meta = load_generator(tmp_path / "generator.safetensors")
    assert meta["dataset"] == "toy" and meta["generator"]["kind"] == kind and meta["steps_done"] == 60
    x = data[0]
    with torch.no_grad():
        assert torch.equal(loaded(x["image"][None], x["cgm"][None]), g.eval()(x["image"][None], x["cgm"][None]))


class TwoCNNExplanations(ToyExplanations):
    """Examples alternate between CNN "a" (teacher = CGM 0) and CNN "b" (teacher = CGM 1)."""

    cnn_ids = ["a", "b"]

    def __getitem__(self, i):
        item = super().__getitem__(i)
        cnn = i % 2
        return {**item, "teacher": self.cgm[i, cnn], "cnn": torch.tensor(cnn)}


class CopyCGM(torch.nn.Module):
    """A 'generator' that returns CGM ``j`` unchanged."""

    def __init__(self, j):
        super().__init__()
        self.j = j
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the report a device

    def forward(self, image, cgm):
        return cgm[:, self.j : self.j + 1]


def test_fidelity_report_splits_by_cnn_and_scores_the_inputs():
    data = TwoCNNExplanations(n=10)
    report = fidelity_report(CopyCGM(0), data, batch_size=3)  # batches straddle the two CNNs
    assert report["by_cnn"]["a"] == {"mae": 0.0, "pearson": pytest.approx(1.0), "n": 5, "mae_se": 0.0,
                                     "pearson_se": pytest.approx(0.0, abs=1e-7)}
    odd = torch.arange(1, 10, 2)
    expected_b = mae(data.cgm[odd, 0], data.cgm[odd, 1]).mean().item()
    assert report["by_cnn"]["b"]["mae"] == pytest.approx(expected_b, rel=1e-6) and report["by_cnn"]["b"]["n"] == 5
    assert report["by_cnn"]["b"]["pearson"] == pytest.approx(pearson(data.cgm[odd, 0], data.cgm[odd, 1]).mean().item())
    assert report["all"]["mae"] == pytest.approx(expected_b / 2) and report["all"]["n"] == 10
    per_example = torch.cat([torch.zeros(5, dtype=torch.float64), mae(data.cgm[odd, 0], data.cgm[odd, 1])])
    assert report["all"]["mae_se"] == pytest.approx(per_example.std().item() / 10**0.5)
    assert report["per_example"]["cnn"] == [0, 1] * 5
    assert report["per_example"]["mae"][0::2] == [0.0] * 5 and report["per_example"]["mae"][1::2] == pytest.approx(
        mae(data.cgm[odd, 0], data.cgm[odd, 1]).tolist())
    # copying CGM 0 is exact for half the examples and so is copying CGM 1; CGM 2 is never the teacher
    assert report["inputs"]["cgm0"]["mae"] == pytest.approx(report["all"]["mae"])
    assert report["inputs"]["cgm2"]["mae"] > report["inputs"]["cgm0"]["mae"]
    assert report["best_input"] in ("cgm0", "cgm1") and set(report["inputs"]) == {"cgm0", "cgm1", "cgm2"}
    assert report["all"] == fidelity_report(CopyCGM(0), data, batch_size=64)["all"]


def test_corrupted_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    g, _ = nets()
    path = save_generator(tmp_path / "g.safetensors", g)
    raw = path.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(256))
    for name in ("truncated", "garbage", "missing"):
        with pytest.raises(ValueError, match="checkpoint"):
            load_generator(tmp_path / f"{name}.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="no fastinterp metadata"):
        load_generator(tmp_path / "foreign.safetensors")
    other = build_generator("fast", k=K + 1, size=S)  # same kind, other K: shapes differ
    save_generator(tmp_path / "other.safetensors", other)
    tensors, meta = load_tensors(tmp_path / "other.safetensors", "fastinterp-generator/1")
    meta["generator"] = g.config  # claims the K=3 architecture but holds K=4 weights
    from fastinterp._core.io import save_tensors

    save_tensors(tmp_path / "lying.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="does not match"):
        load_generator(tmp_path / "lying.safetensors")


AUGMENT = ("flip", "cgm-gain")  # each rank must take its own rows' draws


def _ddp_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        g, d = nets()
        train_generator(g, d, ToyExplanations(), TrainConfig(steps=4, batch_size=8, augment=AUGMENT), out_dir, **quiet())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_agree_with_one(tmp_path):
    init_file = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_ddp_worker, args=(2, init_file, str(tmp_path / "ddp")), nprocs=2, join=True)
    g, d = nets()
    train_generator(g, d, ToyExplanations(), TrainConfig(steps=4, batch_size=8, augment=AUGMENT), tmp_path / "single",
                    **quiet())
    ddp, _ = load_generator(tmp_path / "ddp" / "generator.safetensors")
    # Adam moves every weight by ~lr whatever the gradient's size, so a gradient of ~0 whose
    # sign rounds differently moves a weight the other way: compare almost all elements tightly
    # (a run whose ranks did not average gradients differs in most of them by ~lr).
    a = torch.cat([t.flatten() for t in g.state_dict().values()])
    b = torch.cat([t.flatten() for t in ddp.state_dict().values()])
    close = (a - b).abs() <= 1e-6 + 1e-4 * b.abs()
    print(f"DDP vs single: {close.float().mean():.5f} of weights equal, max diff {(a - b).abs().max():.2e}")
    assert close.float().mean() >= 0.995
    assert (a - b).abs().max() <= 2 * 4 * 2e-4  # never more than two lr-sized steps per step
