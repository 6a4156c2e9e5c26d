"""DARTS-style cell space for 32x32 inputs, shared by GOLD-NAS and EnTranNAS.

Macro-architecture (DARTS, CIFAR): stem conv3x3 -> 3C channels, N cells with reductions at N//3 and
2N//3 (channels double there, the map halves), global average pool, linear classifier. A cell has two
input nodes (outputs of the two previous cells, through a 1x1 ReLU-conv-BN or, after a reduction, a
factorized reduce), `steps` intermediate nodes, and outputs the concatenation of the intermediate nodes.
Node j sums its kept (input, operator) edges; in a reduction cell operators on the two input nodes
have stride 2.

Unlike DARTS' genotype, an architecture here is free (GOLD-NAS Sec. 3.2, EnTranNAS-DST Sec. 2.4):
every cell has its own edges, a node keeps any number (>= 1) of inputs and an edge any number of
operators. `CellArch` is the data: e.g.

    cells c8 i32 n10 | n 0:sep3+1:skip 1:sep3+2:skip 0:skip 3:sep3 | r 0:max3+1:sep3 ... | ...

one `|`-group per cell (n = normal, r = reduction), one space-separated token per intermediate node,
`src:op` edges joined by `+` (src 0, 1 = the cell inputs, 2.. = earlier intermediate nodes).
`shared` (EnTranNAS Eq. 6, feature sharing) means an operator on a node is one module whose output
feeds every node that keeps it, instead of one module per edge.

The child keeps, per node, a `gate{j}` buffer (one multiplier per kept edge, 1.0 by default): the
searches fold their final operator weights (GOLD-NAS sigmoid gates, EnTranNAS q) into it, so the child
computes exactly what the search network computed. BN in cells is non-affine (DARTS' search setting),
so gates cannot be absorbed by BN scales and the child has the search network's parameters; pooling
is followed by such a BN, as in DARTS' search network.

FLOPs are multiply-accumulates of convolutions and the classifier (as in searchers.cost.flops): BN,
ReLU, pooling, additions and gate multiplies cost nothing. Cells whose output never reaches the
classifier, and unused input preprocessing, are left out of the child and of its count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from . import register_space

# Short names (readable arch strings) of DARTS' operators, in a fixed order that the search networks
# also follow, so a node sums its edges in the same order in search and child networks.
OPS = ("skip", "sep3", "sep5", "dil3", "dil5", "max3", "avg3")
DARTS_NAMES = {"skip": "skip_connect", "sep3": "sep_conv_3x3", "sep5": "sep_conv_5x5", "dil3": "dil_conv_3x3",
               "dil5": "dil_conv_5x5", "max3": "max_pool_3x3", "avg3": "avg_pool_3x3"}
STEM_MULTIPLIER = 3


# -- operators -----------------------------------------------------------------------------------------
def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=False)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out))


class FactorizedReduce(nn.Module):
    """DARTS' stride-2 skip: two offset 1x1/2 convs, concatenated (C_in * C_out * H_out * W_out MACs)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], 1))


class SepConv(nn.Sequential):
    """Two stacked ReLU -> depthwise kxk -> pointwise -> BN (DARTS); the first carries the stride."""

    def __init__(self, c: int, k: int, stride: int):
        p = k // 2
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, k, stride, p, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), _bn(c),
                         nn.ReLU(), nn.Conv2d(c, c, k, 1, p, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), _bn(c))


class DilConv(nn.Sequential):
    """ReLU -> depthwise kxk dilation 2 -> pointwise -> BN (DARTS)."""

    def __init__(self, c: int, k: int, stride: int):
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), _bn(c))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "skip":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name in ("sep3", "sep5"):
        return SepConv(c, int(name[-1]), stride)
    if name in ("dil3", "dil5"):
        return DilConv(c, int(name[-1]), stride)
    # Pooling is followed by a non-affine BN, as in DARTS' search network (its MixedOp): without it,
    # max-pool outputs (mean > 0) pile up along a cell's dense connections.
    if name == "max3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), _bn(c))
    if name == "avg3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), _bn(c))
    raise ValueError(f"unknown operator {name!r}; valid choices: {', '.join(OPS)}")


def op_macs(name: str, c: int, stride: int, out: int) -> int:
    """MACs of one operator producing a c x out x out map (GOLD-NAS App. A.3 counts the same terms;
    its 'sep-conv 2C^2HW + 9CHW' omits the second depthwise conv of DARTS' sep-conv, counted here)."""
    hw = out * out
    if name == "skip":
        return 0 if stride == 1 else c * c * hw
    k = int(name[-1]) if name[:3] in ("sep", "dil") else 0
    if name.startswith("sep"):
        return 2 * (k * k * c * hw + c * c * hw)
    if name.startswith("dil"):
        return k * k * c * hw + c * c * hw
    return 0  # pooling: comparisons and additions, no MACs


# -- macro layout ----------------------------------------------------------------------------------------
def reduction_indices(num_cells: int) -> frozenset[int]:
    return frozenset({num_cells // 3, 2 * num_cells // 3})


@dataclass(frozen=True)
class Geometry:
    """Fixed shape of cell `index`: input channels of its two inputs, own width C, map sizes."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_pp: int
    c_p: int
    c: int
    size_in: int     # spatial size of input 1 (input 0 is twice that after a reduction)
    size_out: int


def layout(num_cells: int, channels: int, steps: int, image_size: int) -> list[Geometry]:
    red = reduction_indices(num_cells)
    c_cur = STEM_MULTIPLIER * channels
    c_pp, c_p, c, size, red_prev, out = c_cur, c_cur, channels, image_size, False, []
    for k in range(num_cells):
        r = k in red
        c = c * 2 if r else c
        size_out = size // 2 if r else size
        out.append(Geometry(k, r, red_prev, c_pp, c_p, c, size, size_out))
        c_pp, c_p, red_prev, size = c_p, steps * c, r, size_out
    return out


def preprocess(g: Geometry, which: int) -> nn.Module:
    if which == 0 and g.reduction_prev:
        return FactorizedReduce(g.c_pp, g.c)
    return ReLUConvBN(g.c_pp if which == 0 else g.c_p, g.c)


def preprocess_macs(g: Geometry, which: int) -> int:
    if which == 0:
        return g.c_pp * g.c * g.size_in ** 2  # FR outputs at size_in; a 1x1 conv at size_in too
    return g.c_p * g.c * g.size_in ** 2


def op_key(node: int, src: int, op: str, shared: bool) -> str:
    """Module name of an operator: per edge `{node}_{src}_{op}`, or per source `{src}_{op}` when shared."""
    return f"{src}_{op}" if shared else f"{node}_{src}_{op}"


def make_stem(channels: int) -> nn.Sequential:
    c = STEM_MULTIPLIER * channels
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


def classify(classifier: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return classifier(x.mean((2, 3)))


@torch.no_grad()
def recalibrate_bn(net: nn.Module, task, batch_size: int, max_samples: int = 512) -> None:
    """Re-estimate BN running statistics on (unshuffled, unaugmented) training batches, as one-shot NAS
    does before evaluating a sub-network: in short searches the running averages lag far behind the
    weights. Training uses batch statistics, so this changes evaluation only, and draws no randomness."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training, seen = net.training, 0
    net.train()
    for x, _ in task.batches("train", batch_size):
        net(x)
        seen += len(x)
        if seen >= max_samples:
            break
    for m, mo in zip(bns, momenta):
        m.momentum = mo
    net.train(was_training)


# -- the architecture as data ----------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Edge:
    src: int
    op: str

    def __str__(self) -> str:
        return f"{self.src}:{self.op}"

    @property
    def rank(self) -> tuple[int, int]:
        return (self.src, OPS.index(self.op))


@dataclass(frozen=True)
class Cell:
    reduction: bool
    nodes: tuple[tuple[Edge, ...], ...]   # per intermediate node, its kept edges in (src, OPS) order

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(tuple(sorted(n, key=lambda e: e.rank)) for n in self.nodes))
        for j, edges in enumerate(self.nodes):
            if not edges:
                raise ValueError(f"node {j + 2} has no input")
            if len(set(edges)) != len(edges):
                raise ValueError(f"node {j + 2} repeats an edge: {edges}")
            for e in edges:
                if e.op not in OPS:
                    raise ValueError(f"unknown operator {e.op!r}; valid choices: {', '.join(OPS)}")
                if not 0 <= e.src < j + 2:
                    raise ValueError(f"node {j + 2} cannot take input from node {e.src}")

    def uses(self, src: int) -> bool:
        return any(e.src == src for n in self.nodes for e in n)

    def __str__(self) -> str:
        return ("r " if self.reduction else "n ") + " ".join("+".join(map(str, n)) for n in self.nodes)

    @classmethod
    def parse(cls, s: str) -> "Cell":
        kind, *nodes = s.split()
        if kind not in ("n", "r") or not nodes:
            raise ValueError(f"bad cell {s!r} (expected 'n' or 'r' then one token per node)")
        parsed = []
        for tok in nodes:
            edges = []
            for e in tok.split("+"):
                m = re.fullmatch(r"(\d+):(\w+)", e)
                if not m:
                    raise ValueError(f"bad edge {e!r} (expected src:op, e.g. 0:sep3)")
                edges.append(Edge(int(m[1]), m[2]))
            parsed.append(tuple(edges))
        return cls(kind == "r", tuple(parsed))


@register_space
@dataclass(frozen=True)
class CellArch:
    cells: tuple[Cell, ...]
    channels: int = 8          # C, the first cells' width (stem has 3C)
    image_size: int = 32
    num_classes: int = 10
    shared: bool = False       # EnTranNAS feature sharing (Eq. 6): one operator module per source node

    space = "cells"

    def __post_init__(self):
        n = len(self.cells)
        if n < 3:
            raise ValueError(f"need >= 3 cells (a normal and two reductions), got {n}")
        if self.channels < 2 or self.image_size % 4:
            raise ValueError(f"need channels >= 2 and an image size divisible by 4, got {self.channels}, "
                             f"{self.image_size}")
        red = reduction_indices(n)
        for k, c in enumerate(self.cells):
            if c.reduction != (k in red):
                raise ValueError(f"cell {k} must be {'a reduction' if k in red else 'a normal'} cell")
            if len(c.nodes) != len(self.cells[0].nodes):
                raise ValueError("every cell needs the same number of intermediate nodes")

    @property
    def steps(self) -> int:
        return len(self.cells[0].nodes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def geometry(self) -> list[Geometry]:
        return layout(len(self.cells), self.channels, self.steps, self.image_size)

    def live_cells(self) -> list[int]:
        """Cells whose output reaches the classifier (the last one, and what live cells consume)."""
        live, need = [], {len(self.cells) - 1}
        for k in reversed(range(len(self.cells))):
            if k in need:
                live.append(k)
                need |= {k - 2 + src for src in (0, 1) if self.cells[k].uses(src)}
        return sorted(live)

    def __str__(self) -> str:
        head = f"cells c{self.channels} i{self.image_size} n{self.num_classes}" + (" shared" if self.shared else "")
        return " | ".join([head, *map(str, self.cells)])

    @classmethod
    def parse(cls, s: str) -> "CellArch":
        head, *cells = [p.strip() for p in s.split("|")]
        m = re.fullmatch(r"cells c(\d+) i(\d+) n(\d+)( shared)?", head)
        if not m or not cells:
            raise ValueError(f"not a cells architecture string: {s!r}")
        return cls(tuple(Cell.parse(c) for c in cells), channels=int(m[1]), image_size=int(m[2]),
                   num_classes=int(m[3]), shared=bool(m[4]))

    def flops(self) -> int:
        """MACs of one forward pass (batch 1) of `build()`, counted analytically."""
        geo = self.geometry()
        macs = 27 * STEM_MULTIPLIER * self.channels * self.image_size ** 2
        for k in self.live_cells():
            cell, g = self.cells[k], geo[k]
            macs += sum(preprocess_macs(g, s) for s in (0, 1) if cell.uses(s))
            seen = set()
            for j, edges in enumerate(cell.nodes):
                for e in edges:
                    key = op_key(j + 2, e.src, e.op, self.shared)
                    if key not in seen:
                        seen.add(key)
                        macs += op_macs(e.op, g.c, 2 if g.reduction and e.src < 2 else 1, g.size_out)
        return macs + self.steps * geo[-1].c * self.num_classes

    def build(self) -> "CellNet":
        return CellNet(self)


# -- the child network -----------------------------------------------------------------------------------
class ChildCell(nn.Module):
    def __init__(self, cell: Cell, g: Geometry, shared: bool):
        super().__init__()
        self.nodes, self.shared = cell.nodes, shared
        self.pre0 = preprocess(g, 0) if cell.uses(0) else None
        self.pre1 = preprocess(g, 1) if cell.uses(1) else None
        self.ops = nn.ModuleDict()
        for j, edges in enumerate(cell.nodes):
            for e in edges:
                key = op_key(j + 2, e.src, e.op, shared)
                if key not in self.ops:
                    self.ops[key] = make_op(e.op, g.c, 2 if g.reduction and e.src < 2 else 1)
            self.register_buffer(f"gate{j + 2}", torch.ones(len(edges)))

    def forward(self, s0, s1):
        states = [self.pre0(s0) if self.pre0 is not None else None,
                  self.pre1(s1) if self.pre1 is not None else None]
        cache = {}
        for j, edges in enumerate(self.nodes):
            gate, acc = getattr(self, f"gate{j + 2}"), None
            for i, e in enumerate(edges):
                key = op_key(j + 2, e.src, e.op, self.shared)
                if key not in cache:
                    cache[key] = self.ops[key](states[e.src])
                y = cache[key] * gate[i]
                acc = y if acc is None else acc + y
                if not self.shared:
                    del cache[key]
            states.append(acc)
        return torch.cat(states[2:], 1)


class CellNet(nn.Module):
    """The compact child of a CellArch: only kept operators, live cells and used preprocessing exist.
    Module names match the search networks', so their weights copy over by name."""

    def __init__(self, arch: CellArch):
        super().__init__()
        geo = arch.geometry()
        self.live = arch.live_cells()
        self.stem = make_stem(arch.channels)
        self.cells = nn.ModuleDict({str(k): ChildCell(arch.cells[k], geo[k], arch.shared) for k in self.live})
        self.classifier = nn.Linear(arch.steps * geo[-1].c, arch.num_classes)

    def forward(self, x):
        s = self.stem(x)
        outs = {-2: s, -1: s}
        for k in self.live:
            outs[k] = self.cells[str(k)](outs.get(k - 2), outs.get(k - 1))
        return classify(self.classifier, outs[self.live[-1]])
