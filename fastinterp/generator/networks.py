"""Explanation generators and the conditional discriminator.

    image (B, 3, S, S) + CGMs (B, K, S, S) -> generator -> explanation map (B, 1, S, S) in [0, 1]
    (image, map) -> discriminator -> patch logits (B, 1, h, w)

Generators (``build_generator(kind, k, size, **opts)``):
- "gsft": the paper's global SFT net: one condition from all K CGMs, shared by every block.
- "lsft": the paper's local/progressive SFT net: one condition per CGM, block 2j uses CGM j.
- "fast": ours: a small U-Net with SFT conditioning at every scale, <= 0.5 GFLOP at 64x64.

The paper's generators follow the released Keras code (the README's "paper preset" table lists
what it does and what we changed); the deliberate changes are the output (one channel through a sigmoid: the map itself, not a
jet-coloured RGB picture of it) and a depth-scaled init of the residual convs (see
``_residual_scale``). No generator uses normalisation layers (as in SFT-GAN).

At the defaults (K = 8, S = 64; FLOPs per sample = 2 x MACs of convs, ``count_flops``):
    gsft  1,533,025 parameters  12.48 GFLOP
    lsft    732,513 parameters  11.02 GFLOP
    fast    183,258 parameters   0.34 GFLOP
    discriminator 1,846,465 parameters 0.29 GFLOP

Every built module stores ``module.config`` (JSON types only: kind, k, size and every option with
its default resolved), and ``build_generator(**module.config)`` rebuilds the same architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "GENERATOR_KINDS",
    "ConditionNet",
    "FastGenerator",
    "GSFTGenerator",
    "LSFTGenerator",
    "PatchDiscriminator",
    "SFTLayer",
    "build_discriminator",
    "build_generator",
    "count_flops",
    "count_parameters",
]

GENERATOR_KINDS = ("gsft", "lsft", "fast")

_SLOPE = 0.1  # LeakyReLU slope of the SFT and condition nets (released code, after SFT-GAN)


# ----------------------------------------------------------------------------- argument checks


def _int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _ints(name: str, value: object, min_len: int) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a list of ints, got {value!r}")
    if len(value) < min_len:
        raise ValueError(f"{name}: expected at least {min_len} entries, got {list(value)!r}")
    return [_int(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value


def _resolve(kind: str, opts: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise TypeError(f"{kind}: unknown option(s) {unknown}; expected some of {sorted(defaults)}")
    return {**defaults, **opts}


def _check_inputs(image: object, cgm: object, k: int, size: int, cgm_name: str = "cgm") -> None:
    """Shape checks only (no data-dependent checks), so forward stays exportable."""
    for name, x, channels in (("image", image, 3), (cgm_name, cgm, k)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"{name}: expected shape (B, {channels}, {size}, {size}) for this module "
                f"(built with k={k}, size={size}), got {tuple(x.shape)}"
            )
    if image.shape[0] != cgm.shape[0]:
        raise ValueError(f"image and {cgm_name}: batch sizes differ ({image.shape[0]} vs {cgm.shape[0]})")


# ----------------------------------------------------------------------------- building blocks


class SFTLayer(nn.Module):
    """Spatial Feature Transform: ``x * (scale + 1) + shift`` (Wang et al., SFT-GAN, CVPR 2018).

    scale and shift each come from the condition through their own 1x1 conv stack
    cond -> ``hidden`` -> LeakyReLU(0.1) -> ``channels`` (released code: 32 -> 32 -> 64).
    x: (B, channels, H, W), cond: (B, cond_channels, H, W) -> (B, channels, H, W).
    """

    def __init__(self, channels: int, cond_channels: int = 32, hidden: int = 32):
        super().__init__()
        self.scale = nn.Sequential(nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(_SLOPE),
                                   nn.Conv2d(hidden, channels, 1))
        self.shift = nn.Sequential(nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(_SLOPE),
                                   nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (self.scale(cond) + 1) + self.shift(cond)


class ConditionNet(nn.Module):
    """The released condition network, at full resolution (no downsampling):

    Conv 4x4 -> hidden, three Conv 1x1 at hidden, Conv 3x3 -> out, LeakyReLU(0.1) between.
    The 4x4 conv is padded (1, 2) on each axis, as Keras/TF ``padding="same"`` does, so the output
    is (B, out, S, S) for any S, even or odd. in: (B, in_channels, S, S).
    """

    def __init__(self, in_channels: int, hidden: int = 128, out_channels: int = 32):
        super().__init__()
        act = lambda: nn.LeakyReLU(_SLOPE)  # noqa: E731
        self.net = nn.Sequential(
            nn.ZeroPad2d((1, 2, 1, 2)),  # (left, right, top, bottom): TF "same" for an even kernel
            nn.Conv2d(in_channels, hidden, 4), act(),
            nn.Conv2d(hidden, hidden, 1), act(),
            nn.Conv2d(hidden, hidden, 1), act(),
            nn.Conv2d(hidden, hidden, 1), act(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _residual_scale(blocks: int) -> float:
    """Init scale of the residual convs: min(1, sqrt(4 / blocks)), so that blocks x scale^2 <= 4.

    The released blocks' ReLU branches only add; at PyTorch's default init 32 of them grow the
    features until the output sigmoid saturates (outputs 0 and 1 exactly at init: no gradient).
    Scaling keeps the summed branch variance of a deep net at that of 4 default blocks (in the
    spirit of Fixup / EDSR's residual scaling); nets of <= 4 blocks keep the default init.
    """
    return min(1.0, (4 / blocks) ** 0.5)


class _PaperBlock(nn.Module):
    """Released residual block: ``x + ReLU(conv3x3(SFT(x, cond)))``, or without SFT (plain).

    The conv starts at ``init_scale`` x PyTorch's default init (see :func:`_residual_scale`).
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int, sft: bool = True,
                 init_scale: float = 1.0):
        super().__init__()
        self.sft = SFTLayer(channels, cond_channels, hidden) if sft else None
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(init_scale)
            self.conv.bias.mul_(init_scale)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.sft(x, cond) if self.sft is not None else x
        return x + F.relu(self.conv(y))


class _Generator(nn.Module):
    """Common part: ``config`` and the input checks."""

    config: dict[str, Any]

    def _check(self, image: torch.Tensor, cgm: torch.Tensor) -> None:
        _check_inputs(image, cgm, self.config["k"], self.config["size"])


# ----------------------------------------------------------------------------- the paper's generators


class GSFTGenerator(_Generator):
    """Paper "GSFT": one condition from all K CGMs, shared by every SFT block.

    image -> conv3x3 -> C; ``blocks`` x [x + ReLU(conv3x3(SFT(x, c)))]; SFT; conv3x3; + long skip;
    conv3x3 -> 1; sigmoid. c = ConditionNet(all K CGMs). (B, 3, S, S), (B, K, S, S) -> (B, 1, S, S).
    """

    def __init__(self, k: int, size: int, blocks: int, channels: int, cond_channels: int,
                 cond_hidden: int, sft_hidden: int):
        super().__init__()
        self.condition = ConditionNet(k, cond_hidden, cond_channels)
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            _PaperBlock(channels, cond_channels, sft_hidden, init_scale=_residual_scale(blocks)) for _ in range(blocks)
        )
        self.sft = SFTLayer(channels, cond_channels, sft_hidden)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, cgm: torch.Tensor) -> torch.Tensor:
        self._check(image, cgm)
        cond = self.condition(cgm)
        skip = x = self.stem(image)
        for block in self.blocks:
            x = block(x, cond)
        x = self.conv(self.sft(x, cond)) + skip
        return torch.sigmoid(self.out(x))


class LSFTGenerator(_Generator):
    """Paper "LSFT": a shared ConditionNet applied to each CGM on its own; even block 2m is SFT
    conditioned on CGM m (mod K: the sequence cycles if there are more SFT blocks than CGMs; with
    fewer, the last CGMs condition nothing), odd blocks are plain residual blocks; then conv3x3,
    long skip, conv3x3 -> 1, sigmoid. Default ``blocks = 2K - 1`` (15 for K = 8: every CGM once).
    """

    def __init__(self, k: int, size: int, blocks: int, channels: int, cond_channels: int,
                 cond_hidden: int, sft_hidden: int):
        super().__init__()
        self.k = k
        self.condition = ConditionNet(1, cond_hidden, cond_channels)
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            _PaperBlock(channels, cond_channels, sft_hidden, sft=(i % 2 == 0), init_scale=_residual_scale(blocks))
            for i in range(blocks)
        )
        self.used = min(k, (blocks + 1) // 2)  # CGMs that condition some block
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, cgm: torch.Tensor) -> torch.Tensor:
        self._check(image, cgm)
        b, _, h, w = cgm.shape
        used = cgm[:, : self.used]
        # all used CGMs through the shared condition net in one call: (B*U, 1, S, S)
        cond = self.condition(used.reshape(b * self.used, 1, h, w)).reshape(b, self.used, -1, h, w)
        skip = x = self.stem(image)
        for i, block in enumerate(self.blocks):
            x = block(x, cond[:, (i // 2) % self.k]) if i % 2 == 0 else block(x)
        x = self.conv(x) + skip
        return torch.sigmoid(self.out(x))


# ----------------------------------------------------------------------------- ours


class _FastBlock(nn.Module):
    """Pre-activation SFT residual block: ``x + conv3x3(LeakyReLU(SFT(x, cond)))``."""

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.sft = SFTLayer(channels, cond_channels, cond_channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.leaky_relu(self.sft(x, cond), _SLOPE))


def _conv_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(_SLOPE))


class FastGenerator(_Generator):
    """Ours: a U-Net with SFT conditioning at every scale, built for latency.

    Scales s = 0..D (D = len(channels) - 1) at S / 2**s with channels[s]. At each scale a light
    condition net (conv3x3 K -> c, conv1x1 c -> c) sees the CGMs average-pooled to that scale; its
    output drives one SFT block per scale in the encoder and decoder (``blocks`` at the bottom).
    stem: conv3x3 on concat(image, CGMs); down: stride-2 conv3x3; up: nearest x2 + conv3x3, concat
    skip, conv3x3. Output: sigmoid(conv3x3(features) + conv1x1(CGMs)) -- the 1x1 path
    (``cgm_skip``) lets the map start from a learned mix of the CGMs. With ``normalize_cgm`` each
    CGM is first min-max scaled to [0, 1] per image (the CNN families of the zoo keep 0.3-0.65 of
    the first CGM's peak in the deep ones), so the output does not change when a CGM is scaled or
    shifted. Static control flow and standard ops only (ONNX-exportable). S must be divisible by
    2**D.
    """

    def __init__(self, k: int, size: int, channels: list[int], cond_channels: int, blocks: int,
                 cgm_skip: bool, normalize_cgm: bool = False):
        super().__init__()
        depth = len(channels) - 1
        self.depth = depth
        self.normalize_cgm = normalize_cgm
        self.conditions = nn.ModuleList(
            nn.Sequential(nn.Conv2d(k, cond_channels, 3, padding=1), nn.LeakyReLU(_SLOPE),
                          nn.Conv2d(cond_channels, cond_channels, 1), nn.LeakyReLU(_SLOPE))
            for _ in range(depth + 1)
        )
        self.stem = _conv_act(3 + k, channels[0])
        self.encoder = nn.ModuleList(_FastBlock(channels[s], cond_channels) for s in range(depth))
        self.down = nn.ModuleList(_conv_act(channels[s], channels[s + 1], stride=2) for s in range(depth))
        self.bottom = nn.ModuleList(_FastBlock(channels[depth], cond_channels) for _ in range(blocks))
        self.up = nn.ModuleList(_conv_act(channels[s + 1], channels[s]) for s in range(depth))
        self.fuse = nn.ModuleList(_conv_act(2 * channels[s], channels[s]) for s in range(depth))
        self.decoder = nn.ModuleList(_FastBlock(channels[s], cond_channels) for s in range(depth))
        self.head = nn.Conv2d(channels[0], 1, 3, padding=1)
        self.cgm_skip = nn.Conv2d(k, 1, 1) if cgm_skip else None

    def forward(self, image: torch.Tensor, cgm: torch.Tensor) -> torch.Tensor:
        self._check(image, cgm)
        if self.normalize_cgm:  # each CGM min-max scaled to [0, 1]: CNNs differ in how much contrast they keep
            low = cgm.amin(dim=(2, 3), keepdim=True)
            cgm = (cgm - low) / (cgm.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-6)
        conds = [self.conditions[0](cgm)]
        for s in range(1, self.depth + 1):
            conds.append(self.conditions[s](F.avg_pool2d(cgm, 2**s)))
        x = self.stem(torch.cat([image, cgm], dim=1))
        skips = []
        for s in range(self.depth):
            x = self.encoder[s](x, conds[s])
            skips.append(x)
            x = self.down[s](x)
        for block in self.bottom:
            x = block(x, conds[self.depth])
        for s in reversed(range(self.depth)):
            x = self.up[s](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            x = self.fuse[s](torch.cat([x, skips[s]], dim=1))
            x = self.decoder[s](x, conds[s])
        logits = self.head(x)
        if self.cgm_skip is not None:
            logits = logits + self.cgm_skip(cgm)
        return torch.sigmoid(logits)


# ----------------------------------------------------------------------------- factories


def _paper_defaults(kind: str, k: int) -> dict[str, Any]:
    return {
        "blocks": 32 if kind == "gsft" else 2 * k - 1,  # released: 32 GSFT blocks, 15 LSFT (K = 8)
        "channels": 64,
        "cond_channels": 32,
        "cond_hidden": 128,
        "sft_hidden": 32,
    }


_FAST_DEFAULTS: dict[str, Any] = {"channels": [16, 32, 64], "cond_channels": 16, "blocks": 2, "cgm_skip": True,
                                  "normalize_cgm": False}


def build_generator(kind: str, k: int = 8, size: int = 64, **opts: Any) -> nn.Module:
    """A generator ``forward(image (B, 3, S, S), cgm (B, K, S, S)) -> map (B, 1, S, S)`` in [0, 1].

    Args:
        kind: one of ``GENERATOR_KINDS``: "gsft", "lsft" (the paper's) or "fast" (ours).
        k: number of CGMs K; size: the square input size S (the forward checks both).
        opts: "gsft"/"lsft": blocks (32 / 2K-1), channels (64), cond_channels (32),
            cond_hidden (128), sft_hidden (32). "fast": channels ([16, 32, 64]: one scale each),
            cond_channels (16), blocks (2, at the coarsest scale), cgm_skip (True), normalize_cgm
            (False: each CGM min-max scaled per image first).
    Returns the module with ``config`` = {kind, k, size, **all options}; ``build_generator(**config)``
    rebuilds it.
    """
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"kind: expected one of {GENERATOR_KINDS}, got {kind!r}")
    k = _int("k", k)
    size = _int("size", size)
    if kind == "fast":
        o = _resolve(kind, opts, _FAST_DEFAULTS)
        o["channels"] = _ints("channels", o["channels"], min_len=2)
        o["cond_channels"] = _int("cond_channels", o["cond_channels"])
        o["blocks"] = _int("blocks", o["blocks"], minimum=0)
        o["cgm_skip"] = _bool("cgm_skip", o["cgm_skip"])
        o["normalize_cgm"] = _bool("normalize_cgm", o["normalize_cgm"])
        factor = 2 ** (len(o["channels"]) - 1)
        if size % factor:
            raise ValueError(
                f"size: the fast generator with {len(o['channels'])} scales needs S divisible by {factor}, got {size}"
            )
        module: _Generator = FastGenerator(k, size, **o)
    else:
        o = _resolve(kind, opts, _paper_defaults(kind, k))
        for name in o:
            o[name] = _int(name, o[name])
        module = (GSFTGenerator if kind == "gsft" else LSFTGenerator)(k, size, **o)
    module.config = {"kind": kind, "k": k, "size": size, **o}
    return module


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (pix2pix, Isola et al. 2017) sized for 64x64 inputs.

    concat(image, map[, CGMs]) -> conv4x4/2 (no norm) -> conv4x4/2 + IN -> ... (one stride-2 conv
    per entry of channels[:-1]) -> conv3x3/1 + IN at channels[-1] -> conv3x3/1 -> 1: logits
    (B, 1, S / 2**n, S / 2**n), no sigmoid (train with BCE-with-logits). LeakyReLU 0.2.
    Default (64, 128, 256 | 512): 8x8 patches with a 54x54-pixel receptive field at S = 64.

    InstanceNorm, not BatchNorm: the training loop scores real and fake pairs in one batch, and
    BatchNorm would let the statistics of the batch (not each pair) decide; InstanceNorm also has
    no running statistics (same in train and eval), works at batch 1 and keeps DDP runs equal to
    single-process ones. (The released discriminator ended in a softmax over a single unit, so its
    output was always 1 and it never learned; this one does.)
    """

    def __init__(self, k: int, size: int, channels: list[int]):
        super().__init__()
        self.k = k
        self.size = size
        layers: list[nn.Module] = []
        cin = 3 + 1 + k
        for i, cout in enumerate(channels[:-1]):
            layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers += [nn.Conv2d(cin, channels[-1], 3, padding=1), nn.InstanceNorm2d(channels[-1], affine=True),
                   nn.LeakyReLU(0.2), nn.Conv2d(channels[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, map: torch.Tensor, cgm: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(image, map, 1, self.size, cgm_name="map")
        parts = [image, map]
        if self.k:
            if cgm is None:
                raise ValueError(f"cgm: this discriminator was built with k={self.k} and needs the CGMs")
            _check_inputs(image, cgm, self.k, self.size)
            parts.append(cgm)
        elif cgm is not None:
            raise ValueError("cgm: this discriminator was built with k=0 and sees only (image, map)")
        return self.net(torch.cat(parts, dim=1))


def build_discriminator(k: int = 0, size: int = 64, **opts: Any) -> nn.Module:
    """Conditional PatchGAN ``forward(image (B, 3, S, S), map (B, 1, S, S)) -> logits (B, 1, h, w)``.

    Args:
        k: CGM channels the discriminator also sees (``forward(image, map, cgm)``); 0 (default):
            it judges (image, map) pairs only, as pix2pix's conditional discriminator does -- the
            CGMs are the generator's input, and a discriminator that sees them can lean on them
            instead of the image.
        size: the square input size S.
        opts: channels ([64, 128, 256, 512]): a stride-2 conv per entry but the last, which is the
            width of the stride-1 conv. The final feature map must be >= 2x2 (InstanceNorm).
    """
    k = _int("k", k, minimum=0)
    size = _int("size", size)
    o = _resolve("discriminator", opts, {"channels": [64, 128, 256, 512]})
    o["channels"] = _ints("channels", o["channels"], min_len=2)
    final = size // 2 ** (len(o["channels"]) - 1)
    if final < 2:
        raise ValueError(
            f"size: {size} is too small for {len(o['channels']) - 1} stride-2 convs (final map {final}x{final}, "
            "InstanceNorm needs >= 2x2); use fewer channels entries"
        )
    module = PatchDiscriminator(k, size, **o)
    module.config = {"k": k, "size": size, **o}
    return module


# ----------------------------------------------------------------------------- measuring


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``module(*inputs)`` call, as ``torch.utils.flop_counter`` counts them
    (2 x multiply-accumulates of convs and matmuls; element-wise ops are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())
