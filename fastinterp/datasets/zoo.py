"""A zoo of CNNs to explain: torchvision architectures (random init, no downloads) adapted to small
inputs, trained on the synthetic datasets of :mod:`fastinterp.datasets.images` in minutes on a CPU, saved as
safetensors (never pickle) with JSON metadata.

Every zoo model takes images in [0, 1]: ImageNet normalisation is its first module
(``normalize``), so explainers and datasets never normalise. Below 128 px the stems are adapted so
that the total stride is 16 (last conv map 4x4 at 64x64):

- resnet18 (20 convs): stem 3x3 stride-1 conv (was 7x7 stride 2), max-pool kept.
- vgg13_bn (10 convs): last max-pool dropped; always global average pool + Linear(512, C).
- mobilenet_v3_small (52 convs): stem stride 1 (was 2); always BatchNorm momentum 0.1 (was 0.01,
  which lags far behind the weights in a run of minutes).
- densenet121 (120 convs): stem 3x3 stride-1 conv (was 7x7 stride 2), max-pool kept.
- efficientnet_b0 (81 convs, not in the default zoo: learns too slowly per image for minutes of
  CPU): stem stride 1 (was 2); always classifier init N(0, 0.01) (was U(+-1/sqrt(C))).
- shufflenet_v2_x0_5 (56 convs; channel split, concatenation and channel shuffle, no
  squeeze-excitation): stem conv stride 1 (was 2), max-pool kept.
- regnet_x_400mf (71 convs; grouped 3x3 convs of group width 16 in residual bottlenecks): stem
  stride 1 (was 2); always the last BatchNorm of each residual branch zero-initialised (was 1: with
  it, 20,480 images reached 59% test accuracy).
- mnasnet0_5 (52 convs; inverted residuals with 5x5 depthwise convs, no squeeze-excitation): stem
  stride 1 (was 2); always BatchNorm momentum 0.1 (was 0.0003). Its recipe below is not yet one
  that trains: on digits it reached 19.3% test accuracy (experiments/NOTES.md, outcome 8).

(vgg11_bn has only 8 convs, too few for K = 8 cumulative maps, hence vgg13_bn.) The conv counts
include the 1x1 convs of squeeze-excitation blocks, which run on 1x1 maps.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from fastinterp._version import __version__
from fastinterp._core.hashing import weights_sha256
from fastinterp._core.io import check_state_fits, load_tensors, save_tensors
from fastinterp.maps.preprocess import Normalize
from fastinterp.datasets.images import DATASETS, SyntheticImages, num_classes as dataset_classes

__all__ = [
    "ARCHS",
    "CNN_FORMAT",
    "DEFAULT_ZOO",
    "FAMILIES",
    "Normalize",
    "RECIPES",
    "ZooCNN",
    "build_cnn",
    "STORED_DTYPES",
    "accuracy",
    "load_cnn",
    "save_cnn",
    "train_cnn",
]

CNN_FORMAT = "fastinterp-cnn/1"
ARCHS = ("resnet18", "vgg13_bn", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "shufflenet_v2_x0_5",
         "regnet_x_400mf", "mnasnet0_5")
DEFAULT_ZOO = ("resnet18", "vgg13_bn", "mobilenet_v3_small", "densenet121", "shufflenet_v2_x0_5", "regnet_x_400mf")
# the architecture family of each arch: leave-one-family-out holds out all archs of one family
FAMILIES = {"resnet18": "resnet", "vgg13_bn": "vgg", "mobilenet_v3_small": "mobilenet",
            "efficientnet_b0": "efficientnet", "densenet121": "densenet", "shufflenet_v2_x0_5": "shufflenet",
            "regnet_x_400mf": "regnet", "mnasnet0_5": "mnasnet"}
SMALL_INPUT = 128  # below this many pixels the stems are adapted
MIN_INPUT = 32  # total stride 16: a 2x2 last conv map
# Training defaults per architecture: fresh images (one epoch over many), sized so that each
# trains in a few minutes on a 2-core CPU at 64 px; depthwise nets learn more slowly per image
# but run faster.
RECIPES: dict[str, dict[str, Any]] = {
    "resnet18": {"epochs": 1, "train_size": 15360, "batch_size": 32, "lr": 2e-3},
    "vgg13_bn": {"epochs": 1, "train_size": 10240, "batch_size": 32, "lr": 2e-3},
    "mobilenet_v3_small": {"epochs": 1, "train_size": 81920, "batch_size": 32, "lr": 2e-3},
    "efficientnet_b0": {"epochs": 1, "train_size": 16384, "batch_size": 32, "lr": 2e-3},
    "densenet121": {"epochs": 1, "train_size": 12800, "batch_size": 32, "lr": 2e-3},
    "shufflenet_v2_x0_5": {"epochs": 1, "train_size": 81920, "batch_size": 32, "lr": 2e-3},
    "regnet_x_400mf": {"epochs": 1, "train_size": 30720, "batch_size": 32, "lr": 2e-3},
    "mnasnet0_5": {"epochs": 1, "train_size": 61440, "batch_size": 32, "lr": 2e-3},
}
STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class ZooCNN(nn.Module):
    """``normalize`` then a torchvision classifier ``net``: (B, 3, S, S) in [0, 1] -> logits (B, C)."""

    def __init__(self, arch: str, net: nn.Module, num_classes: int, input_size: int):
        super().__init__()
        self.arch, self.num_classes, self.input_size = arch, num_classes, input_size
        self.class_names: tuple[str, ...] | None = None  # set by load_cnn from the checkpoint's metadata
        self.normalize = Normalize()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _check_arch(arch: object) -> str:
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    return arch  # type: ignore[return-value]


def build_cnn(arch: str, num_classes: int, input_size: int = 64) -> ZooCNN:
    """A random-init (``weights=None``) torchvision ``arch`` for ``input_size`` px images in [0, 1].

    Initialisation follows the global torch seed. See the module docstring for the adaptations.
    """
    _check_arch(arch)
    _check_int("num_classes", num_classes, 2)
    _check_int("input_size", input_size, MIN_INPUT)
    small = input_size < SMALL_INPUT
    models = torchvision.models
    if arch == "resnet18":
        net = models.resnet18(weights=None, num_classes=num_classes)
        if small:
            net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    elif arch == "vgg13_bn":
        net = models.vgg13_bn(weights=None, num_classes=num_classes)
        if small:
            assert isinstance(net.features[-1], nn.MaxPool2d)
            net.features = net.features[:-1]
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, num_classes))
        nn.init.normal_(net.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(net.classifier[1].bias)
    elif arch == "mobilenet_v3_small":
        net = models.mobilenet_v3_small(weights=None, num_classes=num_classes)
        for module in net.modules():  # torchvision's 0.01 lags far behind in runs of minutes
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        if small:
            net.features[0][0].stride = (1, 1)
    elif arch == "efficientnet_b0":
        net = models.efficientnet_b0(weights=None, num_classes=num_classes)
        head = net.classifier[1]  # torchvision's uniform(+-1/sqrt(C)) starts at a loss far above chance
        nn.init.normal_(head.weight, 0, 0.01)
        nn.init.zeros_(head.bias)
        if small:
            net.features[0][0].stride = (1, 1)
    elif arch == "densenet121":
        net = models.densenet121(weights=None, num_classes=num_classes)
        if small:
            net.features.conv0 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.features.conv0.weight)
    elif arch == "shufflenet_v2_x0_5":
        net = models.shufflenet_v2_x0_5(weights=None, num_classes=num_classes)
        if small:
            net.conv1[0].stride = (1, 1)
    elif arch == "regnet_x_400mf":
        net = models.regnet_x_400mf(weights=None, num_classes=num_classes)
        for block in net.trunk_output.modules():  # 22 residual blocks: start each as the identity
            if isinstance(block, torchvision.models.regnet.ResBottleneckBlock):
                nn.init.zeros_(block.f.c[1].weight)
        if small:
            net.stem[0].stride = (1, 1)
    else:  # mnasnet0_5
        net = models.mnasnet0_5(weights=None, num_classes=num_classes)
        for module in net.modules():  # torchvision's 0.0003 barely moves in a run of minutes
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        if small:
            net.layers[0].stride = (1, 1)
    return ZooCNN(arch, net, num_classes, input_size)


# ----------------------------------------------------------------------------- save / load

def _stored_state(model: ZooCNN, dtype: str) -> dict[str, torch.Tensor]:
    """The state dict as it will be stored: floating tensors cast to ``dtype``."""
    if dtype not in STORED_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(STORED_DTYPES)}, got {dtype!r}")
    target = STORED_DTYPES[dtype]
    return {k: (v.detach().to(target) if v.is_floating_point() else v.detach()).contiguous().cpu()
            for k, v in model.state_dict().items()}


def save_cnn(path: str | Path, model: ZooCNN, metadata: dict[str, Any], dtype: str = "float32") -> Path:
    """Write ``model`` to ``path`` (.safetensors, metadata in its header) and ``path`` .json.

    Floating tensors are stored as ``dtype`` ("float32" or "float16", half the size).
    """
    if not isinstance(model, ZooCNN):
        raise TypeError(f"model: expected a ZooCNN from build_cnn, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path: expected a .safetensors file name, got {path}")
    tensors = _stored_state(model, dtype)
    meta = {**metadata, "format": CNN_FORMAT, "arch": model.arch, "num_classes": model.num_classes,
            "input_size": model.input_size, "stored_dtype": dtype, "weights_sha256": weights_sha256(tensors),
            "fastinterp_version": __version__}
    save_tensors(path, tensors, meta)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(tensors)`` with the model's own per-module state versions (torchvision's
    mnasnet refuses a state dict without them; safetensors stores none)."""
    state = OrderedDict(tensors)
    state._metadata = model.state_dict()._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state)


def load_cnn(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ZooCNN, dict[str, Any]]:
    """Rebuild the CNN saved at ``path`` (.safetensors); returns (float32 model in eval mode, metadata).

    Never unpickles. Raises ``ValueError`` naming the file for a missing, truncated or corrupted
    file (weights are checked against the sha256 in the header), or weights that do not fit the
    architecture the metadata names.
    """
    path = Path(path)
    tensors, meta = load_tensors(path, CNN_FORMAT, argument="path")
    if weights_sha256(tensors) != meta.get("weights_sha256"):
        raise ValueError(f"path: {path} is corrupted: its weights do not match the sha256 in its header")
    try:
        model = build_cnn(meta["arch"], meta["num_classes"], meta["input_size"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"path: {path} names an architecture this version cannot build ({error!r})") from error
    expected = model.state_dict()
    mismatch = check_state_fits(expected, tensors)
    if mismatch:
        raise ValueError(f"path: {path} does not fit a {meta['arch']} with {meta['num_classes']} classes at "
                         f"{meta['input_size']} px: {mismatch}")
    _load_state(model, {k: v.to(expected[k].dtype) for k, v in tensors.items()})
    classes = meta.get("classes")
    if isinstance(classes, list) and len(classes) == meta["num_classes"]:
        model.class_names = tuple(map(str, classes))
    return model.to(map_location).eval(), meta


# ----------------------------------------------------------------------------- training

@torch.no_grad()
def accuracy(model: nn.Module, dataset: SyntheticImages, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode, state restored) on every item of ``dataset``."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(dataset), batch_size):
            images, labels, _ = dataset.batch(range(start, min(start + batch_size, len(dataset))))
            correct += int((model(images).argmax(1) == labels).sum())
    finally:
        model.train(was_training)
    return correct / max(len(dataset), 1)


def train_cnn(
    arch: str,
    dataset: str = "digits",
    input_size: int = 64,
    epochs: int | None = None,
    train_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    test_size: int = 2000,
    seed: int = 0,
    out: str | Path | None = None,
    dtype: str = "float16",
    progress: bool = True,
) -> tuple[ZooCNN, dict[str, Any]]:
    """Train :func:`build_cnn` ``arch`` on a synthetic ``dataset`` ("digits" or "shapes").

    Each epoch visits the ``train_size`` training images (split "train", ``seed``) once in a
    seeded random order; AdamW with a one-cycle learning-rate schedule (peak ``lr``),
    cross-entropy. ``epochs``, ``train_size``, ``batch_size`` and ``lr`` left None come from
    ``RECIPES[arch]`` (a few minutes on a 2-core CPU at 64 px). Test
    accuracy is measured on ``test_size`` images of split "test" with the weights as stored
    (rounded to ``dtype``). With ``out``, writes ``<out>/<arch>_<dataset>.safetensors`` + ``.json``.
    Deterministic in ``seed`` for a given torch build and thread count.

    Returns (model in eval mode, metadata: arch, dataset, input size, classes, test accuracy,
    train config, seconds, version).
    """
    from tqdm.auto import tqdm

    _check_arch(arch)
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {sorted(DATASETS)}, got {dataset!r}")
    recipe = RECIPES[arch]
    epochs = recipe["epochs"] if epochs is None else epochs
    train_size = recipe["train_size"] if train_size is None else train_size
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    lr = recipe["lr"] if lr is None else lr
    for name, value, minimum in (("epochs", epochs, 1), ("train_size", train_size, 1),
                                 ("batch_size", batch_size, 1), ("test_size", test_size, 1),
                                 ("seed", seed, 0), ("input_size", input_size, MIN_INPUT)):
        _check_int(name, value, minimum)
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    if dtype not in STORED_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(STORED_DTYPES)}, got {dtype!r}")

    classes = dataset_classes(dataset)
    torch.manual_seed(seed)
    model = build_cnn(arch, classes, input_size)
    train = SyntheticImages(dataset, train_size, input_size, seed=seed, split="train")
    test = SyntheticImages(dataset, test_size, input_size, seed=seed, split="test")
    if train_size < batch_size:
        raise ValueError(f"train_size: expected >= batch_size ({batch_size}), got {train_size}")
    steps_per_epoch = train_size // batch_size  # the incomplete last batch is dropped
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15)
    order_rng = np.random.default_rng([seed, 7])
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{arch} on {dataset}", disable=not progress, unit="step")
    losses = []
    for _ in range(epochs):
        order = order_rng.permutation(train_size)
        running, count = 0.0, 0
        for step in range(steps_per_epoch):
            images, labels, _ = train.batch(order[step * batch_size:(step + 1) * batch_size].tolist())
            loss = nn.functional.cross_entropy(model(images), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running, count = running + loss.item(), count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{running / count:.3f}")
        losses.append(round(running / count, 5))
    bar.close()
    train_seconds = time.perf_counter() - start
    model.eval()
    # measure the weights as they will be stored
    _load_state(model, {k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in _stored_state(model, dtype).items()})
    test_accuracy = accuracy(model, test)
    metadata = {
        "arch": arch, "dataset": dataset, "input_size": input_size, "num_classes": classes,
        "classes": list(DATASETS[dataset].classes), "test_accuracy": test_accuracy, "test_size": test_size,
        "test_split": "test", "train_seconds": round(train_seconds, 1), "epoch_losses": losses,
        "conv_layers": sum(isinstance(m, nn.Conv2d) for m in model.modules()),
        "train_config": {"epochs": epochs, "train_size": train_size, "batch_size": batch_size, "lr": lr,
                         "weight_decay": weight_decay, "optimiser": "AdamW", "schedule": "OneCycleLR(pct_start=0.15)",
                         "seed": seed, "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    if out is not None:
        save_cnn(Path(out) / f"{arch}_{dataset}.safetensors", model, metadata, dtype=dtype)
    return model, {**metadata, "format": CNN_FORMAT, "stored_dtype": dtype, "fastinterp_version": __version__}
