"""Multi-path differentiable NAS, the baseline of Single-Path NAS (paper Sec. III-C, Eq. 6 and 8;
Sec. VII-A, formulation 1: "multi-path with sigmoid", a vanilla multi-path solver after [17]).

Same space and device profile as Single-Path NAS (Sec. III, Eq. 4: kernel {3, 5} x expansion {3, 6}
x SE ratio {0, 0.25, 0.5}, or skip): every searchable layer holds one separate MBConv per candidate
(12, plus skip where the layer is skippable), and its output is the weighted sum of all paths (Eq. 6)

    o_i(x) = [x +] sum_j w_ij * conv_ij(x),      w_i = sigmoid(alpha_i)  (default)  or  softmax(alpha_i),

where conv_ij is candidate j's convolutions and the layer's residual x (where it has one) enters once,
as in Eq. 6 (skip: the residual alone; `MultiPathNet.mixed`).

Bilevel, first order (Eq. 8): each training step first moves alpha on a batch of the architecture half
of the training split (data.arch_split, as EnTranNAS App. B.1 and DARTS; the val split that scores
Eq. 19 is never trained on) with

    L = CE + lam * log R,     R = R_const + sum_ij w_ij * R_ij         (Eq. 10 with the expected runtime)

(R_ij: the profile's runtime of candidate j at layer i, its SE factor included (Eq. 14); skip costs 0),
then the weights on a batch of the weight half with alpha frozen (in every phase the weights train on
that half only). Sigmoid weights need not sum to 1, so "expected" runtime is then a weighted
sum, not an expectation: the paper does not say how its sigmoid baseline prices runtime; this is the
direct reading of Eq. 6 with Eq. 10. The derived child takes the argmax path per layer with that
path's trained weights (no retraining). It does NOT reproduce the weighted-sum network (that gap is the
paper's point), so `search_logits` is None; a last fine-tuning epoch trains the chosen paths alone.

`CandidateNet` (one module per candidate, names matching ChildNet) is also DSNAS's parent network.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Searcher
from .cost import exact_cost, load_profile
from .errors import UsageError, check_choice
from .spaces.mbconv import EXPANSIONS, KERNELS, SE_RATIOS, Block, ChildNet, Head, MBConv, MBConvArch, conv_bn, \
    layer_specs, stem_stride
from .data import arch_split
from .training import Mean, autocast, cosine_lr, endless_batches, set_lr, steps_per_epoch

# The Single-Path space per layer (Eq. 1-4): every (k, e) with every SE ratio, then skip. The same
# candidates for multi-path and DSNAS as for single-path and random search, so every method on this
# space searches the same architectures and the profile prices SE alike for all (Eq. 14-17).
CANDIDATES = tuple(Block(k, e, se) for k in KERNELS for e in EXPANSIONS for se in SE_RATIOS) + (Block(skip=True),)
N_CAND = len(CANDIDATES)
WEIGHTINGS = ("sigmoid", "softmax")


def phase_of(epoch: int, epochs: int, warmup: int, finetune: int) -> str:
    """warmup | search | finetune for a 0-based epoch, as Single-Path NAS: short runs keep at least one
    search epoch (warm-up shrinks first; fine-tuning only when a search epoch remains besides it)."""
    n_warm = min(warmup, max(0, epochs - 1))
    n_fine = finetune if epochs - n_warm - finetune >= 1 else 0
    return "warmup" if epoch < n_warm else "finetune" if epoch >= epochs - n_fine else "search"


class CandidateNet(nn.Module):
    """Stem, fixed layer 0, 20 searchable layers each a ModuleList of candidate MBConvs (+ Identity for
    skip), fixed layer 21, head; architecture logits `alpha` (20 x 13, skip masked where not allowed)."""

    def __init__(self, width: float, image_size: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.width, self.image_size, self.num_classes, self.dropout = width, image_size, num_classes, dropout
        specs = layer_specs(width, image_size)
        self.specs = specs[1:-1]
        self.stem = conv_bn(3, specs[0].in_channels, 3, stem_stride(image_size))
        layers = {"0": MBConv(specs[0].in_channels, specs[0].out_channels, 3, 1, 1)}
        for s in self.specs:
            layers[str(s.index)] = nn.ModuleList(
                nn.Identity() if b.skip else MBConv(s.in_channels, s.out_channels, b.kernel, b.expansion, s.stride,
                                                    b.se)
                for b in CANDIDATES if s.skippable or not b.skip)
        layers["21"] = MBConv(specs[-1].in_channels, specs[-1].out_channels, 3, 6, 1)
        self.layers = nn.ModuleDict(layers)
        self.head = Head(specs[-1].out_channels, width, num_classes, dropout)
        self.alpha = nn.Parameter(torch.zeros(len(self.specs), N_CAND))  # zeros: uniform over candidates
        valid = torch.tensor([[s.skippable or not b.skip for b in CANDIDATES] for s in self.specs])
        self.register_buffer("valid", valid, persistent=False)

    def choices(self) -> list[nn.ModuleList]:
        return [self.layers[str(s.index)] for s in self.specs]

    def masked_alpha(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.valid, float("-inf"))

    def argmax_path(self) -> list[int]:
        return self.masked_alpha().argmax(-1).tolist()

    def run(self, x: torch.Tensor, layer_fn) -> torch.Tensor:
        """Forward with `layer_fn(i, candidates, x)` computing searchable layer i."""
        x = self.layers["0"](self.stem(x))
        for i, cands in enumerate(self.choices()):
            x = layer_fn(i, cands, x)
        return self.head(self.layers["21"](x))

    def run_path(self, x: torch.Tensor, path: list[int]) -> torch.Tensor:
        """Only the chosen candidate of every layer runs: the child network, exactly."""
        return self.run(x, lambda i, cands, h: cands[path[i]](h))

    def arch(self, path: list[int]) -> MBConvArch:
        return MBConvArch(tuple(CANDIDATES[k] for k in path), width=self.width, image_size=self.image_size,
                          num_classes=self.num_classes, dropout=self.dropout)

    @torch.no_grad()
    def extract(self, path: list[int]) -> tuple[MBConvArch, ChildNet]:
        """The child of `path` with the chosen candidates' trained weights (state dicts copied)."""
        arch = self.arch(path)
        device = self.alpha.device
        child = ChildNet(arch).to(device)
        for name in ("stem", "head"):
            getattr(child, name).load_state_dict(getattr(self, name).state_dict())
        for name in ("0", "21"):
            child.layers[name].load_state_dict(self.layers[name].state_dict())
        for s, cands, k in zip(self.specs, self.choices(), path):
            if not CANDIDATES[k].skip:
                child.layers[str(s.index)].load_state_dict(cands[k].state_dict())
        return arch, child


def runtime_table(profile, specs) -> tuple[torch.Tensor, float]:
    """(R_ij in ms, 20 x 13, skip and masked entries 0; the profile's constant): exact per candidate,
    SE priced by the profile's factors (Eq. 14; 1.0x on a profile without them)."""
    rows = [[profile.block_ms(s.index, b) for b in CANDIDATES] for s in specs]
    return torch.tensor(rows), profile.constant_ms


@dataclass(frozen=True, kw_only=True)
class MultiPathParams:
    lam: float = 0.02               # Eq. 10 trade-off, the same meaning (and default) as Single-Path NAS
    weighting: str = "sigmoid"      # sigmoid (the paper's "multi-path with sigmoid") | softmax (FBNet-like)
    lr: float = 3e-3                # Adam on the weights, cosine-decayed over the search (as single-path)
    arch_lr: float = 0.05           # Adam on alpha: a few-epoch search needs alpha to move (as threshold_lr)
    warmup_epochs: int = 1          # weights only (alpha frozen) first: alpha compares untrained paths else
    finetune_epochs: int = 1        # last epochs train only the argmax paths, i.e. the delivered child

    def __post_init__(self):
        check_choice("weighting", self.weighting, WEIGHTINGS)
        if not self.lam >= 0:
            raise UsageError(f"lam must be >= 0, got {self.lam}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.finetune_epochs < 0:
            raise UsageError("warmup_epochs and finetune_epochs must be >= 0")


class MultiPathNet(CandidateNet):
    def __init__(self, *args, weighting: str = "sigmoid", **kw):
        super().__init__(*args, **kw)
        self.weighting = weighting
        self.frozen: list[int] | None = None  # fine-tuning: the argmax paths, run alone

    def path_weights(self) -> torch.Tensor:
        """w_ij of Eq. 6 (0 where a candidate is not allowed)."""
        if self.weighting == "softmax":
            return self.masked_alpha().softmax(-1)
        return torch.sigmoid(self.alpha) * self.valid

    def forward(self, x):
        if self.frozen is not None:
            return self.run_path(x, self.frozen)
        w = self.path_weights()
        return self.run(x, lambda i, cands, h: self.mixed(cands, w[i], h))

    @staticmethod
    def mixed(cands: nn.ModuleList, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Eq. 6: the weighted sum of the paths' convolutions, plus the layer's residual once. Each
        candidate MBConv carries the residual itself (so a child is the chosen candidates in a row);
        summing whole candidates would weight the input by sum_j w_ij (~6.5 at sigmoid's start, up to
        ~12 later), multiplying it again at every residual layer, and the derived child, whose input
        enters once, would be another network still (on digits, 4 epochs, lam 0: the child scored val
        0.10 after a search at 0.94; 0.16 with the residual once; train_epoch says the rest).
        Skip is the residual alone: its path adds no convolution (and costs 0 in Eq. 10), as the 'zero'
        candidate plus the block's shortcut of ProxylessNAS [17], the solver the paper's baseline follows."""
        convs = [k for k, op in enumerate(cands) if isinstance(op, MBConv)]
        if not cands[convs[0]].residual:   # first layer of a stage: no residual, and no skip candidate
            return sum(w[k] * cands[k](h) for k in convs)
        return h + sum(w[k] * cands[k].branch(h) for k in convs)


class MultiPathNAS(Searcher):
    name = "multi-path"
    Params = MultiPathParams
    has_runtime_model = True  # the Single-Path MBConv space: exact runtime from the profile
    # lam log-uniform on [1e-5, 1]: single-path's upper end (the same Eq. 10 term on the same profile)
    # and two decades further down, where multi-path's larger networks are. Measured on CIFAR-10 (10k
    # images, width 0.25, 4 epochs, Pixel 1 table; results/cifar10-variance, multi-path/tune): lam 0.004
    # -> 82.4 ms, 4.7e-5 -> 90.5 ms. Before Eq. 6 weighted the convolutions alone, 80 ms lay below 1e-3
    # (0.0025 -> 57.6 ms, 0 -> 86.1 ms), which is what first showed single-path's range too narrow here.
    tunable = {"lam": (1e-5, 1.0, True)}

    def __init__(self, params, task, settings):
        super().__init__(params, task, settings)
        self.profile = load_profile(settings.profile)
        net = MultiPathNet(settings.width, task.image_size, task.num_classes, weighting=params.weighting)
        self.net = net.to(self.device).to(memory_format=torch.channels_last)
        table, self.r_const = runtime_table(self.profile, net.specs)
        self.r_table = table.to(self.device)
        self.weights = [p for n, p in self.net.named_parameters() if n != "alpha"]
        self.opt = torch.optim.Adam(self.weights, lr=params.lr)
        self.arch_opt = torch.optim.Adam([self.net.alpha], lr=params.arch_lr, betas=(0.5, 0.999))
        task.to(self.device)
        self.w_task, self.a_task = arch_split(task)  # weights on one half of train, alpha on the other

    def expected_runtime(self) -> torch.Tensor:
        """R = R_const + sum_ij w_ij R_ij (ms): Eq. 11's layer sum with Eq. 6's path weights."""
        return self.r_const + (self.net.path_weights() * self.r_table).sum()

    def phase(self, epoch: int) -> str:
        p = self.params
        return phase_of(epoch, self.settings.epochs, p.warmup_epochs, p.finetune_epochs)

    def arch_step(self, xv, yv, lam: float) -> torch.Tensor:
        """Eq. 8, outer problem: alpha on a batch of the architecture half (weights untouched: no grads)."""
        self.arch_opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            ce = F.cross_entropy(self.net(xv), yv)
        loss = ce + lam * torch.log(self.expected_runtime()) if lam > 0 else ce  # Eq. 10
        loss.backward(inputs=[self.net.alpha])
        self.arch_opt.step()
        return loss

    def weight_step(self, x, y) -> torch.Tensor:
        """Eq. 8, inner problem: the weights on a batch of the weight half (alpha untouched: no grad)."""
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            ce = F.cross_entropy(self.net(x), y)
        ce.backward(inputs=self.weights)
        self.opt.step()
        return ce

    def train_epoch(self):
        p, net, task, bs = self.params, self.net, self.task, self.settings.batch_size
        phase = self.phase(self.epoch)
        if phase == "finetune" and net.frozen is None:
            net.frozen = net.argmax_path()
        search = phase == "search"
        lam = p.lam if search else 0.0
        net.train()
        n_steps = steps_per_epoch(len(self.w_task.train[1]), bs)
        arch_iter = endless_batches(self.a_task, bs, self.generator) if search else None
        loss_m, ce_m, arch_m = Mean(), Mean(), Mean()
        # The derived child is another network than the weighted sum it was trained in (its layers saw
        # the sum of every path), so fine-tuning starts a schedule of its own (lr back to p.lr, cosine over
        # the fine-tuning epochs); on the search's schedule it ran at the curve's tail and the child stayed
        # at chance (measured on digits, 4 epochs, lam 0: val 0.94 in the search, 0.16 after fine-tuning on
        # the search's schedule, 0.28 on its own: one short epoch does not retrain the child; --final-epochs does).
        epochs = self.settings.epochs
        n_fine = sum(self.phase(e) == "finetune" for e in range(epochs))
        start, length = (epochs - n_fine, n_fine) if phase == "finetune" else (0, epochs)
        for step, (x, y) in enumerate(self.w_task.batches("train", bs, self.generator, augment=True,
                                                          drop_last=True)):
            set_lr(self.opt, cosine_lr(p.lr, self.epoch - start, step, n_steps, length))
            x = x.contiguous(memory_format=torch.channels_last)
            if search:  # alternate per step: alpha on the architecture half, then the weights on theirs
                xa, ya = next(arch_iter)
                arch_m.add(self.arch_step(xa.contiguous(memory_format=torch.channels_last), ya, lam))
            ce = self.weight_step(x, y)
            ce_m.add(ce)
            if lam > 0:  # the Eq. 10 objective on the training batch, for the record
                with torch.no_grad():
                    ce = ce + lam * torch.log(self.expected_runtime())
            loss_m.add(ce)
        path = net.frozen or net.argmax_path()
        arch = net.arch(path)
        cost = exact_cost(arch, task, self.settings)
        with torch.no_grad():
            w = net.path_weights()
            expected = float(self.expected_runtime())
        return dict(loss=loss_m.get(), ce=ce_m.get(), runtime_ms=cost.runtime_ms, flops=cost.flops,
                    val_acc=task.accuracy(net, "val"), arch=str(arch),
                    extra={"phase": phase, "lam": lam, "arch_loss": arch_m.get() if search else None,
                           "expected_runtime_ms": round(expected, 3),
                           "max_weight": [round(v, 4) for v in w.max(-1).values.tolist()]})

    def derive(self):
        self.net.eval()
        return self.net.extract(self.net.frozen or self.net.argmax_path())

    def method_state(self):
        return copy.deepcopy({"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                              "arch_opt": self.arch_opt.state_dict(), "frozen": self.net.frozen})

    def load_method_state(self, state):
        state = copy.deepcopy(state)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.net.frozen = state["frozen"]
