"""Multi-fidelity Bayesian optimization (Sec. VII-B, method 2): BO plus a fidelity policy.

Dragonfly's BOCA (Kandasamy et al. 2017) fits one GP over (epochs, hyperparameters), picks the
hyperparameters by the acquisition at full fidelity and then the cheapest number of search epochs whose
posterior is still uncertain enough to be worth paying for. As in the paper, the fidelities are the
integer search epochs from space.min_fidelity up to max_fidelity (two to eight), cost is proportional to
epochs, and max_fidelity is the fidelity to optimise. (The paper found it worse than plain BO on lambda:
low-epoch rewards overshoot, Fig. 9 right.)
"""
from __future__ import annotations

import numpy as np

from searchers.errors import UsageError

from .base import Observation
from .bo import BayesOpt


def _epochs(raw_fidel) -> float:
    """Cost of a fidelity: the search epochs it runs."""
    return float(raw_fidel[0])


class MultiFidelityBO(BayesOpt):
    name = "mfbo"
    multi_fidelity = True

    def _function_caller(self):
        lo, hi = self.space.min_fidelity, self.space.max_fidelity
        if lo == hi:
            raise UsageError(f"multi-fidelity BO needs min_fidelity < max_fidelity (both are {hi})")
        # raw_fidel_space / raw_fidel_to_opt keep dragonfly's cost function on raw epochs
        # (fidel_space= instead fails with "got multiple values").
        return self._df.EuclideanMultiFunctionCaller(None, self._unit_box(), raw_fidel_space=[[lo, hi]],
                                                     fidel_cost_func=_epochs, raw_fidel_to_opt=[hi])

    def _from_answer(self, answer) -> tuple[np.ndarray, int]:
        z, x = answer    # ask() answers in raw coordinates: z is in epochs, but continuous
        epochs = int(np.clip(round(float(z[0])), self.space.min_fidelity, self.space.max_fidelity))
        return np.asarray(x, dtype=float), epochs

    def _datum(self, u: np.ndarray, obs: Observation) -> tuple:
        return [obs.fidelity], u, obs.value    # the epochs actually run, in raw coordinates

    def _set_in_progress(self, pending: list[tuple[np.ndarray, int]]) -> None:
        super()._set_in_progress(pending)
        caller = self._opt.func_caller
        self._opt.eval_fidels_in_progress = [caller.get_normalised_fidel_coords(np.array([float(f)]))
                                             for _, f in pending]
