"""The inner loop's one small interface: a NAS method as a Searcher.

A searcher is built from its own hyperparameters (a frozen dataclass, `Params`), a Task and a
`RunSettings`; it trains epoch by epoch (`train_epoch`), can snapshot and restore its full state
between epochs (`state_dict` / `load_state_dict`), and finally `derive`s the child network with its
trained weights. `run` is the shared loop around those. It knows nothing of Ray or of automl.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .data import Task, accuracy_of
from .errors import DivergedError, UsageError, check_choice
from .result import EpochMetrics, SearchResult, pack_bits


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How one search runs, shared by every method (the method's own knobs live in its Params)."""

    epochs: int = 8            # search budget; the outer loop's fidelity
    seed: int = 0              # seeds torch's generators for init, batching and augmentation
    device: str = "cpu"        # "cpu" or "cuda" (or "cuda:N")
    batch_size: int = 32        # small data sets need steps more than large batches
    width: float = 1.0         # channel multiplier; 1.0 is the paper's space. Runtimes come from the
                               # profile's 224x224 width-1.0 table whatever the width searched at
    profile: str = "pixel1-single-path"  # device profile for runtime terms (bundled name or file)
    target_ms: float | None = None       # only for methods that need a runtime window (random search)

    def __post_init__(self):
        if self.epochs <= 0:
            raise UsageError(f"epochs must be > 0, got {self.epochs}")
        if self.seed < 0:   # numpy's generators refuse negative seeds; refuse them here, before any work
            raise UsageError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size <= 0:
            raise UsageError(f"batch size must be > 0, got {self.batch_size}")
        if not self.width > 0:
            raise UsageError(f"width must be > 0, got {self.width}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UsageError(f"unknown device {self.device!r}; valid choices: cpu, cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is available; valid choices: cpu")
        from .cost import cached_profile   # late: cost models import the spaces
        cached_profile(str(self.profile))   # an unknown or unreadable profile fails here, in one line


def validate_params(params) -> None:
    """Shared checks for method hyperparameters: coefficients are non-negative numbers."""
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, float) and (math.isnan(v) or v < 0) and f.metadata.get("nonneg", True):
            raise UsageError(f"{f.name} must be >= 0, got {v}")


class Searcher(abc.ABC):
    """One NAS method. Subclasses set `name`, `Params`, and implement the four abstract methods."""

    name: ClassVar[str]
    Params: ClassVar[type]
    # The hyperparameters the outer loop may tune, with (low, high, log-scale) and why.
    tunable: ClassVar[dict[str, tuple[float, float, bool]]] = {}
    # What it can measure, asked by the outer loop before any work (automl/study.py), never looked up
    # by name: a device runtime of its derived networks (an MBConv space with a profile, Eq. 11-17),
    # and whether it cannot run at all without a runtime target (random search's window).
    has_runtime_model: ClassVar[bool] = False
    needs_runtime_target: ClassVar[bool] = False

    def __init__(self, params, task: Task, settings: RunSettings):
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.name} takes {self.Params.__name__}, got {type(params).__name__}")
        self.params, self.task, self.settings = params, task, settings
        self.device = torch.device(settings.device)
        self.epoch = 0  # epochs completed
        self.history: list[EpochMetrics] = []
        self.wall_s = 0.0
        torch.manual_seed(settings.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)

    @classmethod
    def make_params(cls, **kwargs):
        """Params from keyword arguments, refusing unknown names with the list of valid ones."""
        valid = [f.name for f in dataclasses.fields(cls.Params)]
        for k in kwargs:
            check_choice(f"hyperparameter of {cls.name}", k, valid)
        return cls.Params(**kwargs)

    @classmethod
    def check_target(cls, *, target_ms: float | None, profile: str) -> None:
        """Refuse, before any work, a target this searcher cannot measure or reach: a runtime target
        (`target_ms`; None means a FLOPs target) needs a runtime model and must lie within what the
        profile's space can reach (Eq. 11: the fastest and slowest network); random search cannot run
        without one."""
        from . import get_searcher, list_searchers
        from .cost import cached_profile, runtime_range

        if target_ms is None:
            if cls.needs_runtime_target:
                raise UsageError(f"searcher {cls.name} samples within a runtime window: it needs a runtime "
                                 "target (--target-ms)")
            return
        if not cls.has_runtime_model:
            able = [n for n in list_searchers() if get_searcher(n).has_runtime_model]
            raise UsageError(f"searcher {cls.name} has no runtime model (no device profile for its space), so a "
                             f"runtime target cannot be measured; use a FLOPs target (--target-mflops) or one of: {', '.join(able)}")
        lo, hi = runtime_range(cached_profile(str(profile)))
        if not lo <= target_ms <= hi:
            raise UsageError(f"target {target_ms:g} ms is outside what profile {profile} can reach "
                             f"({lo:.2f}-{hi:.2f} ms)")

    # -- what each method implements -------------------------------------------------------
    @abc.abstractmethod
    def train_epoch(self) -> dict[str, Any]:
        """Train one epoch; return its metrics (keys of EpochMetrics: loss, ce, runtime_ms, ...)."""

    @abc.abstractmethod
    def derive(self) -> tuple[Any, nn.Module]:
        """The derived architecture (a readable object with str()) and the child with trained weights."""

    @abc.abstractmethod
    def method_state(self) -> dict[str, Any]:
        """Everything besides the shared fields that a restored run needs to continue identically."""

    @abc.abstractmethod
    def load_method_state(self, state: dict[str, Any]) -> None:
        ...

    def search_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """Eval-mode logits of the search network itself, for methods whose derived child claims to
        reproduce it (None where there is no such claim)."""
        return None

    def extra_result(self) -> dict[str, Any]:
        """Method-specific fields for result.json (e.g. GOLD-NAS's Pareto set)."""
        return {}

    # -- shared machinery ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "history": [dataclasses.asdict(h) for h in self.history],
            "wall_s": self.wall_s,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "method": self.method_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.history = [EpochMetrics(**h) for h in state["history"]]
        self.wall_s = state["wall_s"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.load_method_state(state["method"])

    def step(self) -> EpochMetrics:
        """Train one epoch and record its metrics; raises DivergedError on a NaN/inf loss."""
        t0 = time.perf_counter()
        m = self.train_epoch()
        self.wall_s += time.perf_counter() - t0
        self.epoch += 1
        metrics = EpochMetrics(epoch=self.epoch, wall_s=round(self.wall_s, 3), **m)
        if not math.isfinite(metrics.loss):
            raise DivergedError(f"{self.name} search diverged at epoch {self.epoch}: loss is {metrics.loss}")
        self.history.append(metrics)
        return metrics

    def run(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> SearchResult:
        """Run the remaining epochs (all of them, or those left after load_state_dict) and finish."""
        while self.epoch < self.settings.epochs:
            metrics = self.step()
            if on_epoch is not None:
                on_epoch(metrics)
        return self.finish()

    def finish(self) -> SearchResult:
        from .cost import exact_cost  # late: cost models import the spaces

        arch, child = self.derive()
        child.eval()
        cost = exact_cost(arch, self.task, self.settings)
        val_correct = self.task.correct(child, "val", self.device)  # per image: paired comparisons of trials
        val_acc = accuracy_of(val_correct)
        test_acc = self.task.accuracy(child, "test", self.device)
        return SearchResult(
            method=self.name,
            hyperparameters=dataclasses.asdict(self.params),
            settings=dataclasses.asdict(self.settings),
            arch=str(arch),
            runtime_ms=cost.runtime_ms,
            flops=cost.flops,
            params=cost.params,
            val_acc=val_acc,
            val_correct=pack_bits(val_correct),
            test_acc=test_acc,
            epochs=self.epoch,
            wall_s=round(self.wall_s, 3),
            history=list(self.history),
            extra=self.extra_result(),
            model=child,
            arch_obj=arch,
        )
