"""Analytic multiply-accumulate (MAC) and parameter counts of MBConv networks.

"FLOPs" in the NAS literature (MobileNetV2's 300M, Single-Path NAS's tables) means multiply-adds of
the convolution and linear layers; so here: BN, activations, pooling, residual adds and the SE
gating multiply cost nothing, biases add parameters but no MACs. Parameters count every trainable
tensor, BN's affine weight and bias included (running statistics are buffers, not parameters).

A network is described generically (`NetDesc`: stem conv, a list of `MBConvDesc`, head 1x1 conv,
classifier), so any MobileNetV2-style network can be counted, torchvision's mobilenet_v2 included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..spaces.mbconv import HEAD_CHANNELS, MBConvArch, feature_sizes, layer_specs, round_channels, se_channels, \
    stem_stride


@dataclass(frozen=True)
class MBConvDesc:
    """One inverted-bottleneck layer: [expand 1x1] -> depthwise kxk/stride -> [SE] -> project 1x1."""

    in_channels: int
    out_channels: int
    kernel: int
    expansion: int      # 1: no expand conv (MobileNetV2's first layer, our layer 0)
    stride: int
    se_channels: int    # squeeze width of the SE path (reduce and expand 1x1 convs with biases); 0: none
    input_size: int     # square input map


@dataclass(frozen=True)
class NetDesc:
    image_size: int
    stem_channels: int
    stem_stride: int
    layers: tuple[MBConvDesc, ...]
    head_channels: int
    num_classes: int
    stem_kernel: int = 3


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded (k // 2) odd-kernel convolution."""
    return math.ceil(size / stride)


def mbconv_counts(d: MBConvDesc) -> tuple[int, int]:
    """(MACs, params) of one MBConv layer, each conv followed by BN (2 params per channel)."""
    mid = d.in_channels * d.expansion
    out = conv_out(d.input_size, d.stride)
    macs = params = 0
    if d.expansion != 1:
        macs += d.input_size ** 2 * d.in_channels * mid
        params += d.in_channels * mid + 2 * mid
    macs += out ** 2 * mid * d.kernel ** 2          # depthwise: one kxk filter per channel
    params += mid * d.kernel ** 2 + 2 * mid
    if d.se_channels:                                # SE on the pooled 1x1 map: reduce + expand
        macs += 2 * mid * d.se_channels
        params += 2 * mid * d.se_channels + d.se_channels + mid
    macs += out ** 2 * mid * d.out_channels
    params += mid * d.out_channels + 2 * d.out_channels
    return macs, params


def net_counts(net: NetDesc) -> tuple[int, int]:
    """(MACs, params) of a whole network: stem conv+BN, MBConv layers, head 1x1 conv+BN, linear classifier."""
    size = conv_out(net.image_size, net.stem_stride)
    macs = size ** 2 * 3 * net.stem_channels * net.stem_kernel ** 2
    params = 3 * net.stem_channels * net.stem_kernel ** 2 + 2 * net.stem_channels
    for d in net.layers:
        m, p = mbconv_counts(d)
        macs, params = macs + m, params + p
        size = conv_out(d.input_size, d.stride)
    c_last = net.layers[-1].out_channels
    macs += size ** 2 * c_last * net.head_channels + net.head_channels * net.num_classes
    params += c_last * net.head_channels + 2 * net.head_channels + net.head_channels * net.num_classes + net.num_classes
    return macs, params


def layer_descs(arch: MBConvArch, image_size: int | None = None) -> list[MBConvDesc | None]:
    """The 22 MBConv positions (profile layers 0..21) of `arch` at `image_size` (default its own); None
    where a layer is skipped. At another size the strides are those of that size (e.g. 224: the
    deployment network, whose first stage keeps its stride 2)."""
    size = arch.image_size if image_size is None else image_size
    layers = []
    for spec, s in zip(layer_specs(arch.width, size), feature_sizes(size, arch.width)):
        if not spec.searchable:  # fixed layers: 0 is k3 e1, 21 is k3 e6, neither has SE
            k, e, se = 3, (1 if spec.index == 0 else 6), 0.0
        else:
            b = arch.blocks[spec.index - 1]
            if b.skip:
                layers.append(None)
                continue
            k, e, se = b.kernel, b.expansion, b.se
        layers.append(MBConvDesc(spec.in_channels, spec.out_channels, k, e, spec.stride,
                                 se_channels(spec.in_channels, se), s))
    return layers


def describe(arch: MBConvArch, image_size: int | None = None) -> NetDesc:
    """The network of `arch` at `image_size` (default its own), skipped layers left out."""
    size = arch.image_size if image_size is None else image_size
    return NetDesc(image_size=size, stem_channels=layer_specs(arch.width, size)[0].in_channels,
                   stem_stride=stem_stride(size),
                   layers=tuple(d for d in layer_descs(arch, size) if d is not None),
                   head_channels=round_channels(HEAD_CHANNELS, max(arch.width, 1.0)), num_classes=arch.num_classes)


def count_flops(arch: MBConvArch, image_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of `arch` (batch 1) at `image_size` (default its own)."""
    return net_counts(describe(arch, image_size))[0]


def count_params(arch: MBConvArch) -> int:
    """Trainable parameters of `arch.build()` (independent of the image size)."""
    return net_counts(describe(arch))[1]
