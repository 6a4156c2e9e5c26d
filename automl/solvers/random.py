"""Random search (Sec. VII-B, method 3): parameter-free, the baseline every model-based solver must beat."""
from __future__ import annotations

import numpy as np

from ..spaces import Space
from .base import Observation, Solver


class RandomSearch(Solver):
    """Uniform in each Param's scale (log-uniform for log ranges), always at full fidelity."""

    name = "random"
    learns = False   # the baseline: proposals never depend on results

    def __init__(self, space: Space, *, budget_epochs: int, seed: int = 0):
        super().__init__(space, budget_epochs=budget_epochs, seed=seed)
        self._rng = np.random.default_rng(seed)

    def _ask(self):
        params = {p.name: p.from_unit(float(self._rng.random())) for p in self.space.params}
        return params, self.space.max_fidelity, {}

    def _tell(self, obs: Observation) -> None:
        pass    # proposals do not depend on results
