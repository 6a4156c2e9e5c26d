"""Grid of (hyperparameters, fidelity) points asked in a fixed order: the proposal source of the
fidelity grid (Single-Path NAS paper Fig. 9 right: Eq. 19 over lambda x search epochs) and of repeated
searches at one tuned value (Fig. 8).

Not in the solver registry on purpose: a study never chooses it by name, and its proposals are
given, not drawn from a seed, so the contract suite's seed checks do not apply to it. Studies
construct it directly and hand it to a runner.
"""
from __future__ import annotations

import math

from searchers.errors import UsageError

from ..spaces import Space
from .base import Observation, Solver


class GridSolver(Solver):
    """Asks `points` in order, each once; a point told (also by a resumed study re-telling finished
    trials from trials.csv) is never asked again. The budget is the sum of the points' epochs."""

    name = "grid"
    multi_fidelity = True   # points may use any fidelity in [min_fidelity, max_fidelity]
    learns = False          # a fixed list of points

    def __init__(self, space: Space, points: list[tuple[dict[str, float], int]], *, seed: int = 0):
        # A grid has no randomness: `seed` is kept for the Solver interface; the searches' seed is the
        # study's (StudyConfig.seed), which the runner passes to every trial.
        if not points:
            raise UsageError("a grid needs at least one point")
        for params, fidelity in points:
            if set(params) != set(space.names):
                raise UsageError(f"grid point {params} does not name exactly {space.names}")
            if not space.min_fidelity <= fidelity <= space.max_fidelity:
                raise UsageError(f"grid fidelity {fidelity} outside [{space.min_fidelity}, {space.max_fidelity}]")
        super().__init__(space, budget_epochs=sum(f for _, f in points), seed=seed)
        self.points = [(dict(p), int(f)) for p, f in points]
        self._state = ["todo"] * len(points)   # todo | asked | done

    def _ask(self):
        for i, s in enumerate(self._state):
            if s == "todo":
                self._state[i] = "asked"
                params, fidelity = self.points[i]
                return dict(params), fidelity, {"grid_index": i}
        return None

    def _tell(self, obs: Observation) -> None:
        # Matched by value, not by trial id: a resumed study tells rows of an earlier process.
        for i, (params, fidelity) in enumerate(self.points):
            if self._state[i] != "done" and fidelity == obs.fidelity and _same(params, obs.params):
                self._state[i] = "done"
                return

    @property
    def pending(self) -> int:
        """Points not told yet."""
        return sum(s != "done" for s in self._state)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    # trials.csv round-trips floats through text: compare with a relative tolerance
    return set(a) == set(b) and all(math.isclose(a[k], float(b[k]), rel_tol=1e-9) for k in a)
