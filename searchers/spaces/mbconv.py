"""The Single-Path NAS search space (paper Fig. 3; layer table in ../shared/data/README.md).

Macro-architecture (MobileNetV2 backbone, as in the public code):
  stem conv3x3/2 -> 32, fixed layer 0 (MBConv k3 e1 -> 16),
  five stages of four searchable MBConv layers (24, 40, 80, 96, 192 channels; first-layer strides
  2, 2, 2, 1, 2), fixed layer 21 (MBConv k3 e6 -> 320), head conv1x1 -> 1280, pool, dropout, classifier.
Each searchable layer picks kernel {3, 5} x expansion {3, 6} x SE ratio {0, 0.25, 0.5}, or skip
(except the first layer of a stage, which changes shape). The layer numbering (0-21) is that of the
device profiles.

Small-input mode (32x32 images): stem stride 2 is kept and the first stage's stride becomes 1, so the
last feature map is 2x2 instead of 1x1. Layer decisions are unchanged, so a searched architecture's
device runtime is still that of its 224x224 deployment, which is what the profile measured.

Architectures are data: `MBConvArch` is a frozen dataclass with a readable string form,
e.g. `mbconv w1.0 i32 n10 | k5e6se0.5 skip k3e3 k3e6se0.25 | ...` (one token per searchable layer,
stages separated by `|`), parsed back by `MBConvArch.parse`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UsageError

KERNELS = (3, 5)
EXPANSIONS = (3, 6)
SE_RATIOS = (0.0, 0.25, 0.5)
STEM_CHANNELS = 32
FIRST_CHANNELS = 16          # fixed layer 0
STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))  # (channels, stride of the first layer)
LAYERS_PER_STAGE = 4
LAST_CHANNELS = 320          # fixed layer 21
HEAD_CHANNELS = 1280
NUM_SEARCHABLE = len(STAGES) * LAYERS_PER_STAGE  # 20, profile layers 1..20
LAYER_GRAMMAR = "k{3,5}e{3,6} with an optional se0.25 or se0.5, or skip (e.g. k5e6se0.25, k3e3, skip)"
GRAMMAR = (f"an mbconv architecture is 'mbconv w<width> i<image size> n<classes> | L L L L | ... ', "
           f"{len(STAGES)} stages of {LAYERS_PER_STAGE} layers L separated by '|', a layer L being {LAYER_GRAMMAR}, "
           f"skip never first in a stage")


def round_channels(c: float, width: float, divisor: int = 8) -> int:
    """Width-multiplied channel count rounded to a multiple of 8, as MobileNetV2 / timm do."""
    if width == 1.0:
        return int(c)
    c = c * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * c else new


def se_channels(in_channels: int, ratio: float) -> int:
    """Squeeze width: SE ratio times the layer's input channels (MnasNet / public code convention)."""
    return max(1, int(in_channels * ratio)) if ratio > 0 else 0


@dataclass(frozen=True)
class Block:
    """One searchable layer's decision: an MBConv-k-e-se, or skip (the layer is dropped)."""

    kernel: int = 5
    expansion: int = 6
    se: float = 0.5
    skip: bool = False

    def __post_init__(self):
        if not self.skip:
            assert self.kernel in KERNELS and self.expansion in EXPANSIONS and self.se in SE_RATIOS, self

    def __str__(self) -> str:
        if self.skip:
            return "skip"
        se = f"se{self.se:g}" if self.se else ""
        return f"k{self.kernel}e{self.expansion}{se}"

    @classmethod
    def parse(cls, token: str) -> "Block":
        if token == "skip":
            return cls(skip=True)
        m = re.fullmatch(r"k(\d+)e(\d+)(?:se(\d+(?:\.\d+)?))?", token)
        # Check the values here, not only the shape: __post_init__'s assert is for code, not for users.
        if not m or int(m[1]) not in KERNELS or int(m[2]) not in EXPANSIONS or float(m[3] or 0) not in SE_RATIOS:
            raise UsageError(f"bad layer token {token!r}; a layer is {LAYER_GRAMMAR}")
        return cls(int(m[1]), int(m[2]), float(m[3] or 0.0))


@dataclass(frozen=True)
class LayerSpec:
    """The fixed geometry of one MBConv position (input/output channels, stride, input size)."""

    index: int          # profile layer number, 0..21
    in_channels: int
    out_channels: int
    stride: int
    searchable: bool
    skippable: bool


@dataclass(frozen=True)
class MBConvArch:
    blocks: tuple[Block, ...]
    width: float = 1.0
    image_size: int = 32
    num_classes: int = 10
    dropout: float = 0.2

    space = "mbconv"

    def __post_init__(self):
        if len(self.blocks) != NUM_SEARCHABLE:
            raise ValueError(f"need {NUM_SEARCHABLE} blocks, got {len(self.blocks)}")
        for spec, b in zip(layer_specs(self.width, self.image_size)[1:-1], self.blocks):
            if b.skip and not spec.skippable:
                raise ValueError(f"layer {spec.index} is the first of its stage and cannot be skipped")

    @property
    def small_input(self) -> bool:
        return self.image_size < 128

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @classmethod
    def largest(cls, **kw) -> "MBConvArch":
        return cls(tuple(Block(5, 6, 0.5) for _ in range(NUM_SEARCHABLE)), **kw)

    @classmethod
    def smallest(cls, **kw) -> "MBConvArch":
        specs = layer_specs(kw.get("width", 1.0), kw.get("image_size", 32))[1:-1]
        return cls(tuple(Block(3, 3, 0.0, skip=s.skippable) for s in specs), **kw)

    def __str__(self) -> str:
        stages = [" ".join(map(str, self.blocks[i:i + LAYERS_PER_STAGE]))
                  for i in range(0, NUM_SEARCHABLE, LAYERS_PER_STAGE)]
        return f"mbconv w{self.width:g} i{self.image_size} n{self.num_classes} | " + " | ".join(stages)

    @classmethod
    def parse(cls, s: str) -> "MBConvArch":
        """The architecture of a string such as `str(arch)` writes; a bad one raises a UsageError (one line)
        naming the first bad part and the grammar, so a hand-typed string is easy to fix."""
        head, *stages = [p.strip() for p in s.split("|")]
        m = re.fullmatch(r"mbconv +w(\d+(?:\.\d+)?) +i(\d+) +n(\d+)", head)
        if not m or float(m[1]) <= 0 or int(m[2]) < 1 or int(m[3]) < 1:
            raise UsageError(f"bad head {head!r}; {GRAMMAR}")
        if len(stages) != len(STAGES):
            raise UsageError(f"{len(stages)} stages after the head, need {len(STAGES)}; {GRAMMAR}")
        blocks = []
        for si, stage in enumerate(stages, 1):
            tokens = stage.split()
            if len(tokens) != LAYERS_PER_STAGE:
                raise UsageError(f"stage {si} {stage!r} has {len(tokens)} layers, need {LAYERS_PER_STAGE}; {GRAMMAR}")
            for j, t in enumerate(tokens):
                layer = len(blocks) + 1  # the profile's numbering, 1..20
                if t == "skip" and j == 0:
                    raise UsageError(f"bad layer token 'skip' at layer {layer}: the first layer of stage {si} "
                                     f"changes the shape and cannot be skipped")
                try:
                    blocks.append(Block.parse(t))
                except UsageError as err:
                    raise UsageError(f"layer {layer}: {err}") from None
        return cls(tuple(blocks), width=float(m[1]), image_size=int(m[2]), num_classes=int(m[3]))

    def build(self) -> "ChildNet":
        return ChildNet(self)


def stem_stride(image_size: int) -> int:
    return 2


def layer_specs(width: float = 1.0, image_size: int = 32) -> list[LayerSpec]:
    """The 22 MBConv positions (profile layers 0..21) with their channels and strides."""
    small = image_size < 128
    c_in = round_channels(STEM_CHANNELS, width)
    c0 = round_channels(FIRST_CHANNELS, width)
    specs = [LayerSpec(0, c_in, c0, 1, False, False)]
    c_in, idx = c0, 1
    for si, (c, s) in enumerate(STAGES):
        c_out = round_channels(c, width)
        for j in range(LAYERS_PER_STAGE):
            stride = s if j == 0 else 1
            if small and si == 0:
                stride = 1  # small-input mode: keep the last map >= 2x2 (see module doc)
            specs.append(LayerSpec(idx, c_in, c_out, stride, True, j > 0))
            c_in, idx = c_out, idx + 1
    specs.append(LayerSpec(21, c_in, round_channels(LAST_CHANNELS, width), 1, False, False))
    return specs


def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def zero_init_residual(project: nn.Sequential) -> None:
    """Start a residual branch at zero (BN gamma = 0, as in Goyal et al. 2017): a 22-layer MBConv net
    then trains from the first steps, which matters for a few-epoch search on a small task."""
    nn.init.zeros_(project[1].weight)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(s))))


class MBConv(nn.Module):
    """A compact inverted-bottleneck layer: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: int, stride: int, se: float = 0.0):
        super().__init__()
        mid = c_in * expansion
        self.expand = conv_bn(c_in, mid) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.se = SqueezeExcite(mid, se_channels(c_in, se)) if se else nn.Identity()
        self.project = conv_bn(mid, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out
        if self.residual:
            zero_init_residual(self.project)

    def branch(self, x):
        """The layer's convolutions alone, without its residual (Eq. 6's conv(x, w) term)."""
        return self.project(self.se(self.depthwise(self.expand(x))))

    def forward(self, x):
        y = self.branch(x)
        return x + y if self.residual else y


class Head(nn.Module):
    def __init__(self, c_in: int, width: float, num_classes: int, dropout: float):
        super().__init__()
        c_head = round_channels(HEAD_CHANNELS, max(width, 1.0))
        self.conv = conv_bn(c_in, c_head)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_head, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.conv(x).mean((2, 3))))


class ChildNet(nn.Module):
    """The derived compact network of an MBConvArch: skipped layers are absent, not zeroed."""

    def __init__(self, arch: MBConvArch):
        super().__init__()
        specs = layer_specs(arch.width, arch.image_size)
        self.stem = conv_bn(3, specs[0].in_channels, 3, stem_stride(arch.image_size))
        layers = {"0": MBConv(specs[0].in_channels, specs[0].out_channels, 3, 1, 1)}
        for spec, b in zip(specs[1:-1], arch.blocks):
            if not b.skip:
                layers[str(spec.index)] = MBConv(spec.in_channels, spec.out_channels, b.kernel, b.expansion,
                                                 spec.stride, b.se)
        last = specs[-1]
        layers["21"] = MBConv(last.in_channels, last.out_channels, 3, 6, 1)
        self.layers = nn.ModuleDict(layers)
        self.head = Head(last.out_channels, arch.width, arch.num_classes, arch.dropout)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers.values():
            x = layer(x)
        return self.head(x)


def feature_sizes(image_size: int = 32, width: float = 1.0) -> list[int]:
    """Input spatial size of each of the 22 layers (square maps)."""
    size = math.ceil(image_size / stem_stride(image_size))
    out = []
    for spec in layer_specs(width, image_size):
        out.append(size)
        size = math.ceil(size / spec.stride)
    return out
