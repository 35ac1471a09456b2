"""Training of explanation generators: the pix2pix objective of the paper, resumable, DDP-ready.

Objective (per step, batch of images x, CGMs c, teacher maps t):
    D: BCE(D(x, t), 1) + BCE(D(x, G(x, c)), 0), halved
    G: BCE(D(x, G(x, c)), 1) + l1_weight * |G(x, c) - t|_1        (l1_weight = 100)
Adam(lr 2e-4, betas (0.5, 0.999)) for both. Strategies:
    "joint"      D and G every step (pix2pix);
    "seed"       D once every ``d_every`` G steps (the released code: every 100);
    "l1-warmup"  G on L1 alone for ``warmup_steps``, then joint.
Augmentations (``augment``, off by default), drawn per example from (seed, step):
    "flip"       image, CGMs and teacher mirrored left-right together (the map is equivariant);
    "cgm-gain"   each CGM times its own gain, log-uniform in [1/2, 2]: the contrast a CGM keeps
                 differs between CNN families, and the teacher does not depend on it.
Data order is a pure function of (seed, step), so is any randomness inside the networks (the
global RNG is reseeded from (seed, step) at every step inside ``torch.random.fork_rng``, so the
caller's RNG state is left as it was), and the training state (both networks, both optimisers,
the step) is saved in safetensors, so a resumed run equals an uninterrupted one on the CPU bit
for bit. Training changes nothing of the caller's but the two networks' weights: their
``training`` flags and every ``requires_grad`` flag are restored, also after an exception. Under ``torchrun`` (``torch.distributed`` initialised) each rank takes an equal
slice of every global batch and DistributedDataParallel averages the gradients, so N processes
train the same model as one process with the same global batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fastinterp._core.io import load_tensors, save_tensors
from fastinterp.datasets.reader import provenance
from fastinterp.generator.checkpoint import TRAIN_STATE_FORMAT, flatten_optimizer, save_generator, unflatten_optimizer
from fastinterp.metrics import fidelity, mae, pearson

__all__ = ["AUGMENTATIONS", "STRATEGIES", "TrainConfig", "augment_batch", "batch_indices", "dataset_fidelity", "fidelity_report",
           "train_generator"]

STRATEGIES = ("joint", "seed", "l1-warmup")
AUGMENTATIONS = ("flip", "cgm-gain")
CGM_GAIN = (0.5, 2.0)  # "cgm-gain": log-uniform range of each CGM's gain


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_generator` (saved in every checkpoint)."""

    steps: int = 1000
    batch_size: int = 32  # global batch (split over DDP ranks)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    l1_weight: float = 100.0
    strategy: str = "joint"
    d_every: int = 100  # "seed": discriminator step once every d_every generator steps
    warmup_steps: int = 200  # "l1-warmup": generator steps on L1 alone
    seed: int = 0
    val_every: int = 100
    checkpoint_every: int = 200
    amp: bool = True  # bfloat16 autocast, on CUDA only (ignored on the CPU)
    augment: tuple[str, ...] = ()  # names from AUGMENTATIONS

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if isinstance(self.augment, str) or not all(name in AUGMENTATIONS for name in self.augment) \
                or len(set(self.augment)) != len(self.augment):
            raise ValueError(f"augment: expected distinct names from {AUGMENTATIONS}, got {self.augment!r}")
        self.augment = tuple(self.augment)
        for name in ("steps", "batch_size", "d_every", "val_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected >= 0, got {self.warmup_steps}")
        if not self.lr > 0 or not self.l1_weight >= 0:
            raise ValueError(f"lr must be > 0 and l1_weight >= 0, got {self.lr}, {self.l1_weight}")


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> torch.Tensor:
    """Sample indices of global batch ``step``: consecutive slices of per-epoch permutations.

    A pure function of its arguments, so training can resume at any step.
    """
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_samples)
        perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.int64)


def _collate(dataset, indices: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    batch = {key: torch.stack([item[key] for item in items]).to(device) for key in ("image", "cgm", "teacher")}
    if "cnn" in items[0]:
        batch["cnn"] = torch.stack([item["cnn"] for item in items])
    if batch["teacher"].dim() == 3:
        batch["teacher"] = batch["teacher"].unsqueeze(1)
    return batch


def augment_batch(batch: dict[str, torch.Tensor], augment: Sequence[str], seed: int,
                  rows: slice | None = None) -> dict[str, torch.Tensor]:
    """``batch`` ("image" (B, 3, S, S), "cgm" (B, K, S, S), "teacher" (B, 1, S, S)) with the
    ``augment`` transforms (see the module docstring) drawn from ``seed``; a new dict, the input
    is left as it was. ``rows``: this batch is those rows of a global batch (a DDP rank's slice),
    whose draws it takes, so N ranks augment as one process does."""
    out = dict(batch)
    if not augment:
        return out
    size, k = batch["cgm"].shape[:2]
    first = 0 if rows is None else rows.start
    if rows is not None and rows.stop - rows.start != size:
        raise ValueError(f"rows: {rows} does not hold the batch's {size} examples")
    # each example's draws come from its own row of the global batch: (1 + K) uniforms
    draws = torch.stack([torch.rand(1 + k, generator=torch.Generator().manual_seed(seed * 65_537 + first + i))
                         for i in range(size)])
    flip_draw, gain_draw = draws[:, 0], draws[:, 1:]
    if "flip" in augment:
        flip = (flip_draw < 0.5).to(batch["cgm"].device).view(-1, 1, 1, 1)
        for key in ("image", "cgm", "teacher"):
            out[key] = torch.where(flip, batch[key].flip(-1), batch[key])
    if "cgm-gain" in augment:
        low, high = torch.tensor(CGM_GAIN).log()
        gain = (low + (high - low) * gain_draw).exp()
        out["cgm"] = out["cgm"] * gain.to(out["cgm"]).view(size, k, 1, 1)
    return out


@torch.no_grad()
def dataset_fidelity(generator: nn.Module, dataset, batch_size: int = 64, limit: int | None = None) -> dict[str, float]:
    """Fidelity of the generator to the teacher on ``dataset``: mean MAE and Pearson r."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, teachers = [], []
    for start in range(0, n, batch_size):
        batch = _collate(dataset, range(start, min(n, start + batch_size)), device)
        preds.append(generator(batch["image"], batch["cgm"]).float().cpu())
        teachers.append(batch["teacher"].float().cpu())
    generator.train(was_training)
    return fidelity(torch.cat(preds), torch.cat(teachers))


@torch.no_grad()
def fidelity_report(generator: nn.Module, dataset, batch_size: int = 64) -> dict[str, Any]:
    """Fidelity of ``generator`` to the teacher on every example of an ``ExplanationDataset``.

    Returns a JSON-able dict:
        "all":      {"mae", "pearson", "n", "mae_se", "pearson_se"} over every example (``_se``: the
                    standard error of the mean over examples);
        "by_cnn":   {cnn id: the same} for each CNN the examples came from;
        "inputs":   {"cgm<j>": {"mae", "pearson"}} the same measures for CGM j itself taken as the
                    explanation (the baseline a generator must beat: copying one of its inputs);
        "best_input": the name of the input with the lowest MAE;
        "per_example": {"mae", "pearson", "cnn"} lists in dataset order (for paired comparisons).
    MAE is in map units (maps in [0, 1]); Pearson r is per map over pixels, then averaged.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    names = getattr(dataset, "cnn_ids", ["cnn"])
    pred_mae, pred_r, cnn_index = [], [], []
    input_mae, input_r = [], []
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(len(dataset), start + batch_size))
        batch = _collate(dataset, indices, device)
        teacher = batch["teacher"].float().cpu()
        pred = generator(batch["image"], batch["cgm"]).float().cpu()
        pred_mae.append(mae(pred, teacher))
        pred_r.append(pearson(pred, teacher))
        cgm = batch["cgm"].float().cpu()
        input_mae.append(torch.stack([mae(cgm[:, j], teacher[:, 0]) for j in range(cgm.shape[1])], 1))
        input_r.append(torch.stack([pearson(cgm[:, j], teacher[:, 0]) for j in range(cgm.shape[1])], 1))
        cnn_index.append(batch["cnn"].cpu() if "cnn" in batch else torch.zeros(len(indices), dtype=torch.int64))
    generator.train(was_training)
    pred_mae, pred_r = torch.cat(pred_mae), torch.cat(pred_r)
    input_mae, input_r = torch.cat(input_mae), torch.cat(input_r)
    cnn_index = torch.cat(cnn_index)

    def summary(rows: torch.Tensor) -> dict[str, float]:
        n = int(rows.sum())
        se = (lambda values: values.std().item() / n**0.5) if n > 1 else (lambda values: float("nan"))
        return {"mae": pred_mae[rows].mean().item(), "pearson": pred_r[rows].mean().item(), "n": n,
                "mae_se": se(pred_mae[rows]), "pearson_se": se(pred_r[rows])}

    report: dict[str, Any] = {"all": summary(torch.ones_like(cnn_index, dtype=torch.bool))}
    report["by_cnn"] = {names[c]: summary(cnn_index == c) for c in sorted(set(cnn_index.tolist()))}
    report["inputs"] = {f"cgm{j}": {"mae": input_mae[:, j].mean().item(), "pearson": input_r[:, j].mean().item()}
                        for j in range(input_mae.shape[1])}
    report["best_input"] = min(report["inputs"], key=lambda name: report["inputs"][name]["mae"])
    report["per_example"] = {"mae": pred_mae.tolist(), "pearson": pred_r.tolist(), "cnn": cnn_index.tolist()}
    return report


@dataclass
class _Run:
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _save_state(path: Path, run: _Run, config: TrainConfig, extra: dict[str, Any]) -> None:
    tensors = {f"G.{k}": v for k, v in run.generator.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in run.discriminator.state_dict().items()})
    opt_g_tensors, opt_g_rest = flatten_optimizer("optG", run.opt_g)
    opt_d_tensors, opt_d_rest = flatten_optimizer("optD", run.opt_d)
    tensors.update(opt_g_tensors)
    tensors.update(opt_d_tensors)
    meta = {"format": TRAIN_STATE_FORMAT, "step": run.step, "config": asdict(config), "optG": opt_g_rest,
            "optD": opt_d_rest, "history": run.history, "generator": run.generator.config, **extra}
    save_tensors(path, tensors, meta)


def _load_state(path: Path, run: _Run, config: TrainConfig) -> None:
    tensors, meta = load_tensors(path, TRAIN_STATE_FORMAT)
    saved = {"augment": [], **meta["config"]}  # states from before augmentation had none
    now = json.loads(json.dumps(asdict(config)))  # tuples as the JSON lists they were saved as
    if saved != now:
        changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        raise ValueError(f"resume: {path} was written with another training config (saved, now): {changed}")
    if meta["generator"] != run.generator.config:
        raise ValueError(f"resume: {path} holds generator {meta['generator']}, not {run.generator.config}")
    run.generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    run.discriminator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    run.opt_g.load_state_dict(unflatten_optimizer("optG", tensors, meta["optG"]))
    run.opt_d.load_state_dict(unflatten_optimizer("optD", tensors, meta["optD"]))
    run.step = meta["step"]
    run.history = meta["history"]


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No parameter of ``module`` requires grad inside; each flag is put back as it was after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _restored_modes(*modules: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def teacher_inputs(dataset, limit: int = 64) -> list[int]:
    """The CGM channels that equal the teacher map exactly on the first ``limit`` examples (a
    generator trained on such data learns to copy that input)."""
    n = min(limit, len(dataset))
    if n == 0:
        return []
    items = [dataset[i] for i in range(n)]
    cgm = torch.stack([item["cgm"] for item in items])
    teacher = torch.stack([item["teacher"].reshape(item["cgm"].shape[1:]) for item in items])
    return [j for j in range(cgm.shape[1]) if torch.equal(cgm[:, j], teacher)]


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def train_generator(
    generator: nn.Module,
    discriminator: nn.Module,
    train_data,
    config: TrainConfig,
    out_dir: str | Path,
    val_data=None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    allow_teacher_input: bool = False,
) -> list[dict[str, Any]]:
    """Train ``generator`` against ``discriminator`` on ``train_data``; returns the history.

    Args:
        generator: from ``fastinterp.generator.networks.build_generator`` (forward(image, cgm) -> map).
        discriminator: from ``fastinterp.generator.networks.build_discriminator`` (forward(image, map) -> logits).
        train_data / val_data: map-style datasets of dicts with "image" (3, S, S), "cgm" (K, S, S)
            and "teacher" (S, S) or (1, S, S) tensors.
        out_dir: receives ``train_state.safetensors`` (resumable), ``generator.safetensors`` and
            ``history.json``; only rank 0 writes.
        resume: continue from ``out_dir/train_state.safetensors`` if it exists.
        metadata: facts stored in the generator checkpoint, over what the training set records
            itself (``datasets.reader.provenance``: dataset, CNNs, representation, teacher,
            preprocess). A dataset that is not an ``ExplanationDataset`` needs at least
            ``{"representation": {...}}``: no checkpoint is written that ``compile`` cannot read.
        stop_after: stop (with a saved state) after this many steps of this call: for tests.
        allow_teacher_input: train even if a CGM channel equals the teacher (checked on the
            first 64 examples; refused by default: the generator would learn to copy it).
    """
    out_dir = Path(out_dir)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size: {config.batch_size} does not split evenly over {world} processes")
    recorded = {**(provenance(train_data) or {}), **(metadata or {})}
    if "representation" not in recorded:
        raise ValueError("metadata: train_data is not built by fastinterp.build_dataset (an ExplanationDataset), so "
                         "the representation its CGMs were made with is unknown; pass metadata={'representation': "
                         "{...}} (fields of fastinterp.maps.options.FIELDS), or compile could not use the generator")
    metadata = recorded
    copies = teacher_inputs(train_data)
    if copies and not allow_teacher_input:
        raise ValueError(
            f"train_data: CGM {copies[0]} equals the teacher map on every example checked, so the generator "
            "would learn to copy that input; rebuild the data with order='first_to_last' and teacher='last' "
            "(fastinterp build-dataset's default), or pass allow_teacher_input=True (--allow-teacher-input)")
    device = next(generator.parameters()).device
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    from tqdm import tqdm

    # the caller gets its modes and RNG state back, also after an exception
    with _restored_modes(generator, discriminator), torch.random.fork_rng(devices=rng_devices):
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
        run = _Run(generator, discriminator, opt_g, opt_d)
        state_path = out_dir / "train_state.safetensors"
        if resume and state_path.exists():
            _load_state(state_path, run, config)

        g_train, d_train = generator, discriminator
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            g_train, d_train = DDP(generator), DDP(discriminator)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
        generator.train()
        discriminator.train()
        per_rank = config.batch_size // world
        last = config.steps if stop_after is None else min(config.steps, run.step + stop_after)
        bar = tqdm(total=config.steps, initial=run.step, disable=not progress or rank != 0, desc="train", unit="step")
        started = time.perf_counter()
        while run.step < last:
            step = run.step
            torch.manual_seed(config.seed * 1_000_003 + step)  # inside fork_rng: the caller's RNG is untouched
            indices = batch_indices(step, config.batch_size, len(train_data), config.seed)
            batch = _collate(train_data, indices[rank * per_rank : (rank + 1) * per_rank], device)
            batch = augment_batch(batch, config.augment, config.seed * 1_000_003 + step,
                                  rows=slice(rank * per_rank, (rank + 1) * per_rank))
            image, cgm, teacher = batch["image"], batch["cgm"], batch["teacher"]
            adversarial = not (config.strategy == "l1-warmup" and step < config.warmup_steps)
            update_d = adversarial and (config.strategy != "seed" or step % config.d_every == 0)

            with autocast:
                fake = g_train(image, cgm)
            loss_d = torch.zeros((), device=device)
            if update_d:  # real and fake in one forward (one DDP reduction per backward)
                with autocast:
                    logits = d_train(torch.cat([image, image]), torch.cat([teacher, fake.detach()]))
                    real_logits, fake_logits = logits.float().chunk(2)
                    loss_d = 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()

            with autocast:
                l1 = (fake.float() - teacher.float()).abs().mean()
                loss_g = config.l1_weight * l1
                gan = torch.zeros((), device=device)
                if adversarial:  # through the bare discriminator: its gradients are not needed
                    with _frozen(discriminator):
                        gan = _bce(discriminator(image, fake).float(), True)
                    loss_g = loss_g + gan
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            run.step += 1

            record = {"step": run.step, "loss_d": loss_d.item(), "loss_gan": gan.item(), "l1": l1.item()}
            if val_data is not None and (run.step % config.val_every == 0 or run.step == config.steps):
                record.update({f"val_{k}": v for k, v in dataset_fidelity(generator, val_data).items()})
            if run.step % config.val_every == 0 or run.step == config.steps or "val_mae" in record:
                run.history.append(record)
            bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "step"})
            bar.update(1)
            if rank == 0 and (run.step % config.checkpoint_every == 0 or run.step == last):
                _save_state(state_path, run, config, {"elapsed_s": time.perf_counter() - started})
        bar.close()
        if rank == 0:
            save_generator(out_dir / "generator.safetensors", generator, training=asdict(config),
                           steps_done=run.step, **(metadata or {}))
            (out_dir / "history.json").write_text(json.dumps(run.history, indent=1))
        return run.history
