"""GOLD-NAS: Gradual One-Level Differentiable NAS (gold-nas.txt Sec. 3.2-3.5, Algorithm 1, App. A.3, B.1).

The enlarged space (Sec. 3.2): every cell has its own architecture, every edge carries skip-connect and
sep-conv-3x3, each with its own sigmoid gate sigma(alpha); a node may keep any number of operators on
any number of edges. Weights and alpha are updated together on the training data (one-level, Eq. 2)
under L = CE + lambda * (FLOPs(alpha) + mu * uniform FLOPs(alpha)) (Sec. 3.5, Eq. 5). After every epoch
Algorithm 1 prunes weak operators, moves lambda, and records the architectures that survive t0 + 1
epochs without pruning: the Pareto set of one search. Pruned operators leave the network (they are
not zeroed), and the surviving gates are folded into the child, which computes exactly the search
network's logits.

Deviations and readings of the paper (also in the report):
  * Eq. 5's denominator is read as the mean sigma of the active operators on the edge (point (ii) of
    App. A.3), held constant in the gradient: with the gradient through it, a lone operator on an
    edge would feel no penalty, and edges could never be removed (they are in Fig. 2 / 5).
  * FLOPs(alpha) is measured in units of the supernet's mean operator FLOPs, and the uniform version
    gives every operator that unit, so mu = 1 weighs both terms equally and lambda does not depend
    on width or image size; lam0 is in these units, chosen as B.1 chose 1e-5: so that the penalty
    starts comparable to the cross-entropy (~140 operators x ln 2 x 0.01 ~ 1).
  * Pruning never empties a node (App. A.1's validity rule): candidates are taken weakest first and a
    node's last operator is kept; it is not prunable, so it does not count among line 5's n0 weakest
    (the n0 weakest *prunable* operators are pruned when below xi_max).
  * FLOPs_min is a fraction of the supernet's FLOPs (B.1's 240M / 360M are absolute for its network).
    When reached -- or when the penalty can prune nothing more (every node down to one operator; with
    mu = 0, only free skip-connects left), where lambda would otherwise grow without bound -- pruning
    stops and the remaining epochs train the final architecture with lambda = 0; it joins the Pareto
    set like any other after t0 + 1 epochs.
  * Small-CPU defaults: 5 cells (B.1: 14; C = 36 at width 1.0 as B.1), t0 = 0 (B.1: 3), lr_w 0.05
    (B.1: 0.01, for searches of far more steps); augmentation is the task's crop/flip (B.1 uses
    AutoAugment). BN statistics are re-estimated on training batches before each evaluation
    (cells.recalibrate_bn).
  * The epoch budget ends the search like FLOPs_min does (B.1: it can be stopped "anywhere"): the
    architecture of the last epoch joins the Pareto set.
  * A Pareto member with the same FLOPs as the previous one replaces it (same cost, survived longer).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Searcher, validate_params
from .errors import UsageError
from .spaces.cells import Cell, CellArch, Edge, classify, layout, make_op, make_stem, op_key, op_macs, preprocess, \
    recalibrate_bn

OPS = ("skip", "sep3")  # Sec. 3.2: two candidates per edge, following [1, 39]


@dataclass(frozen=True, kw_only=True)
class Params:
    mu: float = 0.0            # Sec. 3.5 / Table 1: weight of the uniform FLOPs term; larger is cheaper
    channels: int = 36         # C at width 1.0 (B.1); RunSettings.width scales it (0.25 on digits: 9)
    cells: int = 5             # B.1: 14; reductions at 1/3 and 2/3 depth
    steps: int = 4             # intermediate nodes per cell (DARTS / App. A.1: 4)
    lr_w: float = 0.05         # eta_omega (B.1: 0.01 with SGD momentum 0.9, for ~50x more steps)
    lr_alpha: float = 1.0      # eta_alpha (B.1: 1, SGD momentum 0.9)
    momentum: float = 0.9      # B.1, both optimizers
    weight_decay: float = 3e-4 # on weights only (DARTS convention; alpha must be free to move)
    grad_clip: float = 5.0     # on weights (DARTS convention)
    n0: int = 4                # pruning pace: operators expected per round (B.1: 4)
    lam0: float = 0.01         # first lambda step, in mean-operator-FLOPs units (see module doc)
    c0: float = 2.0            # lambda growth / shrink factor (B.1: 2)
    xi_max: float = 0.05       # prune the n0 weakest if sigma below this (B.1: 0.05)
    xi_min: float = 0.01       # prune any operator with sigma below this (B.1: 0.01)
    t0: int = 0                # recorded after t0 + 1 epochs without pruning (B.1: 3; our budgets are ~10 epochs)
    flops_min: float = 0.2     # stop pruning at this fraction of the supernet's FLOPs (B.1: 240M-360M)
    target_mflops: float | None = None  # deliverable: most accurate Pareto member under this many MFLOPs
    acc_tolerance: float = 0.01  # default deliverable: cheapest member within this val accuracy of the best

    def __post_init__(self):
        validate_params(self)
        if self.channels < 2 or self.cells < 3 or self.steps < 1:
            raise UsageError(f"need channels >= 2, cells >= 3, steps >= 1; got {self.channels}, {self.cells}, "
                             f"{self.steps}")
        if self.n0 < 1 or self.t0 < 0 or not self.c0 > 1:
            raise UsageError(f"need n0 >= 1, t0 >= 0, c0 > 1; got {self.n0}, {self.t0}, {self.c0}")
        if not 0 < self.xi_min <= self.xi_max < 1:
            raise UsageError(f"need 0 < xi_min <= xi_max < 1, got {self.xi_min}, {self.xi_max}")
        if not self.flops_min < 1 or not self.acc_tolerance <= 1:
            raise UsageError(f"flops_min and acc_tolerance are fractions in [0, 1), got {self.flops_min}, "
                             f"{self.acc_tolerance}")
        if self.target_mflops is not None and not self.target_mflops > 0:
            raise UsageError(f"target_mflops must be > 0, got {self.target_mflops}")


def edges_of(steps: int) -> list[tuple[int, int]]:
    """(node, src) of every edge of a cell, node-major: node j+2 takes inputs 0..j+1."""
    return [(j + 2, i) for j in range(steps) for i in range(j + 2)]


def prune(weights: torch.Tensor, active: torch.Tensor, node: torch.Tensor, n0: int, xi_max: float,
          xi_min: float) -> tuple[torch.Tensor, int]:
    """Algorithm 1, line 5: among the prunable active operators, prune the n0 weakest if their weight is
    below xi_max and any below xi_min. A node's last operator is not prunable (App. A.1: every node keeps
    an input), so it takes none of the n0 slots: counting it there would prune fewer than n0 where n0
    prunable operators lie below xi_max, and line 6 would then raise lambda where the paper lowers it.
    `weights`, `active` (bool) and `node` (an id per operator) have the same shape."""
    w, a, nd = weights.flatten(), active.flatten().clone(), node.flatten()
    idx = torch.nonzero(a).flatten()
    order = idx[torch.argsort(w[idx], stable=True)].tolist()  # weakest first
    left = torch.bincount(nd[a], minlength=int(nd.max()) + 1).tolist()
    pruned = 0
    for o in order:
        if left[int(nd[o])] <= 1:
            continue  # its node's last input: not prunable, and not one of the n0 weakest prunable
        wo = float(w[o])
        if wo >= xi_max or (pruned >= n0 and wo >= xi_min):
            break  # weakest first: nothing further is below its threshold
        a[o], pruned = False, pruned + 1
        left[int(nd[o])] -= 1
    return a.view_as(active), pruned


class GoldCell(nn.Module):
    """A search cell of the enlarged space: one module per (node, src, op), gated by sigma(alpha)."""

    def __init__(self, g, steps: int):
        super().__init__()
        self.steps = steps
        self.pre0, self.pre1 = preprocess(g, 0), preprocess(g, 1)
        self.ops = nn.ModuleDict({op_key(j, i, o, False): make_op(o, g.c, 2 if g.reduction and i < 2 else 1)
                                  for j, i in edges_of(steps) for o in OPS})

    def forward(self, s0, s1, gates, active):
        used = {i for e, (_, i) in enumerate(edges_of(self.steps)) if any(active[e])}
        states = [self.pre0(s0) if 0 in used else None, self.pre1(s1) if 1 in used else None]
        e = 0
        for j in range(self.steps):
            acc = None
            for i in range(j + 2):
                for o, op in enumerate(OPS):  # (src, OPS) order, as the child sums
                    if active[e][o]:
                        y = self.ops[op_key(j + 2, i, op, False)](states[i]) * gates[e, o]
                        acc = y if acc is None else acc + y
                e += 1
            states.append(acc)
        return torch.cat(states[2:], 1)


class GoldNet(nn.Module):
    def __init__(self, channels: int, num_cells: int, steps: int, image_size: int, num_classes: int):
        super().__init__()
        self.channels, self.steps, self.image_size, self.num_classes = channels, steps, image_size, num_classes
        self.geo = layout(num_cells, channels, steps, image_size)
        self.stem = make_stem(channels)
        self.cells = nn.ModuleList([GoldCell(g, steps) for g in self.geo])
        self.classifier = nn.Linear(steps * self.geo[-1].c, num_classes)
        shape = (num_cells, len(edges_of(steps)), len(OPS))
        self.alpha = nn.Parameter(torch.zeros(shape))  # B.1: architectural parameters start at zero
        self.register_buffer("active", torch.ones(shape, dtype=torch.bool))
        flops = torch.tensor([[[op_macs(o, g.c, 2 if g.reduction and i < 2 else 1, g.size_out) for o in OPS]
                               for _, i in edges_of(steps)] for g in self.geo], dtype=torch.float64)
        self.op_flops = flops  # FLOPs(o) of App. A.3, per (cell, edge, op)
        self.register_buffer("flops_unit", (flops / flops.mean()).float(), persistent=False)
        self.num_nodes = num_cells * steps
        self.register_buffer("node_id", torch.tensor([[[k * steps + j - 2] * len(OPS) for j, _ in edges_of(steps)]
                                                      for k in range(num_cells)]), persistent=False)

    def forward(self, x):
        gates, active = torch.sigmoid(self.alpha), self.active.tolist()
        s = self.stem(x)
        s0 = s1 = s
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, gates[k], active[k])
        return classify(self.classifier, s1)

    def flops_penalty(self, mu: float) -> torch.Tensor:
        """Eq. 5 and its uniform version: sum over active o of ln(1 + sigma_o / mean_edge sigma) * FLOPs(o)."""
        sig, act = torch.sigmoid(self.alpha), self.active.float()
        mean = ((sig * act).sum(-1, keepdim=True) / act.sum(-1, keepdim=True).clamp_min(1)).detach()
        r = torch.log1p(sig / mean.clamp_min(1e-12)) * act
        return (r * self.flops_unit).sum() + mu * r.sum()

    def prunable_cost(self, mu: float) -> bool:
        """Whether some operator that pruning may remove (its node has another) is penalised at all."""
        a = self.active.flatten()
        per_node = torch.bincount(self.node_id.flatten()[a], minlength=self.num_nodes)
        removable = a & (per_node[self.node_id.flatten()] > 1)
        return bool(((self.flops_unit.flatten() + mu) > 0)[removable].any())

    def arch(self) -> CellArch:
        active, cells = self.active.tolist(), []
        for k, g in enumerate(self.geo):
            nodes = [[] for _ in range(self.steps)]
            for e, (j, i) in enumerate(edges_of(self.steps)):
                nodes[j - 2] += [Edge(i, o) for o, on in zip(OPS, active[k][e]) if on]
            cells.append(Cell(g.reduction, tuple(map(tuple, nodes))))
        return CellArch(tuple(cells), self.channels, self.image_size, self.num_classes)

    @torch.no_grad()
    def export(self) -> tuple[CellArch, nn.Module]:
        """The current architecture's child: kept operators with their weights, gates folded in."""
        arch = self.arch()
        child = arch.build().to(self.alpha.device)
        own, gates, active = self.state_dict(), torch.sigmoid(self.alpha), self.active.tolist()
        sd = {}
        for name in child.state_dict():
            sd[name] = own[name] if name in own else None
        for k in child.live:
            for j in range(self.steps):
                sd[f"cells.{k}.gate{j + 2}"] = torch.stack(
                    [gates[k, e, o] for e, (jj, _) in enumerate(edges_of(self.steps)) if jj == j + 2
                     for o in range(len(OPS)) if active[k][e][o]])
        child.load_state_dict(sd)
        return arch, child.eval()


class GoldNAS(Searcher):
    name = "gold"
    Params = Params
    # mu in [0, 2], linear: the paper's settings 0 (accurate) and 1 (cheap) lie inside, and 0 is a real
    # choice (FLOPs-weighted term alone), which a log scale could not reach.
    tunable = {"mu": (0.0, 2.0, False)}

    def __init__(self, params, task, settings):
        super().__init__(params, task, settings)
        p = params
        task.to(self.device)
        c = max(2, round(p.channels * settings.width))
        self.net = GoldNet(c, p.cells, p.steps, task.image_size, task.num_classes).to(self.device)
        weights = [q for n, q in self.net.named_parameters() if n != "alpha"]
        self.opt_w = torch.optim.SGD(weights, lr=p.lr_w, momentum=p.momentum, weight_decay=p.weight_decay)
        self.opt_a = torch.optim.SGD([self.net.alpha], lr=p.lr_alpha, momentum=p.momentum)
        self.full_flops = self.net.arch().flops()
        self.lam, self.dlam, self.t, self.done = 0.0, p.lam0, 0, False  # Algorithm 1, line 1
        self.pareto: list[dict] = []

    def train_epoch(self):
        p, net = self.params, self.net
        net.train()
        lam, tot, tot_ce, n = self.lam, 0.0, 0.0, 0
        for x, y in self.task.batches("train", self.settings.batch_size, self.generator, augment=True):
            ce = F.cross_entropy(net(x), y)
            loss = ce + lam * net.flops_penalty(p.mu) if lam > 0 else ce  # Sec. 3.5 objective
            self.opt_w.zero_grad()
            self.opt_a.zero_grad()
            loss.backward()  # one-level (Eq. 2): both updated from the same training batch
            nn.utils.clip_grad_norm_([q for q in self.opt_w.param_groups[0]["params"] if q.grad is not None],
                                     p.grad_clip)
            self.opt_w.step()
            self.opt_a.step()
            tot, tot_ce, n = tot + loss.item() * len(y), tot_ce + ce.item() * len(y), n + len(y)
        pruned = self._prune_round()
        arch = net.arch()
        flops = arch.flops()
        recalibrate_bn(net, self.task, self.settings.batch_size)
        val_acc = self.task.accuracy(net, "val", self.device)
        if self.t > p.t0:  # Algorithm 1, line 8: survived t0 + 1 epochs unpruned
            self._record(arch, flops, val_acc)
            self.t = 0
        elif self.epoch + 1 == self.settings.epochs:  # the budget stops the search here (B.1: "anywhere")
            self._record(arch, flops, val_acc)
        # Line 9, and also stop where the penalty can prune nothing more (every node down to one operator,
        # or, with mu = 0, only free skip-connects left): lambda would grow without bound toward an
        # unreachable FLOPs_min.
        if not self.done and (flops <= p.flops_min * self.full_flops or not net.prunable_cost(p.mu)):
            self.done, self.lam = True, 0.0
        extra = {"lambda": lam, "next_lambda": self.lam, "pruned": pruned, "ops_left": int(net.active.sum()),
                 "pareto": len(self.pareto), "done": self.done}
        return dict(loss=tot / n, ce=tot_ce / n, runtime_ms=None, flops=float(flops), val_acc=val_acc,
                    arch=str(arch), extra=extra)

    @torch.no_grad()
    def _prune_round(self) -> int:
        """Algorithm 1, lines 4-7."""
        p, net = self.params, self.net
        npruned = 0
        if not self.done:
            active, npruned = prune(torch.sigmoid(net.alpha), net.active, net.node_id, p.n0, p.xi_max, p.xi_min)
            net.active.copy_(active)
            if npruned < p.n0:
                self.dlam *= p.c0
                self.lam += self.dlam
            else:
                self.dlam, self.lam = p.lam0, self.lam / p.c0
        self.t = self.t + 1 if npruned == 0 else 0
        return npruned

    def _record(self, arch: CellArch, flops: int, val_acc: float) -> None:
        # The member keeps the whole search network of its epoch: its child is exported from it on demand
        # (and equals it, which `search_logits` lets a caller check).
        _, child = self.net.export()
        member = {"arch": str(arch), "flops": float(flops), "params": sum(q.numel() for q in child.parameters()),
                  "val_acc": val_acc, "epoch": self.epoch + 1, "lambda": self.lam,
                  "net": copy.deepcopy(self.net.state_dict())}
        if self.pareto and self.pareto[-1]["flops"] == member["flops"]:
            self.pareto[-1] = member  # same cost: the later one survived longer
        else:
            self.pareto.append(member)

    def chosen(self) -> int | None:
        """Index of the deliverable Pareto member (None: no member yet, the current network is it)."""
        if not self.pareto:
            return None
        m = list(enumerate(self.pareto))
        if self.params.target_mflops is not None:
            fit = [(i, x) for i, x in m if x["flops"] <= self.params.target_mflops * 1e6]
            if not fit:
                return min(m, key=lambda ix: ix[1]["flops"])[0]
            return max(fit, key=lambda ix: (ix[1]["val_acc"], -ix[1]["flops"]))[0]
        best = max(x["val_acc"] for x in self.pareto)
        return min((ix for ix in m if ix[1]["val_acc"] >= best - self.params.acc_tolerance),
                   key=lambda ix: ix[1]["flops"])[0]

    def member_net(self, i: int | None) -> GoldNet:
        """The search network as it was when Pareto member `i` was recorded (None: as it is now)."""
        if i is None:
            return self.net
        net = copy.deepcopy(self.net)
        net.load_state_dict(self.pareto[i]["net"])
        return net

    def derive(self):
        return self.member_net(self.chosen()).export()

    @torch.no_grad()
    def search_logits(self, x):
        net = self.member_net(self.chosen())
        was = net.training
        out = net.eval()(x)
        net.train(was)
        return out

    def extra_result(self):
        pts = [(m["flops"], m["val_acc"]) for m in self.pareto]
        dominated = [any(f2 <= f and a2 >= a and (f2, a2) != (f, a) for f2, a2 in pts) for f, a in pts]
        return {"pareto": [{**{k: v for k, v in m.items() if k != "net"}, "dominated": d}
                           for m, d in zip(self.pareto, dominated)],
                "chosen": self.chosen(), "supernet_flops": float(self.full_flops)}

    def method_state(self):
        return copy.deepcopy({"net": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                              "opt_a": self.opt_a.state_dict(), "lam": self.lam, "dlam": self.dlam, "t": self.t,
                              "done": self.done, "pareto": self.pareto})

    def load_method_state(self, state):
        state = copy.deepcopy(state)
        self.net.load_state_dict(state["net"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.lam, self.dlam, self.t, self.done = state["lam"], state["dlam"], state["t"], state["done"]
        self.pareto = state["pareto"]
