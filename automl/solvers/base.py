"""The outer loop's one small interface: a Solver proposes hyperparameters and a fidelity (ask) and
learns from results (tell). Solvers never import Ray; a runner (Ray Tune, local, replay) drives them.

Budget is counted in search epochs, the paper's unit (Fig. 9 compares solvers at 400): every ask
charges its fidelity, and ask returns None once the next evaluation would not fit.
A failed trial is told with reward None and treated as the worst reward (0: Eq. 19 is >= 0).
`tell` accepts any observation, also one it never asked for; that is how a resumed study restores a
solver's state: a fresh solver with the same seed is told every finished trial again.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

from ..spaces import Space

WORST_REWARD = 0.0


@dataclass(frozen=True, kw_only=True)
class Proposal:
    trial_id: int
    params: dict[str, float]
    fidelity: int                       # search epochs for this trial
    info: dict = field(default_factory=dict, compare=False)  # solver bookkeeping (e.g. BOHB bracket)


@dataclass(frozen=True, kw_only=True)
class Observation:
    params: dict[str, float]
    fidelity: int
    reward: float | None                # None: the trial failed
    trial_id: int | None = None         # set when it answers a Proposal of this solver
    # Eq. 19's parts, reward = accuracy * (cost / target) ** w, for solvers that model them (cbo.py);
    # None for a failed trial. cost is R: the network's runtime (ms) or MFLOPs; target is RT.
    accuracy: float | None = None
    cost: float | None = None
    target: float | None = None

    @property
    def value(self) -> float:
        return WORST_REWARD if self.reward is None else self.reward


class Solver(abc.ABC):
    name: ClassVar[str]
    multi_fidelity: ClassVar[bool] = False   # whether proposals use fidelities below max_fidelity
    learns: ClassVar[bool] = True            # whether proposals depend on results (random search's do not)

    def __init__(self, space: Space, *, budget_epochs: int, seed: int = 0):
        if budget_epochs < space.max_fidelity and not self.multi_fidelity:
            raise ValueError(f"budget of {budget_epochs} epochs is smaller than one trial ({space.max_fidelity})")
        self.space, self.budget_epochs, self.seed = space, budget_epochs, seed
        self.spent_epochs = 0
        self.history: list[Observation] = []
        self._next_id = 0

    @property
    def full_trials(self) -> int:
        """Full-fidelity trials the budget pays for: what initial designs are sized to (a model that
        starts after 5 random trials of an 8-trial study would guide three of them)."""
        return self.budget_epochs // self.space.max_fidelity

    def remaining(self) -> int:
        return self.budget_epochs - self.spent_epochs

    @property
    def smallest_fidelity(self) -> int:
        """Fewest epochs one proposal of this solver may cost."""
        return self.space.min_fidelity if self.multi_fidelity else self.space.max_fidelity

    @property
    def next_trial_id(self) -> int:
        """The trial_id the Proposal built from the next `_ask` answer gets (bookkeeping may key on it)."""
        return self._next_id

    def ask(self) -> Proposal | None:
        """Next trial, or None when the budget cannot pay for another one."""
        # Checked before _ask, so that a solver's state never advances for a proposal that is dropped.
        if self.remaining() < self.smallest_fidelity:
            return None
        proposed = self._ask()
        if proposed is None:
            return None
        params, fidelity, info = proposed
        if not self.smallest_fidelity <= fidelity <= self.space.max_fidelity:
            raise ValueError(f"{type(self).__name__} proposed {fidelity} epochs, outside "
                             f"[{self.smallest_fidelity}, {self.space.max_fidelity}]")
        # A multi-fidelity proposal larger than what is left is cut to fit (>= min_fidelity here).
        fidelity = min(fidelity, self.remaining())
        self.spent_epochs += fidelity
        p = Proposal(trial_id=self._next_id, params=params, fidelity=fidelity, info=info)
        self._next_id += 1
        return p

    def tell(self, obs: Observation) -> None:
        self.history.append(obs)
        self._tell(obs)

    def charge(self, fidelity: int, trial_id: int | None = None) -> None:
        """Count epochs spent outside ask (a resumed study's finished trials); new trial ids follow."""
        self.spent_epochs += fidelity
        self._next_id = max(self._next_id, self._next_id if trial_id is None else trial_id) + 1

    @abc.abstractmethod
    def _ask(self) -> tuple[dict[str, float], int, dict] | None:
        """(params, fidelity, info); the base applies the budget."""

    @abc.abstractmethod
    def _tell(self, obs: Observation) -> None:
        ...
