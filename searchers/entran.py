"""EnTranNAS-DST: Engine-cells, Transit-cells and differentiable sparsification (entrannas.txt Sec. 2.2-2.4).

The first normal and the first reduction cell are Engine-cells: they hold the whole DAG and mix their
connections with coefficients q derived from the architecture parameters (Eq. 5, 7-9). Every other
cell is a Transit-cell that runs only the currently derived sub-graph S_j (Eq. 10), unweighted. All
normal cells share one set of alpha / beta, all reduction cells another; weights are per cell, and per
(source node, operator) by feature sharing (Eq. 6): an operator's output on a node is computed once
and fed to every node that keeps it. A connection survives where q > 0, i.e. where its normalised
softmax weight exceeds its node's learnable threshold t(j) = sigmoid(beta_j) (Eq. 8); the strongest
connection of a node always survives (max p^ = 1 > t), so no node loses its inputs. The derived
architecture is exactly the connections with non-zero weight; the child keeps the Engine-cells' q as
gate constants (Transit gates are 1), so it computes the search network's logits.

Optimisation is bilevel as DARTS, first order: per step, alpha and beta take an Adam step on a batch of
the architecture half of the training split under L_val + lambda / (n - 1) * sum_j -log t(j) (Eq. 11,
applied per engine cell and summed), then the weights an SGD step on a batch of the weight half (App.
B.1: half of the training set for each). The task's val split is left for reporting and selection:
the delivered architecture is the epoch with the best val accuracy (App. B.3).

Readings and deviations (also in the report):
  * Eq. 8 reads q = ReLU(p^ - t(j)) (garbled in the text; the ReLU of Lee 2019), Eq. 9 q / sum_k q.
  * Temperature: the DST setting of App. B.3 (tau0 = 1, x0.9 per epoch). beta starts at 0 (t = 0.5),
    alpha at 1e-3 * N(0, 1) as DARTS: every connection is active at the start, as App. C says.
  * Small-CPU defaults: 5 cells (B.3: 8; C = 16 at width 1.0 as B.3); lr_w 0.05 (B.3: 0.2 at batch
    512, for 50 epochs); arch lr 0.03 (B.3: 6e-4 over ~2500 architecture steps on CIFAR-10; an
    8-epoch digits search at batch 32 has ~150, and the arch lr sets how far alpha can move: use 6e-4
    for a CIFAR-10-sized search). The bottleneck of App. B.4 is left out (an efficiency device).
  * Transit-cells sum their derived connections unweighted (Eq. 6) and, at the start, every connection
    is derived; pooling carries DARTS' non-affine BN (cells.make_op), which keeps those sums, and the
    first losses, moderate. BN statistics are re-estimated on training batches before each evaluation
    (cells.recalibrate_bn).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import Searcher, validate_params
from .data import arch_split
from .errors import UsageError, check_choice
from .spaces.cells import OPS, Cell, CellArch, Edge, classify, layout, make_op, make_stem, op_key, preprocess, \
    recalibrate_bn, reduction_indices


@dataclass(frozen=True, kw_only=True)
class Params:
    lam: float = 0.1               # Eq. 11 sparsity coefficient (Table 3: 0.05-0.2); larger is sparser
    ops: str = ",".join(OPS)       # App. B.2 standard space; DST drops 'none' (sparsification replaces it)
    channels: int = 16             # C at width 1.0 (B.3); RunSettings.width scales it (0.25 on digits: 4)
    cells: int = 5                 # B.3: 8; reductions at 1/3 and 2/3 depth
    steps: int = 4                 # intermediate nodes per cell (B.3: 6 nodes = 2 inputs + 4)
    lr_w: float = 0.05             # SGD, cosine to 0 (B.3: 0.2 at batch 512, 50 epochs)
    momentum: float = 0.9          # B.3
    weight_decay: float = 3e-4     # B.3
    grad_clip: float = 5.0         # DARTS convention
    lr_arch: float = 0.03          # Adam for alpha and beta (B.3: 6e-4 CIFAR, 6e-3 ImageNet; see module doc)
    arch_beta1: float = 0.5        # Adam betas (B.3: 0.5, 0.999)
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3  # B.3
    tau0: float = 1.0              # Eq. 5 temperature at the start (B.3, DST)
    tau_decay: float = 0.9         # per-epoch annealing factor (B.3, DST)
    beta0: float = field(default=0.0, metadata={"nonneg": False})  # initial thresholds t = sigmoid(beta0)

    def __post_init__(self):
        validate_params(self)
        ops = self.op_names
        if not ops or len(set(ops)) != len(ops):
            raise UsageError(f"ops must be distinct, comma-separated operator names, got {self.ops!r}")
        for o in ops:
            check_choice("operator", o, OPS)
        if not (self.arch_beta1 < 1 and self.arch_beta2 < 1):
            raise UsageError(f"Adam betas must be < 1, got {self.arch_beta1}, {self.arch_beta2}")
        if self.channels < 2 or self.cells < 3 or self.steps < 1:
            raise UsageError(f"need channels >= 2, cells >= 3, steps >= 1; got {self.channels}, {self.cells}, "
                             f"{self.steps}")
        if not self.tau0 > 0 or not 0 < self.tau_decay <= 1:
            raise UsageError(f"need tau0 > 0 and 0 < tau_decay <= 1, got {self.tau0}, {self.tau_decay}")

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.ops.split(",") if o.strip())


def node_rows(steps: int) -> list[range]:
    """Rows of the (edge, op) parameter matrix that feed node j + 2 (edges node-major, sources ascending)."""
    out, start = [], 0
    for j in range(steps):
        out.append(range(start, start + j + 2))
        start += j + 2
    return out


class EnTranCell(nn.Module):
    """One cell with feature sharing (Eq. 6): an operator module per (source node, op)."""

    def __init__(self, g, steps: int, ops: tuple[str, ...]):
        super().__init__()
        self.steps = steps
        self.pre0, self.pre1 = preprocess(g, 0), preprocess(g, 1)
        self.ops = nn.ModuleDict({op_key(0, i, o, True): make_op(o, g.c, 2 if g.reduction and i < 2 else 1)
                                  for i in range(steps + 1) for o in ops})

    def forward(self, s0, s1, plan, coef):
        """plan[j]: (src, op, edge row, op column) of node j's connections; coef: q (Engine) or None (Transit)."""
        used = {c[0] for node in plan for c in node}
        states = [self.pre0(s0) if 0 in used else None, self.pre1(s1) if 1 in used else None]
        cache = {}
        for node in plan:
            acc = None
            for src, op, e, k in node:
                key = op_key(0, src, op, True)
                if key not in cache:
                    cache[key] = self.ops[key](states[src])
                y = cache[key] if coef is None else cache[key] * coef[e, k]
                acc = y if acc is None else acc + y
            states.append(acc)
        return torch.cat(states[2:], 1)


class EnTranNet(nn.Module):
    def __init__(self, channels, num_cells, steps, image_size, num_classes, ops, beta0):
        super().__init__()
        self.channels, self.steps, self.image_size, self.num_classes = channels, steps, image_size, num_classes
        self.op_names = tuple(sorted(ops, key=OPS.index))  # (src, OPS) order, as the child sums
        self.geo = layout(num_cells, channels, steps, image_size)
        self.engines = {0, min(reduction_indices(num_cells))}  # Sec. 2.2: first normal and reduction cell
        self.stem = make_stem(channels)
        self.cells = nn.ModuleList([EnTranCell(g, steps, self.op_names) for g in self.geo])
        self.classifier = nn.Linear(steps * self.geo[-1].c, num_classes)
        shape = (sum(j + 2 for j in range(steps)), len(self.op_names))
        self.alpha = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(shape)) for t in ("normal", "reduce")})
        self.beta = nn.ParameterDict({t: nn.Parameter(torch.full((steps,), float(beta0)))
                                      for t in ("normal", "reduce")})
        self.tau = 1.0

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alpha.values(), *self.beta.values()]

    def weights(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def q(self, kind: str) -> torch.Tensor:
        """Connection coefficients of one cell type: Eq. 5 softmax, Eq. 7 node normalisation,
        Eq. 8 thresholding, Eq. 9 operation normalisation."""
        p = F.softmax(self.alpha[kind] / self.tau, dim=-1)
        # t < 1 is what keeps a node's strongest connection (p^ = 1) alive; in float32 sigmoid(beta)
        # rounds to exactly 1 for beta > ~17, so hold it just below.
        t = torch.sigmoid(self.beta[kind]).clamp(max=1 - 2 ** -20)
        out = []
        for j, rows in enumerate(node_rows(self.steps)):
            pj = p[rows.start:rows.stop]
            q = F.relu(pj / pj.max() - t[j])
            s = q.sum(-1, keepdim=True)
            out.append(q / torch.where(s > 0, s, torch.ones_like(s)))
        return torch.cat(out)

    def plan(self, q: torch.Tensor) -> list[list[tuple]]:
        """S_j of Eq. 10: the (src, op) connections of every node with q > 0."""
        on = (q > 0).tolist()
        return [[(e - rows.start, o, e, k) for e in rows for k, o in enumerate(self.op_names) if on[e][k]]
                for rows in node_rows(self.steps)]

    def sparsity_loss(self) -> torch.Tensor:
        """Eq. 11's regulariser, per engine cell: 1/(n-1) sum_j -log t(j) (the mean over intermediate nodes)."""
        return sum(-F.logsigmoid(b).mean() for b in self.beta.values())

    def forward(self, x, arch_grad: bool = True):
        with torch.set_grad_enabled(arch_grad and torch.is_grad_enabled()):
            qs = {k: self.q(k) for k in ("normal", "reduce")}
        plans = {k: self.plan(v) for k, v in qs.items()}
        s0 = s1 = self.stem(x)
        for k, (cell, g) in enumerate(zip(self.cells, self.geo)):
            kind = "reduce" if g.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, plans[kind], qs[kind] if k in self.engines else None)
        return classify(self.classifier, s1)

    def arch(self) -> CellArch:
        with torch.no_grad():
            plans = {k: self.plan(self.q(k)) for k in ("normal", "reduce")}
        cells = [Cell(g.reduction, tuple(tuple(Edge(src, op) for src, op, _, _ in node)
                                         for node in plans["reduce" if g.reduction else "normal"]))
                 for g in self.geo]
        return CellArch(tuple(cells), self.channels, self.image_size, self.num_classes, shared=True)

    @torch.no_grad()
    def export(self) -> tuple[CellArch, nn.Module]:
        arch = self.arch()
        child = arch.build().to(self.classifier.weight.device)
        own, sd = self.state_dict(), {}
        qs = {k: self.q(k) for k in ("normal", "reduce")}
        for name, v in child.state_dict().items():
            sd[name] = own[name] if name in own else torch.ones_like(v)  # Transit gates stay 1
        for k in self.engines & set(child.live):
            kind = "reduce" if self.geo[k].reduction else "normal"
            for j, node in enumerate(self.plan(qs[kind])):
                sd[f"cells.{k}.gate{j + 2}"] = torch.stack([qs[kind][e, c] for _, _, e, c in node])
        child.load_state_dict(sd)
        return arch, child.eval()


class EnTranNAS(Searcher):
    name = "entran"
    Params = Params
    # lambda of Eq. 11 on a log scale: the paper's 0.05-0.2 sit inside; its effect is multiplicative.
    tunable = {"lam": (0.01, 1.0, True)}

    def __init__(self, params, task, settings):
        super().__init__(params, task, settings)
        p = params
        task.to(self.device)
        # App. B.1: half of the training split for the weights, half for alpha and beta (fixed, seed-free)
        self.w_task, self.a_task = arch_split(task)
        c = max(2, round(p.channels * settings.width))
        self.net = EnTranNet(c, p.cells, p.steps, task.image_size, task.num_classes, p.op_names,
                             p.beta0).to(self.device)
        self.opt_w = torch.optim.SGD(self.net.weights(), lr=p.lr_w, momentum=p.momentum,
                                     weight_decay=p.weight_decay)
        self.opt_a = torch.optim.Adam(self.net.arch_parameters(), lr=p.lr_arch, betas=(p.arch_beta1, p.arch_beta2),
                                      weight_decay=p.arch_weight_decay)
        self.best: dict | None = None
        self._set_schedules()

    def _set_schedules(self) -> None:
        p = self.params
        self.net.tau = p.tau0 * p.tau_decay ** self.epoch
        lr = 0.5 * p.lr_w * (1 + math.cos(math.pi * self.epoch / self.settings.epochs))
        for g in self.opt_w.param_groups:
            g["lr"] = lr

    def train_epoch(self):
        p, net, bs = self.params, self.net, self.settings.batch_size
        self._set_schedules()
        net.train()
        arch = net.arch_parameters()
        tot = tot_ce = tot_val = 0.0
        n = 0
        batches = zip(self.w_task.batches("train", bs, self.generator, augment=True),
                      self.a_task.batches("train", bs, self.generator, augment=True))
        for (xw, yw), (xa, ya) in batches:
            # architecture step (first order): Eq. 11 on the architecture half
            val_ce = F.cross_entropy(net(xa), ya)
            reg = net.sparsity_loss()
            grads = torch.autograd.grad(val_ce + p.lam * reg, arch)
            for a, g in zip(arch, grads):
                a.grad = g
            self.opt_a.step()
            # weight step on the weight half, through the newly derived sub-graphs
            ce = F.cross_entropy(net(xw, arch_grad=False), yw)
            self.opt_w.zero_grad()
            ce.backward()
            nn.utils.clip_grad_norm_([w for w in self.opt_w.param_groups[0]["params"] if w.grad is not None],
                                     p.grad_clip)
            self.opt_w.step()
            k = len(yw)
            tot, tot_ce, tot_val, n = tot + (ce.item() + p.lam * reg.item()) * k, tot_ce + ce.item() * k, \
                tot_val + val_ce.item() * k, n + k
        recalibrate_bn(net, self.task, bs)
        val_acc = self.task.accuracy(net, "val", self.device)
        arch_obj = net.arch()
        if self.best is None or val_acc >= self.best["val_acc"]:  # B.3: best validation accuracy; later wins ties
            self.best = {"arch": str(arch_obj), "val_acc": val_acc, "epoch": self.epoch + 1, "tau": net.tau,
                         "net": copy.deepcopy(net.state_dict())}
        with torch.no_grad():
            thresholds = {k: [round(v, 4) for v in torch.sigmoid(b).tolist()] for k, b in net.beta.items()}
            edges = {k: sum(len(node) for node in net.plan(net.q(k))) for k in ("normal", "reduce")}
        extra = {"lambda": p.lam, "tau": net.tau, "lr_w": self.opt_w.param_groups[0]["lr"],
                 "arch_ce": tot_val / n, "connections": edges, "thresholds": thresholds}
        return dict(loss=tot / n, ce=tot_ce / n, runtime_ms=None, flops=float(arch_obj.flops()), val_acc=val_acc,
                    arch=str(arch_obj), extra=extra)

    def best_net(self) -> EnTranNet:
        """The search network of the best epoch (the current one before any epoch has run)."""
        if self.best is None:
            return self.net
        net = copy.deepcopy(self.net)
        net.load_state_dict(self.best["net"])
        net.tau = self.best["tau"]
        return net

    def derive(self):
        return self.best_net().export()

    @torch.no_grad()
    def search_logits(self, x):
        net = self.best_net()
        was = net.training
        out = net.eval()(x)
        net.train(was)
        return out

    def extra_result(self):
        if self.best is None:
            return {}
        return {"best_epoch": self.best["epoch"], "best_val_acc": self.best["val_acc"]}

    def method_state(self):
        return copy.deepcopy({"net": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                              "opt_a": self.opt_a.state_dict(), "best": self.best})

    def load_method_state(self, state):
        state = copy.deepcopy(state)
        self.net.load_state_dict(state["net"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.best = state["best"]
        self._set_schedules()
