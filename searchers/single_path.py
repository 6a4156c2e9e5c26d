"""Single-Path NAS (paper Sec. III, Eq. 1-17; variants of Sec. VII-A).

One supernet whose searchable layers are superkernels (spaces/superkernel.py); the architecture is
encoded in the weights plus one threshold per decision, so a search step costs about one step of the
largest compact network. The loss is Eq. 10:

    L = CE + lam * log R(ms)

with R the differentiable runtime of Eq. 11-17 on a device profile. `lam` is exactly the
coefficient of Eq. 10 (no hidden rescaling). The journal gives no value for it; the public code computes
`runtime_lambda * 1e3 * log(R)`, so its flag times 1e3 is this `lam`: the flag 0.020 of its README is
lam = 20 here, and lam = 0.02 here is a flag of 2e-5 there.
Variants: "sigmoid" (default, one-level), "ste" (one-level), "softmax" (Eq. 18, bilevel: the logits
tau step on batches of a fixed half of the training split, interleaved with the weights' step on the
other half, as EnTranNAS and DARTS; the val split that scores Eq. 19 is never trained on).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import Searcher
from .cost import exact_cost, load_profile
from .cost.runtime import Indicators, network_runtime, stacked_tables
from .data import arch_split
from .errors import UsageError, check_choice
from .spaces.mbconv import Block, ChildNet, Head, MBConv, MBConvArch, conv_bn, layer_specs, stem_stride
from .spaces.superkernel import DECISIONS, MASKS, VARIANTS, DecisionLayout, SuperMBConv
from .training import Mean, autocast, cosine_lr, endless_batches, eval_logits, set_lr, steps_per_epoch


@dataclass(frozen=True, kw_only=True)
class SinglePathParams:
    lam: float = 0.02                # Eq. 10 coefficient. No paper value; the public code's flag x 1e3
                                     # is this lam (its README's 0.020 is lam 20). 0.02 lies where runtime
                                     # falls fastest on digits and CIFAR-10 (README: lambda response)
    variant: str = "sigmoid"         # sigmoid | ste | softmax  (Sec. VII-A formulations 2-4)
    lr: float = 3e-3                 # Adam, cosine-decayed over the search
    threshold_lr: float = 2.0        # Adam on the thresholds / softmax logits, per search EPOCH: each
                                     # step gets threshold_lr / steps-per-epoch, in units of the subset's
                                     # norm (superkernel.py t_unit). So a decision can flip within one
                                     # search epoch whatever the data set size (2 epochs on digits: 36
                                     # steps; 10k CIFAR-10 images: 312), and lam means the same there.
    warmup_epochs: int = 1           # lam off and decisions dropped at random (public code: warm-up)
    finetune_epochs: int = 1         # last epochs with the architecture frozen and lam off, so the
                                     # delivered child's weights are trained on its own architecture
                                     # (the deliverable is used without retraining; not in the paper)
    decision_dropout: float = 0.1    # probability of dropping each decision during warm-up
    weight_decay: float = 0.0        # no decay: it would shrink the very norms the decisions compare
    mask: str = "features"           # features: decisions mask the weights AND gate the features, so the
                                     # child equals the supernet (and expansion / skip thresholds get a
                                     # CE gradient, superkernel.py); weights: Eq. 2-4 literally

    def __post_init__(self):
        check_choice("variant", self.variant, VARIANTS)
        check_choice("mask", self.mask, MASKS)
        if not self.lam >= 0:
            raise UsageError(f"lam must be >= 0, got {self.lam}")
        for name in ("lr", "threshold_lr"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.finetune_epochs < 0 or not 0 <= self.decision_dropout < 1:
            raise UsageError("warmup_epochs and finetune_epochs must be >= 0 and decision_dropout in [0, 1)")


class SuperNet(nn.Module):
    """Stem, fixed layer 0, 20 superkernel layers, fixed layer 21, head (names match ChildNet)."""

    def __init__(self, width: float, image_size: int, num_classes: int, variant: str, dropout: float = 0.2,
                 mask: str = "features"):
        super().__init__()
        self.width, self.image_size, self.num_classes, self.dropout = width, image_size, num_classes, dropout
        specs = layer_specs(width, image_size)
        self.stem = conv_bn(3, specs[0].in_channels, 3, stem_stride(image_size))
        layers = {"0": MBConv(specs[0].in_channels, specs[0].out_channels, 3, 1, 1)}
        for spec in specs[1:-1]:
            layers[str(spec.index)] = SuperMBConv(spec, variant, mask)
        layers["21"] = MBConv(specs[-1].in_channels, specs[-1].out_channels, 3, 6, 1)
        self.layers = nn.ModuleDict(layers)
        self.head = Head(specs[-1].out_channels, width, num_classes, dropout)
        self.variant = variant
        self._layout = DecisionLayout(self.searchable())   # index tensors only: no parameters, no state

    def searchable(self) -> list[SuperMBConv]:
        return [m for m in self.layers.values() if isinstance(m, SuperMBConv)]

    def decisions(self, hard: bool = False) -> torch.Tensor:
        """(20, 5) decisions of the searchable layers in DECISIONS order (columns k5, e6, e3, se25, se50):
        for the threshold variants all layers at once (DecisionLayout), else stacked layer by layer."""
        layers = self.searchable()
        if self.variant != "softmax" and all(m.frozen is None for m in layers):
            return self._layout.to(layers[0].t_unit.device).decisions(self.variant, hard, self.training)
        return torch.stack([torch.stack([d[k] for k in DECISIONS]) for d in (m.decisions(hard) for m in layers)])

    def forward(self, x, decisions=None):
        if decisions is None:
            decisions = self.decisions(hard=not self.training)
        gates = iter(self._layout.to(decisions.device).gates(decisions))
        x = self.stem(x)
        for layer in self.layers.values():
            x = layer(x, next(gates)) if isinstance(layer, SuperMBConv) else layer(x)
        return self.head(x)

    def arch(self) -> MBConvArch:
        return MBConvArch(tuple(m.block() for m in self.searchable()), width=self.width,
                          image_size=self.image_size, num_classes=self.num_classes, dropout=self.dropout)

    @torch.no_grad()
    def extract(self) -> tuple[MBConvArch, ChildNet]:
        """The derived compact network with the supernet's trained weights: no retraining."""
        arch = self.arch()
        child = ChildNet(arch).to(next(self.parameters()).device)
        child.stem.load_state_dict(self.stem.state_dict())
        child.head.load_state_dict(self.head.state_dict())
        for name in ("0", "21"):
            child.layers[name].load_state_dict(self.layers[name].state_dict())
        for m, b in zip(self.searchable(), arch.blocks):
            if not b.skip:
                child.layers[str(m.spec.index)] = m.extract(b)
        return arch, child.to(next(self.parameters()).device)


def split_parameters(net: SuperNet) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, architecture parameters: thresholds t or softmax logits tau)."""
    arch_names = ("t_", "tau_")
    arch, weights = [], []
    for name, p in net.named_parameters():
        (arch if name.rsplit(".", 1)[-1].startswith(arch_names) else weights).append(p)
    return weights, arch


class SinglePathNAS(Searcher):
    name = "single-path"
    Params = SinglePathParams
    has_runtime_model = True  # the Single-Path MBConv space: exact runtime from the profile
    # lam log-uniform on [1e-3, 1]: on pixel1-single-path (30.6-131.5 ms), measured with
    # benchmarks/lambda_response.py on digits at 2, 4 and 8 epochs, lam 1e-3 keeps 104-126 ms and
    # lam 1 gives the smallest network (31.4 ms); on 10k CIFAR-10 images at 4 epochs, 1e-3 -> 115.6 ms
    # and >= 0.19 -> 31.4 ms (results/cifar10-tune-bo-s0). 80 ms lies at lam ~0.01-0.03 on both.
    tunable = {"lam": (1e-3, 1.0, True)}

    def __init__(self, params, task, settings):
        super().__init__(params, task, settings)
        self.profile = load_profile(settings.profile)
        self._tables = stacked_tables(self.profile, self.device)   # Eq. 11-17 on all layers at once
        self.net = SuperNet(settings.width, task.image_size, task.num_classes, params.variant,
                            mask=params.mask).to(self.device)
        # channels_last: ~2x faster depthwise convolutions on CPU (oneDNN) and the fast path on CUDA
        self.net = self.net.to(memory_format=torch.channels_last)
        weights, arch = split_parameters(self.net)
        self.opt = torch.optim.Adam(weights, lr=params.lr, weight_decay=params.weight_decay)
        # thresholds (or logits) get their own optimiser: for softmax they step on the architecture half
        # (foreach: one call for the ~100 scalar thresholds instead of a Python loop over them; the same
        # arithmetic, bit for bit)
        self.arch_opt = torch.optim.Adam(arch, lr=params.threshold_lr, betas=(0.5, 0.999), foreach=True)
        task.to(self.device)
        # Bilevel (softmax): weights on one half of the training split, logits on the other
        # (data.arch_split); one-level variants train everything on the whole training split.
        self.w_task, self.a_task = arch_split(task) if params.variant == "softmax" else (task, None)

    def runtime(self, decisions) -> torch.Tensor:
        """Eq. 11-17: differentiable runtime (ms) of the current decisions on the profile."""
        d = dict(zip(DECISIONS, decisions.unbind(1)))
        return network_runtime(self._tables, Indicators(d_e3=d["e3"], d_e6=d["e6"], d_k5=d["k5"], d_se25=d["se25"],
                                                        d_se50=d["se50"]))

    def phase(self, epoch: int) -> str:
        """warmup | search | finetune for a 0-based epoch. Short runs keep at least one search epoch:
        warm-up shrinks first, fine-tuning happens only when a search epoch remains besides it."""
        epochs, p = self.settings.epochs, self.params
        n_warm = min(p.warmup_epochs, max(0, epochs - 1))
        n_fine = p.finetune_epochs if epochs - n_warm - p.finetune_epochs >= 1 else 0
        return "warmup" if epoch < n_warm else "finetune" if epoch >= epochs - n_fine else "search"

    def train_epoch(self):
        p, net, task = self.params, self.net, self.task
        phase = self.phase(self.epoch)
        warm = phase == "warmup"
        for m in net.searchable():
            m.drop_p = p.decision_dropout if warm else 0.0
            if phase == "search" and not m.t_unit.any():
                m.set_threshold_units()   # first search epoch: thresholds step in units of these norms
            if phase == "finetune" and m.frozen is None:
                m.frozen = m.block()
        lam = p.lam if phase == "search" else 0.0
        bilevel = p.variant == "softmax" and phase == "search"
        arch_step = phase == "search" and not bilevel
        net.train()
        bs = self.settings.batch_size
        n_steps = steps_per_epoch(len(self.w_task.train[1]), bs)
        arch_iter = endless_batches(self.a_task, bs, self.generator) if bilevel else None
        loss_m, ce_m = Mean(), Mean()
        for step, (x, y) in enumerate(self.w_task.batches("train", bs, self.generator, augment=True,
                                                          drop_last=True)):
            set_lr(self.opt, cosine_lr(p.lr, self.epoch, step, n_steps, self.settings.epochs))
            set_lr(self.arch_opt, p.threshold_lr / n_steps)
            x = x.contiguous(memory_format=torch.channels_last)
            if bilevel:
                # Eq. 18 bilevel: first the logits on a batch of the architecture half, then the weights
                xa, ya = next(arch_iter)
                self.arch_opt.zero_grad(set_to_none=True)
                self._loss(xa.contiguous(memory_format=torch.channels_last), ya, lam)[0].backward()
                self.arch_opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.arch_opt.zero_grad(set_to_none=True)
            loss, ce = self._loss(x, y, lam)
            loss.backward()
            self.opt.step()
            if arch_step:
                self.arch_opt.step()  # one-level: thresholds move with the weights (Eq. 9)
            loss_m.add(loss)
            ce_m.add(ce)
        arch = net.arch()
        cost = exact_cost(arch, task, self.settings)
        with torch.no_grad():
            pred = float(self.runtime(net.decisions(hard=True)))
        return dict(loss=loss_m.get(), ce=ce_m.get(), runtime_ms=cost.runtime_ms, flops=cost.flops,
                    val_acc=task.accuracy(net, "val"), arch=str(arch),
                    extra={"predicted_runtime_ms": round(pred, 3), "lam": lam, "phase": phase})

    def _loss(self, x, y, lam):
        with autocast(self.device):
            d = self.net.decisions()
            ce = F.cross_entropy(self.net(x, d), y)
        loss = ce + lam * torch.log(self.runtime(d)) if lam > 0 else ce  # Eq. 10
        return loss, ce

    def search_logits(self, x):
        if not all(m.gates_features for m in self.net.searchable()):
            return None  # mask "weights" without a frozen architecture: the child is not the supernet
        return eval_logits(self.net, x)

    def derive(self):
        self.net.eval()
        return self.net.extract()

    def method_state(self):
        return {"net": copy.deepcopy(self.net.state_dict()), "opt": copy.deepcopy(self.opt.state_dict()),
                "arch_opt": copy.deepcopy(self.arch_opt.state_dict()),
                "frozen": [None if m.frozen is None else str(m.frozen) for m in self.net.searchable()]}

    def load_method_state(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        for m, f in zip(self.net.searchable(), state["frozen"]):
            m.frozen = None if f is None else Block.parse(f)

    @torch.no_grad()
    def sample_archs(self, n: int, generator: torch.Generator) -> list[MBConvArch]:
        """`n` architectures drawn from the softmax variant's distribution (Eq. 18): per layer, kernel,
        expansion-or-skip and SE ratio each from softmax(tau), independently (the intra-run samples of
        Fig. 8). Only softmax has a distribution: sigmoid / STE decisions are thresholds."""
        if self.params.variant != "softmax":
            raise UsageError(f"only the softmax variant has an architecture distribution to sample, "
                             f"not {self.params.variant}")
        draw = lambda tau: int(torch.multinomial(tau.detach().float().softmax(0).cpu(), 1, generator=generator))
        net, archs = self.net, []
        for _ in range(n):
            blocks = []
            for m in net.searchable():
                kernel, e, se = (3, 5)[draw(m.tau_k)], draw(m.tau_e), (0.0, 0.25, 0.5)[draw(m.tau_se)]
                if m.spec.skippable:   # tau_e orders {skip, e3, e6}; unskippable layers {e3, e6}
                    e -= 1
                blocks.append(Block(skip=True) if e < 0 else Block(kernel, (3, 6)[e], se))
            archs.append(MBConvArch(tuple(blocks), width=net.width, image_size=net.image_size,
                                    num_classes=net.num_classes, dropout=net.dropout))
        return archs
