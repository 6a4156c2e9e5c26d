"""Single-Path superkernels (paper Sec. III-B, Eq. 1-5; softmax variant Eq. 18).

One searchable layer holds ONE depthwise 5x5 kernel at the largest expansion (6) and ONE squeeze
kernel at SE ratio 0.5. Every candidate MBConv-k-e-se is a subset of these weights:
  * kernel: the inner 3x3 core vs the outer ring w_{5x5\\3x3}                       (Eq. 1-2)
  * expansion / skip: first half of the depthwise channels (e=3; dropping it too means skip)
    vs the second half w_{k,6\\3} (e=6)                                              (Eq. 3)
  * SE ratio: first half of the squeeze channels (0.25; dropping it too means no SE) vs the
    second half (0.5)                                                                (Eq. 4)
For the sigmoid / STE formulations each decision is an indicator 1(||w_subset||_2 > t) of the subset's
group-Lasso norm against a trainable threshold t, initialised at 0 as the public code does, so the
search starts from the largest network. The indicator is exact (0/1) in the forward pass; its
gradient is that of sigmoid(||w|| - t) ("sigmoid", the paper's default, which is also what the public
code's Indicator does) or the identity ("ste", straight-through).
For "softmax" (Eq. 18) each decision is a softmax over learnable logits tau and the subsets are mixed
by their probabilities; eval mode (and decoding) takes the argmax.

Masking (`mask`). With "features" (the default), besides masking the weights as Eq. 2-4 write, the
decisions also gate the layer's features: a zeroed depthwise channel still leaves its BatchNorm bias,
an SE path with an all-zero squeeze still scales by sigmoid(bias), and a skipped layer's projection
still adds its BN bias. Gating the features makes a hard decision exactly the compact MBConv it names,
so the extracted child reproduces the supernet.

It also changes the search. BatchNorm after the depthwise conv cancels a per-channel scale of its
weights, so with the weights-only masking of Eq. 2-4 the cross-entropy gives the expansion and skip
thresholds almost no gradient; the gate on the features gives them one. dL/dt of the cross-entropy
(benchmarks/mask_compare.py: digits, width 0.25, after one warm-up epoch, same weights and batch of
64), features vs weights-only, layer 6 / median |.| over the searchable layers:
    t_e6    +8.2e-5 vs +6.8e-9   /  4.6e-5 vs 6.5e-9
    t_e3    -6.9e-5 vs +1.6e-9   /  6.9e-5 vs 3.3e-9
    t_se25  +2.9e-6 vs -1.5e-5   /  1.6e-4 vs 3.8e-5   (the sign flips at layer 6)
    t_k5    +7.8e-6 vs +7.4e-6   /  2.9e-5 vs 2.5e-5
    t_se50  equal (the 0.5 half gates nothing beyond its squeeze weights)
(issue 10 measured on another layer: t_e6 -1.2e-4 vs -1.4e-8, t_e3 -2.9e-2 vs 1.1e-8, t_se25 -1.9e-4
vs +3.3e-4, t_k5 about 6x larger.) So under weights-only masking expansion and skip move almost
only by the runtime term (lam), i.e. toward smaller layers, whatever the accuracy says; in 4-epoch
digits searches they hardly moved at all: 102-110 ms for lam 0.01-0.1 with weights-only masking, where
the gated default gave 97, 70 and 35 ms (README, "Feature gating vs weights-only masking").

"weights" runs Eq. 2-4 literally during the search: the decisions mask the depthwise and squeeze
weights only, nothing gates the features, SE always rescales and a residual layer always adds its
branch. The child is derived the same way (the hard decisions decode to blocks; the compact layers
are cut out with their weights), but it then differs from the search network by the biases that leak
through zeroed weights. Once the architecture is frozen (the fine-tuning epochs) the layer runs as
the child it names (features gated), so the delivered child, trained there, equals the supernet again.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .mbconv import Block, LayerSpec, MBConv, conv_bn, se_channels, zero_init_residual

VARIANTS = ("sigmoid", "ste", "softmax")
MASKS = ("features", "weights")   # see the module doc: gate features too (default) or Eq. 2-4 literally
DECISIONS = ("k5", "e6", "e3", "se25", "se50")   # order of t_unit


def indicator(x: torch.Tensor, variant: str) -> torch.Tensor:
    """1(x > 0) forward; gradient of sigmoid(x) (Eq. 2 relaxation) or identity (STE)."""
    hard = (x > 0).to(x.dtype)
    soft = torch.sigmoid(x) if variant == "sigmoid" else x
    return hard + soft - soft.detach()


def frozen_decisions(b: Block, one: torch.Tensor) -> dict[str, torch.Tensor]:
    """Constant 0/1 decisions naming block `b` (no gradient to thresholds or logits)."""
    f = lambda cond: one if cond else torch.zeros_like(one)
    return {"k5": f(b.kernel == 5 and not b.skip), "e3": f(not b.skip), "e6": f(b.expansion == 6 and not b.skip),
            "se25": f(b.se > 0 and not b.skip), "se50": f(b.se == 0.5 and not b.skip)}


class Gates(NamedTuple):
    """One layer's decisions as the masks its forward applies (Eq. 2-4): the depthwise kernel's ring
    mask (5x5), the per-channel mask of the expanded channels (e3 half, e6 half), the per-channel mask of
    the squeeze channels (0.25 half, 0.5 half), and the scalars d_e3 (the layer is kept) and d_se25 (it
    has an SE path)."""

    kernel: torch.Tensor
    chan: torch.Tensor
    squeeze: torch.Tensor
    keep: torch.Tensor
    se: torch.Tensor


class DecisionLayout:
    """Where each weight of a list of superkernel layers falls (ring or core of the kernel, e3 or e6 half of
    the channels, 0.25 or 0.5 half of the squeeze channels), so that the decisions of all the layers are
    computed and applied with a few tensor ops instead of ~60 small ones per layer: on a CPU those were most
    of a search step's overhead over one step of the compact network (benchmarks/step_ratio.py)."""

    # Per layer, six sums of squared weights: the ring (5x5 minus 3x3) and the core (3x3) of the e6 and of
    # the e3 channel half, then the squeeze channels of the 0.25 and of the 0.5 half.
    RING_E6, RING_E3, CORE_E6, CORE_E3, SE25, SE50 = range(6)

    def __init__(self, layers: list["SuperMBConv"]):
        self.layers = layers
        ring = layers[0].ring.cpu()
        seg, chan_idx, se_idx = [], [], []
        for i, m in enumerate(layers):
            first = torch.arange(m.mid) < m.half                            # the e3 half of the channels
            ring_slot = torch.where(first, self.RING_E3, self.RING_E6)[:, None, None].expand(-1, 5, 5)
            core_slot = torch.where(first, self.CORE_E3, self.CORE_E6)[:, None, None].expand(-1, 5, 5)
            seg.append(6 * i + torch.where(ring.bool(), ring_slot, core_slot).reshape(-1))
            q_first = torch.arange(m.se_max) < m.se_q
            seg.append(6 * i + torch.where(q_first, self.SE25, self.SE50).repeat_interleave(m.mid))
            chan_idx.append(2 * i + (~first).long())
            se_idx.append(2 * i + (~q_first).long())
        self.segments = torch.cat(seg)
        self.chan_index, self.squeeze_index = torch.cat(chan_idx), torch.cat(se_idx)
        self.mids = [m.mid for m in layers]
        self.se_maxes = [m.se_max for m in layers]
        self.fixed = torch.zeros(len(layers), len(DECISIONS), dtype=torch.bool)   # e3 of a stage's first layer
        self.fixed[:, DECISIONS.index("e3")] = torch.tensor([not m.spec.skippable for m in layers])
        self.ring = ring
        self.zero = torch.zeros(())
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> "DecisionLayout":
        if device != self.device:
            for name in ("segments", "chan_index", "squeeze_index", "fixed", "ring", "zero"):
                setattr(self, name, getattr(self, name).to(device))
            self.device = device
        return self

    def energies(self) -> torch.Tensor:
        """(layers, 6) sums of squared weights, in the slots above."""
        flat = torch.cat([t for m in self.layers for t in (m.dw.weight.reshape(-1), m.se_reduce.weight.reshape(-1))])
        out = torch.zeros(6 * len(self.layers), device=flat.device, dtype=flat.dtype)
        return out.index_add(0, self.segments, flat * flat).view(-1, 6)

    def norms(self, e: torch.Tensor, d_k5: torch.Tensor) -> torch.Tensor:
        """(layers, 4) subset norms of Eq. 3-4 in DECISIONS order after k5 (e6, e3, se25, se50): the channel
        halves over the kernel Eq. 2 chose, ||w (1 - ring) + w ring d_k5||, and the squeeze halves."""
        k2 = (d_k5 * d_k5)[:, None]
        return torch.cat([(e[:, [self.CORE_E6, self.CORE_E3]] + k2 * e[:, [self.RING_E6, self.RING_E3]]).sqrt(),
                          e[:, [self.SE25, self.SE50]].sqrt()], 1)

    def ring_norm(self, e: torch.Tensor) -> torch.Tensor:
        """||w_{5x5 \\ 3x3}|| of each layer (Eq. 2)."""
        return (e[:, self.RING_E6] + e[:, self.RING_E3]).sqrt()

    def thresholds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(units, trainable thresholds), each (layers, 5) in DECISIONS order; t = unit * theta (Eq. 2-4)."""
        z = self.zero
        theta = torch.stack([t for m in self.layers for t in
                             (m.t_k5, m.t_e6, m.t_e3 if m.spec.skippable else z, m.t_se25, m.t_se50)])
        return torch.stack([m.t_unit for m in self.layers]), theta.view(-1, len(DECISIONS))

    def decisions(self, variant: str, hard: bool, training: bool) -> torch.Tensor:
        """(layers, 5) indicators 1(||w_subset|| > t) of Eq. 2-4 in DECISIONS order (sigmoid / STE
        variants), e3 fixed to 1 on a stage's first layer; dropped at random during warm-up (drop_p)."""
        e = self.energies()
        unit, theta = self.thresholds()
        d_k5 = indicator(self.ring_norm(e) - unit[:, 0] * theta[:, 0], variant)            # Eq. 2
        rest = indicator(self.norms(e, d_k5) - unit[:, 1:] * theta[:, 1:], variant)         # Eq. 3, 4
        d = torch.where(self.fixed, torch.ones_like(d_k5[0]), torch.cat([d_k5[:, None], rest], 1))
        if training and not hard and any(m.drop_p > 0 for m in self.layers):
            # Warm-up: drop decisions at random so the smaller subsets also train on their own. One CPU draw
            # per decision of each layer with drop_p > 0, layer by layer in DECISIONS order (e3 of a stage's
            # first layer is never dropped): the draws of a loop over the layers, in one call.
            drawn = [(i, j) for i, m in enumerate(self.layers) if m.drop_p > 0 for j in range(len(DECISIONS))
                     if m.spec.skippable or DECISIONS[j] != "e3"]
            p = torch.tensor([self.layers[i].drop_p for i, _ in drawn])
            keep = torch.ones(d.shape)
            keep[tuple(torch.tensor(drawn).T)] = (torch.rand(len(drawn)) >= p).float()
            d = d * keep.to(d)
        return d

    def gates(self, d: torch.Tensor) -> list[Gates]:
        """Each layer's masks (Gates) from the (layers, 5) decisions."""
        k5, e6, e3, se25, se50 = d.unbind(1)
        m = torch.stack([e3, e3 * e6], 1).reshape(-1)           # channel halves: e3 part, e6 part
        s = torch.stack([se25, se25 * se50], 1).reshape(-1)     # squeeze halves: 0.25 part, 0.5 part
        chan = m[self.chan_index].split(self.mids)
        squeeze = s[self.squeeze_index].split(self.se_maxes)
        kernel = (1 - self.ring + self.ring * k5[:, None, None]).unbind(0)                  # Eq. 2
        return [Gates(*g) for g in zip(kernel, chan, squeeze, e3.unbind(0), se25.unbind(0))]


class SuperMBConv(nn.Module):
    def __init__(self, spec: LayerSpec, variant: str, mask: str = "features"):
        super().__init__()
        self.spec, self.variant, self.mask = spec, variant, mask
        c_in, self.mid = spec.in_channels, spec.in_channels * 6
        self.half = spec.in_channels * 3
        self.expand = conv_bn(c_in, self.mid)
        self.dw = nn.Conv2d(self.mid, self.mid, 5, spec.stride, 2, groups=self.mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(self.mid)
        self.se_max, self.se_q = se_channels(c_in, 0.5), se_channels(c_in, 0.25)
        self.se_reduce = nn.Conv2d(self.mid, self.se_max, 1)
        self.se_expand = nn.Conv2d(self.se_max, self.mid, 1)
        self.project = conv_bn(self.mid, spec.out_channels, act=False)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels
        if self.residual:
            zero_init_residual(self.project)
        ring = torch.ones(5, 5)
        ring[1:4, 1:4] = 0
        self.register_buffer("ring", ring, persistent=False)
        if variant == "softmax":
            # Eq. 18: logits over {3x3, 5x5}; {skip, e3, e6} ({e3, e6} when unskippable); {0, 0.25, 0.5}
            self.tau_k = nn.Parameter(torch.zeros(2))
            self.tau_e = nn.Parameter(torch.zeros(3 if spec.skippable else 2))
            self.tau_se = nn.Parameter(torch.zeros(3))
        else:
            names = ["t_k5", "t_e6", "t_se25", "t_se50"] + (["t_e3"] if spec.skippable else [])
            for n in names:
                setattr(self, n, nn.Parameter(torch.zeros(())))  # zeros: start from the largest net
            # The threshold of Eq. 2-4 is t = unit * t_param, with `unit` the subset's norm when the
            # search phase starts (set_threshold_units; 0 before, so t = 0 in warm-up). Eq. 2-4 are
            # unchanged; only the optimiser's step is in units of each subset's own norm, so one Adam
            # step moves every threshold the same fraction of the way to flipping its decision
            # (norms span 0.3-30 across layers and widths; absolute steps left the large ones unmoved).
        self.register_buffer("t_unit", torch.zeros(len(DECISIONS)))   # see above; unused by softmax
        self.drop_p = 0.0  # decision dropout during warm-up (set by the searcher)
        self.frozen: Block | None = None  # set for the final fine-tuning epochs: decisions held fixed

    # -- decisions -------------------------------------------------------------------------
    def decisions(self, hard: bool = False) -> dict[str, torch.Tensor]:
        """d_k5, d_e3, d_e6, d_se25, d_se50 in [0, 1]: the indicators of Eq. 2-4 (or, for softmax,
        the probabilities arranged the same way: d_e3 = P(e3)+P(e6), d_e6 = P(e6)/d_e3, ...), so the
        runtime model of Eq. 12-17 applies to every variant alike."""
        one = torch.ones((), device=self.dw.weight.device)
        if self.frozen is not None:
            return frozen_decisions(self.frozen, one)
        if self.variant == "softmax":
            pk = self._probs(self.tau_k, hard)
            pe = self._probs(self.tau_e, hard)
            ps = self._probs(self.tau_se, hard)
            d_e3 = pe[-2] + pe[-1] if self.spec.skippable else one
            d_se25 = ps[1] + ps[2]
            return {"k5": pk[1], "e3": d_e3, "e6": pe[-1] / d_e3.clamp_min(1e-12),
                    "se25": d_se25, "se50": ps[2] / d_se25.clamp_min(1e-12)}
        layout = DecisionLayout([self]).to(self.t_unit.device)
        return dict(zip(DECISIONS, layout.decisions(self.variant, hard, self.training)[0].unbind(0)))

    @torch.no_grad()
    def set_threshold_units(self) -> None:
        """Fix each threshold's unit at its subset's current norm (at the largest kernel)."""
        if self.variant == "softmax":
            return
        layout = DecisionLayout([self]).to(self.t_unit.device)
        e = layout.energies()
        vals = torch.cat([layout.ring_norm(e), layout.norms(e, torch.ones_like(e[:, 0]))[0]])  # DECISIONS order
        self.t_unit.copy_(vals.clamp_min(1e-6))

    @staticmethod
    def _probs(tau: torch.Tensor, hard: bool) -> torch.Tensor:
        if hard:
            return F.one_hot(tau.argmax(), len(tau)).to(tau.dtype)
        return tau.softmax(0)

    def block(self) -> Block:
        """The compact MBConv the current (hard) decisions name."""
        if self.frozen is not None:
            return self.frozen
        with torch.no_grad():
            d = {k: float(v) > 0.5 for k, v in self.decisions(hard=True).items()}
        if not d["e3"]:
            return Block(skip=True)
        return Block(5 if d["k5"] else 3, 6 if d["e6"] else 3, (0.5 if d["se50"] else 0.25) if d["se25"] else 0.0)

    # -- forward ---------------------------------------------------------------------------
    @property
    def gates_features(self) -> bool:
        """Whether the decisions gate the features (module doc): always, except with mask "weights"
        before the architecture is frozen."""
        return self.mask == "features" or self.frozen is not None

    def forward(self, x: torch.Tensor, g: Gates) -> torch.Tensor:
        if not self.gates_features:
            return self._forward_weights_only(x, g)
        mid = self.mid
        w = self.dw.weight * g.kernel * g.chan.view(-1, 1, 1, 1)              # Eq. 2-3 on the weights
        h = self.expand(x)
        # in place, as the compact MBConv's ReLU: the BN output is not kept for the backward pass
        h = F.relu(self.dw_bn(F.conv2d(h, w, None, self.spec.stride, 2, 1, mid)), inplace=True)
        # The features are gated, h * chan, then scaled by SE, (h * chan) * (1 - s1 + s1 * gate) with the gate
        # computed from mean(h * chan) = mean(h) * chan. Both factors are per (image, channel), so they are
        # applied as one: h * (chan * (1 - s1 + s1 * gate)), one pass over the feature map (as the compact
        # MBConv's SE) instead of two, and none more in the backward pass. The same function of h and chan:
        # with 0/1 decisions the same values bit for bit, gradients equal up to float rounding.
        chan = g.chan.view(1, -1, 1, 1)
        z = F.conv2d(h.mean((2, 3), keepdim=True) * chan, self.se_reduce.weight * g.squeeze.view(-1, 1, 1, 1),
                     self.se_reduce.bias * g.squeeze)                       # Eq. 4 on the weights
        gate = torch.sigmoid(self.se_expand(F.relu(z)))
        y = self.project(h * (chan * (1 - g.se + g.se * gate)))
        return x + g.keep * y if self.residual else y

    def _forward_weights_only(self, x: torch.Tensor, g: Gates) -> torch.Tensor:
        """Eq. 2-4 literally: the decisions zero out weights (depthwise kernel ring, channel halves, squeeze
        channels) and touch nothing else."""
        w = self.dw.weight * g.kernel * g.chan.view(-1, 1, 1, 1)              # Eq. 2-3
        h = F.relu(self.dw_bn(F.conv2d(self.expand(x), w, None, self.spec.stride, 2, 1, self.mid)), inplace=True)
        z = F.conv2d(h.mean((2, 3), keepdim=True), self.se_reduce.weight * g.squeeze.view(-1, 1, 1, 1),
                     self.se_reduce.bias * g.squeeze)                       # Eq. 4
        y = self.project(h * torch.sigmoid(self.se_expand(F.relu(z))))
        return x + y if self.residual else y

    # -- extraction ------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, block: Block) -> MBConv:
        """The compact layer with the superkernel's trained weights for `block` (no retraining)."""
        spec = self.spec
        child = MBConv(spec.in_channels, spec.out_channels, block.kernel, block.expansion, spec.stride, block.se)
        mid = spec.in_channels * block.expansion
        _copy_conv_bn(child.expand, self.expand, out=slice(0, mid))
        off = (5 - block.kernel) // 2
        child.depthwise[0].weight.copy_(self.dw.weight[:mid, :, off:5 - off, off:5 - off])
        _copy_bn(child.depthwise[1], self.dw_bn, slice(0, mid))
        if block.se:
            q = se_channels(spec.in_channels, block.se)
            child.se.reduce.weight.copy_(self.se_reduce.weight[:q, :mid])
            child.se.reduce.bias.copy_(self.se_reduce.bias[:q])
            child.se.expand.weight.copy_(self.se_expand.weight[:mid, :q])
            child.se.expand.bias.copy_(self.se_expand.bias[:mid])
        child.project[0].weight.copy_(self.project[0].weight[:, :mid])
        _copy_bn(child.project[1], self.project[1], slice(None))
        return child


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, idx: slice) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _copy_conv_bn(dst: nn.Sequential, src: nn.Sequential, out: slice) -> None:
    dst[0].weight.copy_(src[0].weight[out])
    _copy_bn(dst[1], src[1], out)
