"""Hyperparameter spaces the outer loop searches: named numeric ranges plus a fidelity (search epochs).

Which hyperparameters a searcher exposes, and their ranges, come from the searcher's `tunable`
declaration (searchers/ stays ignorant of automl; automl reads the registry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from searchers.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise UsageError(f"bad range for {self.name}: [{self.low}, {self.high}] (log={self.log})")

    def to_unit(self, v: float) -> float:
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)


@dataclass(frozen=True, kw_only=True)
class Space:
    params: tuple[Param, ...]
    min_fidelity: int = 2   # fewest search epochs a multi-fidelity solver may ask for
    max_fidelity: int = 8   # search epochs of a full evaluation (the paper's 8)

    def __post_init__(self):
        if not 1 <= self.min_fidelity <= self.max_fidelity:
            raise UsageError(f"bad fidelity range [{self.min_fidelity}, {self.max_fidelity}] epochs")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]
