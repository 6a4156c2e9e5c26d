"""Optuna's TPE (tree-structured Parzen estimator) through optuna's own ask/tell, at full fidelity.

Failed trials are told as COMPLETE with the worst reward (0.0, the floor of Eq. 19, base.WORST_REWARD)
and a user attribute failed=True, not as TrialState.FAIL: TPE leaves FAIL trials out of its model, so a
lambda range whose searches diverge would keep being proposed; as a 0-reward trial it lands in TPE's
"bad" density and the region is avoided, the way BO and BOHB here treat a failure too.
"""
from __future__ import annotations

import logging

import optuna
from optuna.distributions import FloatDistribution

from ..spaces import Space
from .base import Observation, Solver


class TPE(Solver):
    name = "tpe"

    def __init__(self, space: Space, *, budget_epochs: int, seed: int = 0,
                 n_startup_trials: int = 10,    # random trials before the model (optuna's default)
                 constant_liar: bool = True):   # pending trials count as bad while running (optuna 5's
                                                # default), so asks ahead of tells spread out
        super().__init__(space, budget_epochs=budget_epochs, seed=seed)
        self._distributions = {p.name: FloatDistribution(p.low, p.high, log=p.log) for p in space.params}
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials,
                                             constant_liar=constant_liar)
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(logging.WARNING)   # not one "A new study created" line per solver
        try:
            self.study = optuna.create_study(direction="maximize", sampler=sampler)
        finally:
            optuna.logging.set_verbosity(level)
        self._running: dict[int, optuna.trial.Trial] = {}

    def _ask(self):
        trial = self.study.ask(self._distributions)
        self._running[self.next_trial_id] = trial
        return dict(trial.params), self.space.max_fidelity, {"optuna_trial": trial.number}

    def _tell(self, obs: Observation) -> None:
        trial = self._running.pop(obs.trial_id, None)
        failed = obs.reward is None
        if trial is None:   # never asked here (a resumed study): add it as a finished trial
            self.study.add_trial(optuna.trial.create_trial(
                params={n: obs.params[n] for n in self._distributions}, distributions=self._distributions,
                value=obs.value, user_attrs={"failed": failed, "fidelity": obs.fidelity}))
            return
        trial.set_user_attr("failed", failed)
        trial.set_user_attr("fidelity", obs.fidelity)
        self.study.tell(trial, obs.value)
