"""Random search by rejection (Single-Path NAS paper Sec. VII-A, method 5).

Sample architectures uniformly from the Single-Path space, keep those whose exact runtime on the
profile lies within +-window of the target ("samples with runtimes within the range of interest
~80 ms"), train each kept candidate for the search's epochs and deliver the one with the best
validation accuracy. Its cost is n_samples trainings, which the paper notes is not negligible.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from .base import Searcher
from .cost import exact_cost, exact_runtime, load_profile
from .errors import UsageError
from .spaces.mbconv import EXPANSIONS, KERNELS, SE_RATIOS, Block, MBConvArch, layer_specs
from .training import train_one_epoch


@dataclass(frozen=True, kw_only=True)
class RandomSearchParams:
    n_samples: int = 4        # candidates trained (each for the search's epochs)
    window: float = 0.05      # relative runtime window around the target (+-5 %)
    lr: float = 3e-3
    max_draws: int = 200_000  # rejection sampling gives up after this many draws

    def __post_init__(self):
        if self.n_samples < 1 or not 0 < self.window < 1:
            raise UsageError("n_samples must be >= 1 and window in (0, 1)")


def sample_arch(rng: random.Random, width: float, image_size: int, num_classes: int) -> MBConvArch:
    """Uniform over each layer's candidates: 12 MBConvs, plus skip where the layer allows it."""
    choices = [Block(k, e, se) for k in KERNELS for e in EXPANSIONS for se in SE_RATIOS]
    blocks = []
    for spec in layer_specs(width, image_size)[1:-1]:
        options = choices + ([Block(skip=True)] if spec.skippable else [])
        blocks.append(rng.choice(options))
    return MBConvArch(tuple(blocks), width=width, image_size=image_size, num_classes=num_classes)


class RandomSearch(Searcher):
    name = "random"
    Params = RandomSearchParams
    has_runtime_model = True  # the Single-Path MBConv space: exact runtime from the profile
    needs_runtime_target = True  # it samples within +-window of the target runtime
    tunable = {}  # no trade-off hyperparameter: the target window is the constraint

    def __init__(self, params, task, settings):
        super().__init__(params, task, settings)
        if settings.target_ms is None:
            raise UsageError("random search needs a runtime target (--target-ms)")
        profile = load_profile(settings.profile)
        lo, hi = settings.target_ms * (1 - params.window), settings.target_ms * (1 + params.window)
        rng = random.Random(settings.seed)
        self.archs = []
        for _ in range(params.max_draws):
            a = sample_arch(rng, settings.width, task.image_size, task.num_classes)
            if lo <= exact_runtime(profile, a) <= hi:
                self.archs.append(a)
                if len(self.archs) == params.n_samples:
                    break
        else:
            raise UsageError(f"no architecture within {lo:.1f}-{hi:.1f} ms after {params.max_draws} draws")
        task.to(self.device)
        self.models = [a.build().to(self.device) for a in self.archs]
        self.opts = [torch.optim.Adam(m.parameters(), lr=params.lr) for m in self.models]
        self.val = [0.0] * len(self.models)
        self.losses = [float("nan")] * len(self.models)

    def train_epoch(self):
        for i, (model, opt) in enumerate(zip(self.models, self.opts)):
            self.losses[i] = train_one_epoch(model, opt, self.task, batch_size=self.settings.batch_size,
                                             generator=self.generator, lr=self.params.lr, epoch=self.epoch,
                                             epochs=self.settings.epochs, device=self.device)
            self.val[i] = self.task.accuracy(model, "val")
        b = self._best()
        cost = exact_cost(self.archs[b], self.task, self.settings)
        return dict(loss=self.losses[b], ce=self.losses[b], runtime_ms=cost.runtime_ms, flops=cost.flops,
                    val_acc=self.val[b], arch=str(self.archs[b]), extra={"candidate": b, "val_accs": list(self.val)})

    def _best(self) -> int:
        return max(range(len(self.val)), key=lambda i: self.val[i])

    @torch.no_grad()
    def search_logits(self, x):
        return self.models[self._best()].eval()(x)

    def derive(self):
        b = self._best()
        return self.archs[b], self.models[b]

    def method_state(self):
        return {"models": [copy.deepcopy(m.state_dict()) for m in self.models],
                "opts": [copy.deepcopy(o.state_dict()) for o in self.opts], "val": list(self.val),
                "losses": list(self.losses)}

    def load_method_state(self, state):
        for m, s in zip(self.models, state["models"]):
            m.load_state_dict(s)
        for o, s in zip(self.opts, state["opts"]):
            o.load_state_dict(s)
        self.val, self.losses = list(state["val"]), list(state["losses"])
