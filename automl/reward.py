"""The outer loop's objective, Eq. 19 of the Single-Path NAS paper (Sec. VII-B):

    reward(acc, R) = acc * (R / RT) ** w,   w = 0 if R <= RT else -1

R is the derived network's runtime (ms) or FLOPs, RT the target. Meeting the target costs nothing;
each percent over it scales the accuracy down proportionally (MnasNet's hard-ish constraint).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from searchers.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class Target:
    value: float          # RT: milliseconds on the profile, or MFLOPs (multiply-accumulates / 1e6)
    metric: str = "runtime_ms"   # "runtime_ms" or "mflops"

    def __post_init__(self):
        if self.metric not in ("runtime_ms", "mflops"):
            raise UsageError(f"unknown target metric {self.metric!r}; valid choices: runtime_ms, mflops")
        if not (self.value > 0 and math.isfinite(self.value)):
            raise UsageError(f"target must be > 0, got {self.value}")

    def measure(self, runtime_ms: float | None, flops: float) -> float:
        """R of Eq. 19 for a result: its runtime, or its MFLOPs."""
        if self.metric == "mflops":
            return flops / 1e6
        if runtime_ms is None:
            raise UsageError("a runtime target needs a searcher with a device profile; use a FLOPs target")
        return runtime_ms

    def __str__(self) -> str:
        return f"{self.value:g} ms" if self.metric == "runtime_ms" else f"{self.value:g} MFLOPs"


def reward(acc: float, r: float, target: float) -> float:
    """Eq. 19."""
    return float(rewards(acc, r, target))


def rewards(acc, r, target: float) -> np.ndarray:
    """Eq. 19 elementwise over arrays of accuracies and costs (a solver scoring model samples)."""
    acc, r = np.asarray(acc, dtype=float), np.asarray(r, dtype=float)
    w = np.where(r <= target, 0.0, -1.0)
    return acc * (r / target) ** w
